package shmlog

import (
	"errors"
	"fmt"
	"hash/crc32"
)

// ErrDamaged: the slot's log is damaged mid-log or its snapshot is gone, so
// it cannot take appends or snapshots until Repair. It is always returned as
// (or wrapped in) a *DamageError that says what was found.
var ErrDamaged = errors.New("shmlog: slot is damaged")

// DamageKind says which part of a slot is damaged.
type DamageKind string

const (
	// DamageRecord: an event record does not verify and committed events
	// follow it, so those acknowledged events cannot be replayed.
	DamageRecord DamageKind = "record"
	// DamageSnapshot: the active half's snapshot record does not verify and
	// the previous half cannot stand in for it.
	DamageSnapshot DamageKind = "snapshot"
	// DamageHeader: a slot header whose id cannot be read. Nobody can tell
	// which scene or room it belonged to, so it is quarantined.
	DamageHeader DamageKind = "header"
)

// Damage describes what a slot's validation at Open found. Offsets are
// byte offsets: Offset inside the half, FileOffset in the file (for xxd).
type Damage struct {
	Kind       DamageKind `json:"kind"`
	Slot       int        `json:"slot"`
	ID         string     `json:"id,omitempty"`   // empty for DamageHeader
	Half       string     `json:"half,omitempty"` // "A" or "B"
	Offset     int        `json:"offset"`
	FileOffset int64      `json:"file_offset"`
	// GoodSeq is the last event that replays (the good prefix ends there).
	GoodSeq uint64 `json:"good_seq"`
	// FirstLost..LastLost are the sequence numbers that cannot be replayed:
	// the damaged record and the committed ones after it. Lost counts them;
	// zero when no committed event could be found after the damage.
	FirstLost uint64 `json:"first_lost,omitempty"`
	LastLost  uint64 `json:"last_lost,omitempty"`
	Lost      int    `json:"lost"`
	// Recovered: a damaged snapshot was bypassed by replaying the previous
	// half (its snapshot and events) instead; nothing was lost and the slot
	// takes a fresh snapshot at the next append.
	Recovered bool   `json:"recovered,omitempty"`
	Reason    string `json:"reason"`
}

func (d Damage) String() string {
	where := fmt.Sprintf("slot %d", d.Slot)
	if d.ID != "" {
		where = fmt.Sprintf("slot %d (%q)", d.Slot, d.ID)
	}
	if d.Half != "" {
		where += fmt.Sprintf(" half %s offset %d (file offset %d)", d.Half, d.Offset, d.FileOffset)
	} else {
		where += fmt.Sprintf(" (file offset %d)", d.FileOffset)
	}
	s := fmt.Sprintf("%s damage at %s: %s", d.Kind, where, d.Reason)
	switch {
	case d.Recovered:
		s += "; recovered from the previous snapshot, nothing lost"
	case d.Lost > 0:
		s += fmt.Sprintf("; good prefix ends at seq %d; %d committed events (seq %d..%d) cannot be replayed",
			d.GoodSeq, d.Lost, d.FirstLost, d.LastLost)
	case d.Kind != DamageHeader:
		s += fmt.Sprintf("; good prefix ends at seq %d; no committed event found after it", d.GoodSeq)
	}
	return s
}

// DamageError is the error for a damaged slot; it unwraps to ErrDamaged.
type DamageError struct{ Damage Damage }

func (e *DamageError) Error() string { return "shmlog: " + e.Damage.String() }
func (e *DamageError) Unwrap() error { return ErrDamaged }

func halfName(h int) string { return string(rune('A' + h)) }

// fileOffset is where offset off of half h of slot idx lies in the file.
func (s *Store) fileOffset(idx, h, off int) int64 {
	return int64(headerSize) + int64(idx)*int64(s.geo.SlotSize) + slotHeaderSize + int64(h)*int64(s.halfSize) + int64(off)
}

// findEvents looks for committed events of generation gen in half h after
// offset off (a damaged record, or 0 for a damaged snapshot): it scans every
// 8-byte position, follows each chain it finds, and returns the lowest and
// highest seq and how many records it found. With bounded, a seq further
// from after than the records that could fit in between is not believed (a
// forged record inside a payload could claim any seq).
func findEvents(h []byte, off int, gen, after uint64, bounded bool) (first, last uint64, n int) {
	for p := align8(off + 8); p+recHdr <= len(h); p += 8 {
		r, end := readRecord(h, p, gen)
		if end < 0 || r.Kind != KindEvent || r.Seq <= after ||
			bounded && r.Seq-after > uint64((p-off)/recHdr+1) {
			continue
		}
		// Follow the chain: its records are believed as a run.
		lo, seq, k := r.Seq, r.Seq, 1
		for {
			nx, e := readRecord(h, end, gen)
			if e < 0 || nx.Kind != KindEvent || nx.Seq != seq+1 {
				break
			}
			seq, end, k = nx.Seq, e, k+1
		}
		if n == 0 || lo < first {
			first = lo
		}
		last, n = max(last, seq), n+k
		p = end - 8 // the loop adds 8
	}
	return first, last, n
}

// describe says why the record at off does not read as the event after
// last, for the operator.
func describe(h []byte, off int, gen, last uint64) string {
	if off+recHdr > len(h) {
		return "record header runs past the half"
	}
	c := le.Uint64(h[off:])
	n := int(uint32(c) &^ commitFlag)
	r := h[off:]
	switch {
	case c == 0:
		return "commit word wiped"
	case c&commitFlag == 0:
		return fmt.Sprintf("commit word %#016x has no commit flag", c)
	case n > len(h)-off-recHdr:
		return fmt.Sprintf("length %d runs past the half", n)
	case le.Uint32(r[rLen:]) != uint32(n):
		return fmt.Sprintf("the two copies of the length differ (%d, %d)", n, le.Uint32(r[rLen:]))
	case le.Uint64(r[rGen:]) != gen:
		return fmt.Sprintf("generation %d, the half's is %d", le.Uint64(r[rGen:]), gen)
	case crc32.Update(0, castagnoli, r[rSeq:recHdr+n]) != uint32(c>>32):
		return "checksum mismatch"
	case RecordKind(le.Uint32(r[rKind:])) != KindEvent:
		return fmt.Sprintf("kind %d where an event belongs", le.Uint32(r[rKind:]))
	default:
		return fmt.Sprintf("seq %d where %d belongs", le.Uint64(r[rSeq:]), last+1)
	}
}

// zeroedCommit tells the one kind of damage that leaves a zero word where a
// record starts (which otherwise means "end of log" or "torn record") from
// those: a record whose commit word alone was wiped has the next seq and the
// half's generation in its body, and a committed record with the seq after
// it right behind it. A torn record is never followed by a committed one,
// because every commit comes after a zero word is written behind it.
func zeroedCommit(h []byte, off int, gen, last uint64) bool {
	if off < 0 || off+recHdr > len(h) {
		return false
	}
	r := h[off:]
	n := int(le.Uint32(r[rLen:]))
	if le.Uint64(r[rGen:]) != gen || RecordKind(le.Uint32(r[rKind:])) != KindEvent ||
		le.Uint64(r[rSeq:]) != last+1 || n > len(h)-off-recHdr {
		return false
	}
	next, end := readRecord(h, off+recordSize(n), gen)
	return end > 0 && next.Kind == KindEvent && next.Seq == last+2
}
