package shmlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// small is a geometry that keeps test files tiny and fills halves quickly.
var small = Options{Slots: 4, SlotSize: 16 << 10}

func openT(t testing.TB, path string, opt Options) *Store {
	t.Helper()
	s, err := Open(path, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tempPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "log.shm")
}

// rec is a Record whose payload was copied out of the mapping.
type rec struct {
	Kind    RecordKind
	Seq     uint64
	Payload string
}

func replayAll(t testing.TB, sl *Slot) []rec {
	t.Helper()
	var out []rec
	if err := sl.Replay(func(r Record) error {
		out = append(out, rec{r.Kind, r.Seq, string(r.Payload)})
		return nil
	}); err != nil {
		t.Fatalf("Replay(%s): %v", sl.ID(), err)
	}
	return out
}

func ev(seq uint64) string { return fmt.Sprintf("event-%d", seq) }

func appendN(t testing.TB, sl *Slot, n int) {
	t.Helper()
	for range n {
		seq := sl.Stats().LastSeq + 1
		got, err := sl.Append([]byte(ev(seq)))
		if err != nil {
			t.Fatalf("Append #%d to %s: %v", seq, sl.ID(), err)
		}
		if got != seq {
			t.Fatalf("Append returned seq %d, want %d", got, seq)
		}
	}
}

// checkLog asserts the replay is one snapshot (seq snapSeq, payload snap)
// followed by events snapSeq+1..lastSeq, each with payload ev(seq).
func checkLog(t testing.TB, sl *Slot, snap string, snapSeq, lastSeq uint64) {
	t.Helper()
	got := replayAll(t, sl)
	want := []rec{{KindSnapshot, snapSeq, snap}}
	for s := snapSeq + 1; s <= lastSeq; s++ {
		want = append(want, rec{KindEvent, s, ev(s)})
	}
	if !slices.Equal(got, want) {
		t.Fatalf("replay of %s:\n got %d records %v\nwant %d records %v", sl.ID(), len(got), head(got), len(want), head(want))
	}
}

func head(r []rec) []rec {
	if len(r) > 6 {
		return append(slices.Clip(r[:3]), r[len(r)-3:]...)
	}
	return r
}

func reopen(t testing.TB, s *Store, opt Options) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openT(t, s.Path(), opt)
}

func mustGet(t testing.TB, s *Store, id string) *Slot {
	t.Helper()
	sl, ok := s.Get(id)
	if !ok {
		t.Fatalf("Get(%q): not found; ids %v", id, s.IDs())
	}
	return sl
}

func TestRoundTrip(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, err := s.Create("room-1")
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, sl, "", 0, 0)
	appendN(t, sl, 50)
	// Payloads of every length, including empty, survive intact.
	for n := range 20 {
		if _, err := sl.Append(bytes.Repeat([]byte{byte(n)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	got := replayAll(t, sl)
	if len(got) != 1+50+20 {
		t.Fatalf("got %d records, want 71", len(got))
	}
	for n := range 20 {
		r := got[1+50+n]
		if r.Payload != string(bytes.Repeat([]byte{byte(n)}, n)) || r.Seq != uint64(51+n) {
			t.Fatalf("record %d: %+v", 51+n, r)
		}
	}

	s = reopen(t, s, small)
	sl = mustGet(t, s, "room-1")
	if st := sl.Stats(); st.LastSeq != 70 || st.Events != 70 {
		t.Fatalf("after reopen: %+v", st)
	}
	if seq, err := sl.Append([]byte(ev(71))); err != nil || seq != 71 {
		t.Fatalf("Append after reopen = %d, %v", seq, err)
	}
	if got2 := replayAll(t, sl); !slices.Equal(got2[:71], got) || got2[71] != (rec{KindEvent, 71, ev(71)}) {
		t.Fatalf("replay after reopen differs")
	}
}

func TestSnapshotTruncates(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("scene")
	appendN(t, sl, 40)
	g0 := sl.Stats().Generation
	if err := sl.Snapshot([]byte("state@40")); err != nil {
		t.Fatal(err)
	}
	st := sl.Stats()
	if st.ActiveHalf != 1 || st.Events != 0 || st.SnapshotSeq != 40 || st.Generation != g0+1 {
		t.Fatalf("stats after snapshot: %+v", st)
	}
	checkLog(t, sl, "state@40", 40, 40)
	appendN(t, sl, 5)
	checkLog(t, sl, "state@40", 40, 45)

	// Back into half A, which still holds 40 stale events of an older
	// generation: none of them may show up.
	if err := sl.Snapshot([]byte("state@45")); err != nil {
		t.Fatal(err)
	}
	checkLog(t, sl, "state@45", 45, 45)
	s = reopen(t, s, small)
	sl = mustGet(t, s, "scene")
	checkLog(t, sl, "state@45", 45, 45)
	appendN(t, sl, 3)
	checkLog(t, sl, "state@45", 45, 48)
}

func TestSequenceContinuity(t *testing.T) {
	path := tempPath(t)
	s := openT(t, path, small)
	sl, _ := s.Create("seq")
	var last uint64
	for round := range 30 {
		appendN(t, sl, 1+round%7)
		if round%3 == 0 {
			if err := sl.Snapshot(fmt.Appendf(nil, "state@%d", sl.Stats().LastSeq)); err != nil {
				t.Fatal(err)
			}
		}
		if round%5 == 0 {
			s = reopen(t, s, small)
			sl = mustGet(t, s, "seq")
		}
		got := replayAll(t, sl)
		for i := 1; i < len(got); i++ {
			if got[i].Seq != got[i-1].Seq+1 {
				t.Fatalf("round %d: seq %d follows %d", round, got[i].Seq, got[i-1].Seq)
			}
		}
		if end := got[len(got)-1].Seq; end <= last {
			t.Fatalf("round %d: last seq %d did not grow past %d", round, end, last)
		} else {
			last = end
		}
	}
}

func TestSlotFull(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("full")
	payload := bytes.Repeat([]byte("x"), 64)
	var n uint64
	for {
		seq, err := sl.Append(payload)
		if errors.Is(err, ErrSlotFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n = seq
	}
	if want := uint64((s.halfSize - recordSize(0)) / recordSize(64)); n != want {
		t.Fatalf("half took %d events, want %d", n, want)
	}
	if st := sl.Stats(); st.Free >= recordSize(64) || st.LastSeq != n {
		t.Fatalf("stats when full: %+v", st)
	}
	if got := replayAll(t, sl); len(got) != int(n)+1 {
		t.Fatalf("replay when full: %d records, want %d", len(got), n+1)
	}
	// The documented recovery: snapshot, then the retry succeeds.
	if err := sl.Snapshot([]byte("compacted")); err != nil {
		t.Fatal(err)
	}
	if seq, err := sl.Append(payload); err != nil || seq != n+1 {
		t.Fatalf("Append after snapshot = %d, %v", seq, err)
	}

	if _, err := sl.Append(make([]byte, s.halfSize)); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("huge event: %v, want ErrRecordTooLarge", err)
	}
	if err := sl.Snapshot(make([]byte, s.halfSize)); !errors.Is(err, ErrSnapshotTooLarge) {
		t.Fatalf("huge snapshot: %v, want ErrSnapshotTooLarge", err)
	}
	// A failed snapshot changes nothing.
	if got := replayAll(t, sl); len(got) != 2 || got[0].Payload != "compacted" {
		t.Fatalf("after failed snapshot: %v", got)
	}
}

func TestNoFreeSlot(t *testing.T) {
	opt := Options{Slots: 3, SlotSize: 16 << 10}
	s := openT(t, tempPath(t), opt)
	for i := range 3 {
		sl, err := s.Create(fmt.Sprintf("room-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, sl, 10+i)
	}
	if _, err := s.Create("one-too-many"); !errors.Is(err, ErrNoFreeSlot) {
		t.Fatalf("4th Create: %v, want ErrNoFreeSlot", err)
	}
	if _, err := s.Create("room-1"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate Create: %v, want ErrExists", err)
	}
	for _, bad := range []string{"", string(make([]byte, MaxIDLen+1)), "\xff\xfe"} {
		if _, err := s.Create(bad); !errors.Is(err, ErrBadID) {
			t.Fatalf("Create(%q): %v, want ErrBadID", bad, err)
		}
	}
	if s.FreeSlots() != 0 {
		t.Fatalf("FreeSlots = %d", s.FreeSlots())
	}
	check := func(s *Store) {
		if ids := s.IDs(); !slices.Equal(ids, []string{"room-0", "room-1", "room-2"}) {
			t.Fatalf("IDs = %v", ids)
		}
		for i := range 3 {
			checkLog(t, mustGet(t, s, fmt.Sprintf("room-%d", i)), "", 0, uint64(10+i))
		}
	}
	check(s)
	check(reopen(t, s, opt))
}

func TestFreeAndReuse(t *testing.T) {
	s := openT(t, tempPath(t), small)
	for _, id := range []string{"a", "b", "c"} {
		sl, _ := s.Create(id)
		appendN(t, sl, 20)
	}
	b := mustGet(t, s, "b")
	idx, _ := s.SlotIndex("b")
	free := s.FreeSlots()
	if err := s.Free("b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Free("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Free: %v, want ErrNotFound", err)
	}
	if _, ok := s.Get("b"); ok {
		t.Fatal("Get(b) after Free")
	}
	if _, err := b.Append([]byte("late")); !errors.Is(err, ErrFreed) {
		t.Fatalf("Append on freed slot: %v, want ErrFreed", err)
	}
	if s.FreeSlots() != free+1 {
		t.Fatalf("FreeSlots = %d, want %d", s.FreeSlots(), free+1)
	}
	d, err := s.Create("d")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SlotIndex("d"); got != idx {
		t.Fatalf("d got slot %d, want freed slot %d", got, idx)
	}
	// Nothing of b's log leaks into d.
	checkLog(t, d, "", 0, 0)
	appendN(t, d, 2)
	checkLog(t, d, "", 0, 2)
	checkLog(t, mustGet(t, s, "c"), "", 0, 20)
}

func TestReopenKeepsIDsAndFreeSlots(t *testing.T) {
	opt := Options{Slots: 5, SlotSize: 16 << 10}
	s := openT(t, tempPath(t), opt)
	for _, id := range []string{"zeta", "alpha", "mid", "gone"} {
		sl, _ := s.Create(id)
		appendN(t, sl, 3)
	}
	gone, _ := s.SlotIndex("gone")
	if err := s.Free("gone"); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, opt)
	if ids := s.IDs(); !slices.Equal(ids, []string{"alpha", "mid", "zeta"}) {
		t.Fatalf("IDs after reopen = %v", ids)
	}
	if _, ok := s.Get("gone"); ok {
		t.Fatal("freed slot came back after reopen")
	}
	if s.FreeSlots() != 2 {
		t.Fatalf("FreeSlots after reopen = %d, want 2", s.FreeSlots())
	}
	sl, err := s.Create("new")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SlotIndex("new"); got != gone {
		t.Fatalf("new room got slot %d, want the freed slot %d", got, gone)
	}
	checkLog(t, sl, "", 0, 0)
	s = reopen(t, s, opt)
	if ids := s.IDs(); !slices.Equal(ids, []string{"alpha", "mid", "new", "zeta"}) {
		t.Fatalf("IDs after second reopen = %v", ids)
	}
}

// tearAt writes a record at the slot's tail the way a process killed
// mid-Append would leave it, and returns the tail offset.
func tearAt(sl *Slot, payload []byte, cut func(rec []byte)) int {
	h := sl.halves[sl.active]
	off := sl.tail
	end := putRecord(h, off, KindEvent, sl.lastSeq+1, sl.gen, payload, nil)
	cut(h[off:end])
	return off
}

func TestTornRecordDropped(t *testing.T) {
	cases := map[string]func(r []byte){
		// Body written, commit word never stored.
		"no-commit": func(r []byte) { clear(r[rCommit : rCommit+8]) },
		// Header and commit written but only half the payload (the rest is
		// still what was there before: zeros here).
		"half-payload": func(r []byte) { clear(r[recHdr+(len(r)-recHdr)/2:]) },
		// Only the header made it.
		"header-only": func(r []byte) { clear(r[recHdr:]) },
		// Commit word stored with the wrong generation in the body.
		"wrong-gen": func(r []byte) { binary.LittleEndian.PutUint64(r[rGen:], 12345) },
		// A sequence gap: the record is intact but not the next one.
		"seq-gap": func(r []byte) {
			binary.LittleEndian.PutUint64(r[rSeq:], binary.LittleEndian.Uint64(r[rSeq:])+1)
			n := binary.LittleEndian.Uint32(r[rLen:])
			c := uint64(crcTable(r[rSeq:recHdr+int(n)]))<<32 | commitFlag | uint64(n)
			binary.LittleEndian.PutUint64(r[rCommit:], c)
		},
	}
	for name, cut := range cases {
		t.Run(name, func(t *testing.T) {
			s := openT(t, tempPath(t), small)
			sl, _ := s.Create("torn")
			appendN(t, sl, 7)
			tearAt(sl, bytes.Repeat([]byte("T"), 100), cut)
			checkLog(t, sl, "", 0, 7) // the live view already ignores it
			s = reopen(t, s, small)
			sl = mustGet(t, s, "torn")
			checkLog(t, sl, "", 0, 7)
			appendN(t, sl, 2) // appending resumes over the torn record
			checkLog(t, sl, "", 0, 9)
			s = reopen(t, s, small)
			checkLog(t, mustGet(t, s, "torn"), "", 0, 9)
		})
	}
}

func crcTable(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// A torn record's payload may contain bytes that look exactly like the next
// record (a player can choose chat text). After a shorter record is appended
// over the torn one, the zero word written before each commit must keep the
// forged record from being replayed.
func TestTornPayloadCannotForgeRecord(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("forge")
	appendN(t, sl, 3)
	next := []byte(ev(4))
	// Forge seq 5 where it would sit after a real seq 4.
	forged := make([]byte, 400)
	at := recordSize(len(next)) - recHdr
	if putRecord(forged, at, KindEvent, 5, sl.gen, []byte("forged"), nil) < 0 {
		t.Fatal("forge does not fit")
	}
	tearAt(sl, forged, func(r []byte) { clear(r[rCommit : rCommit+8]) })
	s = reopen(t, s, small)
	sl = mustGet(t, s, "forge")
	if _, err := sl.Append(next); err != nil {
		t.Fatal(err)
	}
	checkLog(t, sl, "", 0, 4)
	checkLog(t, mustGet(t, reopen(t, s, small), "forge"), "", 0, 4)
}

// Crash after the new snapshot was written into the inactive half but before
// the state word flipped: the old half and all its events stay in force.
func TestCrashBeforeSnapshotFlip(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("flip")
	appendN(t, sl, 12)
	if err := sl.Snapshot([]byte("state@12")); err != nil {
		t.Fatal(err)
	}
	appendN(t, sl, 8)
	// The first half of Snapshot, without its commit.
	next := 1 - sl.active
	if putRecord(sl.halves[next], 0, KindSnapshot, sl.lastSeq, sl.gen+1, []byte("state@20"), nil) < 0 {
		t.Fatal("snapshot does not fit")
	}
	s = reopen(t, s, small)
	sl = mustGet(t, s, "flip")
	checkLog(t, sl, "state@12", 12, 20)
	appendN(t, sl, 1)
	checkLog(t, sl, "state@12", 12, 21)
	// The real snapshot now goes into the same half and wins.
	if err := sl.Snapshot([]byte("state@21")); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, small)
	checkLog(t, mustGet(t, s, "flip"), "state@21", 21, 21)
}

// Crash between committing valid=0 and wiping the id in Free: the slot is
// free after reopen.
func TestCrashInFree(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("half-freed")
	appendN(t, sl, 4)
	store64(sl.hdr[sState:], sl.gen<<stateGenShift) // valid=0; id left in place
	s = reopen(t, s, small)
	if ids := s.IDs(); len(ids) != 0 {
		t.Fatalf("IDs = %v, want none", ids)
	}
	if s.FreeSlots() != small.Slots {
		t.Fatalf("FreeSlots = %d", s.FreeSlots())
	}
	sl, err := s.Create("half-freed")
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, sl, "", 0, 0)
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	s := openT(t, good, small)
	sl, _ := s.Create("r")
	appendN(t, sl, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(slices.Clone(img)) }
	reheader := func(b []byte) []byte { // recompute the header CRC after an edit
		binary.LittleEndian.PutUint32(b[hCRC:], crcTable(b[:hCRC]))
		return b
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, len(img))
	for i := range garbage {
		garbage[i] = byte(rnd.Uint32())
	}
	// A damaged slot header or snapshot does not fail Open: see damage_test.go.
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"garbage", garbage, ErrCorrupt},
		{"short", img[:100], ErrCorrupt},
		{"truncated", img[:len(img)/2], ErrCorrupt},
		{"extended", append(slices.Clone(img), make([]byte, 4096)...), ErrCorrupt},
		{"wrong-magic", mutate(func(b []byte) []byte { b[0] = 'X'; return reheader(b) }), ErrCorrupt},
		{"wrong-version", mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[hVersion:], 99)
			return reheader(b)
		}), ErrCorrupt},
		{"header-crc", mutate(func(b []byte) []byte { b[hSlots]++; return b }), ErrCorrupt},
		{"other-geometry", mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[hSlots:], 2)
			return reheader(b)
		}), ErrGeometry},
		{"crazy-geometry", mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[hSlotSize:], 1<<40)
			return reheader(b)
		}), ErrGeometry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name)
			if err := os.WriteFile(p, c.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if s, err := Open(p, small); !errors.Is(err, c.want) {
				if err == nil {
					s.Close()
				}
				t.Fatalf("Open: %v, want %v", err, c.want)
			} else {
				t.Logf("Open: %v", err)
			}
			if s, err := OpenReadOnly(p); err == nil {
				s.Close()
				t.Fatal("OpenReadOnly accepted it")
			}
		})
	}
	// Invalid options are refused before touching the file.
	for _, o := range []Options{{Slots: -1}, {SlotSize: 1000}, {SlotSize: MinSlotSize + 1}, {SlotSize: MaxSlotSize * 2}, {Slots: MaxSlots + 1}} {
		if _, err := Open(filepath.Join(dir, "opts"), o); !errors.Is(err, ErrGeometry) {
			t.Fatalf("Open with %+v: %v, want ErrGeometry", o, err)
		}
	}
	// An empty file (a creation killed before sizing) is initialised.
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(empty); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OpenReadOnly(empty): %v", err)
	}
	s = openT(t, empty, small)
	if s.FreeSlots() != small.Slots {
		t.Fatalf("FreeSlots = %d", s.FreeSlots())
	}
	if _, err := OpenReadOnly(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenReadOnly(missing): %v", err)
	}
}

func TestLockSameProcess(t *testing.T) {
	path := tempPath(t)
	s := openT(t, path, small)
	if _, err := Open(path, small); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if _, err := OpenReadOnly(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("OpenReadOnly while open: %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Create("x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Create after Close: %v", err)
	}
	s2 := openT(t, path, small)
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnly(t *testing.T) {
	path := tempPath(t)
	s := openT(t, path, small)
	sl, _ := s.Create("ro")
	appendN(t, sl, 6)
	sl.Snapshot([]byte("snap"))
	appendN(t, sl, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r1, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := OpenReadOnly(path) // readers share
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if !r1.ReadOnly() || r1.Options() != small {
		t.Fatalf("ReadOnly=%v Options=%+v", r1.ReadOnly(), r1.Options())
	}
	sl = mustGet(t, r1, "ro")
	checkLog(t, sl, "snap", 6, 8)
	if _, err := sl.Append(nil); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Append: %v", err)
	}
	if err := sl.Snapshot(nil); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Snapshot: %v", err)
	}
	if _, err := r1.Create("x"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Create: %v", err)
	}
	if err := r1.Free("ro"); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Free: %v", err)
	}
	if _, err := Open(path, small); !errors.Is(err, ErrLocked) {
		t.Fatalf("Open while read: %v, want ErrLocked", err)
	}
}

func TestReplayCallbackError(t *testing.T) {
	s := openT(t, tempPath(t), small)
	sl, _ := s.Create("cb")
	appendN(t, sl, 5)
	stop := errors.New("stop")
	n := 0
	err := sl.Replay(func(r Record) error {
		if n++; r.Seq == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 4 {
		t.Fatalf("Replay = %v after %d calls", err, n)
	}
}

// Scenes create and free rooms from their own goroutines; run with -race.
func TestConcurrentRooms(t *testing.T) {
	opt := Options{Slots: 8, SlotSize: 16 << 10}
	s := openT(t, tempPath(t), opt)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for round := range 20 {
				id := fmt.Sprintf("g%d-r%d", g, round)
				sl, err := s.Create(id)
				if err != nil {
					errs <- err
					return
				}
				for i := range 30 {
					if _, err := sl.Append(fmt.Appendf(nil, "%s/%d", id, i)); err != nil {
						errs <- err
						return
					}
				}
				n := 0
				if err := sl.Replay(func(Record) error { n++; return nil }); err != nil || n != 31 {
					errs <- fmt.Errorf("%s: replay %d records, %v", id, n, err)
					return
				}
				_ = s.IDs()
				if err := s.Free(id); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s.FreeSlots() != opt.Slots || len(s.IDs()) != 0 {
		t.Fatalf("FreeSlots=%d IDs=%v", s.FreeSlots(), s.IDs())
	}
}

// A standby's Open with WaitLock blocks while the writer holds the log and
// gets it, with the writer's records, the moment the writer closes.
func TestWaitLockTakesOverOnClose(t *testing.T) {
	path := tempPath(t)
	s := openT(t, path, small)
	sl, err := s.Create("forest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sl.Append([]byte("before the handover")); err != nil {
		t.Fatal(err)
	}
	type result struct {
		st  *Store
		at  time.Time
		err error
	}
	got := make(chan result, 1)
	go func() {
		opt := small
		opt.WaitLock = true
		st, err := Open(path, opt)
		got <- result{st, time.Now(), err}
	}()
	select {
	case r := <-got:
		t.Fatalf("Open with WaitLock returned while the writer held the log: %v", r.err)
	case <-time.After(100 * time.Millisecond):
	}
	closed := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("Open with WaitLock did not return after the writer closed")
	}
	if r.err != nil {
		t.Fatalf("Open with WaitLock: %v", r.err)
	}
	defer r.st.Close()
	if r.at.Before(closed) {
		t.Fatalf("took the log at %s, before the writer closed at %s", r.at, closed)
	}
	sl2, ok := r.st.Get("forest")
	if !ok {
		t.Fatal("the writer's slot is missing after the takeover")
	}
	var recs []string
	if err := sl2.Replay(func(rec Record) error {
		if rec.Kind != KindSnapshot {
			recs = append(recs, string(rec.Payload))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0] != "before the handover" {
		t.Fatalf("records after the takeover: %q", recs)
	}
}
