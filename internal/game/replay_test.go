package game_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/game/gamesim"
	"github.com/respawn-dev/respawn/internal/player"
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

// TestReplayerLookupsFollowTheMaps: a Replayer keeps each request's player
// and session record as it last looked them up, the dead-monster refusal
// as it last made it, and the last Attack op. A log that changes them between requests of
// the same (session, player) pair (leave, enter again, a new session, a
// record made by the first request, a monster killed and attacked), replayed
// into one scene and then, with the same Replayer, into a restored copy,
// must build what Apply builds, and answer resends as Apply does.
func TestReplayerLookupsFollowTheMaps(t *testing.T) {
	var def game.SceneDef
	for _, d := range game.DefaultScenes() {
		if d.ID == "forest" {
			def = d
		}
	}
	p1 := player.Data{ID: "p1", Name: "One", Gold: 5}
	p2 := player.Data{ID: "p2", Name: "Two"}
	move := func(session, id string, seq uint64, x int) game.Event {
		return game.Request{Session: session, Player: id, Seq: seq, Op: game.Move{X: x, Y: 1}}
	}
	attack := func(session, id string, seq uint64) game.Event {
		return game.Request{Session: session, Player: id, Seq: seq, Op: game.Attack{Monster: "wolf-1"}}
	}
	log := []game.Event{
		game.Enter{Player: p1, Version: 1},
		move("s1", "p1", 1, 1), // no record yet: the request makes it
		move("s1", "p1", 2, 2),
		game.Enter{Player: p2, Version: 1},
		move("s2", "p2", 1, 3),
		move("s1", "p1", 3, 4),
		game.Leave{Player: "p1"},
		move("s1", "p1", 4, 5), // departed
		move("s1", "p1", 2, 2), // a resend answered from the departed record
		game.Enter{Player: p1, Version: 2},
		move("s1", "p1", 5, 6), // a present player again, a new record
		game.Attach{Player: "p1", Session: "s1b"},
		move("s1", "p1", 6, 7), // replaced
		move("s1b", "p1", 1, 8),
		game.GMDamage{ReqID: "gm1", Monster: "wolf-1", Amount: 1 << 20},
		attack("s1b", "p1", 2), // dead
		attack("s2", "p2", 2),  // dead
		attack("s1b", "p1", 3), // dead again: the same refusal
		game.Request{Session: "s2", Player: "p2", Seq: 3, Op: game.Attack{Monster: "nobody"}},
		game.Request{Session: "s2", Player: "p2", Seq: 4, Op: game.Attack{Monster: "wolf-1"}},
		game.Leave{Player: "p2", Session: "s2"},
		attack("s2", "p2", 5),
		game.Enter{Player: p2, Version: 3},
		game.Attach{Player: "p2", Session: "s2"},
		attack("s2", "p2", 1),
		move("s1b", "p1", 4, 9),
	}
	for range 60 { // past a prune, with the ids' maps unchanged
		log = append(log, game.Tick{})
	}
	log = append(log, move("s1b", "p1", 5, 10), attack("s2", "p2", 2))
	resends := []game.Request{
		{Session: "s1b", Player: "p1", Seq: 2, Op: game.Attack{Monster: "wolf-1"}},
		{Session: "s1b", Player: "p1", Seq: 3, Op: game.Attack{Monster: "wolf-1"}},
		{Session: "s2", Player: "p2", Seq: 1, Op: game.Attack{Monster: "wolf-1"}},
		{Session: "s2", Player: "p2", Seq: 3, Op: game.Attack{Monster: "nobody"}},
		{Session: "s1b", Player: "p1", Seq: 4, Op: game.Move{X: 9, Y: 1}},
	}
	live, replayed := game.New(def), game.New(def)
	rp := game.NewReplayer()
	apply := func(live, replayed *game.Scene, evs []game.Event) {
		t.Helper()
		for i, ev := range evs {
			live.Apply(ev)
			b, err := game.EncodeEvent(ev)
			if err != nil {
				t.Fatal(err)
			}
			if err := rp.Apply(replayed, b); err != nil {
				t.Fatalf("event %d (%+v): %v", i, ev, err)
			}
			if string(live.Snapshot()) != string(replayed.Snapshot()) {
				t.Fatalf("states differ after event %d (%+v)", i, ev)
			}
		}
	}
	apply(live, replayed, log)
	// The same Replayer on another scene (a snapshot record restores a new
	// one mid-replay): what it remembers of the first must not be used.
	live2, err := game.Restore(def, live.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	replayed2, err := game.Restore(def, live.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	apply(live2, replayed2, []game.Event{
		game.Leave{Player: "p1"},
		move("s1b", "p1", 6, 11),
		game.Enter{Player: p1, Version: 4},
		move("s1b", "p1", 7, 12),
		attack("s2", "p2", 3),
	})
	for _, sc := range [][2]*game.Scene{{live, replayed}, {live2, replayed2}} {
		for _, r := range resends {
			a, b := sc[0].Apply(r), sc[1].Apply(r)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("resend %+v: live %+v, replayed %+v", r, a, b)
			}
		}
	}
}

// TestReplayerEqualsApplyForest: the failover benchmarks' forest history
// (players entering, then moves, attacks on one monster, dead or alive, and
// ticks with an escort NPC walking) builds through a Replayer exactly what
// DecodeEvent and Apply build.
func TestReplayerEqualsApplyForest(t *testing.T) {
	var def game.SceneDef
	for _, d := range game.DefaultScenes() {
		if d.ID == "forest" {
			def = d
		}
	}
	live, replayed := game.New(def), game.New(def)
	rp := game.NewReplayer()
	n := 0
	gamesim.ForestEvents(200, 30_000, func(ev game.Event) {
		b, err := game.EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := game.DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		live.Apply(dec)
		if err := rp.Apply(replayed, b); err != nil {
			t.Fatalf("event %d: %v", n, err)
		}
		if n++; n%1000 == 0 && live.Hash() != replayed.Hash() {
			t.Fatalf("states differ after event %d", n)
		}
	})
	if string(live.Snapshot()) != string(replayed.Snapshot()) {
		t.Fatal("snapshots differ at the end")
	}
}
