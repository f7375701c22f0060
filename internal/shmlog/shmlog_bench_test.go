package shmlog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Benchmarks run on tmpfs (/dev/shm), where the log lives in production.
// Run: go test -run='^$' -bench=. -benchmem ./internal/shmlog

var benchPayload = bytes.Repeat([]byte("p"), 64)

func BenchmarkAppend(b *testing.B) {
	s, err := Open(filepath.Join(fuzzDir(b), "bench.shm"), Options{Slots: 1, SlotSize: DefaultSlotSize})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	sl, err := s.Create("bench")
	if err != nil {
		b.Fatal(err)
	}
	state := make([]byte, 4096) // a scene's snapshot when the half fills up
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if _, err := sl.Append(benchPayload); err != nil {
			if !errors.Is(err, ErrSlotFull) {
				b.Fatal(err)
			}
			if err := sl.Snapshot(state); err != nil {
				b.Fatal(err)
			}
			if _, err := sl.Append(benchPayload); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkWriteSyscall is the baseline Append is measured against: the same
// event written with one write(2) to a file on tmpfs.
func BenchmarkWriteSyscall(b *testing.B) {
	f, err := os.Create(filepath.Join(fuzzDir(b), "write.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const wrap = DefaultSlotSize / 2 // stay within one half's worth of tmpfs
	written := 0
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if _, err := f.Write(benchPayload); err != nil {
			b.Fatal(err)
		}
		if written += len(benchPayload); written >= wrap {
			if _, err := f.Seek(0, 0); err != nil {
				b.Fatal(err)
			}
			written = 0
		}
	}
}

// BenchmarkReplay replays one slot holding 1M 64-byte events and reports
// events/s, the rate at which a respawned scene catches up.
func BenchmarkReplay(b *testing.B) {
	const events = 1_000_000
	// 1M records of 96 bytes need a 96 MB half.
	s, err := Open(filepath.Join(fuzzDir(b), "replay.shm"), Options{Slots: 1, SlotSize: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	sl, err := s.Create("replay")
	if err != nil {
		b.Fatal(err)
	}
	for range events {
		if _, err := sl.Append(benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	total := 0
	for b.Loop() {
		n := 0
		if err := sl.Replay(func(r Record) error {
			n += len(r.Payload) >> 6
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if n != events {
			b.Fatalf("replayed %d events, want %d", n, events)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/event")
}
