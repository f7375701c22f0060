package game

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/respawn-dev/respawn/internal/player"
)

// viaLog encodes and decodes ev, as the log does between apply and replay.
func viaLog(t testing.TB, ev Event) Event {
	t.Helper()
	b, err := EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeEvent(b)
	if err != nil {
		t.Fatalf("decode %T: %v", ev, err)
	}
	return out
}

func replay(t testing.TB, s *Scene, evs []Event) [][]Effect {
	t.Helper()
	var effs [][]Effect
	for _, ev := range evs {
		effs = append(effs, s.Apply(viaLog(t, ev)))
	}
	return effs
}

func defOf(t testing.TB, sc *Script, id string) SceneDef {
	t.Helper()
	for _, d := range sc.Defs {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("no def %q", id)
	return SceneDef{}
}

func TestRandomEventsReproducible(t *testing.T) {
	a := RandomEvents(7, 3000, DefaultScenes())
	b := RandomEvents(7, 3000, DefaultScenes())
	if len(a.Events) != len(b.Events) || !reflect.DeepEqual(a.Final, b.Final) || len(a.Defs) != len(b.Defs) {
		t.Fatal("RandomEvents is not deterministic")
	}
}

// TestRandomEventsCoverage makes sure the generator exercises every kind of
// event and op, and rooms, trades and travel actually happen.
func TestRandomEventsCoverage(t *testing.T) {
	sc := RandomEvents(1, 20000, DefaultScenes())
	seen := map[string]int{}
	for _, e := range sc.Events {
		k := fmt.Sprintf("%T", e.Event)
		if r, ok := e.Event.(Request); ok {
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
		s := New(defOf(t, sc, id))
		for _, ev := range sc.EventsOf(id) {
			for _, ef := range s.Apply(ev) {
				if r, ok := ef.(Reply); ok {
					if _, ok := r.Body.(TradeResult); ok && !r.Resent {
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
			sc := RandomEvents(seed, n, DefaultScenes())
			r := rand.New(rand.NewPCG(uint64(seed), 9))
			for _, def := range sc.Defs {
				evs := sc.EventsOf(def.ID)
				want := sc.Final[def.ID]
				a, b := New(def), New(def)
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
					c := New(def)
					replay(t, c, evs[:cut])
					snap := c.Snapshot()
					d, err := Restore(def, snap)
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
	sc := RandomEvents(5, 4000, DefaultScenes())
	for _, id := range []string{"forest", "town"} {
		def := defOf(t, sc, id)
		s := New(def)
		for i, ev := range sc.EventsOf(id) {
			s.Apply(ev)
			r, err := Restore(def, s.Snapshot())
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
		w := newWorld(seed, DefaultScenes())
		for step := 0; step < 10; step++ {
			w.run(len(w.script.Events) + 1000)
			want := map[string]int64{}
			all := map[string]*Scene{}
			for id, s := range w.scenes {
				all[id] = s
			}
			for id, s := range w.ended {
				all[id] = s
			}
			for _, s := range all {
				checkLedger(t, s)
				for k, l := range s.ledger {
					want[k] += l.Entered - l.Left + l.Minted - l.Sunk
				}
			}
			got := w.worldTotals()
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
		for id, s := range w.scenes {
			for _, p := range s.plist {
				if prev, ok := where[p.data.ID]; ok {
					t.Fatalf("player %s in %s and %s", p.data.ID, prev, id)
				}
				where[p.data.ID] = id
			}
		}
	}
}

func TestRestoreErrors(t *testing.T) {
	def := defByID(t, "forest")
	s := New(def)
	enter(t, s, "p1", 5, map[string]int64{"potion": 1})
	do(t, s, "s", "p1", 1, Move{X: 3, Y: 3})
	snap := s.Snapshot()
	for name, b := range map[string][]byte{
		"empty":    nil,
		"version":  append([]byte{99}, snap[1:]...),
		"trailing": append(append([]byte{}, snap...), 0),
		"short":    snap[:len(snap)/2],
	} {
		if _, err := Restore(def, b); err == nil {
			t.Errorf("%s: Restore accepted garbage", name)
		}
	}
	if _, err := Restore(defByID(t, "town"), snap); err == nil {
		t.Error("Restore accepted another scene's snapshot")
	}
	// Every prefix fails cleanly.
	for i := range snap {
		if _, err := Restore(def, snap[:i]); err == nil {
			t.Fatalf("prefix %d accepted", i)
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	pd := player.Data{ID: "p", Name: "P", Level: 3, Gold: -2, Items: map[string]int64{"b": 2, "a": 1}, Scene: "town", X: -1, Y: 7}
	evs := []Event{
		Tick{}, SaveTick{},
		Enter{Player: pd, Version: 9},
		Leave{Player: "p"},
		Leave{Player: "p", Session: "s"},
		Attach{Player: "p", Session: "s"},
		TravelIn{TransferID: "forest/t2", From: "forest", Player: pd, Version: 3, Session: "s", LastSeq: 1<<64 - 1},
		Request{Session: "s", Player: "p", Seq: 1 << 40, Op: Move{X: -3, Y: 1 << 20}},
		Request{Session: "s", Player: "p", Seq: 2, Op: Attack{Monster: "hogger"}},
		Request{Session: "s", Player: "p", Seq: 3, Op: Buy{NPC: "m", Item: "sword", Count: 2}},
		Request{Session: "s", Player: "p", Seq: 4, Op: TradeOffer{To: "q", Give: []ItemCount{{"gold", 5}}, Want: []ItemCount{{"a", 1}, {"b", 2}}}},
		Request{Session: "s", Player: "p", Seq: 5, Op: TradeAccept{TradeID: "town/trade-1"}},
		Request{Session: "s", Player: "p", Seq: 6, Op: Travel{To: "forest"}},
		Request{Session: "s", Player: "p", Seq: 7, Op: EnterDungeon{}},
		Request{Session: "s", Player: "p", Seq: 8, Op: Chat{Text: "hi ünïcode"}},
		GMDamage{ReqID: "r", Monster: "hogger", Amount: 999},
		GMGive{ReqID: "r", Player: "p", Item: "gold", Count: -5},
		TravelIn{TransferID: "forest/t1", From: "forest", Player: pd, Version: 3},
		TravelAck{TransferID: "forest/t1"},
		SaveAck{Player: "p", Version: 4},
		SaveRejected{Player: "p", Version: 4, Reason: "stale epoch"},
		RoomEnded{RoomID: "forest/dungeon-1", Applied: []string{"forest/t3"}, AppliedFloor: 2},
	}
	for _, ev := range evs {
		b, err := EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeEvent(b)
		if err != nil {
			t.Fatalf("%T: %v", ev, err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, ev)
		}
		for i := range b {
			if _, err := DecodeEvent(b[:i]); err == nil {
				t.Fatalf("%T: prefix %d of %d decoded", ev, i, len(b))
			}
		}
	}
	if b, _ := EncodeEvent(Tick{}); len(b) != 1 {
		t.Fatalf("a tick is %d bytes", len(b))
	}
	for _, bad := range [][]byte{nil, {0}, {200}, {evRequest, 1, 's', 1, 'p', 1, 99}, {evTick, 0}, {evLeave, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := DecodeEvent(bad); err == nil {
			t.Fatalf("decoded garbage %v", bad)
		}
	}
	if _, err := EncodeEvent(nil); err == nil {
		t.Fatal("encoded nil")
	}
	for _, ev := range []Event{
		Request{Session: "s", Seq: 1, Op: Move{X: 1 << 40}},
		Request{Session: "s", Seq: 1, Op: Chat{Text: strings.Repeat("x", maxStrLen+1)}},
		Enter{Player: player.Data{ID: "p", Level: -1 << 40}},
	} {
		if b, err := EncodeEvent(ev); err == nil {
			t.Fatalf("encoded %T that cannot be decoded (%d bytes)", ev, len(b))
		}
	}
	if _, err := EncodeEvent(Request{Session: "s", Seq: 1}); err == nil {
		t.Fatal("encoded a request without an op")
	}
}

func FuzzDecodeEvent(f *testing.F) {
	sc := RandomEvents(3, 400, DefaultScenes())
	for _, e := range sc.Events {
		b, _ := EncodeEvent(e.Event)
		f.Add(b)
	}
	withReplies, err := EncodeEvent(TravelIn{TransferID: "town/t1", From: "town", Player: player.Data{ID: "p2", Name: "B", Scene: "forest"}, Version: 2, Session: "s", LastSeq: 3,
		Replies: []CarriedReply{{Seq: 2, Hash: 7, Body: MoveResult{X: 1, Y: 2}}, {Seq: 3, Hash: 9, Body: TravelResult{TransferID: "town/t1", To: "forest"}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(withReplies)
	f.Add([]byte{})
	f.Add([]byte{evRequest, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	def := defByID(f, "forest")
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEvent(b)
		if err != nil {
			return
		}
		b2, err := EncodeEvent(ev)
		if err != nil {
			t.Fatalf("re-encode %T: %v", ev, err)
		}
		ev2, err := DecodeEvent(b2)
		if err != nil || !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("re-decode %T: %v", ev, err)
		}
		// Whatever decodes must apply without panicking, and replay equal.
		s1, s2 := New(def), New(def)
		enter(t, s1, "p1", 10, nil)
		enter(t, s2, "p1", 10, nil)
		s1.Apply(ev)
		s2.Apply(ev2)
		if s1.Hash() != s2.Hash() {
			t.Fatal("same event, different states")
		}
		if _, err := Restore(def, s1.Snapshot()); err != nil {
			t.Fatalf("snapshot after %T does not restore: %v", ev, err)
		}
	})
}

func FuzzRestore(f *testing.F) {
	def := defByID(f, "forest")
	sc := RandomEvents(4, 2000, DefaultScenes())
	s := New(def)
	for i, ev := range sc.EventsOf("forest") {
		s.Apply(ev)
		if i%50 == 0 {
			f.Add(s.Snapshot())
		}
	}
	f.Add([]byte{SnapshotVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Restore(def, b)
		if err != nil {
			return
		}
		// A restored scene must be usable and re-snapshot to a stable form.
		snap := r.Snapshot()
		r2, err := Restore(def, snap)
		if err != nil {
			t.Fatalf("re-restore: %v", err)
		}
		if r2.Hash() != r.Hash() {
			t.Fatal("re-restore changed the state")
		}
		r.Inspect()
		r.RecoveryEffects()
		for _, ev := range []Event{Tick{}, SaveTick{}, Request{Session: "s", Player: "p1", Seq: 1 << 50, Op: Attack{Monster: "hogger"}}, TravelAck{TransferID: "forest/t1"}} {
			r.Apply(ev)
		}
	})
}
