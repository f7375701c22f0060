package shmlog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The machine-crash model (docs/shmlog.md, "Durability"). On /dev/shm a
// machine crash loses the whole file: what survives is what the data server
// holds. With shm_dir on a disk, what survives is what the last Flush
// (msync) made durable plus any subset of the pages written since, which
// the kernel may have written back on its own in any order, each page whole,
// not at all, or torn at a 512-byte sector. crashImage builds that disk
// from the image at the last Flush and the file now.
func crashImage(r *rand.Rand, synced, now []byte) []byte {
	const page, sector = 4096, 512
	img := bytes.Clone(synced)
	for p := 0; p < len(now); p += page {
		cur, old := now[p:p+page], img[p:p+page]
		if bytes.Equal(cur, old) {
			continue
		}
		switch r.IntN(3) {
		case 0: // never written back
		case 1: // written back whole
			copy(old, cur)
		default: // torn: some sectors new, some old
			for s := 0; s < page; s += sector {
				if r.IntN(2) == 0 {
					copy(old[s:s+sector], cur[s:s+sector])
				}
			}
		}
	}
	return img
}

func crashPayload(id string, seq uint64) string { return id + "/" + ev(seq) }

// TestMachineCrashLosesOnlyUnsynced runs a log (rooms appending, snapshots
// when a half fills or at random, a Flush now and then) and at a random
// step simulates a machine crash with the log on a disk (crashImage). The
// store opened from that image must open, hold every room, and replay for
// each a gap-free prefix of what was appended, with the right payloads,
// reaching at least what the last Flush covered; anything else it finds is
// reported as damage (never silently), and damage may cost only events
// appended after that Flush. A process crash (kill -9) keeps the page cache
// and loses nothing committed; the crash-point tests show that.
func TestMachineCrashLosesOnlyUnsynced(t *testing.T) {
	opt := Options{Slots: 4, SlotSize: 16 << 10} // a half holds ~250 events: snapshots are frequent
	ids := []string{"town", "forest", "room-1"}
	for seed := range uint64(40) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 0x706f776572)) // "power"
			path := filepath.Join(t.TempDir(), "log.shm")
			s := openT(t, path, opt)
			slots := map[string]*Slot{}
			for _, id := range ids {
				sl, err := s.Create(id)
				if err != nil {
					t.Fatal(err)
				}
				slots[id] = sl
			}
			appended := map[string]uint64{}
			synced, flushedAt := map[string]uint64{}, []byte(nil)
			flush := func() {
				if err := s.Flush(); err != nil {
					t.Fatal(err)
				}
				raw, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				flushedAt = raw
				for id, n := range appended {
					synced[id] = n
				}
			}
			snapshot := func(id string) {
				if err := slots[id].Snapshot([]byte("snap-" + strconv.FormatUint(appended[id], 10))); err != nil {
					t.Fatal(err)
				}
			}
			flush() // the rooms exist on disk
			steps := 200 + r.IntN(3000)
			for range steps {
				id := ids[r.IntN(len(ids))]
				switch n := r.IntN(100); {
				case n < 3:
					flush()
				case n < 5:
					snapshot(id)
				default:
					seq := appended[id] + 1
					p := []byte(crashPayload(id, seq))
					if _, err := slots[id].Append(p); errors.Is(err, ErrSlotFull) {
						snapshot(id)
						_, err = slots[id].Append(p)
						if err != nil {
							t.Fatal(err)
						}
					} else if err != nil {
						t.Fatal(err)
					}
					appended[id] = seq
				}
			}
			now, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			crashed := filepath.Join(t.TempDir(), "crashed.shm")
			if err := os.WriteFile(crashed, crashImage(r, flushedAt, now), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Open(crashed, opt)
			if err != nil {
				t.Fatalf("open after the machine crash: %v", err)
			}
			defer c.Close()
			for _, id := range ids {
				sl, ok := c.Get(id)
				if !ok {
					t.Fatalf("room %s is gone after the machine crash (ids %v, damaged %v)", id, c.IDs(), c.Damaged())
				}
				last, err := replayPrefix(sl, id)
				var de *DamageError
				switch {
				case errors.As(err, &de):
					if de.Damage.GoodSeq != last {
						t.Fatalf("room %s: damage says good up to %d, replay reached %d", id, de.Damage.GoodSeq, last)
					}
					t.Logf("room %s: damage reported (%s): replays %d of %d events, %d flushed", id, de.Damage.Kind, last, appended[id], synced[id])
				case err != nil:
					t.Fatalf("room %s: %v", id, err)
				}
				if d, ok := sl.Damage(); ok && err == nil && !d.Recovered {
					t.Fatalf("room %s: damage %v but the replay returned none", id, d)
				}
				t.Logf("room %s: replays %d of %d events, %d flushed", id, last, appended[id], synced[id])
				if last < synced[id] || last > appended[id] {
					t.Fatalf("room %s replays up to event %d: %d were appended, %d of them flushed before the crash (seed %d, %d steps)",
						id, last, appended[id], synced[id], seed, steps)
				}
			}
		})
	}
}

// replayPrefix replays sl and checks it is the snapshot of some event
// seq S ("snap-S", or the empty initial snapshot at 0) and then events
// S+1, S+2, ... each with its own payload. It returns the last seq.
func replayPrefix(sl *Slot, id string) (uint64, error) {
	var last uint64
	first := true
	err := sl.Replay(func(r Record) error {
		if first {
			first = false
			if r.Kind != KindSnapshot {
				return fmt.Errorf("room %s: first record is %v seq %d, not a snapshot", id, r.Kind, r.Seq)
			}
			if want := "snap-" + strconv.FormatUint(r.Seq, 10); string(r.Payload) != want && (r.Seq != 0 || len(r.Payload) != 0) {
				return fmt.Errorf("room %s: snapshot seq %d holds %q", id, r.Seq, r.Payload)
			}
			last = r.Seq
			return nil
		}
		if r.Kind != KindEvent || r.Seq != last+1 {
			return fmt.Errorf("room %s: after seq %d comes %v seq %d", id, last, r.Kind, r.Seq)
		}
		if want := crashPayload(id, r.Seq); string(r.Payload) != want {
			return fmt.Errorf("room %s: event %d holds %q, want %q", id, r.Seq, trim(r.Payload), want)
		}
		last = r.Seq
		return nil
	})
	return last, err
}

func trim(b []byte) string {
	s := string(b)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
