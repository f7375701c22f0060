package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func open(t *testing.T, opts Options) (*Journal, [][]byte) {
	t.Helper()
	j, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	if err := j.Replay(func(_ uint64, p []byte) error {
		got = append(got, append([]byte(nil), p...))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j, got
}

func TestGroupCommitBatchesConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	var syncs atomic.Int64
	slowSync := func(f *os.File) error {
		syncs.Add(1)
		time.Sleep(2 * time.Millisecond) // a disk-like fsync so appends pile up
		return f.Sync()
	}
	j, _ := open(t, Options{Dir: dir, GroupCommit: time.Millisecond, Sync: slowSync})
	const n = 400
	var wg sync.WaitGroup
	seqs := make([]uint64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq, err := j.Append(context.Background(), fmt.Appendf(nil, "rec-%d", i))
			if err != nil {
				t.Error(err)
			}
			seqs[i] = seq
		}()
	}
	wg.Wait()
	if s := syncs.Load(); s >= n/4 {
		t.Fatalf("%d fsyncs for %d appends: group commit is not batching", s, n)
	}
	seen := map[uint64]bool{}
	for _, s := range seqs {
		if s == 0 || seen[s] {
			t.Fatalf("bad or duplicate seq %d", s)
		}
		seen[s] = true
	}
	j.Close()
	_, got := open(t, Options{Dir: dir})
	if len(got) != n {
		t.Fatalf("replayed %d records, want %d", len(got), n)
	}
}

func TestTornTailDroppedOnReplay(t *testing.T) {
	dir := t.TempDir()
	j, _ := open(t, Options{Dir: dir})
	for i := range 10 {
		if _, err := j.Append(context.Background(), fmt.Appendf(nil, "rec-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments: %v", segs)
	}
	// Simulate kill -9 in the middle of writing record 11: a header that
	// promises more bytes than follow.
	f, err := os.OpenFile(segs[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{100, 0, 0, 0, 1, 2, 3, 4, 11, 0, 0, 0, 0, 0, 0, 0, 'x', 'y'})
	f.Close()

	j2, got := open(t, Options{Dir: dir})
	if len(got) != 10 || string(got[9]) != "rec-9" {
		t.Fatalf("replayed %d records (last %q), want 10", len(got), got[len(got)-1])
	}
	seq, err := j2.Append(context.Background(), []byte("after"))
	if err != nil || seq != 11 {
		t.Fatalf("append after torn tail: seq %d err %v", seq, err)
	}
	j2.Close()
	_, got = open(t, Options{Dir: dir})
	if len(got) != 11 || string(got[10]) != "after" {
		t.Fatalf("after reopen: %d records", len(got))
	}

	// A flipped bit in the last record is also a torn tail.
	segs, _ = filepath.Glob(filepath.Join(dir, "*.wal"))
	last := segs[len(segs)-1]
	b, _ := os.ReadFile(last)
	b[len(b)-1] ^= 0xff
	os.WriteFile(last, b, 0o644)
	_, got = open(t, Options{Dir: dir})
	if len(got) != 10 {
		t.Fatalf("corrupt last record: replayed %d, want 10", len(got))
	}
}

func TestRotationAndCheckpointDeletesSegments(t *testing.T) {
	dir := t.TempDir()
	j, _ := open(t, Options{Dir: dir, SegmentBytes: 256})
	var last uint64
	for i := range 100 {
		seq, err := j.Append(context.Background(), fmt.Appendf(nil, "record-%03d-padding-padding", i))
		if err != nil {
			t.Fatal(err)
		}
		last = seq
	}
	st := j.Stats()
	if st.Segments < 5 {
		t.Fatalf("only %d segments after 100 appends at 256 bytes each", st.Segments)
	}
	if err := j.Checkpoint(50); err != nil {
		t.Fatal(err)
	}
	mid := j.Stats()
	if mid.Segments >= st.Segments || mid.Bytes >= st.Bytes {
		t.Fatalf("checkpoint(50) deleted nothing: %+v -> %+v", st, mid)
	}
	j.Close()
	j2, got := open(t, Options{Dir: dir, SegmentBytes: 256})
	// Records above the checkpoint must all still be there.
	if len(got) < 50 || string(got[len(got)-1]) != "record-099-padding-padding" {
		t.Fatalf("after checkpoint(50) replayed %d records", len(got))
	}
	if err := j2.Checkpoint(last); err != nil {
		t.Fatal(err)
	}
	if st := j2.Stats(); st.Segments != 0 || st.Bytes != 0 {
		t.Fatalf("checkpoint(last) left %+v", st)
	}
	seq, err := j2.Append(context.Background(), []byte("next"))
	if err != nil || seq != last+1 {
		t.Fatalf("append after full checkpoint: %d %v", seq, err)
	}
}

func TestFullRefusesAndRecoversAfterCheckpoint(t *testing.T) {
	dir := t.TempDir()
	j, _ := open(t, Options{Dir: dir, MaxBytes: 1000, SegmentBytes: 200})
	payload := make([]byte, 84) // 100 bytes a record
	var last uint64
	for i := range 10 {
		seq, err := j.Append(context.Background(), payload)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		last = seq
	}
	if _, err := j.Append(context.Background(), payload); !errors.Is(err, ErrFull) {
		t.Fatalf("append to a full journal: %v, want ErrFull", err)
	}
	if err := j.Checkpoint(last); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(context.Background(), payload); err != nil {
		t.Fatalf("append after checkpoint: %v", err)
	}
}

func TestDiskErrorIsNotAcknowledged(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Bool
	sync := func(f *os.File) error {
		if fail.Load() {
			return errors.New("EIO")
		}
		return f.Sync()
	}
	j, _ := open(t, Options{Dir: dir, Sync: sync})
	if _, err := j.Append(context.Background(), []byte("one")); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if _, err := j.Append(context.Background(), []byte("lost")); err == nil {
		t.Fatal("append acknowledged although fsync failed")
	}
	fail.Store(false)
	if _, err := j.Append(context.Background(), []byte("two")); err != nil {
		t.Fatal(err)
	}
	j.Close()
	_, got := open(t, Options{Dir: dir})
	if len(got) != 2 || string(got[0]) != "one" || string(got[1]) != "two" {
		t.Fatalf("replayed %q", got)
	}
}
