// Tests that drive scenes with the random world of package gamesim: replay
// determinism, snapshots, conservation of items, and fuzz corpora. They live
// in package game_test because gamesim imports game.

package game_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/game/gamesim"
	"github.com/respawn-dev/respawn/internal/player"
)

// viaLog encodes and decodes ev, as the log does between apply and replay.
func viaLog(t testing.TB, ev game.Event) game.Event {
	t.Helper()
	b, err := game.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	out, err := game.DecodeEvent(b)
	if err != nil {
		t.Fatalf("decode %T: %v", ev, err)
	}
	return out
}

func replay(t testing.TB, s *game.Scene, evs []game.Event) [][]game.Effect {
	t.Helper()
	var effs [][]game.Effect
	for _, ev := range evs {
		effs = append(effs, s.Apply(viaLog(t, ev)))
	}
	return effs
}

func defOf(t testing.TB, sc *gamesim.Script, id string) game.SceneDef {
	t.Helper()
	for _, d := range sc.Defs {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("no def %q", id)
	return game.SceneDef{}
}

func TestRandomEventsReproducible(t *testing.T) {
	a := gamesim.RandomEvents(7, 3000, game.DefaultScenes())
	b := gamesim.RandomEvents(7, 3000, game.DefaultScenes())
	if len(a.Events) != len(b.Events) || !reflect.DeepEqual(a.Final, b.Final) || len(a.Defs) != len(b.Defs) {
		t.Fatal("RandomEvents is not deterministic")
	}
}

// TestRandomEventsCoverage makes sure the generator exercises every kind of
// event and op, and rooms, trades and travel actually happen.
func TestRandomEventsCoverage(t *testing.T) {
	sc := gamesim.RandomEvents(1, 20000, game.DefaultScenes())
	seen := map[string]int{}
	for _, e := range sc.Events {
		k := fmt.Sprintf("%T", e.Event)
		if r, ok := e.Event.(game.Request); ok {
			k = fmt.Sprintf("%T", r.Op)
		}
		seen[k]++
	}
	for _, k := range []string{"game.Tick", "game.SaveTick", "game.Enter", "game.Leave", "game.GMDamage", "game.GMGive",
		"game.TravelIn", "game.TravelAck", "game.SaveAck", "game.SaveRejected", "game.RoomEnded",
		"game.Move", "game.Attack", "game.Buy", "game.TradeOffer", "game.TradeAccept", "game.Travel", "game.EnterDungeon", "game.Chat"} {
		if seen[k] == 0 {
			t.Errorf("no %s in 20000 random events (%v)", k, seen)
		}
	}
	if len(sc.Defs) < 4 {
		t.Errorf("only %d scenes/rooms created", len(sc.Defs))
	}
	var trades, resent int
	for id := range sc.Final {
		s := game.New(defOf(t, sc, id))
		for _, ev := range sc.EventsOf(id) {
			for _, ef := range s.Apply(ev) {
				if r, ok := ef.(game.Reply); ok {
					if _, ok := r.Body.(game.TradeResult); ok && !r.Resent {
						trades++
					}
					if r.Resent {
						resent++
					}
				}
			}
		}
	}
	if trades == 0 || resent == 0 {
		t.Errorf("trades %d, resent replies %d: want both > 0", trades, resent)
	}
}

// TestDeterminism replays every scene's log from scratch twice and from a
// snapshot at random cut points; all must end in the simulation's state and,
// after the cut, produce the same effects.
func TestDeterminism(t *testing.T) {
	seeds := []int64{1, 2, 3, 42}
	n := 8000
	if testing.Short() {
		seeds, n = seeds[:1], 3000
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			sc := gamesim.RandomEvents(seed, n, game.DefaultScenes())
			r := rand.New(rand.NewPCG(uint64(seed), 9))
			for _, def := range sc.Defs {
				evs := sc.EventsOf(def.ID)
				want := sc.Final[def.ID]
				a, b := game.New(def), game.New(def)
				effA := replay(t, a, evs)
				replay(t, b, evs)
				if a.Hash() != want || b.Hash() != want {
					t.Fatalf("%s: replay hash differs from the simulation", def.ID)
				}
				for k := 0; k < 5; k++ {
					cut := 0
					if len(evs) > 0 {
						cut = r.IntN(len(evs) + 1)
					}
					c := game.New(def)
					replay(t, c, evs[:cut])
					snap := c.Snapshot()
					d, err := game.Restore(def, snap)
					if err != nil {
						t.Fatalf("%s cut %d: %v", def.ID, cut, err)
					}
					if d.Hash() != c.Hash() || string(d.Snapshot()) != string(snap) {
						t.Fatalf("%s cut %d: restored state differs", def.ID, cut)
					}
					effD := replay(t, d, evs[cut:])
					if d.Hash() != want {
						t.Fatalf("%s cut %d/%d: snapshot+replay hash differs", def.ID, cut, len(evs))
					}
					if !reflect.DeepEqual(effD, effA[cut:]) {
						for i := range effD {
							if !reflect.DeepEqual(effD[i], effA[cut+i]) {
								t.Fatalf("%s cut %d: event %d (%T) effects differ:\n%+v\n%+v", def.ID, cut, cut+i, evs[cut+i], effD[i], effA[cut+i])
							}
						}
					}
				}
			}
		})
	}
}

// TestSnapshotEveryStep round-trips a scene's snapshot after every event.
func TestSnapshotEveryStep(t *testing.T) {
	sc := gamesim.RandomEvents(5, 4000, game.DefaultScenes())
	for _, id := range []string{"forest", "town"} {
		def := defOf(t, sc, id)
		s := game.New(def)
		for i, ev := range sc.EventsOf(id) {
			s.Apply(ev)
			r, err := game.Restore(def, s.Snapshot())
			if err != nil {
				t.Fatalf("%s event %d: %v", id, i, err)
			}
			if r.Hash() != s.Hash() {
				t.Fatalf("%s event %d: round trip differs", id, i)
			}
			if !reflect.DeepEqual(r.Inspect(), s.Inspect()) {
				t.Fatalf("%s event %d: views differ", id, i)
			}
		}
	}
}

// TestConservation: per scene, the ledger equation holds for every item;
// across the world, items held plus in flight equal what entered, minus
// what left, plus what was minted, minus what was sunk.
func TestConservation(t *testing.T) {
	for _, seed := range []int64{1, 9, 77} {
		w := gamesim.NewWorld(seed, game.DefaultScenes())
		for step := 0; step < 10; step++ {
			w.Run(len(w.Script().Events) + 1000)
			want := map[string]int64{}
			all := map[string]*game.Scene{}
			for id, s := range w.Scenes() {
				all[id] = s
			}
			for id, s := range w.Ended() {
				all[id] = s
			}
			for _, s := range all {
				game.CheckLedger(t, s)
				for k, l := range s.Inspect().Ledger {
					want[k] += l.Entered - l.Left + l.Minted - l.Sunk
				}
			}
			got := w.Totals()
			for k := range want {
				if got[k] != want[k] {
					t.Fatalf("seed %d step %d: world %s: held+in flight %d, ledgers say %d", seed, step, k, got[k], want[k])
				}
			}
			for k, c := range got {
				if c != want[k] {
					t.Fatalf("seed %d: world %s: %d unaccounted", seed, k, c)
				}
			}
		}
		// Every player is in at most one scene.
		where := map[string]string{}
		for id, s := range w.Scenes() {
			for _, pid := range s.PlayerIDs() {
				if prev, ok := where[pid]; ok {
					t.Fatalf("player %s in %s and %s", pid, prev, id)
				}
				where[pid] = id
			}
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	sc := gamesim.RandomEvents(3, 400, game.DefaultScenes())
	for _, e := range sc.Events {
		b, _ := game.EncodeEvent(e.Event)
		f.Add(b)
	}
	withReplies, err := game.EncodeEvent(game.TravelIn{TransferID: "town/t1", From: "town", Player: player.Data{ID: "p2", Name: "B", Scene: "forest"}, Version: 2, Session: "s", LastSeq: 3,
		Replies: []game.CarriedReply{{Seq: 2, Hash: 7, Body: game.MoveResult{X: 1, Y: 2}}, {Seq: 3, Hash: 9, Body: game.TravelResult{TransferID: "town/t1", To: "forest"}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(withReplies)
	f.Add([]byte{})
	f.Add([]byte{game.EvRequest, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	def := game.DefByID(f, "forest")
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := game.DecodeEvent(b)
		// A Replayer refuses what DecodeEvent refuses, with its error, and
		// builds what Apply builds from the rest.
		s3 := game.New(def)
		game.EnterPlayer(t, s3, "p1", 10, nil)
		before := s3.Hash()
		rerr := game.NewReplayer().Apply(s3, b)
		if err != nil {
			if rerr == nil || rerr.Error() != err.Error() {
				t.Fatalf("DecodeEvent: %v, Replayer: %v", err, rerr)
			}
			if s3.Hash() != before {
				t.Fatal("a refused record changed the scene")
			}
			return
		}
		if rerr != nil {
			t.Fatalf("Replayer refuses what DecodeEvent takes: %v", rerr)
		}
		b2, err := game.EncodeEvent(ev)
		if err != nil {
			t.Fatalf("re-encode %T: %v", ev, err)
		}
		ev2, err := game.DecodeEvent(b2)
		if err != nil || !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("re-decode %T: %v", ev, err)
		}
		// Whatever decodes must apply without panicking, and replay equal.
		s1, s2 := game.New(def), game.New(def)
		game.EnterPlayer(t, s1, "p1", 10, nil)
		game.EnterPlayer(t, s2, "p1", 10, nil)
		s1.Apply(ev)
		s2.Apply(ev2)
		if s1.Hash() != s2.Hash() || s1.Hash() != s3.Hash() {
			t.Fatal("same event, different states")
		}
		if _, err := game.Restore(def, s1.Snapshot()); err != nil {
			t.Fatalf("snapshot after %T does not restore: %v", ev, err)
		}
	})
}

func FuzzRestore(f *testing.F) {
	def := game.DefByID(f, "forest")
	sc := gamesim.RandomEvents(4, 2000, game.DefaultScenes())
	s := game.New(def)
	for i, ev := range sc.EventsOf("forest") {
		s.Apply(ev)
		if i%50 == 0 {
			f.Add(s.Snapshot())
		}
	}
	f.Add([]byte{game.SnapshotVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := game.Restore(def, b)
		if err != nil {
			return
		}
		// A restored scene must be usable and re-snapshot to a stable form.
		snap := r.Snapshot()
		r2, err := game.Restore(def, snap)
		if err != nil {
			t.Fatalf("re-restore: %v", err)
		}
		if r2.Hash() != r.Hash() {
			t.Fatal("re-restore changed the state")
		}
		r.Inspect()
		r.RecoveryEffects()
		for _, ev := range []game.Event{game.Tick{}, game.SaveTick{}, game.Request{Session: "s", Player: "p1", Seq: 1 << 50, Op: game.Attack{Monster: "hogger"}}, game.TravelAck{TransferID: "forest/t1"}} {
			r.Apply(ev)
		}
	})
}
