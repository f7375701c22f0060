package game

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/respawn-dev/respawn/internal/player"
)

func TestGMRequestIDReusedWithOtherBodyIsRefused(t *testing.T) {
	s := New(defByID(t, "forest"))
	hp := monsterHP(s, "hogger")
	first := s.Apply(GMDamage{ReqID: "r1", Monster: "hogger", Amount: 3})
	body := first[0].(GMReply).Body
	// The same command again: the original reply, nothing applied.
	again := s.Apply(GMDamage{ReqID: "r1", Monster: "hogger", Amount: 3})[0].(GMReply)
	if !again.Resent || again.Body != body || monsterHP(s, "hogger") != hp-3 {
		t.Fatalf("repeat: %+v, hp %d", again, monsterHP(s, "hogger"))
	}
	// The id with another amount: refused, not the stale reply.
	other := s.Apply(GMDamage{ReqID: "r1", Monster: "hogger", Amount: 5})[0].(GMReply)
	e, ok := other.Body.(ErrorResult)
	if !ok || e.Code != ErrRequestConflict || monsterHP(s, "hogger") != hp-3 {
		t.Fatalf("reuse with another body: %+v, hp %d", other.Body, monsterHP(s, "hogger"))
	}
	// The give path too, and the hash survives a snapshot.
	enter(t, s, "p", 0, nil)
	s.Apply(GMGive{ReqID: "g1", Player: "p", Item: "gem", Count: 2})
	r, err := Restore(s.Def(), s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	g := r.Apply(GMGive{ReqID: "g1", Player: "p", Item: "gem", Count: 3})[0].(GMReply)
	if e, ok := g.Body.(ErrorResult); !ok || e.Code != ErrRequestConflict {
		t.Fatalf("after restore, reuse with another body: %+v", g.Body)
	}
	g = r.Apply(GMGive{ReqID: "g1", Player: "p", Item: "gem", Count: 2})[0].(GMReply)
	if res, ok := g.Body.(GiveResult); !ok || res.Count != 2 || !g.Resent {
		t.Fatalf("after restore, repeat: %+v", g)
	}
}

func TestSnapshotRefusesAnotherDefinition(t *testing.T) {
	def := defByID(t, "forest")
	s := New(def)
	s.Apply(GMDamage{ReqID: "r1", Monster: "hogger", Amount: 3})
	snap := s.Snapshot()
	if _, err := Restore(def, snap); err != nil {
		t.Fatalf("same definition: %v", err)
	}
	edited := s.Def()
	for i := range edited.Monsters {
		if edited.Monsters[i].ID == "hogger" {
			edited.Monsters[i].HP += 50
		}
	}
	edited.Exits = append(edited.Exits, "nowhere")
	_, err := Restore(edited, snap)
	if !errors.Is(err, ErrDefinitionChanged) {
		t.Fatalf("edited definition: %v, want ErrDefinitionChanged", err)
	}
	for _, want := range []string{"monsters[hogger].hp:", "exits:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	removed := s.Def()
	removed.Monsters = removed.Monsters[1:]
	_, err = Restore(removed, snap)
	if err == nil || !strings.Contains(err.Error(), "monsters["+def.Monsters[0].ID+"]: removed") {
		t.Fatalf("removed monster: %v", err)
	}
}

func TestReloadTakesTheDataServersCopy(t *testing.T) {
	s := New(defByID(t, "town"))
	enter(t, s, "p", 10, map[string]int64{"gem": 1})
	s.Apply(Request{Session: "s", Player: "p", Seq: 1, Op: Move{X: s.def.Spawn.X + 1, Y: s.def.Spawn.Y}})
	s.Apply(SaveTick{})
	d, v, _ := s.Player("p")
	stored := player.Data{ID: "p", Name: "Np", Level: 3, Gold: 500, Items: map[string]int64{"ring": 2}, Scene: "forest", X: 1, Y: 1}
	effs := s.Apply(Reload{Player: stored, Version: v + 5, Reason: "save refused as older"})
	if len(effectsOf[ProfileChanged](effs)) != 1 {
		t.Fatalf("reload effects: %+v", effs)
	}
	got, gv, ok := s.Player("p")
	if !ok || got.Gold != 500 || got.Count("ring") != 2 || got.Count("gem") != 0 || got.Level != 3 {
		t.Fatalf("after reload: %+v", got)
	}
	if got.X != d.X || got.Y != d.Y || got.Scene != "town" {
		t.Fatalf("reload moved the player: %+v, was %+v", got, d)
	}
	// Its position here differs from the stored copy: saved again, above it.
	if gv != v+6 || len(s.DirtyPlayers()) != 1 {
		t.Fatalf("version %d (want %d), dirty %v", gv, v+6, s.DirtyPlayers())
	}
	checkLedger(t, s)
	// An older or equal reload changes nothing.
	if effs := s.Apply(Reload{Player: stored, Version: v + 5}); len(effs) != 0 {
		t.Fatalf("stale reload: %+v", effs)
	}
	// A rejection of a save older than the reload is stale too.
	if effs := s.Apply(SaveRejected{Player: "p", Version: v, Reason: "old"}); len(effs) != 0 {
		t.Fatalf("stale rejection after reload: %+v", effs)
	}
	// The event round-trips through the codec, and replay is deterministic.
	b, err := AppendEvent(nil, Reload{Player: stored, Version: 9, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := DecodeEvent(b)
	if err != nil || ev.(Reload).Version != 9 || ev.(Reload).Player.Count("ring") != 2 {
		t.Fatalf("decode: %+v %v", ev, err)
	}
}

// A give applied to a copy that a Reload then discards is forgotten with
// it: the retry of its request id applies it to the reloaded player.
func TestReloadForgetsUnacknowledgedGives(t *testing.T) {
	s := New(defByID(t, "town"))
	enter(t, s, "p", 10, nil)
	s.Apply(GMGive{ReqID: "acked", Player: "p", Item: "gem", Count: 1})
	_, v1, _ := s.Player("p")
	s.Apply(SaveAck{Player: "p", Version: v1})
	s.Apply(GMGive{ReqID: "lost", Player: "p", Item: "gem", Count: 5})
	_, v2, _ := s.Player("p")
	stored := player.Data{ID: "p", Name: "Np", Gold: 10, Items: map[string]int64{"gem": 1}, Scene: "town"}
	s.Apply(Reload{Player: stored, Version: v2 + 3})
	// The acknowledged give is still answered from memory…
	if g := s.Apply(GMGive{ReqID: "acked", Player: "p", Item: "gem", Count: 1})[0].(GMReply); !g.Resent {
		t.Fatalf("acknowledged give applied again: %+v", g)
	}
	// …the discarded one is applied to the reloaded player.
	g := s.Apply(GMGive{ReqID: "lost", Player: "p", Item: "gem", Count: 5})[0].(GMReply)
	if res, ok := g.Body.(GiveResult); g.Resent || !ok || res.Count != 6 {
		t.Fatalf("retry after reload: %+v", g)
	}
	checkLedger(t, s)
}

// A recorded definition that differs only in encoding (a field a newer
// binary added, at its zero value) is the same world: accepted.
func TestSnapshotAcceptsTheSameDefinitionEncodedDifferently(t *testing.T) {
	def := defByID(t, "forest")
	var recorded map[string]any
	if err := json.Unmarshal(defJSON(def), &recorded); err != nil {
		t.Fatal(err)
	}
	recorded["some_future_field"] = nil // unknown to this binary: ignored
	raw, _ := json.Marshal(recorded)
	if err := checkDef(raw, 12345, def); err != nil {
		t.Fatalf("same world, other encoding: %v", err)
	}
}
