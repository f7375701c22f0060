package chaos

import (
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/respawn-dev/respawn/internal/game"
)

func TestScheduleIsSeededAndCoversEveryKind(t *testing.T) {
	a := Schedule(7, AllKinds, 62*time.Second, 5*time.Second)
	b := Schedule(7, AllKinds, 62*time.Second, 5*time.Second)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different schedules:\n%v\n%v", a, b)
	}
	if c := Schedule(8, AllKinds, 62*time.Second, 5*time.Second); reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 7 and 8 gave the same schedule %v", a)
	}
	if len(a) != 12 {
		t.Fatalf("%d faults in 62 s every 5 s, want 12", len(a))
	}
	// The first round has every kind once.
	var first []string
	for _, p := range a[:len(AllKinds)] {
		first = append(first, p.Kind)
		if p.Kind == KindStall && (p.Stall < time.Second || p.Stall > 5*time.Second) {
			t.Errorf("stall of %s, want 1-5 s", p.Stall)
		}
	}
	slices.Sort(first)
	want := slices.Clone(AllKinds)
	slices.Sort(want)
	if !slices.Equal(first, want) {
		t.Fatalf("first round %v, want every kind once %v", first, want)
	}
	if a[0].At != 5*time.Second || a[11].At != 60*time.Second {
		t.Fatalf("faults at %s..%s, want 5s..60s", a[0].At, a[11].At)
	}
}

func TestParseKinds(t *testing.T) {
	if k, err := ParseKinds("scene, hang,scene"); err != nil || !slices.Equal(k, []string{"scene", "hang"}) {
		t.Fatalf("got %v %v", k, err)
	}
	for _, bad := range []string{"", "scene,reboot", ","} {
		if _, err := ParseKinds(bad); err == nil {
			t.Errorf("ParseKinds(%q): no error", bad)
		}
	}
}

// buy is one answered buy of potions at 10 each from gold before.
func buy(call, ret int64, count, goldAfter, haveAfter int64) porcupine.Operation {
	return porcupine.Operation{Call: call, Return: ret,
		Input:  OpInput{Kind: "buy", Item: "potion", Count: count, Price: 10},
		Output: OpOutput{Outcome: OutOK, Buy: game.BuyResult{Item: "potion", Count: count, Cost: 10 * count, Gold: goldAfter, Have: haveAfter}}}
}

func TestModelAcceptsPipelinedHistories(t *testing.T) {
	init := Holdings{Gold: 100, Items: map[string]int64{}}
	// Two buys in flight at once, applied in the other order than sent.
	ops := []porcupine.Operation{buy(0, 10, 1, 70, 3), buy(1, 9, 2, 80, 2)}
	if !porcupine.CheckOperations(playerModel(init), ops) {
		t.Fatal("concurrent buys applied in either order were refused")
	}
	// A buy with no answer may have happened: later replies either way fit.
	unk := porcupine.Operation{Call: 0, Return: math.MaxInt64,
		Input: OpInput{Kind: "buy", Item: "potion", Count: 1, Price: 10}, Output: OpOutput{Outcome: OutUnknown}}
	for _, after := range []porcupine.Operation{buy(5, 6, 1, 90, 1), buy(5, 6, 1, 80, 2)} {
		if !porcupine.CheckOperations(playerModel(init), []porcupine.Operation{unk, after}) {
			t.Fatalf("unknown buy then %v refused", after.Output)
		}
	}
	// Loot adds to the holdings.
	att := porcupine.Operation{Call: 0, Return: 1, Input: OpInput{Kind: "attack", Monster: "wolf-1"},
		Output: OpOutput{Outcome: OutOK, Loot: []game.ItemCount{{Item: "gold", Count: 5}}}}
	if !porcupine.CheckOperations(playerModel(init), []porcupine.Operation{att, buy(2, 3, 1, 95, 1)}) {
		t.Fatal("loot then buy refused")
	}
}

func TestModelFindsDoubleAppliedAndLostRequests(t *testing.T) {
	init := Holdings{Gold: 100, Items: map[string]int64{}}
	cases := map[string][]porcupine.Operation{
		// The first buy was applied twice: the second reply shows 10 gold
		// too few.
		"applied twice": {buy(0, 1, 1, 90, 1), buy(2, 3, 1, 70, 3)},
		// The first buy was lost after its acknowledgement.
		"lost": {buy(0, 1, 1, 90, 1), buy(2, 3, 1, 90, 1)},
		// A refusal for want of gold the player had.
		"refused with gold": {{Call: 0, Return: 1, Input: OpInput{Kind: "buy", Item: "potion", Count: 1, Price: 10},
			Output: OpOutput{Outcome: OutRefused, Reason: game.ErrNotEnough}}},
	}
	for name, ops := range cases {
		if porcupine.CheckOperations(playerModel(init), ops) {
			t.Errorf("%s: history accepted", name)
		}
	}
}

func TestLedgerCheck(t *testing.T) {
	v := game.View{Scene: "town", Players: []game.PlayerView{{ID: "a", Gold: 90, Items: map[string]int64{"potion": 1}}},
		Ledger: map[string]game.LedgerEntry{"gold": {Entered: 100, Sunk: 10}, "potion": {Minted: 1}}}
	if vs := ledgerCheck(v); len(vs) != 0 {
		t.Fatalf("balanced ledger: %v", vs)
	}
	v.Players[0].Items["potion"] = 2 // a potion from nowhere
	if vs := ledgerCheck(v); len(vs) != 1 || vs[0].Check != "duplication" {
		t.Fatalf("duplicated potion: %v", vs)
	}
}

func TestCompareHeld(t *testing.T) {
	b := &bot{id: "p", held: Holdings{Gold: 90, Items: map[string]int64{"potion": 1}}}
	if vs := compareHeld("scene", b, Holdings{Gold: 90, Items: map[string]int64{"potion": 1}}); len(vs) != 0 {
		t.Fatalf("equal: %v", vs)
	}
	if vs := compareHeld("scene", b, Holdings{Gold: 100, Items: map[string]int64{}}); len(vs) != 1 || vs[0].Check != "duplication" {
		t.Fatalf("more gold than acknowledged: %v", vs)
	}
	if vs := compareHeld("scene", b, Holdings{Gold: 90, Items: map[string]int64{}}); len(vs) != 1 || vs[0].Check != "lost" {
		t.Fatalf("an acknowledged potion missing: %v", vs)
	}
}

func TestFaultsAround(t *testing.T) {
	faults := []Fault{
		{Kind: "gateway", Target: "gateway/gw2", AtMs: 100_000, RecoveryMs: 21_109},
		{Kind: "datasvr", Target: "datasvr", AtMs: 120_000, RecoveryMs: -1},
		{Kind: "scene", Target: "scene/town", AtMs: 200_000, RecoveryMs: 40},
	}
	got := faultsAround(faults, 95_000, 150_000)
	want := "gateway gateway/gw2 at 100000 ms (recovered in 21109 ms), datasvr datasvr at 120000 ms (not recovered)"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := faultsAround(faults, 0, 50_000); got != "none" {
		t.Errorf("no fault in the window: %s", got)
	}
}
