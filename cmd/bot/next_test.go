package main

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// next writes every op of the mix by hand into a reused buffer: each body
// must be the JSON the game reads, with the fields the ledger expects.
func TestNextWritesEveryOp(t *testing.T) {
	sk := &sceneKnow{id: "town", w: 10, h: 8, exits: []string{"forest"}, bosses: []string{"hogger"},
		mobs: []string{"boar", "wolf"}, shop: "smith", wares: []string{"sword", "shield"}}
	for _, o := range allOps {
		sk.ops = append(sk.ops, o.name)
		sk.weight = append(sk.weight, o.weight)
		sk.total += o.weight
	}
	sk.trade = true
	run := &playRun{o: playOpts{prefix: "bot"}, w: &world{scenes: map[string]*sceneKnow{"town": sk}, order: []string{"town"}}}
	newBot := func(i int, id string) *bot {
		return &bot{i: i, id: id, r: rand.New(rand.NewPCG(1, uint64(i))), offers: make(chan offer, 4), scene: "town",
			items: map[string]int64{"sword": 1}}
	}
	a, p := newBot(0, "bot-0001"), newBot(1, "bot-0002")
	run.bots = []*bot{a, p}
	seen := map[string]int{}
	var buf []byte
	for i := range 3000 {
		if i%100 == 0 {
			a.offers <- offer{id: "trade-\"7\"", from: p}
		}
		kind, body := run.next(a, buf[:0])
		buf = body
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s: %q: %v", kind, body, err)
		}
		kind, _, _ = strings.Cut(kind, ":")
		seen[kind]++
		fail := func() { t.Fatalf("%s: %s", kind, body) }
		num := func(k string) int {
			f, ok := m[k].(float64)
			if !ok {
				fail()
			}
			return int(f)
		}
		switch kind {
		case "move":
			if m["op"] != "move" || len(m) != 3 || num("x") < 0 || num("x") >= sk.w || num("y") < 0 || num("y") >= sk.h {
				fail()
			}
		case "attack":
			if m["op"] != "attack" || m["monster"] != "hogger" || len(m) != 2 {
				fail()
			}
		case "loot":
			if m["op"] != "attack" || !slices.Contains(sk.mobs, m["monster"].(string)) || len(m) != 2 {
				fail()
			}
		case "buy":
			if m["op"] != "buy" || m["npc"] != "smith" || !slices.Contains(sk.wares, m["item"].(string)) || num("count") < 1 || num("count") > 2 || len(m) != 4 {
				fail()
			}
		case "travel":
			if m["op"] != "travel" || m["to"] != "forest" || len(m) != 2 {
				fail()
			}
		case "chat":
			if m["op"] != "chat" || m["text"] != "hi from bot-0001" || len(m) != 2 {
				fail()
			}
		case "trade_offer":
			if m["op"] != "trade_offer" || m["to"] != "bot-0002" || !strings.Contains(string(body), `"want":[{"item":"sword","count":1}]`) {
				fail()
			}
		case "trade_accept":
			if m["op"] != "trade_accept" || m["trade"] != "trade-\"7\"" || len(m) != 2 {
				fail()
			}
		default:
			fail()
		}
	}
	for _, k := range []string{"move", "attack", "loot", "buy", "travel", "chat", "trade_offer", "trade_accept"} {
		if seen[k] == 0 {
			t.Errorf("no %s in %v", k, seen)
		}
	}
}

func TestAppendJSONStringMatchesEncoder(t *testing.T) {
	for _, s := range []string{"", "hogger", "forest/t1", `a"b`, `a\b`, "<&>", "tab\there", "é", "\x7f", "\u2028"} {
		want, _ := json.Marshal(s)
		if got := appendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("appendJSONString(%q) = %s, want x%s", s, got, want)
		}
	}
}
