package scene

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
)

func testHost(t *testing.T, dir string) *host {
	t.Helper()
	h := testHostStopped(t, dir)
	h.startAll()
	return h
}

// testHostStopped is testHost before its loops start.
func testHostStopped(t testing.TB, dir string) *host {
	t.Helper()
	cfg := config.Default()
	cfg.Scene.ShmSlots = 8
	cfg.Scene.ShmSlotSize = 16 << 20
	cfg.Scene.TickHz = 1000 // rooms end on ticks; keep the test quick
	h := newHost(&cfg, zaptest.NewLogger(t), 1)
	if err := h.open(t.Context(), LogPath(dir, "forest"), false); err != nil {
		t.Fatal(err)
	}
	if err := h.restore([]string{"forest"}); err != nil {
		t.Fatal(err)
	}
	return h
}

// reopenForest is h's next incarnation (epoch 2) after h stopped without a
// snapshot: a host that opens forest's log in dir and restores from it
// alone. Its log is closed when the test ends.
func reopenForest(t *testing.T, h *host, dir string) *host {
	t.Helper()
	h2 := newHost(h.cfg, h.log, 2)
	if err := h2.open(t.Context(), LogPath(dir, "forest"), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h2.store.Close() })
	if err := h2.restore([]string{"forest"}); err != nil {
		t.Fatal(err)
	}
	return h2
}

// A dungeon room takes a free slot, and when its boss dies and its players
// are back in the forest, its slot is cleared and the next room reuses it.
func TestRoomEndsAndItsSlotIsReused(t *testing.T) {
	h := testHost(t, t.TempDir())
	defer h.stopAll(true, true)
	forest, _ := h.loop("forest")
	free := h.store.FreeSlots()

	if _, err := forest.submit(context.Background(), game.Enter{Player: player.Data{ID: "p1", Name: "Ann", Gold: 10}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	enterDungeon := func() string {
		seq++
		effs, err := forest.submit(context.Background(), game.Request{Session: "s1", Player: "p1", Seq: seq, Op: game.EnterDungeon{}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range effs {
			if r, ok := e.(game.Reply); ok {
				if d, ok := r.Body.(game.DungeonResult); ok {
					return d.RoomID
				}
				t.Fatalf("enter dungeon: %+v", r.Body)
			}
		}
		t.Fatal("no reply")
		return ""
	}
	room := enterDungeon()
	poll.Until(t, 5*time.Second, func() error {
		if _, ok := h.loop(room); !ok {
			return fmt.Errorf("room %s not created", room)
		}
		return nil
	})
	slot, _ := h.store.SlotIndex(room)
	if h.store.FreeSlots() != free-1 {
		t.Fatalf("free slots %d, want %d", h.store.FreeSlots(), free-1)
	}
	rl, _ := h.loop(room)
	// The player arrives in the room, then the GM kills its boss.
	poll.Until(t, 5*time.Second, func() error {
		var n int
		_ = rl.read(context.Background(), func(st *game.Scene) { n = st.Players() })
		if n != 1 {
			return fmt.Errorf("room has %d players", n)
		}
		return nil
	})
	if _, err := rl.submit(context.Background(), game.GMDamage{ReqID: "kill-king", Monster: "kobold-king", Amount: 10000}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		if _, ok := h.loop(room); ok {
			return fmt.Errorf("room %s still live", room)
		}
		if _, ok := h.store.Get(room); ok {
			return fmt.Errorf("room %s still has its slot", room)
		}
		if h.store.FreeSlots() != free {
			return fmt.Errorf("free slots %d, want %d", h.store.FreeSlots(), free)
		}
		var v game.View
		_ = forest.read(context.Background(), func(st *game.Scene) { v = st.Inspect() })
		if len(v.Players) != 1 || len(v.Rooms) != 0 {
			return fmt.Errorf("forest: %d players, rooms %v", len(v.Players), v.Rooms)
		}
		return nil
	})
	second := enterDungeon()
	poll.Until(t, 5*time.Second, func() error {
		if _, ok := h.loop(second); !ok {
			return fmt.Errorf("room %s not created", second)
		}
		return nil
	})
	if got, _ := h.store.SlotIndex(second); got != slot {
		t.Fatalf("second room took slot %d, the freed one was %d", got, slot)
	}
}

// After a restart (log closed without a final snapshot, as after kill -9),
// the forest and its live room come back exactly.
func TestRestartRestoresScenesAndRooms(t *testing.T) {
	dir := t.TempDir()
	h := testHost(t, dir)
	forest, _ := h.loop("forest")
	if _, err := forest.submit(context.Background(), game.Enter{Player: player.Data{ID: "p1", Name: "Ann"}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := forest.submit(context.Background(), game.Request{Session: "s1", Player: "p1", Seq: 1, Op: game.EnterDungeon{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := forest.submit(context.Background(), game.GMDamage{ReqID: "r1", Monster: "hogger", Amount: 999}); err != nil {
		t.Fatal(err)
	}
	var rooms []string
	poll.Until(t, 5*time.Second, func() error {
		_ = forest.read(context.Background(), func(st *game.Scene) { rooms = st.Inspect().Rooms })
		if len(rooms) != 1 {
			return fmt.Errorf("rooms %v", rooms)
		}
		if _, ok := h.loop(rooms[0]); !ok {
			return fmt.Errorf("no loop for room")
		}
		return nil
	})
	hashes := map[string][32]byte{}
	for _, l := range h.sortedLoops() {
		l.stop() // no snapshot: the log alone must carry the state
		hashes[l.id] = l.st.Hash()
	}
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := reopenForest(t, h, dir)
	if len(h2.loops) != len(hashes) {
		t.Fatalf("restored %d loops, had %d", len(h2.loops), len(hashes))
	}
	for id, want := range hashes {
		l, ok := h2.loops[id]
		if !ok {
			t.Fatalf("%s not restored", id)
		}
		if l.st.Hash() != want {
			t.Errorf("%s restored to a different state", id)
		}
	}
	if hp := h2.loops["forest"].st.Inspect().Monsters; len(hp) == 0 {
		t.Fatal("no monsters")
	}
}
