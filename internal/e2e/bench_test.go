package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
)

// benchKills is how many kills a recovery benchmark makes
// (RESPAWN_BENCH_KILLS overrides).
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
	c.start("worldmgr")
	c.waitRunning(15 * time.Second)
	for b.Loop() {
		var took []time.Duration
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
		}
		slices.Sort(took)
		p := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))].Microseconds()) / 1000 }
		b.ReportMetric(p(0.50), "p50_ms")
		b.ReportMetric(p(0.99), "p99_ms")
		b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max_ms")
		fmt.Fprintf(os.Stderr, "%s: %d kills, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", b.Name(), kills, p(0.5), p(0.99), float64(took[len(took)-1].Microseconds())/1000)
	}
}
