package game_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/game/gamesim"
)

// TestReplayerEqualsApply applies every scene's log of random events (every
// event kind and op, duplicates, garbage requests) once with Apply and once
// from its encoding with a Replayer: the states must stay equal along the
// way and at the end, and effects applied live after the replay must be the
// same on both (the Replayer's scratch must not leak into them).
func TestReplayerEqualsApply(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			sc := gamesim.RandomEvents(seed, 6000, game.DefaultScenes())
			for _, def := range sc.Defs {
				evs := sc.EventsOf(def.ID)
				cut := len(evs) * 3 / 4
				live, replayed := game.New(def), game.New(def)
				rp := game.NewReplayer()
				for i, ev := range evs[:cut] {
					live.Apply(ev)
					b, err := game.EncodeEvent(ev)
					if err != nil {
						t.Fatal(err)
					}
					if err := rp.Apply(replayed, b); err != nil {
						t.Fatalf("%s event %d (%T): %v", def.ID, i, ev, err)
					}
					if i%97 == 0 && live.Hash() != replayed.Hash() {
						t.Fatalf("%s: states differ after event %d (%T)", def.ID, i, ev)
					}
				}
				if string(live.Snapshot()) != string(replayed.Snapshot()) {
					t.Fatalf("%s: snapshots differ after %d events", def.ID, cut)
				}
				for i, ev := range evs[cut:] {
					a, b := live.Apply(ev), replayed.Apply(ev)
					if !reflect.DeepEqual(a, b) {
						t.Fatalf("%s event %d (%T): effects differ after the replay:\n%+v\n%+v", def.ID, cut+i, ev, a, b)
					}
				}
				if live.Hash() != sc.Final[def.ID] || replayed.Hash() != sc.Final[def.ID] {
					t.Fatalf("%s: final state differs from the simulation", def.ID)
				}
			}
		})
	}
}

// TestReplayerRefusesGarbage: a record that does not decode gives
// DecodeEvent's error and leaves the scene as it was.
func TestReplayerRefusesGarbage(t *testing.T) {
	s := game.New(game.DefaultScenes()[0])
	rp := game.NewReplayer()
	good, err := game.EncodeEvent(game.Request{Session: "s1", Player: "p1", Seq: 1, Op: game.Move{X: 1, Y: 1}})
	if err != nil {
		t.Fatal(err)
	}
	before := s.Hash()
	for _, b := range [][]byte{nil, {0xff}, good[:len(good)-1], append(append([]byte{}, good...), 0)} {
		_, want := game.DecodeEvent(b)
		got := rp.Apply(s, b)
		if want == nil || got == nil || got.Error() != want.Error() {
			t.Errorf("record %x: Replayer says %v, DecodeEvent %v", b, got, want)
		}
		if s.Hash() != before {
			t.Fatalf("record %x changed the scene", b)
		}
	}
}
