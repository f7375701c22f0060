package scene

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
)

func TestRecentRingKeepsTheNewestAndSkipsTicks(t *testing.T) {
	var r recentRing
	if got := r.list(); len(got) != 0 {
		t.Fatalf("empty ring lists %d events", len(got))
	}
	for i := range RecentEvents + 10 {
		r.record(game.Tick{}, nil)
		r.record(game.SaveAck{Player: "p1", Version: uint64(i)}, nil)
		req := game.Request{Session: "s", Player: "p1", Seq: uint64(i + 1), Op: game.Move{X: i, Y: 2}}
		r.record(req, []game.Effect{
			game.Reply{Session: "s", Player: "p2", Seq: uint64(i + 1), Body: game.ErrorResult{Code: "x"}}, // another player's
			game.Reply{Session: "s", Player: "p1", Seq: uint64(i + 1), Body: game.MoveResult{X: i, Y: 2}},
		})
	}
	got := r.list()
	if len(got) != RecentEvents {
		t.Fatalf("%d events listed, want the bound %d", len(got), RecentEvents)
	}
	for k, e := range got {
		i := RecentEvents + 10 - 1 - k // newest first
		want := fmt.Sprintf("move to (%d,2): now at (%d,2)", i, i)
		if e.Kind != "move" || e.Player != "p1" || e.Summary != want {
			t.Fatalf("event %d: %+v, want move by p1 %q", k, e, want)
		}
		if k > 0 && e.Time.After(got[k-1].Time) {
			t.Fatalf("event %d is newer than event %d", k, k-1)
		}
	}
}

func TestRecentSummaries(t *testing.T) {
	long := strings.Repeat("ü", 200)
	for _, c := range []struct {
		ev                   game.Event
		effs                 []game.Effect
		kind, player, substr string
	}{
		{game.Enter{Player: player.Data{ID: "ann", Level: 2, Gold: 30}}, nil, "enter", "ann", "entered at level 2 with 30 gold"},
		{game.Leave{Player: "ann"}, nil, "leave", "ann", "left"},
		{game.Request{Player: "ann", Seq: 4, Op: game.Attack{Monster: "wolf-1"}},
			[]game.Effect{game.Reply{Player: "ann", Seq: 4, Body: game.AttackResult{Monster: "wolf-1", Damage: 60, HP: 0, MaxHP: 60, Killed: true, Loot: []game.ItemCount{{Item: "wolf_pelt", Count: 1}}, HitBack: 0}}},
			"attack", "ann", "attack wolf-1: hit wolf-1 for 60 (0/60), killed it, loot 1 wolf_pelt"},
		{game.Request{Player: "ann", Seq: 5, Op: game.Buy{NPC: "merchant", Item: "potion", Count: 99}},
			[]game.Effect{game.Reply{Player: "ann", Seq: 5, Body: game.ErrorResult{Code: game.ErrNotEnough, Error: "need 990 gold"}}},
			"buy", "ann", "buy 99 potion from merchant: refused (not_enough): need 990 gold"},
		{game.Request{Player: "ann", Seq: 5, Op: game.Buy{NPC: "merchant", Item: "potion", Count: 99}},
			[]game.Effect{game.Reply{Player: "ann", Seq: 5, Resent: true, Body: game.ErrorResult{Code: game.ErrNotEnough, Error: "need 990 gold"}}},
			"buy", "ann", "resent: buy 99 potion"},
		{game.Request{Player: "ann", Seq: 6, Op: game.Chat{Text: long}}, []game.Effect{game.Reply{Player: "ann", Seq: 6, Body: game.OKResult{}}}, "chat", "ann", `…": ok`},
		{game.GMGive{ReqID: "r1", Player: "bob", Item: "potion", Count: 3}, []game.Effect{game.GMReply{ReqID: "r1", Body: game.GiveResult{Player: "bob", Item: "potion", Count: 4}}},
			"gm_give", "bob", "GM give 3 potion (request r1): bob now has 4 potion"},
		{game.GMDamage{ReqID: "r2", Monster: "hogger", Amount: 5}, nil, "gm_damage", "", "no reply"},
		{game.SaveRejected{Player: "bob", Version: 7, Reason: "stale epoch"}, nil, "save_rejected", "bob", "save of version 7 rejected: stale epoch"},
		{game.RoomEnded{RoomID: "forest/dungeon-1"}, nil, "room_ended", "", "room forest/dungeon-1 ended"},
	} {
		var r recentRing
		r.record(c.ev, c.effs)
		l := r.list()
		if len(l) != 1 {
			t.Fatalf("%T: %d events", c.ev, len(l))
		}
		e := l[0]
		if e.Kind != c.kind || e.Player != c.player || !strings.Contains(e.Summary, c.substr) || len(e.Summary) > maxSummary {
			t.Errorf("%T: %+v, want kind %q player %q and a summary with %q, at most %d bytes", c.ev, e, c.kind, c.player, c.substr, maxSummary)
		}
		if !utf8.ValidString(e.Summary) {
			t.Errorf("%T: summary is not valid UTF-8: %q", c.ev, e.Summary)
		}
	}
}

// The inspect endpoint serves the scene's state with its recent events,
// newest first, from the real loop.
func TestInspectShowsRecentEvents(t *testing.T) {
	h := testHost(t, t.TempDir())
	defer h.stopAll(true, true)
	forest, _ := h.loop("forest")
	ctx := context.Background()
	if _, err := forest.submit(ctx, game.Enter{Player: player.Data{ID: "ann", Name: "Ann", Gold: 10, Scene: "forest"}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := forest.submit(ctx, game.Request{Session: "s1", Player: "ann", Seq: 1, Op: game.Attack{Monster: "wolf-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := forest.submit(ctx, game.Request{Session: "s1", Player: "ann", Seq: 2, Op: game.Attack{Monster: "nobody"}}); err != nil {
		t.Fatal(err)
	}

	p := &Process{host: h, opt: Options{Epoch: 3}, spec: config.Process{Name: "p1"}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/scenes/{id}/inspect", p.apiInspect)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/scenes/forest/inspect", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("inspect: %d %s", rec.Code, rec.Body)
	}
	var v InspectView
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Scene != "forest" || v.Epoch != 3 || len(v.Players) != 1 || len(v.Monsters) == 0 {
		t.Fatalf("view: scene %q epoch %d, %d players, %d monsters", v.Scene, v.Epoch, len(v.Players), len(v.Monsters))
	}
	// Ticks run at 1000 Hz in the test host and are not listed: exactly the
	// three events above, newest first.
	var kinds []string
	for _, e := range v.RecentEvents {
		kinds = append(kinds, e.Kind+"/"+e.Player)
	}
	if strings.Join(kinds, " ") != "attack/ann attack/ann enter/ann" {
		t.Fatalf("recent events %v, want the refused attack, the attack, the enter", kinds)
	}
	if s := v.RecentEvents[0].Summary; !strings.Contains(s, "refused (not_found)") {
		t.Fatalf("newest event %q does not say the attack was refused", s)
	}
	if s := v.RecentEvents[1].Summary; !strings.Contains(s, "hit wolf-1 for") {
		t.Fatalf("attack event %q does not say what was hit", s)
	}
	if v.RecentEvents[2].Time.IsZero() {
		t.Fatal("an event without a time")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scene", "monsters", "players", "rooms", "recent_events"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("inspect JSON has no %q", k)
		}
	}

	// An unknown scene is a 404, not an empty list.
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/scenes/nowhere/inspect", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("unknown scene: %d", rec.Code)
	}
}

// BenchmarkRecentRecord is what the ring adds to the loop's step for a
// player's request (a tick costs one type switch).
func BenchmarkRecentRecord(b *testing.B) {
	var r recentRing
	// Boxed once, as the loop receives it.
	var ev game.Event = game.Request{Session: "s", Player: "p1", Seq: 1, Op: game.Move{X: 1, Y: 2}}
	effs := []game.Effect{game.Reply{Session: "s", Player: "p1", Seq: 1, Body: game.MoveResult{X: 1, Y: 2}}}
	b.ReportAllocs()
	for b.Loop() {
		r.record(ev, effs)
	}
}

func BenchmarkRecentRecordTick(b *testing.B) {
	var r recentRing
	b.ReportAllocs()
	for b.Loop() {
		r.record(game.Tick{}, nil)
	}
}
