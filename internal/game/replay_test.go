package game

import (
	"reflect"
	"strings"
	"testing"

	"github.com/respawn-dev/respawn/internal/player"
)

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
