package shmlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fuzzGeo keeps fuzzed files small: 4096 + 2*4096 bytes.
var fuzzGeo = Options{Slots: 2, SlotSize: MinSlotSize}

// fuzzDir is a fresh directory on tmpfs when there is one: on a disk, the
// msync in Open and Close would cost milliseconds per fuzz input.
func fuzzDir(t testing.TB) string {
	if d, err := os.MkdirTemp(DefaultDir, "shmlog-fuzz-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return t.TempDir()
}

// Fuzz inputs for whole files come in two forms. Raw: the bytes are the
// file. Compact: the first compactHead bytes are the start of the header, the
// rest is the file from the first slot on, and the file is zero-extended to
// fuzzGeo's size. The compact form skips the header's 4 KiB of zero padding
// and the zero tail, so inputs stay a few hundred bytes and the fuzzer spends
// its time mutating instead of minimising.
const compactHead = 64

func compact(img []byte) []byte {
	out := append(slices.Clone(img[:compactHead]), img[headerSize:]...)
	for len(out) > compactHead && out[len(out)-1] == 0 {
		out = out[:len(out)-1]
	}
	return out
}

func expand(data []byte) []byte {
	head, rest := data[:min(len(data), compactHead)], data[min(len(data), compactHead):]
	file := make([]byte, max(fuzzGeo.fileSize(), int64(headerSize+len(rest))))
	copy(file, head)
	copy(file[headerSize:], rest)
	return file
}

// validImage builds a well-formed file with one room that has a snapshot and
// a few events, to seed the fuzzers with something worth mutating.
func validImage(tb testing.TB, snapshot bool) []byte {
	tb.Helper()
	path := filepath.Join(fuzzDir(tb), "seed")
	s, err := Open(path, fuzzGeo)
	if err != nil {
		tb.Fatal(err)
	}
	sl, _ := s.Create("seed")
	for i := range 5 {
		sl.Append(bytes.Repeat([]byte{byte('a' + i)}, 10*i))
	}
	if snapshot {
		sl.Snapshot([]byte("state"))
		sl.Append([]byte("after"))
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

// replayChecked replays every slot and checks what a replay may never
// return: anything but one snapshot followed by consecutive events.
func replayChecked(t *testing.T, s *Store) {
	for _, id := range s.IDs() {
		sl, _ := s.Get(id)
		var prev uint64
		n := 0
		err := sl.Replay(func(r Record) error {
			switch {
			case n == 0 && r.Kind != KindSnapshot:
				t.Fatalf("%s: first record is %v", id, r.Kind)
			case n > 0 && (r.Kind != KindEvent || r.Seq != prev+1):
				t.Fatalf("%s: record %d is %v seq %d after %d", id, n, r.Kind, r.Seq, prev)
			}
			prev = r.Seq
			n++
			return nil
		})
		if err == nil && n == 0 {
			t.Fatalf("%s: replay returned nothing and no error", id)
		}
	}
}

// FuzzOpen: arbitrary file contents never make Open, OpenReadOnly, Replay,
// Append or Snapshot panic, and whatever replays is well-formed.
func FuzzOpen(f *testing.F) {
	f.Add(false, compact(validImage(f, false)))
	f.Add(false, compact(validImage(f, true)))
	f.Add(true, validImage(f, false)[:headerSize+100])
	f.Add(true, []byte{})
	f.Add(true, []byte("RSPWNSHM"))
	f.Add(false, []byte{})
	dir := fuzzDir(f)
	f.Fuzz(func(t *testing.T, raw bool, data []byte) {
		path := filepath.Join(dir, "f")
		if !raw {
			data = expand(data)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path)
		if s, err := OpenReadOnly(path); err == nil {
			replayChecked(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		s, err := Open(path, fuzzGeo)
		if err != nil {
			return
		}
		defer s.Close()
		replayChecked(t, s)
		for _, id := range s.IDs() {
			sl, _ := s.Get(id)
			if _, err := sl.Append([]byte("x")); err == nil {
				if err := sl.Snapshot([]byte("y")); err != nil {
					t.Fatalf("%s: Snapshot after Append: %v", id, err)
				}
			}
		}
		s.Create("new")
		replayChecked(t, s)
	})
}

// FuzzReplay writes arbitrary bytes at an arbitrary offset of a slot's active
// half. Replay must not panic; every record lying wholly before the damage
// must still replay unchanged; and nothing may replay past the first record
// that is not intact (checked against an independent walk of the half).
func FuzzReplay(f *testing.F) {
	f.Add(uint16(0), []byte{})
	f.Add(uint16(40), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint16(100), bytes.Repeat([]byte{0}, 64))
	// A forged record (wrong CRC) right at the tail.
	forged := make([]byte, 64)
	binary.LittleEndian.PutUint64(forged, commitFlag|8)
	f.Add(uint16(0xffff), forged)
	dir := fuzzDir(f)
	f.Fuzz(func(t *testing.T, at uint16, junk []byte) {
		path := filepath.Join(dir, "f")
		s, err := Open(path, fuzzGeo)
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(path)
		defer s.Close()
		sl, _ := s.Create("room")
		var want []rec
		for i := range 12 {
			p := bytes.Repeat([]byte{byte(i)}, i*7)
			seq, err := sl.Append(p)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, rec{KindEvent, seq, string(p)})
		}
		h := sl.halves[sl.active]
		off := int(at) % len(h)
		if at == 0xffff {
			off = sl.tail
		}
		copy(h[off:], junk)

		var got []rec
		err = sl.Replay(func(r Record) error {
			got = append(got, rec{r.Kind, r.Seq, string(r.Payload)})
			return nil
		})
		if off < recordSize(0) && len(junk) > 0 {
			return // the snapshot itself may be gone; an error is fine, a panic is not
		}
		var de *DamageError
		if err != nil && !errors.As(err, &de) {
			t.Fatalf("Replay with intact snapshot: %v", err)
		}
		if de != nil {
			// Damage mid-log: the good prefix replayed, and what is at stake
			// starts right after it and ends at most at the last event.
			d := de.Damage
			if d.Kind != DamageRecord || d.GoodSeq != got[len(got)-1].Seq || d.FirstLost != d.GoodSeq+1 ||
				d.LastLost > 12 || d.Lost != int(d.LastLost-d.GoodSeq) {
				t.Fatalf("damage %+v after replaying up to seq %d", d, got[len(got)-1].Seq)
			}
			// Junk that ends before the last record leaves it to be found.
			if off+len(junk) <= lastStart(want) && d.LastLost != 12 {
				t.Fatalf("damage %+v: the intact last event (seq 12) was not counted", d)
			}
		}
		// Records wholly before the damage are all there.
		end := recordSize(0)
		for i, w := range want {
			end += recordSize(len(w.Payload))
			if end > off {
				break
			}
			if i+1 >= len(got) || got[i+1] != w {
				t.Fatalf("intact record %d lost or changed: got %v", w.Seq, got)
			}
		}
		// Independent walk: the replay stops where the first bad record is.
		pos, prev := 0, uint64(0)
		for i := range got {
			c := binary.LittleEndian.Uint64(h[pos:])
			n := int(uint32(c) &^ commitFlag)
			if c&commitFlag == 0 || crcTable(h[pos+rSeq:pos+recHdr+n]) != uint32(c>>32) ||
				binary.LittleEndian.Uint64(h[pos+rGen:]) != sl.gen ||
				(i > 0 && binary.LittleEndian.Uint64(h[pos+rSeq:]) != prev+1) {
				t.Fatalf("record %d at %d replayed but is not intact", i, pos)
			}
			prev = binary.LittleEndian.Uint64(h[pos+rSeq:])
			pos += recordSize(n)
		}
		if de != nil {
			// A new Open finds the same and refuses to write over it.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(path, fuzzGeo)
			if err != nil {
				t.Fatalf("reopen a damaged log: %v", err)
			}
			defer s2.Close()
			sl2, ok := s2.Get("room")
			if !ok {
				t.Fatal("room gone after reopen")
			}
			if d2, ok := sl2.Damage(); !ok || d2 != de.Damage {
				t.Fatalf("Open found %+v, Replay %+v", d2, de.Damage)
			}
			if _, err := sl2.Append([]byte("x")); !errors.Is(err, ErrDamaged) {
				t.Fatalf("Append to a damaged slot: %v", err)
			}
		}
	})
}

// lastStart is where the last of want's events begins in a half that holds
// an empty snapshot and then want.
func lastStart(want []rec) int {
	off := recordSize(0)
	for _, w := range want[:len(want)-1] {
		off += recordSize(len(w.Payload))
	}
	return off
}
