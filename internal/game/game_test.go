package game

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/respawn-dev/respawn/internal/player"
)

func defByID(t testing.TB, id string) SceneDef {
	t.Helper()
	for _, d := range DefaultScenes() {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("no default scene %q", id)
	return SceneDef{}
}

// enter puts a player with gold and items into s.
func enter(t testing.TB, s *Scene, id string, gold int64, items map[string]int64) {
	t.Helper()
	s.Apply(Enter{Player: player.Data{ID: id, Name: "N" + id, Gold: gold, Items: items, Scene: s.ID(), X: s.def.Spawn.X, Y: s.def.Spawn.Y}, Version: 1})
	if _, _, ok := s.Player(id); !ok {
		t.Fatalf("%s did not enter %s", id, s.ID())
	}
}

// do applies a request and returns its reply and the other effects.
func do(t testing.TB, s *Scene, sess, pid string, seq uint64, op Op) (Reply, []Effect) {
	t.Helper()
	effs := s.Apply(Request{Session: sess, Player: pid, Seq: seq, Op: op})
	if len(effs) == 0 {
		t.Fatalf("request %d: no effects", seq)
	}
	r, ok := effs[0].(Reply)
	if !ok {
		t.Fatalf("request %d: first effect %T, want Reply", seq, effs[0])
	}
	return r, effs[1:]
}

func wantErr(t testing.TB, r Reply, code string) {
	t.Helper()
	e, ok := r.Body.(ErrorResult)
	if !ok || e.Code != code {
		t.Fatalf("reply %+v, want error %s", r.Body, code)
	}
}

func effectsOf[T Effect](effs []Effect) []T {
	var out []T
	for _, e := range effs {
		if v, ok := e.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func monsterHP(s *Scene, id string) int64 { return s.mons[s.monIx[id]].hp }

func checkLedger(t testing.TB, s *Scene) {
	t.Helper()
	held := map[string]int64{}
	for _, p := range s.plist {
		held[goldItem] += p.data.Gold
		for k, c := range p.data.Items {
			held[k] += c
		}
	}
	for k, l := range s.ledger {
		want := l.Entered - l.Left + l.In - l.Out + l.Minted - l.Sunk
		if held[k] != want {
			t.Fatalf("scene %s: %s held %d, ledger says %d (%+v)", s.ID(), k, held[k], want, *l)
		}
	}
	for k, c := range held {
		if s.ledger[k] == nil && c != 0 {
			t.Fatalf("scene %s: %s held %d with no ledger entry", s.ID(), k, c)
		}
	}
}

func TestDefaultScenesValid(t *testing.T) {
	for _, d := range DefaultScenes() {
		if err := d.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	room, err := defByID(t, "forest").RoomDef("forest/dungeon-1", 7)
	if err != nil {
		t.Fatal(err)
	}
	if err := room.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(d *SceneDef)
		want string
	}{
		{"empty id", func(d *SceneDef) { d.ID = "" }, "id: must not be empty"},
		{"kind", func(d *SceneDef) { d.Kind = "castle" }, `kind: "castle"`},
		{"monster hp", func(d *SceneDef) { d.Monsters[0].HP = 0 }, "monsters[0].hp"},
		{"dup monster", func(d *SceneDef) { d.Monsters[1].ID = "hogger" }, `monsters[1].id: duplicate "hogger"`},
		{"respawn", func(d *SceneDef) { d.Monsters[1].RespawnTicks = 0 }, "monsters[1].respawn_ticks"},
		{"loot gold", func(d *SceneDef) { d.Monsters[0].Loot[0].Item = "gold" }, "monsters[0].loot[0].item"},
		{"npc kind", func(d *SceneDef) { d.NPCs[0].Kind = "bard" }, "npcs[0].kind"},
		{"npc path", func(d *SceneDef) { d.NPCs[0].Path = nil }, "npcs[0].path"},
		{"npc off map", func(d *SceneDef) { d.NPCs[0].Path[1].X = 500 }, "npcs[0].path[1]"},
		{"dungeon boss", func(d *SceneDef) { d.Dungeon.Monsters[1].Boss = false }, "dungeon.monsters: a dungeon needs a boss"},
		{"exit self", func(d *SceneDef) { d.Exits = []string{"forest"} }, "exits[0]"},
		{"spawn", func(d *SceneDef) { d.Spawn = Point{X: -1} }, "spawn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := cloneDef(defByID(t, "forest"))
			tc.edit(&d)
			err := d.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	town := cloneDef(defByID(t, "town"))
	town.NPCs[0].Shop[0].Price = 0
	if err := town.Validate(); err == nil || !strings.Contains(err.Error(), "npcs[0].shop[0].price") {
		t.Fatalf("Validate() = %v", err)
	}
}

// TestDocsYAML keeps the YAML in docs/game.md equal to DefaultScenes.
func TestDocsYAML(t *testing.T) {
	b, err := os.ReadFile("../../docs/game.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(scenes:.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("no ```yaml scenes: block in docs/game.md")
	}
	var doc struct {
		Scenes []SceneDef `yaml:"scenes"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(m[1])))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if want := DefaultScenes(); !reflect.DeepEqual(doc.Scenes, want) {
		t.Fatalf("docs/game.md scenes differ from DefaultScenes:\n got %+v\nwant %+v", doc.Scenes, want)
	}
}

func TestDamageHogger(t *testing.T) {
	s := New(defByID(t, "forest"))
	enter(t, s, "p1", 0, nil)
	r, _ := do(t, s, "s1", "p1", 1, Attack{Monster: "hogger"})
	res := r.Body.(AttackResult)
	if res.Damage < 10 || res.Damage > 15 || res.HP != 1000-res.Damage || res.Killed {
		t.Fatalf("attack: %+v", res)
	}
	if res.HitBack < 6 || res.HitBack > 12 || res.PlayerHP != 100-res.HitBack {
		t.Fatalf("hogger hits back: %+v", res)
	}
	effs := s.Apply(GMDamage{ReqID: "g1", Monster: "hogger", Amount: res.HP - 1})
	if got := effs[0].(GMReply).Body.(MonsterResult); got.HP != 1 || got.MaxHP != 1000 {
		t.Fatalf("GM damage: %+v", got)
	}
	if v := s.Inspect(); v.Monsters[0].ID != "hogger" || v.Monsters[0].HP != 1 {
		t.Fatalf("inspect: %+v", v.Monsters)
	}
	// Hogger at 1 HP survives a snapshot, as the seed article wants.
	r2, err := Restore(s.def, s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if monsterHP(r2, "hogger") != 1 {
		t.Fatalf("restored hogger at %d HP", monsterHP(r2, "hogger"))
	}
	// Dead players respawn at the spawn point with full HP.
	s.players["p1"].hp = 1
	s.Apply(GMDamage{ReqID: "g2", Monster: "wolf-1", Amount: 1})
	r, effs = do(t, s, "s1", "p1", 2, Attack{Monster: "wolf-1"})
	if res := r.Body.(AttackResult); !res.Died || res.PlayerHP != 100 {
		t.Fatalf("death: %+v", res)
	}
	if d, _, _ := s.Player("p1"); d.X != 2 || d.Y != 2 {
		t.Fatalf("dead player at (%d,%d), want spawn", d.X, d.Y)
	}
	if len(effectsOf[Broadcast](effs)) != 1 {
		t.Fatalf("no death broadcast: %v", effs)
	}
}

func TestKillLootRespawn(t *testing.T) {
	s := New(defByID(t, "forest"))
	enter(t, s, "p1", 10, nil)
	s.Apply(GMDamage{ReqID: "g1", Monster: "wolf-1", Amount: 59})
	r, effs := do(t, s, "s1", "p1", 1, Attack{Monster: "wolf-1"})
	res := r.Body.(AttackResult)
	if !res.Killed || res.HP != 0 || !reflect.DeepEqual(res.Loot, []ItemCount{{"gold", 5}, {"wolf_pelt", 1}}) {
		t.Fatalf("kill: %+v", res)
	}
	if res.HitBack != 0 {
		t.Fatalf("a dead wolf hit back: %+v", res)
	}
	d, _, _ := s.Player("p1")
	if d.Gold != 15 || d.Items["wolf_pelt"] != 1 {
		t.Fatalf("loot not given: %+v", d)
	}
	if len(effectsOf[ProfileChanged](effs)) != 1 {
		t.Fatalf("no profile change: %v", effs)
	}
	if l := s.ledger["wolf_pelt"]; l.Minted != 1 {
		t.Fatalf("ledger: %+v", l)
	}
	checkLedger(t, s)
	r, _ = do(t, s, "s1", "p1", 2, Attack{Monster: "wolf-1"})
	wantErr(t, r, ErrMonsterDead)
	for i := 0; i < 99; i++ {
		s.Apply(Tick{})
	}
	if monsterHP(s, "wolf-1") != 0 {
		t.Fatal("wolf respawned early")
	}
	effs = s.Apply(Tick{}) // tick 100: the respawn timer (100 ticks from tick 0) is due
	if monsterHP(s, "wolf-1") != 60 {
		t.Fatalf("wolf at %d HP after respawn", monsterHP(s, "wolf-1"))
	}
	if b := effectsOf[Broadcast](effs); len(b) != 1 || b[0].Body.Type != "monster_respawned" {
		t.Fatalf("respawn effects: %v", effs)
	}
	// Hogger: the boss also levels the killer up.
	s.Apply(GMDamage{ReqID: "g2", Monster: "hogger", Amount: 999})
	r, _ = do(t, s, "s1", "p1", 3, Attack{Monster: "hogger"})
	if !r.Body.(AttackResult).Killed {
		t.Fatalf("hogger: %+v", r.Body)
	}
	if d, _, _ := s.Player("p1"); d.Level != 1 || d.Items["hogger_claw"] != 1 || d.Items["potion"] != 2 || d.Gold != 215 {
		t.Fatalf("hogger loot: %+v", d)
	}
	checkLedger(t, s)
}

func TestEscortWalks(t *testing.T) {
	s := New(defByID(t, "forest"))
	path := s.def.NPCs[0].Path
	for step := 1; step <= len(path)+2; step++ {
		var effs []Effect
		for i := 0; i < 10; i++ {
			effs = append(effs, s.Apply(Tick{})...)
		}
		want := step % len(path)
		v := s.Inspect().NPCs[0]
		if v.PathIndex != want || v.X != path[want].X || v.Y != path[want].Y {
			t.Fatalf("step %d: %+v, want index %d", step, v, want)
		}
		if pc := effectsOf[PositionChanged](effs); len(pc) != 1 || pc[0].ID != "farmer" {
			t.Fatalf("step %d: effects %v", step, effs)
		}
	}
}

func TestBuy(t *testing.T) {
	s := New(defByID(t, "town"))
	enter(t, s, "p1", 250, nil)
	r, effs := do(t, s, "s1", "p1", 1, Buy{NPC: "merchant", Item: "sword", Count: 2})
	if b := r.Body.(BuyResult); b.Cost != 200 || b.Gold != 50 || b.Have != 2 {
		t.Fatalf("buy: %+v", b)
	}
	saves := effectsOf[Save](effs)
	if len(saves) != 1 || !saves[0].Urgent || saves[0].Version != 2 || saves[0].Player.Items["sword"] != 2 {
		t.Fatalf("buy must save urgently: %+v", saves)
	}
	if l := s.ledger; l["gold"].Sunk != 200 || l["sword"].Minted != 2 {
		t.Fatalf("ledger: gold %+v sword %+v", *l["gold"], *l["sword"])
	}
	r, _ = do(t, s, "s1", "p1", 2, Buy{NPC: "merchant", Item: "sword", Count: 1})
	wantErr(t, r, ErrNotEnough)
	r, _ = do(t, s, "s1", "p1", 3, Buy{NPC: "merchant", Item: "dragon", Count: 1})
	wantErr(t, r, ErrNotFound)
	r, _ = do(t, s, "s1", "p1", 4, Buy{NPC: "merchant", Item: "potion", Count: 0})
	wantErr(t, r, ErrBadRequest)
	if d, _, _ := s.Player("p1"); d.Gold != 50 {
		t.Fatalf("failed buys changed gold: %d", d.Gold)
	}
	checkLedger(t, s)
}

func TestTrade(t *testing.T) {
	s := New(defByID(t, "town"))
	enter(t, s, "a", 100, map[string]int64{"sword": 1})
	enter(t, s, "b", 10, map[string]int64{"potion": 5})
	enter(t, s, "c", 0, nil)

	r, effs := do(t, s, "sa", "a", 1, TradeOffer{To: "b", Give: []ItemCount{{"sword", 1}, {"gold", 20}}, Want: []ItemCount{{"potion", 3}, {"potion", 1}}})
	id := r.Body.(TradeOfferResult).TradeID
	if id != "town/trade-1" {
		t.Fatalf("trade id %q", id)
	}
	if n := effectsOf[Notify](effs); len(n) != 1 || n[0].Player != "b" {
		t.Fatalf("offer notify: %v", effs)
	}
	// Only the receiver may accept.
	r, _ = do(t, s, "sc", "c", 1, TradeAccept{TradeID: id})
	wantErr(t, r, ErrNotAllowed)
	r, effs = do(t, s, "sb", "b", 1, TradeAccept{TradeID: id})
	res := r.Body.(TradeResult)
	if !reflect.DeepEqual(res.Got, []ItemCount{{"gold", 20}, {"sword", 1}}) || !reflect.DeepEqual(res.Gave, []ItemCount{{"potion", 4}}) {
		t.Fatalf("trade result %+v", res)
	}
	if saves := effectsOf[Save](effs); len(saves) != 2 || !saves[0].Urgent || !saves[1].Urgent {
		t.Fatalf("trade saves: %v", saves)
	}
	a, _, _ := s.Player("a")
	b, _, _ := s.Player("b")
	if a.Gold != 80 || a.Items["sword"] != 0 || a.Items["potion"] != 4 || b.Gold != 30 || b.Items["sword"] != 1 || b.Items["potion"] != 1 {
		t.Fatalf("after trade: a=%+v b=%+v", a, b)
	}
	// The offer is consumed.
	r, _ = do(t, s, "sb", "b", 2, TradeAccept{TradeID: id})
	wantErr(t, r, ErrNotFound)

	// Atomic: b no longer has what a wants, so nothing moves at all.
	r, _ = do(t, s, "sa", "a", 2, TradeOffer{To: "b", Give: []ItemCount{{"potion", 4}}, Want: []ItemCount{{"sword", 1}}})
	id = r.Body.(TradeOfferResult).TradeID
	s.Apply(GMGive{ReqID: "g1", Player: "b", Item: "sword", Count: -1})
	before := s.Hash()
	r, _ = do(t, s, "sb", "b", 3, TradeAccept{TradeID: id})
	wantErr(t, r, ErrNotEnough)
	a2, _, _ := s.Player("a")
	if a2.Items["potion"] != 4 {
		t.Fatalf("failed trade moved items: %+v", a2)
	}
	if s.Hash() == before {
		t.Fatal("a refused accept must still record the reply and consume the offer")
	}
	// Offers need the goods and a present partner; leaving cancels them.
	r, _ = do(t, s, "sa", "a", 3, TradeOffer{To: "b", Give: []ItemCount{{"gold", 1000}}})
	wantErr(t, r, ErrNotEnough)
	r, _ = do(t, s, "sa", "a", 4, TradeOffer{To: "zed", Give: []ItemCount{{"gold", 1}}})
	wantErr(t, r, ErrNotFound)
	r, _ = do(t, s, "sa", "a", 5, TradeOffer{To: "b", Give: []ItemCount{{"gold", -1}}})
	wantErr(t, r, ErrBadRequest)
	r, _ = do(t, s, "sa", "a", 6, TradeOffer{To: "b", Give: []ItemCount{{"gold", 1}}})
	id = r.Body.(TradeOfferResult).TradeID
	s.Apply(Leave{Player: "a"})
	r, _ = do(t, s, "sb", "b", 4, TradeAccept{TradeID: id})
	wantErr(t, r, ErrNotFound)
	checkLedger(t, s)
}

func TestTravelOutboxAckDedupe(t *testing.T) {
	forest, town := New(defByID(t, "forest")), New(defByID(t, "town"))
	enter(t, forest, "p1", 40, map[string]int64{"potion": 3})
	r, effs := do(t, forest, "s1", "p1", 1, Travel{To: "town"})
	tr := r.Body.(TravelResult)
	if tr.TransferID != "forest/t1" || tr.To != "town" {
		t.Fatalf("travel: %+v", tr)
	}
	outs := effectsOf[TravelOut](effs)
	if len(outs) != 1 || outs[0].Player.Scene != "town" || outs[0].Player.Gold != 40 {
		t.Fatalf("travel out: %+v", outs)
	}
	if saves := effectsOf[Save](effs); len(saves) != 1 || !saves[0].Urgent || saves[0].Player.Scene != "town" || saves[0].Version != outs[0].Version {
		t.Fatalf("travel save: %+v", saves)
	}
	if forest.Players() != 0 || len(forest.PendingTransfers()) != 1 || forest.Inspect().PendingTransfers != 1 {
		t.Fatal("player not moved to the outbox")
	}
	r, _ = do(t, forest, "s1", "p1", 2, Travel{To: "mars"})
	wantErr(t, r, ErrNotInScene)

	// Deliver, then resend (as after the forest's crash): the town dedupes.
	o := outs[0]
	in := TravelIn{TransferID: o.TransferID, From: o.From, Player: o.Player, Version: o.Version}
	if town.TransferApplied(o.From, o.TransferID) {
		t.Fatal("transfer reported applied before its TravelIn")
	}
	effs = town.Apply(in)
	// The process asks this before claiming the lease of a resend.
	if !town.TransferApplied(o.From, o.TransferID) || town.TransferApplied(o.From, "forest/t2") ||
		town.TransferApplied("dungeon", o.TransferID) || town.TransferApplied(o.From, "junk") {
		t.Fatal("TransferApplied does not match the applied transfers")
	}
	if acks := effectsOf[AckTransfer](effs); len(acks) != 1 || acks[0].To != "forest" {
		t.Fatalf("town effects %v", effs)
	}
	h := town.Hash()
	for _, p := range forest.PendingTransfers() {
		effs = town.Apply(TravelIn{TransferID: p.TransferID, From: p.From, Player: p.Player, Version: p.Version})
		if len(effs) != 1 || effs[0].(AckTransfer).TransferID != "forest/t1" {
			t.Fatalf("resend effects %v", effs)
		}
	}
	if town.Hash() != h || town.Players() != 1 {
		t.Fatal("a resent TravelIn changed the destination")
	}
	d, _, _ := town.Player("p1")
	if d.Gold != 40 || d.Items["potion"] != 3 || d.Scene != "town" || d.X != 10 {
		t.Fatalf("arrived as %+v", d)
	}
	forest.Apply(TravelAck{TransferID: "forest/t1"})
	forest.Apply(TravelAck{TransferID: "forest/t1"}) // duplicate: harmless
	if len(forest.PendingTransfers()) != 0 {
		t.Fatal("ack did not clear the outbox")
	}
	checkLedger(t, forest)
	checkLedger(t, town)
	if forest.ledger["gold"].Out != 40 || town.ledger["gold"].In != 40 {
		t.Fatal("travel not in the ledgers")
	}
	// Out-of-order transfers from one source are deduped too.
	for _, n := range []string{"forest/t5", "forest/t3", "forest/t5", "forest/t2", "forest/t3"} {
		town.Apply(TravelIn{TransferID: n, From: "forest", Player: player.Data{ID: "x" + n}, Version: 1})
	}
	if town.Players() != 4 {
		t.Fatalf("%d players after out-of-order transfers, want 4", town.Players())
	}
	if ss := town.applied["forest"]; ss.floor != 3 || !reflect.DeepEqual(ss.seen, []uint64{5}) {
		t.Fatalf("seen set %+v", *ss)
	}
	// Malformed transfer ids are not acknowledged (the source keeps the player).
	effs = town.Apply(TravelIn{TransferID: "junk", From: "forest", Player: player.Data{ID: "y"}})
	if len(effectsOf[AckTransfer](effs)) != 0 || town.Players() != 4 {
		t.Fatalf("malformed transfer: %v", effs)
	}
}

func TestDungeonRoom(t *testing.T) {
	forest := New(defByID(t, "forest"))
	enter(t, forest, "p1", 0, nil)
	r, effs := do(t, forest, "s1", "p1", 1, EnterDungeon{})
	dr := r.Body.(DungeonResult)
	cr := effectsOf[CreateRoom](effs)
	if dr.RoomID != "forest/dungeon-1" || len(cr) != 1 || cr[0].RoomID != dr.RoomID || cr[0].Def.Kind != KindDungeon {
		t.Fatalf("enter dungeon: %+v %v", dr, effs)
	}
	if err := cr[0].Def.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := forest.Inspect().Rooms; !reflect.DeepEqual(got, []string{"forest/dungeon-1"}) {
		t.Fatalf("rooms %v", got)
	}
	if lr := forest.LiveRooms(); len(lr) != 1 || !reflect.DeepEqual(lr[0], cr[0]) {
		t.Fatalf("LiveRooms %+v", lr)
	}
	room := New(cr[0].Def)
	o := effectsOf[TravelOut](effs)[0]
	effs = room.Apply(TravelIn{TransferID: o.TransferID, From: o.From, Player: o.Player, Version: o.Version})
	forest.Apply(TravelAck{TransferID: effectsOf[AckTransfer](effs)[0].TransferID})

	// Kill the king: the room sends everyone home and, once acked, ends.
	room.Apply(GMDamage{ReqID: "g", Monster: "kobold-king", Amount: 299})
	r, effs = do(t, room, "s1", "p1", 2, Attack{Monster: "kobold-king"})
	if !r.Body.(AttackResult).Killed {
		t.Fatalf("king: %+v", r.Body)
	}
	back := effectsOf[TravelOut](effs)
	if len(back) != 1 || back[0].To != "forest" || back[0].Player.Items["kings_crown"] != 1 {
		t.Fatalf("back: %+v", back)
	}
	if len(effectsOf[EndRoom](effs)) != 0 || !room.Ended() {
		t.Fatal("EndRoom before the transfers were acked")
	}
	effs = forest.Apply(TravelIn{TransferID: back[0].TransferID, From: back[0].From, Player: back[0].Player, Version: back[0].Version})
	effs = room.Apply(TravelAck{TransferID: effectsOf[AckTransfer](effs)[0].TransferID})
	ends := effectsOf[EndRoom](effs)
	if len(ends) != 1 || ends[0].Parent != "forest" || ends[0].AppliedFloor != 1 {
		t.Fatalf("end: %v", effs)
	}
	if re := room.RecoveryEffects(); len(re) != 1 {
		t.Fatalf("an ended room must re-emit EndRoom on recovery: %v", re)
	}
	forest.Apply(RoomEnded{RoomID: ends[0].RoomID, Applied: ends[0].Applied, AppliedFloor: ends[0].AppliedFloor})
	if v := forest.Inspect(); len(v.Rooms) != 0 || v.Players[0].Items["kings_crown"] != 1 {
		t.Fatalf("forest after room: %+v", v)
	}
	checkLedger(t, forest)
	checkLedger(t, room)

	// A room that ends before the transfer into it arrived: the parent takes
	// the player back.
	r, _ = do(t, forest, "s1", "p1", 3, EnterDungeon{})
	if r.Body.(DungeonResult).RoomID != "forest/dungeon-2" {
		t.Fatalf("second room %+v", r.Body)
	}
	if forest.Players() != 0 {
		t.Fatal("player still in forest")
	}
	effs = forest.Apply(RoomEnded{RoomID: "forest/dungeon-2"})
	if forest.Players() != 1 || len(forest.PendingTransfers()) != 0 || len(forest.Inspect().Rooms) != 0 {
		t.Fatalf("player not taken back: %v", effs)
	}
	checkLedger(t, forest)
	// No dungeon in town.
	town := New(defByID(t, "town"))
	enter(t, town, "p2", 0, nil)
	r, _ = do(t, town, "s2", "p2", 1, EnterDungeon{})
	wantErr(t, r, ErrNotAllowed)
}

func TestEmptyRoomEnds(t *testing.T) {
	def, _ := defByID(t, "forest").RoomDef("forest/dungeon-9", 1)
	room := New(def)
	var ends []EndRoom
	for i := 0; i < emptyRoomTicks; i++ {
		ends = append(ends, effectsOf[EndRoom](room.Apply(Tick{}))...)
	}
	if len(ends) != 1 || !room.Ended() {
		t.Fatalf("empty room: ended=%v %v", room.Ended(), ends)
	}
	// A late arrival bounces back to the parent.
	effs := room.Apply(TravelIn{TransferID: "forest/t4", From: "forest", Player: player.Data{ID: "late", Gold: 3}, Version: 2})
	if o := effectsOf[TravelOut](effs); len(o) != 1 || o[0].To != "forest" || o[0].Player.Gold != 3 {
		t.Fatalf("bounce: %v", effs)
	}
	checkLedger(t, room)
}

func TestGMDedupe(t *testing.T) {
	s := New(defByID(t, "town"))
	enter(t, s, "p1", 90, nil)
	g1 := s.Apply(GMGive{ReqID: "r1", Player: "p1", Item: "gold", Count: 5})
	g2 := s.Apply(GMGive{ReqID: "r1", Player: "p1", Item: "gold", Count: 5})
	if d, _, _ := s.Player("p1"); d.Gold != 95 || !g2[0].(GMReply).Resent || g1[0].(GMReply).Body != g2[0].(GMReply).Body {
		t.Fatalf("GM dedupe: gold %d, %v %v", d.Gold, g1, g2)
	}
}

func TestSaves(t *testing.T) {
	s := New(defByID(t, "forest"))
	enter(t, s, "p1", 0, nil)
	enter(t, s, "p2", 0, nil)
	if len(s.Apply(SaveTick{})) != 0 {
		t.Fatal("saves with nothing dirty")
	}
	do(t, s, "s1", "p1", 1, Move{X: 5, Y: 5})
	do(t, s, "s1", "p1", 2, Move{X: 6, Y: 5})
	if got := s.DirtyPlayers(); !reflect.DeepEqual(got, []string{"p1"}) {
		t.Fatalf("dirty %v", got)
	}
	effs := s.Apply(SaveTick{})
	if len(effs) != 1 || effs[0].(Save).Version != 2 || effs[0].(Save).Urgent || effs[0].(Save).Player.X != 6 {
		t.Fatalf("save tick: %v", effs)
	}
	if len(s.Apply(SaveTick{})) != 0 {
		t.Fatal("saved twice")
	}
	do(t, s, "s1", "p1", 3, Move{X: 7, Y: 5})
	if effs := s.Apply(SaveTick{}); effs[0].(Save).Version != 3 {
		t.Fatalf("second save: %v", effs)
	}
	// Until acknowledged, the save is resent on recovery (it may have been
	// lost with the process), at the same version.
	if re := effectsOf[Save](s.RecoveryEffects()); len(re) != 1 || re[0].Version != 3 || re[0].Player.X != 7 {
		t.Fatalf("recovery saves: %+v", re)
	}
	s.Apply(SaveAck{Player: "p1", Version: 3})
	if s.players["p1"].acked != 3 || len(s.RecoveryEffects()) != 0 {
		t.Fatal("ack not recorded")
	}
	// A rejection of a save from before this stay is stale and ignored.
	s.Apply(SaveRejected{Player: "p2", Version: 1, Reason: "stale version"})
	if s.Players() != 2 {
		t.Fatal("stale rejection dropped the player")
	}
	effs = s.Apply(SaveRejected{Player: "p1", Version: 3, Reason: "stale epoch"})
	if k := effectsOf[Kick](effs); len(k) != 1 || k[0].Player != "p1" || s.Players() != 1 {
		t.Fatalf("rejection: %v", effs)
	}
	checkLedger(t, s)
	// Leave saves a dirty player urgently; a clean one needs no save.
	do(t, s, "s2", "p2", 1, Move{X: 9, Y: 9})
	effs = s.Apply(Leave{Player: "p2"})
	if sv := effectsOf[Save](effs); len(sv) != 1 || !sv[0].Urgent {
		t.Fatalf("leave: %v", effs)
	}
	// Leaving with a saved but unacknowledged version resends that save.
	enter(t, s, "p3", 0, nil)
	do(t, s, "s3", "p3", 1, Move{X: 9, Y: 9})
	s.Apply(SaveTick{})
	effs = s.Apply(Leave{Player: "p3"})
	if sv := effectsOf[Save](effs); len(sv) != 1 || sv[0].Version != 2 {
		t.Fatalf("leave after unacked save: %v", effs)
	}
}

func TestGMGive(t *testing.T) {
	s := New(defByID(t, "town"))
	enter(t, s, "p1", 10, nil)
	effs := s.Apply(GMGive{ReqID: "1", Player: "p1", Item: "gem", Count: 3})
	if g := effs[0].(GMReply).Body.(GiveResult); g.Count != 3 || !effsHaveUrgentSave(effs) {
		t.Fatalf("give: %v", effs)
	}
	effs = s.Apply(GMGive{ReqID: "2", Player: "p1", Item: "gold", Count: -4})
	if g := effs[0].(GMReply).Body.(GiveResult); g.Count != 6 {
		t.Fatalf("take gold: %v", effs)
	}
	effs = s.Apply(GMGive{ReqID: "3", Player: "p1", Item: "gem", Count: -4})
	if e, ok := effs[0].(GMReply).Body.(ErrorResult); !ok || e.Code != ErrNotEnough {
		t.Fatalf("over-take: %v", effs)
	}
	effs = s.Apply(GMGive{ReqID: "4", Player: "nobody", Item: "gem", Count: 1})
	if e, ok := effs[0].(GMReply).Body.(ErrorResult); !ok || e.Code != ErrNotInScene {
		t.Fatalf("absent: %v", effs)
	}
	if l := s.ledger; l["gem"].Minted != 3 || l["gold"].Sunk != 4 {
		t.Fatalf("ledger %+v %+v", *l["gem"], *l["gold"])
	}
	checkLedger(t, s)
}

func effsHaveUrgentSave(effs []Effect) bool {
	for _, s := range effectsOf[Save](effs) {
		if s.Urgent {
			return true
		}
	}
	return false
}

func TestInspectJSON(t *testing.T) {
	s := New(defByID(t, "forest"))
	enter(t, s, "p2", 5, map[string]int64{"potion": 1})
	enter(t, s, "p1", 5, nil)
	v := s.Inspect()
	v.Epoch = 7
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]json.RawMessage) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		sort.Strings(k)
		return k
	}
	if got := keys(m); !reflect.DeepEqual(got, []string{"epoch", "ledger", "monsters", "npcs", "pending_transfers", "players", "rooms", "scene", "tick"}) {
		t.Fatalf("view keys %v", got)
	}
	var parts struct {
		Monsters []map[string]json.RawMessage
		NPCs     []map[string]json.RawMessage `json:"npcs"`
		Players  []map[string]json.RawMessage
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		got  map[string]json.RawMessage
		want []string
	}{
		"monster": {parts.Monsters[0], []string{"hp", "id", "max_hp", "name"}},
		"npc":     {parts.NPCs[0], []string{"id", "name", "path_index", "x", "y"}},
		"player":  {parts.Players[0], []string{"gold", "hp", "id", "items", "name", "x", "y"}},
	} {
		if got := keys(tc.got); !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("%s keys %v, want %v", name, got, tc.want)
		}
	}
	if v.Players[0].ID != "p1" || v.Monsters[0].ID != "hogger" || v.Monsters[3].ID != "wolf-3" {
		t.Fatalf("not sorted by id: %+v", v)
	}
}
