package journal

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestMachineCrashLosesOnlyUnacknowledged simulates a machine crash (power
// loss) rather than a process crash: at the Nth fsync of a group commit,
// before or after it, the disk is copied as the crash would leave it, every
// file cut to what was fsynced (a never-synced segment is lost whole), with
// a torn fragment of the unsynced bytes behind. The journal reopened from
// that copy must replay every record that was acknowledged before the
// crash, and a gap-free prefix of the records: only unacknowledged work is
// lost. kill -9 keeps the page cache and cannot show this.
func TestMachineCrashLosesOnlyUnacknowledged(t *testing.T) {
	for _, tc := range []struct {
		at          int
		afterSync   bool
		segmentSize int64
	}{{5, false, 0}, {5, true, 0}, {23, false, 4096}, {23, true, 4096}, {60, false, 2048}} {
		t.Run(fmt.Sprintf("sync%d-after%v-seg%d", tc.at, tc.afterSync, tc.segmentSize), func(t *testing.T) {
			dir, crashDir := t.TempDir(), t.TempDir()
			var (
				mu      sync.Mutex
				synced  = map[string]int64{} // path -> bytes durable
				acked   = map[uint64]string{}
				frozen  map[uint64]string // acked when the machine crashed
				syncs   int
				crashed bool
			)
			snapshot := func() {
				// The disk after power loss: each segment cut to its synced
				// size, plus a torn half of what was written but not synced.
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					src := filepath.Join(dir, e.Name())
					raw, err := os.ReadFile(src)
					if err != nil {
						t.Error(err)
						return
					}
					keep := synced[src]
					if keep == 0 {
						continue // created and written, never synced: gone
					}
					torn := raw[keep:]
					torn = torn[:len(torn)/2]
					if err := os.WriteFile(filepath.Join(crashDir, e.Name()), append(raw[:keep:keep], torn...), 0o644); err != nil {
						t.Error(err)
					}
				}
				frozen = make(map[uint64]string, len(acked))
				for k, v := range acked {
					frozen[k] = v
				}
				crashed = true
			}
			syncHook := func(f *os.File) error {
				mu.Lock()
				defer mu.Unlock()
				if crashed {
					return f.Sync()
				}
				syncs++
				if syncs == tc.at && !tc.afterSync {
					snapshot()
					return f.Sync()
				}
				if err := f.Sync(); err != nil {
					return err
				}
				off, err := f.Seek(0, io.SeekCurrent)
				if err != nil {
					return err
				}
				synced[f.Name()] = off
				if syncs == tc.at {
					snapshot()
				}
				return nil
			}
			j, err := Open(Options{Dir: dir, SegmentBytes: tc.segmentSize, Sync: syncHook})
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Replay(func(uint64, []byte) error { return nil }); err != nil { // starts the writer
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for w := range 6 {
				wg.Go(func() {
					for i := range 40 {
						p := fmt.Sprintf("w%d-%03d", w, i)
						seq, err := j.Append(context.Background(), []byte(p))
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						acked[seq] = p
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			j.Close()
			if !crashed {
				t.Fatalf("only %d fsyncs: the crash at %d never happened", syncs, tc.at)
			}

			j2, err := Open(Options{Dir: crashDir})
			if err != nil {
				t.Fatalf("reopen after the machine crash: %v", err)
			}
			defer j2.Close()
			got := map[uint64]string{}
			var last uint64
			err = j2.Replay(func(seq uint64, p []byte) error {
				if seq != last+1 {
					return fmt.Errorf("replay jumped from seq %d to %d", last, seq)
				}
				last = seq
				got[seq] = string(p)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for seq, p := range frozen {
				if got[seq] != p {
					t.Errorf("acknowledged record %d (%q) lost or changed: replayed %q", seq, p, got[seq])
				}
			}
			if len(got) < len(frozen) {
				t.Errorf("replayed %d records, %d were acknowledged", len(got), len(frozen))
			}
			t.Logf("crash at fsync %d: %d acknowledged, %d replayed", tc.at, len(frozen), len(got))
		})
	}
}
