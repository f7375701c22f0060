package shmlog

import (
	"fmt"
	"testing"
)

// collect follows sl from c and returns the new cursor, ok, and the
// payloads read (a snapshot as "snap:" + payload).
func collect(t *testing.T, sl *Slot, c Cursor) (Cursor, bool, []string) {
	t.Helper()
	var got []string
	c, ok, err := sl.Follow(c, func(r Record) error {
		if r.Kind == KindSnapshot {
			got = append(got, "snap:"+string(r.Payload))
		} else {
			got = append(got, string(r.Payload))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, ok, got
}

// A follower beside the live writer reads what is appended as it is
// appended, starts again after a snapshot, and the writer's successor
// finishes from the follower's cursor with exactly the records the
// follower had not read.
func TestFollowerFollowsTheWriter(t *testing.T) {
	path := tempPath(t)
	w := openT(t, path, small)
	sl, err := w.Create("forest")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := sl.Append(fmt.Appendf(nil, "e%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	f, err := OpenFollower(path)
	if err != nil {
		t.Fatalf("OpenFollower beside a writer: %v", err)
	}
	defer f.Close()
	fs, ok := f.Get("forest")
	if !ok {
		t.Fatal("the follower does not see the slot")
	}
	c, ok, got := collect(t, fs, Cursor{})
	if !ok || fmt.Sprint(got) != "[snap: e0 e1 e2]" || c.Seq() != 3 {
		t.Fatalf("first follow: ok %v, %q, seq %d", ok, got, c.Seq())
	}
	if c, ok, got = collect(t, fs, c); !ok || len(got) != 0 {
		t.Fatalf("nothing new: ok %v, %q", ok, got)
	}
	if _, err := sl.Append([]byte("e3")); err != nil {
		t.Fatal(err)
	}
	if c, ok, got = collect(t, fs, c); !ok || fmt.Sprint(got) != "[e3]" {
		t.Fatalf("after an append: ok %v, %q", ok, got)
	}
	// A snapshot moves the generation: the follower starts again.
	if err := sl.Snapshot([]byte("state@4")); err != nil {
		t.Fatal(err)
	}
	if _, err := sl.Append([]byte("e4")); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ = collect(t, fs, c); ok {
		t.Fatal("a cursor from before a snapshot still followed")
	}
	c, ok, got = collect(t, fs, Cursor{})
	if !ok || fmt.Sprint(got) != "[snap:state@4 e4]" {
		t.Fatalf("after the snapshot: ok %v, %q", ok, got)
	}
	// The writer appends once more and goes; its successor holds the lock
	// and finishes from the follower's cursor.
	if _, err := sl.Append([]byte("e5")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	succ := openT(t, path, small)
	ss, ok := succ.Get("forest")
	if !ok {
		t.Fatal("the successor does not see the slot")
	}
	if _, ok, got = collect(t, ss, c); !ok || fmt.Sprint(got) != "[e5]" {
		t.Fatalf("the successor's tail: ok %v, %q", ok, got)
	}
}

// A follower cannot open a log that does not exist.
func TestFollowerNeedsALog(t *testing.T) {
	if _, err := OpenFollower(tempPath(t)); err == nil {
		t.Fatal("OpenFollower of a missing file succeeded")
	}
}
