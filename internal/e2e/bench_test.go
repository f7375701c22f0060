package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/game/gamesim"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// benchKills is how many kills a recovery benchmark makes
// (RESPAWN_BENCH_KILLS overrides).
// blipModes runs a blip benchmark twice: "standby", each scene process
// with a warm spare that follows its log (worldmgr.standby), and "cold",
// the default, where the replacement is spawned after the death and
// replays the log (-bench 'FailoverBlip/cold' picks one).
func blipModes(b *testing.B, run func(b *testing.B, spare []string)) {
	b.Run("standby", func(b *testing.B) { run(b, []string{"--worldmgr.standby", "true"}) })
	b.Run("cold", func(b *testing.B) { run(b, nil) })
}

func benchKills(def int) int {
	if n, err := strconv.Atoi(os.Getenv("RESPAWN_BENCH_KILLS")); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkCrashToRunning kills the forest scene process with SIGKILL over
// and over and measures, from the kill, until the scene table shows its
// replacement running. The restart limit is lifted so the loop never trips
// the crash-loop protection.
func BenchmarkCrashToRunning(b *testing.B) {
	measureRecovery(b, syscall.SIGKILL, benchKills(100))
}

// BenchmarkHangToReplaced stops the scene process with SIGSTOP and measures
// until a replacement runs: heartbeat timeout (1 s) + kill + respawn.
func BenchmarkHangToReplaced(b *testing.B) {
	measureRecovery(b, syscall.SIGSTOP, benchKills(10))
}

func measureRecovery(b *testing.B, sig syscall.Signal, kills int) {
	c := newCluster(b, "--worldmgr.restart.max-restarts", "100000", "--worldmgr.restart.backoff-initial", "0s")
	c.startWorld() // datasvr too: scenes connect to its NATS as in production
	measureRecoveryLoop(b, c, sig, kills)
}

func measureRecoveryLoop(b *testing.B, c *cluster, sig syscall.Signal, kills int) {
	for b.Loop() {
		var took []time.Duration
		var replay []float64
		for range kills {
			old, err := c.scene("forest")
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := syscall.Kill(old.PID, sig); err != nil {
				b.Fatal(err)
			}
			for {
				r, err := c.scene("forest")
				if err == nil && r.PID != old.PID && r.State == modules.SceneRunning {
					break
				}
				if time.Since(start) > 10*time.Second {
					b.Fatalf("forest not replaced after 10s: %+v %v", r, err)
				}
				time.Sleep(time.Millisecond)
			}
			took = append(took, time.Since(start))
			if r, err := c.scene("forest"); err == nil {
				replay = append(replay, r.ReplayMS)
			}
		}
		slices.Sort(replay)
		if len(replay) > 0 {
			b.ReportMetric(replay[len(replay)/2], "replay_p50_ms")
		}
		slices.Sort(took)
		p := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))].Microseconds()) / 1000 }
		b.ReportMetric(p(0.50), "p50_ms")
		b.ReportMetric(p(0.99), "p99_ms")
		b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max_ms")
		fmt.Fprintf(os.Stderr, "%s: %d kills, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", b.Name(), kills, p(0.5), p(0.99), float64(took[len(took)-1].Microseconds())/1000)
	}
}

// BenchmarkCrashToRunningFullLog is the same measurement with a forest log
// holding 500 players and 100k events since its last snapshot, so every
// respawn replays all of them (snapshots are pushed out of the way with
// scene.snapshot_events).
func BenchmarkCrashToRunningFullLog(b *testing.B) {
	c := newCluster(b, "--worldmgr.restart.max-restarts", "100000", "--worldmgr.restart.backoff-initial", "0s",
		"--scene.snapshot-events", "100000000", "--scene.snapshot-interval", "1h")
	prefillForest(b, c, 500, 100_000)
	c.startWorld()
	measureRecoveryLoop(b, c, syscall.SIGKILL, benchKills(30))
}

// prefillForest writes what a busy forest would have logged: players
// entering, then requests (moves, attacks) and ticks.
func prefillForest(b *testing.B, c *cluster, players, events int) {
	b.Helper()
	st, err := shmlog.Open(filepath.Join(c.shmDir, "forest.log"), shmlog.Options{Slots: 64, SlotSize: 16 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	slot, err := st.Create("forest")
	if err != nil {
		b.Fatal(err)
	}
	add := func(ev game.Event) {
		raw, err := game.EncodeEvent(ev)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := slot.Append(raw); err != nil {
			b.Fatal(err)
		}
	}
	gamesim.ForestEvents(players, events, add)
}
