package shmlog

import (
	"fmt"
)

// Slot is one room's log. It is owned by one goroutine: its methods take no
// lock (see the package comment).
type Slot struct {
	store  *Store
	idx    int
	id     string
	hdr    []byte
	halves [2][]byte
	ro     bool

	// In-memory view of the active half, derived from the file at Open and
	// kept up to date by Append and Snapshot.
	active  int
	gen     uint64
	tail    int // offset in the active half where the next record goes
	lastSeq uint64
	snapSeq uint64
	snapLen int
	events  int

	dead error // ErrFreed or ErrClosed once the slot must not touch the mapping
}

// SlotStats describes a slot's active half.
type SlotStats struct {
	Index         int    // slot index in the file
	Generation    uint64 // bumped by Create and every Snapshot
	ActiveHalf    int    // 0 (A) or 1 (B)
	SnapshotSeq   uint64 // seq of the last event folded into the snapshot
	SnapshotBytes int    // payload size of the snapshot record
	Events        int    // events appended since the snapshot
	LastSeq       uint64 // seq of the last event (SnapshotSeq if none since)
	Used          int    // bytes used in the active half, records and headers
	Free          int    // bytes left in the active half
}

func (s *Store) newSlot(idx int, id string, state uint64) *Slot {
	return &Slot{
		store:  s,
		idx:    idx,
		id:     id,
		hdr:    s.slotHeader(idx),
		halves: [2][]byte{s.half(idx, 0), s.half(idx, 1)},
		ro:     s.ro,
		active: int(state&stateActive) >> 1,
		gen:    state >> stateGenShift,
	}
}

// recover scans the active half at Open: it finds the tail (the first torn,
// stale or bad record, which the next Append overwrites) and the last seq.
func (sl *Slot) recover() error {
	h := sl.halves[sl.active]
	sl.tail, sl.events = 0, 0
	err := sl.scan(h, func(r Record, end int) error {
		if r.Kind == KindSnapshot {
			sl.snapSeq, sl.snapLen = r.Seq, len(r.Payload)
		} else {
			sl.events++
		}
		sl.lastSeq, sl.tail = r.Seq, end
		return nil
	})
	if err != nil {
		return err
	}
	if !sl.ro && sl.tail < len(h) {
		// Restore the "log ends in a zero word" invariant over whatever the
		// crash left at the tail (a torn record's commit word is still zero,
		// but corruption might not be).
		le.PutUint64(h[sl.tail:], 0)
	}
	return nil
}

// scan walks half h: the snapshot record, which must be intact, then events
// until the first record that is not committed, intact, of the half's
// generation and of the next seq. fn gets each good record and its end.
func (sl *Slot) scan(h []byte, fn func(r Record, end int) error) error {
	r, off := readRecord(h, 0, sl.gen)
	if off < 0 || r.Kind != KindSnapshot {
		return fmt.Errorf("slot %d (%q): active half %c has no valid snapshot record (generation %d): %w",
			sl.idx, sl.id, 'A'+sl.active, sl.gen, ErrCorrupt)
	}
	if err := fn(r, off); err != nil {
		return err
	}
	seq := r.Seq
	for {
		r, end := readRecord(h, off, sl.gen)
		if end < 0 || r.Kind != KindEvent || r.Seq != seq+1 {
			return nil
		}
		if err := fn(r, end); err != nil {
			return err
		}
		seq, off = r.Seq, end
	}
}

// ID returns the room/scene id of the slot.
func (sl *Slot) ID() string { return sl.id }

// Index returns the slot's index in the file.
func (sl *Slot) Index() int { return sl.idx }

// Append logs one event and returns its sequence number. It writes the
// mapping directly: no syscall, no allocation. When the active half cannot
// take the record it returns ErrSlotFull; the caller snapshots and retries.
func (sl *Slot) Append(payload []byte) (uint64, error) {
	if sl.dead != nil || sl.ro {
		return 0, sl.unusable("append")
	}
	h := sl.halves[sl.active]
	seq := sl.lastSeq + 1
	end := putRecord(h, sl.tail, KindEvent, seq, sl.gen, payload)
	if end < 0 {
		return 0, sl.tooBig(len(payload))
	}
	sl.tail, sl.lastSeq = end, seq
	sl.events++
	return seq, nil
}

func (sl *Slot) tooBig(n int) error {
	if recordSize(n) > len(sl.halves[0])-recHdr || n > MaxPayload {
		return fmt.Errorf("shmlog: append to slot %d (%q): %d-byte event cannot fit in a %d-byte half: %w",
			sl.idx, sl.id, n, len(sl.halves[0]), ErrRecordTooLarge)
	}
	return fmt.Errorf("shmlog: append to slot %d (%q): %d-byte event, %d bytes free: %w",
		sl.idx, sl.id, n, len(sl.halves[sl.active])-sl.tail, ErrSlotFull)
}

// Snapshot compacts the slot: it writes state (which must include every event
// appended so far) as the snapshot record of the inactive half under a new
// generation, then commits by flipping the active half in the slot's state
// word with one atomic store. A crash before the flip leaves the old half and
// all its events in force.
func (sl *Slot) Snapshot(state []byte) error {
	if sl.dead != nil || sl.ro {
		return sl.unusable("snapshot")
	}
	next := 1 - sl.active
	gen := (sl.gen + 1) & genMask
	end := putRecord(sl.halves[next], 0, KindSnapshot, sl.lastSeq, gen, state)
	if end < 0 {
		return fmt.Errorf("shmlog: snapshot of slot %d (%q): %d bytes, half is %d: %w",
			sl.idx, sl.id, len(state), len(sl.halves[next]), ErrSnapshotTooLarge)
	}
	store64(sl.hdr[sState:], gen<<stateGenShift|uint64(next)<<1|stateValid) // commit
	sl.active, sl.gen, sl.tail = next, gen, end
	sl.snapSeq, sl.snapLen, sl.events = sl.lastSeq, len(state), 0
	return nil
}

// Replay calls fn with the snapshot record (possibly with an empty payload,
// meaning initial state) and then each event in order. It re-reads and
// re-verifies the file, so it sees exactly what a new process would. Payloads
// alias the mapping and are valid only during fn. An error from fn stops the
// replay and is returned wrapped.
func (sl *Slot) Replay(fn func(r Record) error) error {
	if sl.dead != nil {
		return sl.unusable("replay")
	}
	var seq uint64
	var fnErr error
	err := sl.scan(sl.halves[sl.active], func(r Record, _ int) error {
		seq, fnErr = r.Seq, fn(r)
		return fnErr
	})
	switch {
	case err == nil:
		return nil
	case err == fnErr:
		return fmt.Errorf("shmlog: replay of slot %d (%q) at seq %d: %w", sl.idx, sl.id, seq, err)
	default:
		return fmt.Errorf("shmlog: replay: %w", err)
	}
}

// Stats describes the active half.
func (sl *Slot) Stats() SlotStats {
	size := sl.store.halfSize
	return SlotStats{
		Index:         sl.idx,
		Generation:    sl.gen,
		ActiveHalf:    sl.active,
		SnapshotSeq:   sl.snapSeq,
		SnapshotBytes: sl.snapLen,
		Events:        sl.events,
		LastSeq:       sl.lastSeq,
		Used:          sl.tail,
		Free:          size - sl.tail,
	}
}

// detach cuts the slot off the mapping, which is about to be unmapped or
// reused by another room.
func (sl *Slot) detach(why error) {
	sl.dead = why
	sl.halves = [2][]byte{}
	sl.hdr = nil
}

func (sl *Slot) unusable(op string) error {
	if sl.dead != nil {
		return fmt.Errorf("shmlog: %s slot %d (%q): %w", op, sl.idx, sl.id, sl.dead)
	}
	return fmt.Errorf("shmlog: %s slot %d (%q): %w", op, sl.idx, sl.id, ErrReadOnly)
}
