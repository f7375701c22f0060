package game

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/respawn-dev/respawn/internal/player"
)

func crowdedForest(b *testing.B, n int) *Scene {
	b.Helper()
	s := New(defByID(b, "forest"))
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("p%04d", i)
		s.Apply(Enter{Player: player.Data{ID: id, Name: "Player " + id, Level: i % 10, Gold: int64(i), Items: map[string]int64{"potion": 3, "wolf_pelt": int64(i%5 + 1)}, Scene: "forest"}, Version: 1})
		s.Apply(Request{Session: "s-" + id, Player: id, Seq: 1, Op: Move{X: i % 100, Y: i / 100}})
	}
	return s
}

func BenchmarkApplyTick(b *testing.B) {
	s := crowdedForest(b, 100)
	b.ReportAllocs()
	for b.Loop() {
		s.Apply(Tick{})
	}
}

func BenchmarkApplyMove(b *testing.B) {
	s := crowdedForest(b, 100)
	b.ReportAllocs()
	seq := uint64(1)
	for b.Loop() {
		seq++
		s.Apply(Request{Session: "s-p0007", Player: "p0007", Seq: seq, Op: Move{X: int(seq % 100), Y: 3}})
	}
}

// BenchmarkReplay measures what recovery does: decode a logged event and
// apply it, over a realistic mix (mostly ticks and moves, some attacks).
func BenchmarkReplay(b *testing.B) { benchReplay(b, false) }

// BenchmarkReplayer is BenchmarkReplay through a Replayer, as a respawned
// scene process replays its log.
func BenchmarkReplayer(b *testing.B) { benchReplay(b, true) }

func benchReplay(b *testing.B, replayer bool) {
	const players = 100
	var log [][]byte
	seq := make([]uint64, players)
	for i := 0; i < 10000; i++ {
		var ev Event
		switch p := i % players; {
		case i%10 < 4:
			ev = Tick{}
		case i%10 < 9:
			seq[p]++
			ev = Request{Session: fmt.Sprintf("s-p%04d", p), Player: fmt.Sprintf("p%04d", p), Seq: seq[p] + 1, Op: Move{X: i % 100, Y: (i / 100) % 100}}
		default:
			seq[p]++
			ev = Request{Session: fmt.Sprintf("s-p%04d", p), Player: fmt.Sprintf("p%04d", p), Seq: seq[p] + 1, Op: Attack{Monster: "hogger"}}
		}
		enc, err := EncodeEvent(ev)
		if err != nil {
			b.Fatal(err)
		}
		log = append(log, enc)
	}
	base := crowdedForest(b, players)
	snap := base.Snapshot()
	def := defByID(b, "forest")
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	// CPU time of the replays alone (not the restores): on a shared machine
	// the wall clock counts other processes' turns too.
	var cpu int64
	var ru0, ru1 syscall.Rusage
	defer func() {
		b.ReportMetric(float64(cpu)/float64(events), "cpu_ns/event")
	}()
	for b.Loop() {
		b.StopTimer()
		s, err := Restore(def, snap)
		if err != nil {
			b.Fatal(err)
		}
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		b.StartTimer()
		if replayer {
			rp := NewReplayer()
			for _, rec := range log {
				if err := rp.Apply(s, rec); err != nil {
					b.Fatal(err)
				}
			}
			events += len(log)
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu += ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano()
			continue
		}
		for _, rec := range log {
			ev, err := DecodeEvent(rec)
			if err != nil {
				b.Fatal(err)
			}
			s.Apply(ev)
		}
		events += len(log)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		cpu += ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano()
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkSnapshot500(b *testing.B) {
	s := crowdedForest(b, 500)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(s.Snapshot())
	}
	b.ReportMetric(float64(n), "bytes")
}

func BenchmarkRestore500(b *testing.B) {
	s := crowdedForest(b, 500)
	snap := s.Snapshot()
	def := defByID(b, "forest")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Restore(def, snap); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHash500(b *testing.B) {
	s := crowdedForest(b, 500)
	b.ReportAllocs()
	for b.Loop() {
		s.Hash()
	}
}
