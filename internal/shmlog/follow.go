package shmlog

import (
	"fmt"
	"os"
)

// OpenFollower maps an existing log read-only and WITHOUT a lock, beside
// its live writer: for a standby that follows the writer's events before it
// takes over (Slot.Follow), so that at the takeover it replays only the
// tail. Anything it reads may change under it: use its slots only with
// Follow, whose generation check and per-record CRCs catch a half being
// rewritten, and finish on the writer's own store once the lock is held.
func OpenFollower(path string) (*Store, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("shmlog: open follower: %w", err)
	}
	s, err := openFileLocked(f, path, Options{}, true, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// Cursor is how far Follow has read a slot: its generation and half, the
// offset of the next record and the seq of the last one read. The zero
// Cursor is the start.
type Cursor struct {
	gen  uint64
	half int
	off  int
	seq  uint64
}

// Seq is the seq of the last record read (the snapshot's, if no event).
func (c Cursor) Seq() uint64 { return c.seq }

// Follow reads the slot as its writer leaves it. From the zero Cursor it
// calls fn with the snapshot record and then each event; from a Cursor it
// returned, with the events appended since. A record not yet committed (the
// writer is writing it) ends the call; the next call starts there. ok is
// false, and nothing was read, when the slot's generation moved since c (a
// snapshot, a free or a reuse): start again from the zero Cursor. An error
// from fn is returned; the caller's state is then unknown.
//
// On a store whose lock this process holds, following on from a Cursor
// got from a follower store gives exactly what Replay would: the same
// generation means the same half, written only by appends since.
func (sl *Slot) Follow(c Cursor, fn func(r Record) error) (Cursor, bool, error) {
	if sl.dead != nil {
		return c, false, sl.unusable("follow")
	}
	st := load64(sl.hdr[sState:])
	if st&stateValid == 0 {
		return c, false, nil
	}
	gen, half := st>>stateGenShift, int(st&stateActive)>>1
	h := sl.halves[half]
	switch {
	case c.gen == 0:
		r, end := readRecord(h, 0, gen)
		if end < 0 || r.Kind != KindSnapshot {
			return c, false, nil // a snapshot being written or damaged: Replay's business
		}
		if err := fn(r); err != nil {
			return c, false, err
		}
		c = Cursor{gen: gen, half: half, off: end, seq: r.Seq}
	case c.gen != gen || c.half != half:
		return c, false, nil
	}
	off, err := sl.chain(h, c.off, gen, c.seq, func(r Record) error {
		if err := fn(r); err != nil {
			return err
		}
		c.seq = r.Seq
		return nil
	})
	if err != nil {
		return c, true, fmt.Errorf("shmlog: follow slot %d (%q) after seq %d: %w", sl.idx, sl.id, c.seq, err)
	}
	c.off = off
	return c, true, nil
}
