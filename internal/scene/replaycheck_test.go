package scene

import (
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/game/gamesim"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// TestReplayCheckRandomWorld logs thousands of random events (players,
// combat, trades, travel, rooms, GM commands) the way the scene process
// does, snapshotting at random points, then checks that replaying the log
// twice gives identical states, equal to the live ones.
func TestReplayCheckRandomWorld(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		script := gamesim.RandomEvents(seed, 5000, game.DefaultScenes())
		path := filepath.Join(t.TempDir(), "world.log")
		st, err := shmlog.Open(path, shmlog.Options{Slots: 256, SlotSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defs := map[string]game.SceneDef{}
		for _, d := range script.Defs {
			defs[d.ID] = d
		}
		live := map[string]*game.Scene{}
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		for i, se := range script.Events {
			slot, ok := st.Get(se.Scene)
			if !ok {
				if slot, err = st.Create(se.Scene); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				live[se.Scene] = game.New(defs[se.Scene])
			}
			raw, err := game.EncodeEvent(se.Event)
			if err != nil {
				t.Fatal(err)
			}
			if rng.IntN(500) == 0 {
				if err := slot.Snapshot(live[se.Scene].Snapshot()); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := slot.Append(raw); errors.Is(err, shmlog.ErrSlotFull) {
				// As the process does: compact, then retry.
				if err := slot.Snapshot(live[se.Scene].Snapshot()); err != nil {
					t.Fatal(err)
				}
				if _, err := slot.Append(raw); err != nil {
					t.Fatal(err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			live[se.Scene].Apply(se.Event)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		checks, err := ReplayCheck(path, script.Defs)
		if err != nil {
			t.Fatal(err)
		}
		if len(checks) != len(live) {
			t.Fatalf("seed %d: %d slots checked, %d scenes live", seed, len(checks), len(live))
		}
		for _, c := range checks {
			if c.Skipped != "" || !c.Deterministic {
				t.Errorf("seed %d: %+v", seed, c)
				continue
			}
			want := script.Final[c.ID]
			if c.Hash != hex.EncodeToString(want[:]) {
				t.Errorf("seed %d: scene %s replayed to %s, live run ended at %x", seed, c.ID, c.Hash, want)
			}
		}
	}
}
