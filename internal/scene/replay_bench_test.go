package scene

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/game/gamesim"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// forestLog writes what the failover benchmarks prefill (e2e
// prefillForest): players entering, then requests (moves, attacks) and
// ticks, into one slot of a fresh log at path ("": a temporary file).
func forestLog(tb testing.TB, path string, players, events int) *shmlog.Slot {
	tb.Helper()
	if path == "" {
		path = filepath.Join(tb.TempDir(), "forest.log")
	}
	st, err := shmlog.Open(path, shmlog.Options{Slots: 4, SlotSize: 16 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	slot, err := st.Create("forest")
	if err != nil {
		tb.Fatal(err)
	}
	add := func(ev game.Event) {
		raw, err := game.EncodeEvent(ev)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := slot.Append(raw); err != nil {
			tb.Fatal(err)
		}
	}
	gamesim.ForestEvents(players, events, add)
	return slot
}

func forestDef(tb testing.TB) game.SceneDef {
	tb.Helper()
	for _, d := range game.DefaultScenes() {
		if d.ID == "forest" {
			return d
		}
	}
	tb.Fatal("no forest in the default scenes")
	return game.SceneDef{}
}

// BenchmarkReplayForest is the restore phase of a cold failover alone: a
// forest slot with 500 players and 100k events since its snapshot,
// replayed as a respawned process does (records, decode, apply).
func BenchmarkReplayForest(b *testing.B) {
	slot := forestLog(b, "", 500, 100_000)
	def := forestDef(b)
	b.ReportAllocs()
	// CPU time as well as wall time: on a shared machine the wall clock
	// counts other processes' turns, the CPU time only this one's (GC
	// included).
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	for b.Loop() {
		if _, n, err := Replay(slot, def); err != nil || n != 100_500 {
			b.Fatalf("replayed %d: %v", n, err)
		}
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100_500), "ns/event")
	b.ReportMetric(float64(cpu)/float64(b.N*100_500), "cpu_ns/event")
	// Page faults: a respawned process touches its heap for the first
	// time while it replays (run with -benchtime=1x to see that case).
	b.ReportMetric(float64(ru1.Minflt-ru0.Minflt)/float64(b.N), "minflt/op")
}

// BenchmarkSnapshotForest is the stall of a scene's loop at each snapshot
// (every scene.snapshot_events): the forest of BenchmarkReplayForest, 500
// players with full reply windows, encoded.
func BenchmarkSnapshotForest(b *testing.B) {
	slot := forestLog(b, "", 500, 100_000)
	st, _, err := Replay(slot, forestDef(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(st.Snapshot())
	}
	b.ReportMetric(float64(n), "bytes")
}
