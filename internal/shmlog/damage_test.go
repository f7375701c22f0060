package shmlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// recordAt returns the offset of the record with seq in sl's active half
// (the snapshot record is at 0).
func recordAt(t *testing.T, sl *Slot, seq uint64) int {
	t.Helper()
	h := sl.halves[sl.active]
	r, off := readRecord(h, 0, sl.gen)
	if r.Seq == seq {
		return 0
	}
	for off > 0 {
		at := off
		r, off = readRecord(h, at, sl.gen)
		if off > 0 && r.Seq == seq {
			return at
		}
	}
	t.Fatalf("no record with seq %d in %s", seq, sl.ID())
	return -1
}

// damaged reopens s and returns the slot id with the damage Open found.
func damaged(t *testing.T, s *Store, id string) (*Store, *Slot, Damage) {
	t.Helper()
	s = reopen(t, s, small)
	sl := mustGet(t, s, id)
	d, ok := sl.Damage()
	if !ok {
		t.Fatalf("%s: Open found no damage", id)
	}
	t.Logf("%s", d)
	return s, sl, d
}

// goodPrefix checks that Replay gives snapshot + events up to good and then
// returns the damage as a *DamageError.
func goodPrefix(t *testing.T, sl *Slot, snap string, snapSeq, good uint64) {
	t.Helper()
	var got []rec
	err := sl.Replay(func(r Record) error {
		got = append(got, rec{r.Kind, r.Seq, string(r.Payload)})
		return nil
	})
	var de *DamageError
	if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) {
		t.Fatalf("Replay of a damaged slot: %v, want a *DamageError", err)
	}
	want := []rec{{KindSnapshot, snapSeq, snap}}
	for s := snapSeq + 1; s <= good; s++ {
		want = append(want, rec{KindEvent, s, ev(s)})
	}
	if len(got) != len(want) || got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
		t.Fatalf("good prefix: got %v, want %v", head(got), head(want))
	}
}

// Each way a record mid-log can be damaged: the scene is told exactly
// where, up to which seq it replays, and which committed seqs are lost; the
// slot refuses appends and snapshots, keeps the evidence across reopens,
// and Repair takes it back into use with seqs continuing after the prefix.
func TestRecordDamageMidLog(t *testing.T) {
	cases := map[string]func(r []byte){
		"flipped-payload-byte": func(r []byte) { r[recHdr+2] ^= 0x40 },
		"flipped-seq":          func(r []byte) { r[rSeq] ^= 1 },
		"flipped-length":       func(r []byte) { r[rCommit] ^= 0x10 },
		"flipped-generation":   func(r []byte) { r[rGen] ^= 4 },
		"commit-word-wiped":    func(r []byte) { clear(r[rCommit : rCommit+8]) },
		"garbage-header":       func(r []byte) { copy(r, "\xde\xad\xbe\xef\xde\xad\xbe\xef\x01\x02\x03") },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			s := openT(t, tempPath(t), small)
			sl, _ := s.Create("forest")
			appendN(t, sl, 10)
			if err := sl.Snapshot([]byte("state@10")); err != nil {
				t.Fatal(err)
			}
			appendN(t, sl, 30) // 11..40
			at := recordAt(t, sl, 25)
			damage(sl.halves[sl.active][at:])

			s, sl, d := damaged(t, s, "forest")
			if d.Kind != DamageRecord || d.GoodSeq != 24 || d.FirstLost != 25 || d.LastLost != 40 || d.Lost != 16 ||
				d.Offset != at || d.Half != "B" || d.ID != "forest" || d.Recovered {
				t.Fatalf("damage = %+v, want record at B+%d, seqs 25..40 (16) lost", d, at)
			}
			if want := s.fileOffset(sl.idx, 1, at); d.FileOffset != want {
				t.Fatalf("file offset %d, want %d", d.FileOffset, want)
			}
			goodPrefix(t, sl, "state@10", 10, 24)
			if _, err := sl.Append([]byte("x")); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Append: %v, want ErrDamaged", err)
			}
			if err := sl.Snapshot([]byte("x")); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Snapshot: %v, want ErrDamaged", err)
			}
			// Nothing was written over the damage: a second Open agrees.
			s, sl, d2 := damaged(t, s, "forest")
			if d2 != d {
				t.Fatalf("second Open found %+v, first %+v", d2, d)
			}

			got, err := sl.Repair([]byte("state@24"))
			if err != nil || got != d {
				t.Fatalf("Repair = %+v, %v", got, err)
			}
			if _, err := sl.Repair(nil); !errors.Is(err, ErrNotDamaged) {
				t.Fatalf("second Repair: %v, want ErrNotDamaged", err)
			}
			appendN(t, sl, 5)
			checkLog(t, sl, "state@24", 24, 29)
			s = reopen(t, s, small)
			sl = mustGet(t, s, "forest")
			if d, ok := sl.Damage(); ok {
				t.Fatalf("damage after Repair: %+v", d)
			}
			checkLog(t, sl, "state@24", 24, 29)
		})
	}
}

// A bad record at the very end of the log with nothing committed after it
// is what a torn write looks like: dropped, reported by Torn, appending
// resumes over it.
func TestBadLastRecordIsATornTail(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("r")
	appendN(t, sl, 8)
	at := recordAt(t, sl, 8)
	sl.halves[sl.active][at+recHdr+1] ^= 1
	s = reopen(t, s, small)
	sl = mustGet(t, s, "r")
	if d, ok := sl.Damage(); ok {
		t.Fatalf("damage %+v, want a torn tail", d)
	}
	if off, ok := sl.Torn(); !ok || off != at {
		t.Fatalf("Torn = %d, %v; want %d", off, ok, at)
	}
	checkLog(t, sl, "", 0, 7)
	appendN(t, sl, 3)
	checkLog(t, sl, "", 0, 10)
	if _, ok := mustGet(t, reopen(t, s, small), "r").Torn(); ok {
		t.Fatal("torn tail reported again after appending over it")
	}
}

// The format keeps the previous state: the inactive half holds the
// previous snapshot and every event folded into the current one. A damaged
// current snapshot is bypassed with it, and nothing is lost.
func TestDamagedSnapshotFallsBackToThePreviousHalf(t *testing.T) {
	for _, after := range []int{0, 6} { // events appended after the damaged snapshot
		s := openT(t, tempPath(t), small)
		sl, _ := s.Create("town")
		appendN(t, sl, 5)
		if err := sl.Snapshot([]byte("state@5")); err != nil {
			t.Fatal(err)
		}
		appendN(t, sl, 7) // 6..12, in the half that becomes the fallback
		if err := sl.Snapshot([]byte("state@12")); err != nil {
			t.Fatal(err)
		}
		appendN(t, sl, after)
		sl.halves[sl.active][recHdr+3] ^= 0x80 // the snapshot's payload

		s, sl, d := damaged(t, s, "town")
		if d.Kind != DamageSnapshot || !d.Recovered || d.GoodSeq != 12 {
			t.Fatalf("after=%d: damage %+v, want a recovered snapshot at seq 12", after, d)
		}
		var got []rec
		if err := sl.Replay(func(r Record) error {
			got = append(got, rec{r.Kind, r.Seq, string(r.Payload)})
			return nil
		}); err != nil {
			t.Fatalf("Replay: %v", err)
		}
		if len(got) != 1+7+after || got[0] != (rec{KindSnapshot, 5, "state@5"}) || got[len(got)-1].Seq != uint64(12+after) {
			t.Fatalf("after=%d: replay %v", after, head(got))
		}
		// The next append first needs a fresh snapshot, which replaces the
		// damaged one; the caller does that on ErrSlotFull.
		if _, err := sl.Append([]byte(ev(uint64(13 + after)))); !errors.Is(err, ErrSlotFull) {
			t.Fatalf("Append after a bypassed snapshot: %v, want ErrSlotFull", err)
		}
		if err := sl.Snapshot([]byte("fresh")); err != nil {
			t.Fatal(err)
		}
		appendN(t, sl, 1)
		s = reopen(t, s, small)
		sl = mustGet(t, s, "town")
		if d, ok := sl.Damage(); ok {
			t.Fatalf("damage after the fresh snapshot: %+v", d)
		}
		checkLog(t, sl, "fresh", uint64(12+after), uint64(13+after))
	}
}

// Without a usable previous half (a slot that never snapshotted, a
// previous half that does not chain, a previous room's leftovers) a damaged
// snapshot stops the slot: nothing replays, every event in the half is at
// stake, and Repair starts it again from the state the caller gives.
func TestDamagedSnapshotWithoutFallback(t *testing.T) {
	t.Run("never-snapshotted", func(t *testing.T) {
		s := openT(t, tempPath(t), small)
		sl, _ := s.Create("r")
		appendN(t, sl, 9)
		sl.halves[sl.active][rSeq] ^= 1
		s, sl, d := damaged(t, s, "r")
		if d.Kind != DamageSnapshot || d.Recovered || d.Lost != 9 || d.FirstLost != 1 || d.LastLost != 9 || d.Offset != 0 {
			t.Fatalf("damage %+v", d)
		}
		if err := sl.Replay(func(Record) error { t.Fatal("replayed a record"); return nil }); !errors.Is(err, ErrDamaged) {
			t.Fatalf("Replay: %v", err)
		}
		if _, err := sl.Repair(nil); err != nil {
			t.Fatal(err)
		}
		if seq, err := sl.Append([]byte("x")); err != nil || seq != 10 {
			t.Fatalf("Append after Repair = %d, %v; want seq 10 (after everything seen)", seq, err)
		}
	})
	t.Run("previous-half-does-not-chain", func(t *testing.T) {
		s := openT(t, tempPath(t), small)
		sl, _ := s.Create("r")
		appendN(t, sl, 3)
		if err := sl.Snapshot([]byte("s3")); err != nil {
			t.Fatal(err)
		}
		appendN(t, sl, 3)
		if err := sl.Snapshot([]byte("s6")); err != nil {
			t.Fatal(err)
		}
		appendN(t, sl, 2)
		// Lose event 6 from the previous half: it ends at 5, the damaged
		// snapshot says 6.
		fb := sl.halves[1-sl.active]
		fb[recordAt(t, &Slot{store: s, halves: [2][]byte{fb, fb}, gen: sl.gen - 1}, 6)] = 0
		sl.halves[sl.active][recHdr] ^= 1
		_, _, d := damaged(t, s, "r")
		if d.Kind != DamageSnapshot || d.Recovered || d.Lost != 2 {
			t.Fatalf("damage %+v", d)
		}
	})
	t.Run("previous-room-in-the-slot", func(t *testing.T) {
		s := openT(t, tempPath(t), small)
		sl, _ := s.Create("old")
		if err := sl.Snapshot([]byte("old room")); err != nil { // into half B
			t.Fatal(err)
		}
		if err := s.Free("old"); err != nil {
			t.Fatal(err)
		}
		sl, _ = s.Create("new") // same slot, half A
		sl.halves[0][recHdr-1] ^= 1
		_, _, d := damaged(t, s, "new")
		if d.Kind != DamageSnapshot || d.Recovered {
			t.Fatalf("damage %+v: another room's snapshot must never stand in", d)
		}
	})
}

// Garbage in a slot header: the slot is quarantined, the others open and
// work, and Reclaim frees it for reuse with nothing of it leaking.
func TestDamagedSlotHeaders(t *testing.T) {
	opt := Options{Slots: 6, SlotSize: 16 << 10}
	s := openT(t, tempPath(t), opt)
	for _, id := range []string{"town", "forest", "dup-a", "dup-b"} {
		sl, _ := s.Create(id)
		appendN(t, sl, 4)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	garbage := func(idx int) {
		hdr := s.slotHeader(idx)
		for i := range hdr {
			hdr[i] = byte(rnd.Uint32())
		}
		hdr[sState] |= stateValid
	}
	garbage(4) // an unused slot
	garbage(5) // another
	// dup-b's header claims dup-a's id (with a valid id checksum).
	putID(s.slotHeader(3), "dup-a")
	s = reopen(t, s, opt)

	if ids := s.IDs(); len(ids) != 2 || ids[0] != "forest" || ids[1] != "town" {
		t.Fatalf("IDs = %v, want [forest town]", ids)
	}
	ds := s.Damaged()
	if len(ds) != 4 || ds[0].Slot != 2 || ds[1].Slot != 3 || ds[2].Slot != 4 || ds[3].Slot != 5 {
		t.Fatalf("Damaged = %+v, want slots 2..5", ds)
	}
	for _, d := range ds {
		if d.Kind != DamageHeader || d.ID != "" || d.FileOffset != int64(headerSize)+int64(d.Slot)*int64(opt.SlotSize) {
			t.Fatalf("damage %+v", d)
		}
		t.Logf("%s", d)
	}
	if s.FreeSlots() != 0 {
		t.Fatalf("FreeSlots = %d: a quarantined slot was handed out", s.FreeSlots())
	}
	checkLog(t, mustGet(t, s, "town"), "", 0, 4)
	appendN(t, mustGet(t, s, "forest"), 1)

	for _, d := range ds {
		if err := s.Reclaim(d.Slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Reclaim(4); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Reclaim: %v", err)
	}
	if s.FreeSlots() != 4 || len(s.Damaged()) != 0 {
		t.Fatalf("after Reclaim: %d free, %d damaged", s.FreeSlots(), len(s.Damaged()))
	}
	s = reopen(t, s, opt)
	if s.FreeSlots() != 4 || len(s.Damaged()) != 0 {
		t.Fatalf("after reopen: %d free, %d damaged", s.FreeSlots(), len(s.Damaged()))
	}
	for range 4 {
		sl, err := s.Create("fresh-" + string(rune('a'+s.FreeSlots())))
		if err != nil {
			t.Fatal(err)
		}
		checkLog(t, sl, "", 0, 0)
	}
	checkLog(t, mustGet(t, s, "forest"), "", 0, 5)
}

// A damaged state word in a used slot (its generation no longer matches
// its records) stops that slot only.
func TestDamagedStateWord(t *testing.T) {
	s := openT(t, tempPath(t), small)
	a, _ := s.Create("a")
	appendN(t, a, 3)
	b, _ := s.Create("b")
	appendN(t, b, 3)
	st := binary.LittleEndian.Uint64(a.hdr[sState:])
	binary.LittleEndian.PutUint64(a.hdr[sState:], st^(1<<40))
	s, _, d := damaged(t, s, "a")
	if d.Kind != DamageSnapshot || d.Recovered {
		t.Fatalf("damage %+v", d)
	}
	checkLog(t, mustGet(t, s, "b"), "", 0, 3)
}

// A slot whose valid flag alone was cleared (or a room freed by a crash
// between clearing it and wiping the id) is found by Stray and taken back
// by Adopt with its log intact.
func TestStrayAndAdopt(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("town")
	appendN(t, sl, 5)
	if err := sl.Snapshot([]byte("s5")); err != nil {
		t.Fatal(err)
	}
	appendN(t, sl, 3)
	st := binary.LittleEndian.Uint64(sl.hdr[sState:])
	store64(sl.hdr[sState:], st&^stateValid)
	s = reopen(t, s, small)
	if _, ok := s.Get("town"); ok {
		t.Fatal("a slot with its valid flag clear is indexed")
	}
	if _, ok := s.Stray("nobody"); ok {
		t.Fatal("Stray found an id nobody has")
	}
	idx, ok := s.Stray("town")
	if !ok || idx != sl.idx {
		t.Fatalf("Stray = %d, %v", idx, ok)
	}
	free := s.FreeSlots()
	sl, err := s.Adopt(idx)
	if err != nil {
		t.Fatal(err)
	}
	if s.FreeSlots() != free-1 {
		t.Fatalf("FreeSlots = %d after Adopt, want %d", s.FreeSlots(), free-1)
	}
	checkLog(t, sl, "s5", 5, 8)
	if _, err := s.Adopt(idx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Adopt: %v", err)
	}
	appendN(t, sl, 1)
	checkLog(t, mustGet(t, reopen(t, s, small), "town"), "s5", 5, 9)
}

// Create takes a free slot whose header still carries an id only when no
// other is free: it may be a scene's log waiting for Adopt.
func TestCreateSparesStraySlots(t *testing.T) {
	s := openT(t, tempPath(t), small)
	a, _ := s.Create("a") // slot 0
	appendN(t, a, 2)
	store64(a.hdr[sState:], binary.LittleEndian.Uint64(a.hdr[sState:])&^stateValid)
	s = reopen(t, s, small)
	b, err := s.Create("b")
	if err != nil {
		t.Fatal(err)
	}
	if b.Index() == 0 {
		t.Fatal("Create took the stray slot while others were free")
	}
	if idx, ok := s.Stray("a"); !ok || idx != 0 {
		t.Fatalf("Stray(a) = %d, %v after a Create", idx, ok)
	}
	for range small.Slots - 2 {
		if _, err := s.Create(fmt.Sprint("x", s.FreeSlots())); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := s.Create("last"); err != nil || c.Index() != 0 {
		t.Fatalf("the last free slot: %v, %v", c, err)
	}
}

// The first event after a snapshot must be the snapshot's seq + 1 like any
// other: an intact record with another seq there is damage too.
func TestFirstEventAfterSnapshotIsChecked(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("r")
	appendN(t, sl, 4)
	if err := sl.Snapshot([]byte("s4")); err != nil {
		t.Fatal(err)
	}
	appendN(t, sl, 6) // 5..10
	r := sl.halves[sl.active][recordAt(t, sl, 5):]
	binary.LittleEndian.PutUint64(r[rSeq:], 99)
	n := binary.LittleEndian.Uint32(r[rLen:])
	binary.LittleEndian.PutUint64(r[rCommit:], uint64(crcTable(r[rSeq:recHdr+int(n)]))<<32|commitFlag|uint64(n))
	_, sl, d := damaged(t, s, "r")
	if d.Kind != DamageRecord || d.GoodSeq != 4 || d.FirstLost != 5 || d.LastLost != 10 {
		t.Fatalf("damage %+v", d)
	}
	goodPrefix(t, sl, "s4", 4, 4)
}
