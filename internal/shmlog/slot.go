package shmlog

import (
	"fmt"

	"github.com/respawn-dev/respawn/internal/crashpoint"
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
	damage  *Damage // what Open found; nil: nothing
	tornAt  int     // see Torn; -1: none

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
		tornAt: -1,
	}
}

// recover scans the active half at Open: it finds the tail (the first torn,
// stale or bad record, which the next Append overwrites), the last seq, and
// any damage. A damaged slot is left exactly as found: nothing is zeroed,
// so Repair (or an operator with xxd) still sees the evidence.
func (sl *Slot) recover() {
	w, _ := sl.walk(nil) // only fn can fail a walk
	sl.tail, sl.lastSeq, sl.snapSeq, sl.snapLen, sl.events = w.tail, w.lastSeq, w.snapSeq, w.snapLen, w.events
	sl.damage, sl.tornAt = w.damage, w.tornAt
	h := sl.halves[sl.active]
	if !sl.ro && sl.damage == nil && sl.tail < len(h) {
		// Restore the "log ends in a zero word" invariant over whatever the
		// crash left at the tail (a torn record's commit word is still zero,
		// but a committed record that does not verify is not).
		le.PutUint64(h[sl.tail:], 0)
	}
}

// walked is what a walk of a slot's log found.
type walked struct {
	tail    int // where the next record goes in the active half
	lastSeq uint64
	snapSeq uint64
	snapLen int
	events  int
	damage  *Damage
	// tornAt is the offset of a committed record at the very end of the
	// log that did not verify, with nothing committed after it: dropped
	// like a torn record (-1: none).
	tornAt int
}

// walk reads the slot's log: the snapshot record, then events until the
// first record that is not committed, intact, of the half's generation and
// of the next seq, and works out whether that stop is the end of the log (a
// zero word: nothing more, or a record torn by a crash), damage mid-log
// (committed events follow it), or a damaged snapshot. fn, if not nil, gets
// each good record in order; its error stops the walk and is returned.
func (sl *Slot) walk(fn func(r Record) error) (walked, error) {
	w := walked{tornAt: -1}
	h, gen := sl.halves[sl.active], sl.gen
	emit := func(r Record) error {
		if r.Kind == KindSnapshot {
			w.snapSeq, w.snapLen = r.Seq, len(r.Payload)
		} else {
			w.events++
		}
		w.lastSeq = r.Seq
		if fn == nil {
			return nil
		}
		return fn(r)
	}
	off := 0
	snap, end := readRecord(h, 0, gen)
	recovered := false
	if end > 0 && snap.Kind == KindSnapshot {
		if err := emit(snap); err != nil {
			return w, err
		}
		off = end
	} else {
		start, why := sl.fallback()
		if start == -2 {
			first, last, n := findEvents(h, 0, gen, 0, false)
			d := sl.newDamage(DamageSnapshot, sl.active, 0, 0)
			d.FirstLost, d.LastLost, d.Lost = first, last, n
			d.Reason = "snapshot record does not verify (" + describe(h, 0, gen, 0) + "); " + why
			w.damage, w.lastSeq, w.tail = d, last, len(h)
			if le.Uint64(h[rGen:]) == gen && RecordKind(le.Uint32(h[rKind:])) == KindSnapshot {
				// The header still reads: seqs after a repair continue past it.
				w.lastSeq = max(last, le.Uint64(h[rSeq:]))
			}
			return w, nil
		}
		// Replay the previous half: its snapshot and events are the state
		// the damaged snapshot was taken from.
		fb, fgen := sl.halves[1-sl.active], gen-1
		r, e := readRecord(fb, 0, fgen)
		if err := emit(r); err != nil {
			return w, err
		}
		if _, err := sl.chain(fb, e, fgen, r.Seq, emit); err != nil {
			return w, err
		}
		w.damage = sl.newDamage(DamageSnapshot, sl.active, 0, w.lastSeq)
		w.damage.Recovered = true
		w.damage.Reason = "snapshot record does not verify (" + describe(h, 0, gen, 0) + "); " + why
		recovered = true
		if start < 0 {
			w.tail = len(h) // no events here; the next Append must snapshot first
			return w, nil
		}
		off = start
	}
	off, err := sl.chain(h, off, gen, w.lastSeq, emit)
	if err != nil {
		return w, err
	}
	w.tail = off
	if recovered {
		// The damaged snapshot stays in this half until a new snapshot
		// replaces it: the next Append gets ErrSlotFull and the caller
		// snapshots, as it does when a half fills up.
		w.tail = len(h)
	}
	var c uint64
	if off+8 <= len(h) {
		c = le.Uint64(h[off:])
	}
	if c == 0 && !zeroedCommit(h, off, gen, w.lastSeq) {
		return w, nil // the end of the log, or a torn record
	}
	_, last, _ := findEvents(h, off, gen, w.lastSeq, true)
	if last == 0 {
		// Nothing committed after it: the last record itself is bad. It is
		// dropped as a torn one would be (a machine crash with the log on a
		// disk can leave this); the caller is told through Torn.
		w.tornAt = off
		return w, nil
	}
	d := sl.newDamage(DamageRecord, sl.active, off, w.lastSeq)
	d.FirstLost, d.LastLost, d.Lost = w.lastSeq+1, last, int(last-w.lastSeq)
	d.Reason = describe(h, off, gen, w.lastSeq)
	if recovered {
		d.Reason += " (after a damaged snapshot was bypassed with the previous half)"
	}
	w.damage = d
	return w, nil
}

// chain walks events from off in half h while each is committed, intact, of
// generation gen and the seq after the previous one (prev: the snapshot's).
func (sl *Slot) chain(h []byte, off int, gen, prev uint64, emit func(Record) error) (int, error) {
	for {
		r, end := readRecord(h, off, gen)
		if end < 0 || r.Kind != KindEvent || r.Seq != prev+1 {
			return off, nil
		}
		if err := emit(r); err != nil {
			return off, err
		}
		prev, off = r.Seq, end
	}
}

// fallback decides whether a damaged snapshot in the active half can be
// replaced by the previous half: its snapshot (generation one less) and its
// events are exactly what the damaged snapshot was built from, because
// Snapshot folds in every event appended so far and nothing writes to a half
// after the flip away from it. It returns where the active half's events
// start (-1: it has none), or -2 and why not.
func (sl *Slot) fallback() (start int, why string) {
	h, gen := sl.halves[sl.active], sl.gen
	if gen < 2 {
		return -2, "no previous snapshot"
	}
	fb, fgen := sl.halves[1-sl.active], gen-1
	r, off := readRecord(fb, 0, fgen)
	if off < 0 || r.Kind != KindSnapshot {
		return -2, fmt.Sprintf("half %s holds no previous snapshot of generation %d", halfName(1-sl.active), fgen)
	}
	last := r.Seq
	_, _ = sl.chain(fb, off, fgen, last, func(r Record) error { last = r.Seq; return nil })
	// Whatever the damaged record still says must agree.
	if le.Uint64(h[rGen:]) == gen && RecordKind(le.Uint32(h[rKind:])) == KindSnapshot && le.Uint64(h[rSeq:]) != last {
		return -2, fmt.Sprintf("the previous half ends at seq %d but the damaged snapshot says %d", last, le.Uint64(h[rSeq:]))
	}
	// The first event of the active half must be the one after that. When
	// the damaged record's length is believable it says where that event
	// is; otherwise the first committed event of the generation is it.
	c := le.Uint64(h[rCommit:])
	if n := int(uint32(c) &^ commitFlag); c&commitFlag != 0 && le.Uint32(h[rLen:]) == uint32(n) && n <= len(h)-recHdr {
		at := recordSize(n)
		e, end := readRecord(h, at, gen)
		switch {
		case end > 0 && (e.Kind != KindEvent || e.Seq != last+1):
			return -2, fmt.Sprintf("the previous half ends at seq %d but the next record here is %v seq %d", last, e.Kind, e.Seq)
		case end < 0 && (at+8 > len(h) || le.Uint64(h[at:]) == 0):
			return -1, "recovered from the previous half"
		}
		return at, "recovered from the previous half"
	}
	for p := 8; p+recHdr <= len(h); p += 8 {
		if e, end := readRecord(h, p, gen); end > 0 && e.Kind == KindEvent {
			if e.Seq != last+1 {
				return -2, fmt.Sprintf("the previous half ends at seq %d but the events after the damaged snapshot start at %d", last, e.Seq)
			}
			return p, "recovered from the previous half"
		}
	}
	return -1, "recovered from the previous half"
}

func (sl *Slot) newDamage(kind DamageKind, half, off int, good uint64) *Damage {
	return &Damage{
		Kind: kind, Slot: sl.idx, ID: sl.id, Half: halfName(half), Offset: off,
		FileOffset: sl.store.fileOffset(sl.idx, half, off), GoodSeq: good,
	}
}

// Damage returns what Open found wrong with the slot's log, if anything.
// Unless Recovered, the slot takes no appends or snapshots until Repair.
func (sl *Slot) Damage() (Damage, bool) {
	if sl.damage == nil {
		return Damage{}, false
	}
	return *sl.damage, true
}

// Torn returns the offset in the active half of a committed record at the
// end of the log that did not verify and was dropped like a torn record
// (nothing committed followed it), as Open found it.
func (sl *Slot) Torn() (offset int, ok bool) { return sl.tornAt, sl.tornAt >= 0 }

func (sl *Slot) blocked() bool { return sl.damage != nil && !sl.damage.Recovered }

// ID returns the room/scene id of the slot.
func (sl *Slot) ID() string { return sl.id }

// Index returns the slot's index in the file.
func (sl *Slot) Index() int { return sl.idx }

// Append logs one event and returns its sequence number. It writes the
// mapping directly: no syscall, no allocation. When the active half cannot
// take the record it returns ErrSlotFull; the caller snapshots and retries.
func (sl *Slot) Append(payload []byte) (uint64, error) {
	if sl.dead != nil || sl.ro || sl.blocked() {
		return 0, sl.unusable("append")
	}
	h := sl.halves[sl.active]
	seq := sl.lastSeq + 1
	end := putRecord(h, sl.tail, KindEvent, seq, sl.gen, payload, sl.store.beforeCommit)
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
	if sl.dead != nil || sl.ro || sl.blocked() {
		return sl.unusable("snapshot")
	}
	return sl.snapshot(state)
}

// Repair takes a damaged slot back into use: state (built by the caller
// from the good prefix Replay gave it, or an initial state when nothing
// replays) becomes the snapshot, written and committed exactly as Snapshot
// does, so the damaged half becomes the inactive one and is overwritten by
// the next snapshot. Sequence numbers continue after the good prefix (after
// everything seen, when the snapshot was lost). It returns the damage it
// cleared; on a slot that is not damaged it returns ErrNotDamaged.
func (sl *Slot) Repair(state []byte) (Damage, error) {
	if sl.dead != nil || sl.ro {
		return Damage{}, sl.unusable("repair")
	}
	if !sl.blocked() {
		return Damage{}, fmt.Errorf("shmlog: repair slot %d (%q): %w", sl.idx, sl.id, ErrNotDamaged)
	}
	d := *sl.damage
	if err := sl.snapshot(state); err != nil {
		return d, err
	}
	sl.damage = nil
	return d, nil
}

func (sl *Slot) snapshot(state []byte) error {
	next := 1 - sl.active
	gen := (sl.gen + 1) & genMask
	end := putRecord(sl.halves[next], 0, KindSnapshot, sl.lastSeq, gen, state, nil)
	if end < 0 {
		return fmt.Errorf("shmlog: snapshot of slot %d (%q): %d bytes, half is %d: %w",
			sl.idx, sl.id, len(state), len(sl.halves[next]), ErrSnapshotTooLarge)
	}
	sl.store.crash.Hit(crashpoint.SnapshotWrite)                            // written, not yet the slot's
	store64(sl.hdr[sState:], gen<<stateGenShift|uint64(next)<<1|stateValid) // commit
	sl.active, sl.gen, sl.tail = next, gen, end
	sl.snapSeq, sl.snapLen, sl.events = sl.lastSeq, len(state), 0
	if sl.damage != nil && sl.damage.Recovered {
		sl.damage = nil // the bypassed snapshot is replaced
	}
	return nil
}

// Replay calls fn with the snapshot record (possibly with an empty payload,
// meaning initial state) and then each event in order. It re-reads and
// re-verifies the file, so it sees exactly what a new process would. Payloads
// alias the mapping and are valid only during fn. An error from fn stops the
// replay and is returned wrapped. A damaged slot replays its good prefix
// (nothing, if the snapshot is lost) and then returns a *DamageError: the
// caller holds the state Repair needs, and cannot miss the damage.
func (sl *Slot) Replay(fn func(r Record) error) error {
	if sl.dead != nil {
		return sl.unusable("replay")
	}
	var seq uint64
	w, err := sl.walk(func(r Record) error {
		seq = r.Seq
		return fn(r)
	})
	if err != nil {
		return fmt.Errorf("shmlog: replay of slot %d (%q) at seq %d: %w", sl.idx, sl.id, seq, err)
	}
	if w.damage != nil && !w.damage.Recovered {
		return &DamageError{Damage: *w.damage}
	}
	return nil
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
	if sl.blocked() {
		return fmt.Errorf("shmlog: %s slot %d (%q): %w", op, sl.idx, sl.id, &DamageError{Damage: *sl.damage})
	}
	return fmt.Errorf("shmlog: %s slot %d (%q): %w", op, sl.idx, sl.id, ErrReadOnly)
}
