package game

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"

	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/scenedef"
	"github.com/respawn-dev/respawn/internal/validate"
)

const goldItem = player.GoldItem

// Gameplay constants. They are part of the rules, so changing one changes
// what a replayed log produces: treat them like the snapshot format.
const (
	maxAmount      = scenedef.MaxAmount // any single count, HP or price a request may carry (= validate.MaxCount)
	maxPrice       = scenedef.MaxPrice
	maxIDLen       = scenedef.MaxIDLen
	maxBuyCount    = 1000
	maxTradeLines  = 16
	maxOpenTrades  = 4    // open offers per offering player
	tradeTTL       = 600  // ticks an offer stays open (60 s at 10 Hz)
	sessionTTL     = 3000 // ticks an idle session's last reply is kept (5 min)
	pruneEvery     = 100  // ticks between session prunes
	regenEvery     = 10   // ticks between +1 HP for wounded players
	emptyRoomTicks = 3000 // an empty dungeon room ends after this long
	// GMMemory is how many GM request ids a scene remembers (with a hash of
	// each command and its reply) to answer a retry without applying it
	// again; older ids are forgotten first.
	GMMemory        = 256
	dedupeWindow    = 256 // out-of-order transfer ids remembered per source
	maxChatLen      = 256
	maxPlayers      = 10000
	basePlayerHP    = 100
	playerHPPerLvl  = 10
	baseDamage      = 10
	damagePerLvl    = 2
	damageSpread    = 6
	maxPlayerLevel  = 1000
	maxSceneCounter = 1 << 62
)

type monster struct {
	def       *MonsterDef
	hp        int64
	respawnAt uint64 // tick the dead monster comes back; 0 = never (or alive)
}

type npc struct {
	def       *NPCDef
	pathIndex int
}

type playerState struct {
	data    player.Data
	version uint64 // version of data; bumped on the first change after a save
	dirty   bool   // changed since the last Save at version
	acked   uint64 // highest version the data server acknowledged
	join    uint64 // version at arrival: rejections of older saves are stale
	hp      int64
}

type gmEntry struct {
	reqID string
	hash  uint64 // of the command without its id; 0 = unknown (old snapshot)
	body  Result
	// player and version: the player a give changed and the version of its
	// save, so a Reload that discards unacknowledged versions forgets the
	// give too (a retry then applies it to the reloaded player).
	player  string
	version uint64
}

type trade struct {
	id, from, to string
	give, want   []ItemCount
	expires      uint64
}

// seenSet remembers which transfers from one source were applied: every
// counter <= floor, plus the sorted counters above it. In-order arrival keeps
// seen empty; out-of-order arrival is bounded by dedupeWindow.
type seenSet struct {
	floor uint64
	seen  []uint64
}

type room struct {
	id   string
	seed uint64
}

// LedgerEntry counts how one item type (or gold) entered and left a scene.
// For every item: held by players here == Entered − Left + In − Out +
// Minted − Sunk.
type LedgerEntry struct {
	Entered int64 `json:"entered"` // brought by Enter
	Left    int64 `json:"left"`    // carried away by Leave or a rejected save
	In      int64 `json:"in"`      // brought by TravelIn (and players taken back from ended rooms)
	Out     int64 `json:"out"`     // carried away by TravelOut
	Minted  int64 `json:"minted"`  // loot, purchases (the item), GM give
	Sunk    int64 `json:"sunk"`    // purchases (the gold), GM take
}

// Scene is one scene's or dungeon room's state. It is not safe for
// concurrent use: one goroutine owns it, as the scene process does.
type Scene struct {
	def   SceneDef
	tick  uint64
	rng   rng
	mons  []monster
	monIx map[string]int
	npcs  []npc
	npcIx map[string]int

	players map[string]*playerState
	plist   []*playerState // sorted by id: the only order players are visited in

	// sessions are the players' session records, by player id (session.go).
	sessions    map[string]*sessRec
	sessBytes   int // stored replies' cost, at most sessionBudget
	sessEntries int
	nextEntry   uint64
	departedN   int
	fifo        []entryRef // stored replies oldest first, built for eviction at the budget; derived
	fifoHead    int
	opBuf       []byte // scratch for hashing ops

	gm      []gmEntry // oldest first, at most GMMemory
	trades  []trade   // in creation order
	outbox  []TravelOut
	applied map[string]*seenSet // by source scene
	rooms   []room              // live rooms opened from here, in creation order
	ledger  map[string]*LedgerEntry

	nextTransfer, nextTrade, nextRoom uint64
	ended                             bool   // dungeon room: boss dead or empty too long
	emptySince                        uint64 // dungeon room: tick the last player left
}

// New returns the fresh state of def, its RNG seeded from def.Seed. def should
// have passed Validate.
func New(def SceneDef) *Scene {
	def = cloneDef(def)
	s := &Scene{
		def:      def,
		rng:      rng{state: def.Seed},
		monIx:    make(map[string]int, len(def.Monsters)),
		npcIx:    make(map[string]int, len(def.NPCs)),
		players:  make(map[string]*playerState),
		sessions: make(map[string]*sessRec),
		applied:  make(map[string]*seenSet),
		ledger:   make(map[string]*LedgerEntry),
	}
	s.mons = make([]monster, len(def.Monsters))
	for i := range def.Monsters {
		s.mons[i] = monster{def: &s.def.Monsters[i], hp: def.Monsters[i].HP}
		s.monIx[def.Monsters[i].ID] = i
	}
	s.npcs = make([]npc, len(def.NPCs))
	for i := range def.NPCs {
		s.npcs[i] = npc{def: &s.def.NPCs[i]}
		s.npcIx[def.NPCs[i].ID] = i
	}
	return s
}

func cloneDef(d SceneDef) SceneDef {
	d.Exits = append([]string(nil), d.Exits...)
	d.Monsters = append([]MonsterDef(nil), d.Monsters...)
	for i := range d.Monsters {
		d.Monsters[i].Loot = append([]LootDef(nil), d.Monsters[i].Loot...)
	}
	d.NPCs = append([]NPCDef(nil), d.NPCs...)
	for i := range d.NPCs {
		d.NPCs[i].Path = append([]Point(nil), d.NPCs[i].Path...)
		d.NPCs[i].Shop = append([]ShopItem(nil), d.NPCs[i].Shop...)
	}
	if d.Dungeon != nil {
		dg := *d.Dungeon
		dg.Monsters = append([]MonsterDef(nil), dg.Monsters...)
		for i := range dg.Monsters {
			dg.Monsters[i].Loot = append([]LootDef(nil), dg.Monsters[i].Loot...)
		}
		d.Dungeon = &dg
	}
	return d
}

// ID returns the scene id.
func (s *Scene) ID() string { return s.def.ID }

// Def returns a copy of the scene's definition.
func (s *Scene) Def() SceneDef { return cloneDef(s.def) }

// Tick returns how many ticks the scene has applied.
func (s *Scene) Tick() uint64 { return s.tick }

// Players returns how many players are in the scene.
func (s *Scene) Players() int { return len(s.plist) }

// Ended reports whether a dungeon room is finished (it emits EndRoom once its
// outbox is empty).
func (s *Scene) Ended() bool { return s.ended }

// TransferApplied reports whether the transfer id from scene from was
// already applied here: a TravelIn for it is a resend that onTravelIn only
// acknowledges.
func (s *Scene) TransferApplied(from, id string) bool {
	n, ok := parseTransfer(from, id)
	if !ok {
		return false
	}
	ss := s.applied[from]
	return ss != nil && ss.has(n)
}

// Player returns a copy of a present player's data and its version.
func (s *Scene) Player(id string) (player.Data, uint64, bool) {
	p := s.players[id]
	if p == nil {
		return player.Data{}, 0, false
	}
	return p.data.Clone(), p.version, true
}

// DirtyPlayers returns the ids of players changed since their last Save,
// sorted. It changes nothing; SaveTick is what emits the saves.
func (s *Scene) DirtyPlayers() []string {
	var ids []string
	for _, p := range s.plist {
		if p.dirty {
			ids = append(ids, p.data.ID)
		}
	}
	return ids
}

// PendingTransfers returns the outbox: every TravelOut not yet acknowledged,
// in the order they were made. The process resends them after replay.
func (s *Scene) PendingTransfers() []TravelOut {
	out := make([]TravelOut, len(s.outbox))
	for i, t := range s.outbox {
		t.Player = t.Player.Clone()
		t.Replies = s.carriedReplies(t.Player.ID, t.Session, t.LastSeq)
		out[i] = t
	}
	return out
}

// LiveRooms returns a CreateRoom for each dungeon room opened from here that
// has not ended. After replay the process creates any that it lacks (a crash
// may fall between logging EnterDungeon and creating the room).
func (s *Scene) LiveRooms() []CreateRoom {
	out := make([]CreateRoom, 0, len(s.rooms))
	for _, r := range s.rooms {
		def, err := s.def.RoomDef(r.id, r.seed)
		if err != nil {
			continue // unreachable: rooms are only opened when Dungeon is set
		}
		out = append(out, CreateRoom{RoomID: r.id, Def: def})
	}
	return out
}

// RecoveryEffects is what the process performs after restoring and replaying
// the scene, instead of re-sending replayed effects: rooms to (re)create,
// then pending transfers, then EndRoom if the room had finished, then saves
// the data server has not acknowledged (same version: it must treat a save
// of the version it already holds as a duplicate and acknowledge it).
func (s *Scene) RecoveryEffects() []Effect {
	var out []Effect
	for _, r := range s.LiveRooms() {
		out = append(out, r)
	}
	for _, t := range s.PendingTransfers() {
		out = append(out, t)
	}
	if e, ok := s.endRoomEffect(); ok {
		out = append(out, e)
	}
	// A Save emitted before the crash may never have reached the data server,
	// and replay has marked the player clean: resend every unacknowledged one.
	// Dirty players are left to the next SaveTick.
	for _, p := range s.plist {
		if !p.dirty && p.version > p.acked {
			out = append(out, Save{Player: p.data.Clone(), Version: p.version, Urgent: true})
		}
	}
	return out
}

// Apply applies one event and returns what the process must do, in order.
// It never does I/O and never fails: a bad event is refused in a Reply or
// reported as Warn.
func (s *Scene) Apply(ev Event) []Effect {
	switch ev := ev.(type) {
	case Tick:
		return s.onTick()
	case SaveTick:
		return s.onSaveTick()
	case Request:
		return s.onRequest(ev)
	case Attach:
		return s.onAttach(ev)
	case Enter:
		return s.onEnter(ev)
	case Leave:
		return s.onLeave(ev)
	case GMDamage:
		return s.onGMDamage(ev)
	case GMGive:
		return s.onGMGive(ev)
	case TravelIn:
		return s.onTravelIn(ev)
	case TravelAck:
		return s.onTravelAck(ev)
	case SaveAck:
		if p := s.players[ev.Player]; p != nil && ev.Version > p.acked {
			p.acked = ev.Version
		}
		return nil
	case SaveRejected:
		return s.onSaveRejected(ev)
	case RoomEnded:
		return s.onRoomEnded(ev)
	case Reload:
		return s.onReload(ev)
	default:
		return []Effect{Warn{Msg: fmt.Sprintf("scene %s: unknown event %T", s.def.ID, ev)}}
	}
}

// ---- time ----

func (s *Scene) onTick() []Effect {
	s.tick++
	var out []Effect
	for i := range s.mons {
		m := &s.mons[i]
		if m.hp == 0 && m.respawnAt != 0 && s.tick >= m.respawnAt {
			m.hp, m.respawnAt = m.def.HP, 0
			out = append(out, Broadcast{Scene: s.def.ID, Body: Notice{Type: "monster_respawned", ID: m.def.ID, Name: m.def.Name}})
		}
	}
	for i := range s.npcs {
		n := &s.npcs[i]
		if n.def.Kind != NPCEscort || len(n.def.Path) < 2 || s.tick%n.def.EffectiveStepTicks() != 0 {
			continue
		}
		n.pathIndex = (n.pathIndex + 1) % len(n.def.Path)
		pt := n.def.Path[n.pathIndex]
		out = append(out, PositionChanged{Scene: s.def.ID, Kind: "npc", ID: n.def.ID, X: pt.X, Y: pt.Y})
	}
	if s.tick%regenEvery == 0 {
		for _, p := range s.plist {
			if max := maxHP(p.data.Level); p.hp < max {
				p.hp++
			}
		}
	}
	if len(s.trades) > 0 {
		kept := s.trades[:0]
		for _, t := range s.trades {
			if s.tick < t.expires {
				kept = append(kept, t)
			}
		}
		clear(s.trades[len(kept):])
		s.trades = kept
	}
	if s.tick%pruneEvery == 0 {
		s.pruneSessions()
	}
	if s.def.Kind == KindDungeon && !s.ended && len(s.plist) == 0 && len(s.outbox) == 0 &&
		s.tick-s.emptySince >= emptyRoomTicks {
		out = s.endRoom(out)
	}
	return out
}

func (s *Scene) onSaveTick() []Effect {
	var out []Effect
	for _, p := range s.plist {
		if p.dirty {
			out = append(out, s.save(p, false))
		}
	}
	return out
}

// ---- players ----

func maxHP(level int) int64 {
	level = min(max(level, 0), maxPlayerLevel)
	return basePlayerHP + playerHPPerLvl*int64(level)
}

// touch records a change to p: the first change after a save moves it to a
// new version, so every Save carries a version the data server has not seen.
func (p *playerState) touch() {
	if !p.dirty {
		p.version++
		p.dirty = true
	}
}

func (s *Scene) save(p *playerState, urgent bool) Save {
	p.touch()
	p.dirty = false
	return Save{Player: p.data.Clone(), Version: p.version, Urgent: urgent}
}

func (s *Scene) profile(p *playerState) ProfileChanged {
	items := make([]ItemCount, 0, len(p.data.Items))
	for _, k := range p.data.ItemNames() {
		items = append(items, ItemCount{Item: k, Count: p.data.Items[k]})
	}
	return ProfileChanged{Player: p.data.ID, Level: p.data.Level, Gold: p.data.Gold, Items: items}
}

func (s *Scene) led(item string) *LedgerEntry {
	e := s.ledger[item]
	if e == nil {
		e = &LedgerEntry{}
		s.ledger[item] = e
	}
	return e
}

// count applies f to the ledger entry of gold and every item d holds.
func (s *Scene) count(d *player.Data, f func(e *LedgerEntry, n int64)) {
	f(s.led(goldItem), d.Gold)
	for _, k := range d.ItemNames() {
		f(s.led(k), d.Items[k])
	}
}

// addPlayer places p in the scene. The caller has checked it is absent.
func (s *Scene) addPlayer(p *playerState) {
	s.players[p.data.ID] = p
	i := sort.Search(len(s.plist), func(i int) bool { return s.plist[i].data.ID >= p.data.ID })
	s.plist = append(s.plist, nil)
	copy(s.plist[i+1:], s.plist[i:])
	s.plist[i] = p
}

// removePlayer takes p out of the scene and cancels its trades.
func (s *Scene) removePlayer(p *playerState) {
	id := p.data.ID
	delete(s.players, id)
	i := sort.Search(len(s.plist), func(i int) bool { return s.plist[i].data.ID >= id })
	if i < len(s.plist) && s.plist[i] == p {
		copy(s.plist[i:], s.plist[i+1:])
		s.plist[len(s.plist)-1] = nil // do not pin the departed player
		s.plist = s.plist[:len(s.plist)-1]
	}
	kept := s.trades[:0]
	for _, t := range s.trades {
		if t.from != id && t.to != id {
			kept = append(kept, t)
		}
	}
	clear(s.trades[len(kept):])
	s.trades = kept
	if len(s.plist) == 0 {
		s.emptySince = s.tick
	}
}

// arrive makes incoming data a present player, placed at the spawn point.
func (s *Scene) arrive(d player.Data, version uint64) *playerState {
	d = d.Clone()
	if len(d.Items) == 0 {
		d.Items = nil
	}
	p := &playerState{data: d, version: version, join: version, acked: version, hp: maxHP(d.Level)}
	if d.Scene != s.def.ID {
		p.data.Scene = s.def.ID
		p.touch()
	}
	s.addPlayer(p)
	return p
}

func (s *Scene) onEnter(ev Enter) []Effect {
	id := ev.Player.ID
	if id == "" || len(id) > maxIDLen {
		return []Effect{Warn{Msg: fmt.Sprintf("scene %s: enter with a bad player id %q", s.def.ID, id)}}
	}
	if s.players[id] != nil {
		// Already here (a duplicate enter): the scene's copy is newer.
		return nil
	}
	if len(s.plist) >= maxPlayers {
		return []Effect{Kick{Player: id, Reason: "scene full"}}
	}
	p := s.arrive(ev.Player, ev.Version)
	s.sessionArrive(id, "", 0, nil)
	if !s.def.InBounds(p.data.X, p.data.Y) {
		p.data.X, p.data.Y = s.def.Spawn.X, s.def.Spawn.Y
		p.touch()
	}
	s.count(&p.data, func(e *LedgerEntry, n int64) { e.Entered += n })
	out := []Effect{Broadcast{Scene: s.def.ID, Body: Notice{Type: "player_entered", ID: id, Name: p.data.Name}}}
	if s.ended {
		out = s.travelOut(p, s.def.Parent, out)
		out, _ = s.maybeEndRoom(out)
	}
	return out
}

func (s *Scene) onLeave(ev Leave) []Effect {
	p := s.players[ev.Player]
	if p == nil {
		return nil
	}
	if rec := s.sessions[ev.Player]; ev.Session != "" && (rec == nil || rec.session != ev.Session) {
		// A stale logout: a newer session owns the player now.
		return nil
	}
	s.removePlayer(p)
	s.sessionDepart(ev.Player, "")
	s.count(&p.data, func(e *LedgerEntry, n int64) { e.Left += n })
	if s.def.Parent != "" {
		// A room may be gone when the player returns: log back in to the parent.
		p.data.Scene = s.def.Parent
		p.touch()
	}
	out := []Effect{Broadcast{Scene: s.def.ID, Body: Notice{Type: "player_left", ID: p.data.ID, Name: p.data.Name}}}
	switch {
	case p.dirty:
		out = append(out, s.save(p, true))
	case p.version > p.acked:
		// Its last save is unacknowledged (maybe lost in a crash): send it again.
		out = append(out, Save{Player: p.data.Clone(), Version: p.version, Urgent: true})
	}
	return out
}

// onReload takes the data server's copy of a present player. The items it
// held here leave the ledger and the reloaded ones enter it, so the ledger
// still balances; the player stays where it stands.
func (s *Scene) onReload(ev Reload) []Effect {
	p := s.players[ev.Player.ID]
	if p == nil || ev.Version <= p.join {
		return nil // gone, or already reloaded to this version or a newer one
	}
	s.count(&p.data, func(e *LedgerEntry, n int64) { e.Left += n })
	s.gmForget(p.data.ID, p.acked)
	d := ev.Player.Clone()
	if len(d.Items) == 0 {
		d.Items = nil
	}
	x, y := p.data.X, p.data.Y
	d.Scene = s.def.ID
	d.X, d.Y = x, y
	p.data = d
	p.version, p.acked, p.join, p.dirty = ev.Version, ev.Version, ev.Version, false
	p.hp = min(p.hp, maxHP(d.Level))
	if ev.Player.Scene != d.Scene || ev.Player.X != x || ev.Player.Y != y {
		p.touch() // where it stands here is newer than the stored copy
	}
	s.count(&p.data, func(e *LedgerEntry, n int64) { e.Entered += n })
	return []Effect{s.profile(p)}
}

func (s *Scene) onSaveRejected(ev SaveRejected) []Effect {
	p := s.players[ev.Player]
	if p == nil || (ev.Version != 0 && ev.Version <= p.join) {
		return nil
	}
	// Another epoch or scene owns the player now; keeping it would fork it.
	s.removePlayer(p)
	s.sessionDepart(ev.Player, "")
	s.count(&p.data, func(e *LedgerEntry, n int64) { e.Left += n })
	return []Effect{Kick{Player: p.data.ID, Reason: "save rejected: " + ev.Reason}}
}

// ---- requests ----

func errResult(code, format string, args ...any) ErrorResult {
	return ErrorResult{Code: code, Error: fmt.Sprintf(format, args...)}
}

func (s *Scene) applyOp(p *playerState, op Op, out []Effect) (Result, []Effect) {
	switch op := op.(type) {
	case Move:
		return s.opMove(p, op, out)
	case Attack:
		return s.opAttack(p, op, out)
	case Buy:
		return s.opBuy(p, op, out)
	case TradeOffer:
		return s.opTradeOffer(p, op, out)
	case TradeAccept:
		return s.opTradeAccept(p, op, out)
	case Travel:
		return s.opTravel(p, op, out)
	case EnterDungeon:
		return s.opEnterDungeon(p, out)
	case Chat:
		if op.Text == "" || len(op.Text) > maxChatLen {
			return errResult(ErrBadRequest, "chat text must be 1..%d bytes", maxChatLen), out
		}
		out = append(out, ChatOut{Scene: s.def.ID, From: p.data.ID, Name: p.data.Name, Text: op.Text})
		return OKResult{}, out
	default:
		return errResult(ErrBadRequest, "unknown op %T", op), out
	}
}

func (s *Scene) opMove(p *playerState, op Move, out []Effect) (Result, []Effect) {
	if !s.def.InBounds(op.X, op.Y) {
		return errResult(ErrBadRequest, "(%d,%d) is outside %s", op.X, op.Y, s.def.ID), out
	}
	if op.X != p.data.X || op.Y != p.data.Y {
		p.data.X, p.data.Y = op.X, op.Y
		p.touch()
		out = append(out, PositionChanged{Scene: s.def.ID, Kind: "player", ID: p.data.ID, X: op.X, Y: op.Y})
	}
	return MoveResult{X: op.X, Y: op.Y}, out
}

func (s *Scene) opAttack(p *playerState, op Attack, out []Effect) (Result, []Effect) {
	i, ok := s.monIx[op.Monster]
	if !ok {
		return errResult(ErrNotFound, "no monster %s in %s", op.Monster, s.def.ID), out
	}
	m := &s.mons[i]
	if m.hp == 0 {
		return errResult(ErrMonsterDead, "%s is dead", m.def.ID), out
	}
	lvl := min(max(p.data.Level, 0), maxPlayerLevel)
	dmg := baseDamage + damagePerLvl*int64(lvl) + s.rng.intn(damageSpread)
	res := AttackResult{Monster: m.def.ID, Damage: dmg, MaxHP: m.def.HP}
	if dmg >= m.hp {
		res.Killed = true
		res.Loot, out = s.kill(m, p, out)
	} else {
		m.hp -= dmg
		if d := m.def.Damage; d > 0 {
			// A wounded monster hits back: between half and all of its damage.
			hit := d/2 + s.rng.intn(d-d/2+1)
			res.HitBack = hit
			p.hp -= hit
			if p.hp <= 0 {
				res.Died = true
				out = s.die(p, out)
			}
		}
	}
	res.HP = m.hp
	res.PlayerHP = p.hp
	if s.players[p.data.ID] == nil {
		res.PlayerHP = maxHP(p.data.Level) // sent home with the room's end
	}
	return res, out
}

// die respawns a killed player at the spawn point with full HP.
func (s *Scene) die(p *playerState, out []Effect) []Effect {
	p.hp = maxHP(p.data.Level)
	p.data.X, p.data.Y = s.def.Spawn.X, s.def.Spawn.Y
	p.touch()
	return append(out,
		Broadcast{Scene: s.def.ID, Body: Notice{Type: "player_died", ID: p.data.ID, Name: p.data.Name}},
		PositionChanged{Scene: s.def.ID, Kind: "player", ID: p.data.ID, X: p.data.X, Y: p.data.Y})
}

// kill marks m dead and gives its loot to killer (nil for a GM kill).
func (s *Scene) kill(m *monster, killer *playerState, out []Effect) ([]ItemCount, []Effect) {
	m.hp = 0
	m.respawnAt = 0
	if m.def.RespawnTicks > 0 {
		m.respawnAt = s.tick + m.def.RespawnTicks
	}
	n := Notice{Type: "monster_killed", ID: m.def.ID, Name: m.def.Name}
	var loot []ItemCount
	if killer != nil {
		n.By = killer.data.ID
		if m.def.GoldDrop > 0 {
			loot = append(loot, ItemCount{Item: goldItem, Count: m.def.GoldDrop})
		}
		for _, l := range m.def.Loot {
			loot = append(loot, ItemCount{Item: l.Item, Count: l.Count})
		}
		given := loot[:0:0]
		for _, l := range loot {
			if s.addItem(killer, l.Item, l.Count) == nil {
				s.led(l.Item).Minted += l.Count
				given = append(given, l)
			}
		}
		loot = given
		if m.def.Boss && killer.data.Level < maxPlayerLevel {
			killer.data.Level++
		}
		killer.touch()
		out = append(out, s.profile(killer))
	}
	out = append(out, Broadcast{Scene: s.def.ID, Body: n})
	if m.def.Boss && s.def.Kind == KindDungeon {
		out = s.endRoom(out)
	}
	return loot, out
}

// addItem changes p's count of item by delta, refusing negative balances and
// int64 overflow (player.Add checks only the first).
func (s *Scene) addItem(p *playerState, item string, delta int64) error {
	have := p.data.Count(item)
	if delta > 0 && have > maxHoldable-delta {
		return fmt.Errorf("player %s: %s would exceed %d", p.data.ID, item, int64(maxHoldable))
	}
	if err := p.data.Add(item, delta); err != nil {
		return err
	}
	if len(p.data.Items) == 0 {
		p.data.Items = nil // one spelling of "no items", as after a restore
	}
	return nil
}

// maxHoldable caps any balance far below int64 overflow (the same bound
// the data server and the CLI apply).
const maxHoldable = validate.MaxBalance

func (s *Scene) opBuy(p *playerState, op Buy, out []Effect) (Result, []Effect) {
	i, ok := s.npcIx[op.NPC]
	if !ok || s.npcs[i].def.Kind != NPCShop {
		return errResult(ErrNotFound, "no shop %s in %s", op.NPC, s.def.ID), out
	}
	var price int64
	for _, it := range s.npcs[i].def.Shop {
		if it.Item == op.Item {
			price = it.Price
		}
	}
	if price == 0 {
		return errResult(ErrNotFound, "%s does not sell %q", op.NPC, op.Item), out
	}
	if op.Count <= 0 || op.Count > maxBuyCount {
		return errResult(ErrBadRequest, "count must be 1..%d", maxBuyCount), out
	}
	cost := price * op.Count
	if p.data.Gold < cost {
		return errResult(ErrNotEnough, "%s costs %d gold, you have %d", op.Item, cost, p.data.Gold), out
	}
	if have := p.data.Count(op.Item); have > maxHoldable-op.Count {
		return errResult(ErrLimit, "cannot hold more %s", op.Item), out
	}
	_ = s.addItem(p, goldItem, -cost) // checked above
	_ = s.addItem(p, op.Item, op.Count)
	s.led(goldItem).Sunk += cost
	s.led(op.Item).Minted += op.Count
	out = append(out, s.save(p, true), s.profile(p))
	return BuyResult{Item: op.Item, Count: op.Count, Cost: cost, Gold: p.data.Gold, Have: p.data.Count(op.Item)}, out
}

func hasAll(d *player.Data, l []ItemCount) error {
	for _, ic := range l {
		if have := d.Count(ic.Item); have < ic.Count {
			return fmt.Errorf("%s has %d %s, needs %d", d.ID, have, ic.Item, ic.Count)
		}
	}
	return nil
}

func (s *Scene) opTradeOffer(p *playerState, op TradeOffer, out []Effect) (Result, []Effect) {
	to := s.players[op.To]
	if to == nil || to == p {
		return errResult(ErrNotFound, "no other player %s in %s", op.To, s.def.ID), out
	}
	give, err := normItems(op.Give)
	if err != nil {
		return errResult(ErrBadRequest, "give: %v", err), out
	}
	want, err := normItems(op.Want)
	if err != nil {
		return errResult(ErrBadRequest, "want: %v", err), out
	}
	if len(give)+len(want) == 0 {
		return errResult(ErrBadRequest, "an empty trade"), out
	}
	if err := hasAll(&p.data, give); err != nil {
		return errResult(ErrNotEnough, "%v", err), out
	}
	open := 0
	for _, t := range s.trades {
		if t.from == p.data.ID {
			open++
		}
	}
	if open >= maxOpenTrades {
		return errResult(ErrLimit, "%d offers already open", open), out
	}
	s.nextTrade++
	t := trade{
		id:   s.def.ID + "/trade-" + strconv.FormatUint(s.nextTrade, 10),
		from: p.data.ID, to: to.data.ID, give: give, want: want,
		expires: s.tick + tradeTTL,
	}
	s.trades = append(s.trades, t)
	out = append(out, Notify{Player: to.data.ID, Body: TradeOffered{TradeID: t.id, From: t.from, Give: give, Want: want}})
	return TradeOfferResult{TradeID: t.id}, out
}

func (s *Scene) opTradeAccept(p *playerState, op TradeAccept, out []Effect) (Result, []Effect) {
	ti := -1
	for i, t := range s.trades {
		if t.id == op.TradeID {
			ti = i
		}
	}
	if ti < 0 {
		return errResult(ErrNotFound, "no open trade %s", op.TradeID), out
	}
	t := s.trades[ti]
	if t.to != p.data.ID {
		return errResult(ErrNotAllowed, "trade %s is not offered to %s", t.id, p.data.ID), out
	}
	// An accept consumes the offer, whether or not the goods are still there.
	s.trades = append(s.trades[:ti], s.trades[ti+1:]...)
	from := s.players[t.from]
	if from == nil {
		return errResult(ErrNotFound, "trade %s: %s left", t.id, t.from), out
	}
	if err := hasAll(&from.data, t.give); err != nil {
		return errResult(ErrNotEnough, "trade %s: %v", t.id, err), out
	}
	if err := hasAll(&p.data, t.want); err != nil {
		return errResult(ErrNotEnough, "trade %s: %v", t.id, err), out
	}
	// Work on copies and commit both at once: all or nothing.
	a, b := from.data.Clone(), p.data.Clone()
	ap, bp := &playerState{data: a}, &playerState{data: b}
	for _, ic := range t.give {
		if err := errJoin(s.addItem(ap, ic.Item, -ic.Count), s.addItem(bp, ic.Item, ic.Count)); err != nil {
			return errResult(ErrLimit, "trade %s: %v", t.id, err), out
		}
	}
	for _, ic := range t.want {
		if err := errJoin(s.addItem(bp, ic.Item, -ic.Count), s.addItem(ap, ic.Item, ic.Count)); err != nil {
			return errResult(ErrLimit, "trade %s: %v", t.id, err), out
		}
	}
	from.data, p.data = ap.data, bp.data
	out = append(out,
		s.save(from, true), s.save(p, true), s.profile(from), s.profile(p),
		Notify{Player: from.data.ID, Body: TradeResult{TradeID: t.id, Gave: t.give, Got: t.want}})
	return TradeResult{TradeID: t.id, Gave: t.want, Got: t.give}, out
}

func errJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (s *Scene) opTravel(p *playerState, op Travel, out []Effect) (Result, []Effect) {
	allowed := false
	for _, e := range s.def.Exits {
		if e == op.To {
			allowed = true
		}
	}
	if !allowed {
		return errResult(ErrNotAllowed, "no way from %s to %q", s.def.ID, op.To), out
	}
	out = s.travelOut(p, op.To, out)
	return TravelResult{TransferID: s.outbox[len(s.outbox)-1].TransferID, To: op.To}, out
}

func (s *Scene) opEnterDungeon(p *playerState, out []Effect) (Result, []Effect) {
	dg := s.def.Dungeon
	if dg == nil {
		return errResult(ErrNotAllowed, "no dungeon in %s", s.def.ID), out
	}
	if len(s.rooms) >= dg.EffectiveMaxRooms() {
		return errResult(ErrLimit, "%d rooms already open", len(s.rooms)), out
	}
	s.nextRoom++
	id := s.def.ID + "/dungeon-" + strconv.FormatUint(s.nextRoom, 10)
	seed := s.rng.next()
	def, err := s.def.RoomDef(id, seed)
	if err != nil {
		return errResult(ErrNotAllowed, "%v", err), out
	}
	s.rooms = append(s.rooms, room{id: id, seed: seed})
	out = append(out, CreateRoom{RoomID: id, Def: def})
	out = s.travelOut(p, id, out)
	return DungeonResult{RoomID: id, TransferID: s.outbox[len(s.outbox)-1].TransferID}, out
}

// ---- travel ----

func (s *Scene) transferID(n uint64) string {
	return s.def.ID + "/t" + strconv.FormatUint(n, 10)
}

// parseTransfer returns the counter of a transfer id made by scene from.
func parseTransfer(from, id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, from+"/t")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	return n, err == nil && n > 0
}

// travelOut removes p and puts it in the outbox for scene to: the data now
// lives in the transfer until the destination acknowledges it.
func (s *Scene) travelOut(p *playerState, to string, out []Effect) []Effect {
	if s.players[p.data.ID] == p {
		s.removePlayer(p)
	}
	s.count(&p.data, func(e *LedgerEntry, n int64) { e.Out += n })
	p.data.Scene = to
	sv := s.save(p, true)
	s.nextTransfer++
	t := TravelOut{TransferID: s.transferID(s.nextTransfer), From: s.def.ID, To: to, Player: p.data, Version: p.version}
	t.Session, t.LastSeq = s.sessionDepart(p.data.ID, to)
	s.outbox = append(s.outbox, t)
	t.Player = t.Player.Clone()
	// A request that caused this (a travel, a dungeon entry, a room's end)
	// has no stored reply yet: onRequest fills the replies in again after
	// storing it.
	t.Replies = s.carriedReplies(p.data.ID, t.Session, t.LastSeq)
	return append(out, sv, t)
}

func (ss *seenSet) has(n uint64) bool {
	if n <= ss.floor {
		return true
	}
	i := sort.Search(len(ss.seen), func(i int) bool { return ss.seen[i] >= n })
	return i < len(ss.seen) && ss.seen[i] == n
}

func (ss *seenSet) add(n uint64) {
	i := sort.Search(len(ss.seen), func(i int) bool { return ss.seen[i] >= n })
	ss.seen = append(ss.seen, 0)
	copy(ss.seen[i+1:], ss.seen[i:])
	ss.seen[i] = n
	// Fold the contiguous prefix into floor; past the window, forget the
	// oldest (treating it as applied: a transfer that late is a bug upstream).
	for len(ss.seen) > 0 && (ss.seen[0] == ss.floor+1 || len(ss.seen) > dedupeWindow) {
		ss.floor = ss.seen[0]
		ss.seen = ss.seen[1:]
	}
}

func (s *Scene) onTravelIn(ev TravelIn) []Effect {
	n, ok := parseTransfer(ev.From, ev.TransferID)
	if !ok || ev.Player.ID == "" || len(ev.Player.ID) > maxIDLen {
		// Not acknowledged: the source keeps it, so nothing is lost or forked.
		return []Effect{Warn{Msg: fmt.Sprintf("scene %s: malformed transfer %q from %q", s.def.ID, ev.TransferID, ev.From)}}
	}
	ack := AckTransfer{TransferID: ev.TransferID, To: ev.From}
	ss := s.applied[ev.From]
	if ss == nil {
		ss = &seenSet{}
		s.applied[ev.From] = ss
	}
	if ss.has(n) {
		return []Effect{ack}
	}
	ss.add(n)
	if s.players[ev.Player.ID] != nil {
		return []Effect{ack, Warn{Msg: fmt.Sprintf("scene %s: transfer %s: player %s already here; kept the scene's copy", s.def.ID, ev.TransferID, ev.Player.ID)}}
	}
	p := s.arrive(ev.Player, ev.Version)
	s.sessionArrive(p.data.ID, ev.Session, ev.LastSeq, ev.Replies)
	p.data.X, p.data.Y = s.def.Spawn.X, s.def.Spawn.Y
	p.touch()
	s.count(&p.data, func(e *LedgerEntry, n int64) { e.In += n })
	out := []Effect{ack, Broadcast{Scene: s.def.ID, Body: Notice{Type: "player_entered", ID: p.data.ID, Name: p.data.Name}}}
	if s.ended {
		out = s.travelOut(p, s.def.Parent, out)
	}
	return out
}

func (s *Scene) onTravelAck(ev TravelAck) []Effect {
	for i, t := range s.outbox {
		if t.TransferID == ev.TransferID {
			s.outbox = append(s.outbox[:i], s.outbox[i+1:]...)
			out, _ := s.maybeEndRoom(nil)
			return out
		}
	}
	return nil // a duplicate ack
}

// ---- rooms ----

// endRoom finishes a dungeon room: every player goes back to the parent.
func (s *Scene) endRoom(out []Effect) []Effect {
	if s.ended || s.def.Parent == "" {
		return out
	}
	s.ended = true
	out = append(out, Broadcast{Scene: s.def.ID, Body: Notice{Type: "room_cleared", ID: s.def.ID}})
	for len(s.plist) > 0 {
		out = s.travelOut(s.plist[0], s.def.Parent, out)
	}
	out, _ = s.maybeEndRoom(out)
	return out
}

func (s *Scene) endRoomEffect() (EndRoom, bool) {
	if !s.ended || len(s.outbox) > 0 || len(s.plist) > 0 {
		return EndRoom{}, false
	}
	e := EndRoom{RoomID: s.def.ID, Parent: s.def.Parent}
	if ss := s.applied[s.def.Parent]; ss != nil {
		e.AppliedFloor = ss.floor
		for _, n := range ss.seen {
			e.Applied = append(e.Applied, s.def.Parent+"/t"+strconv.FormatUint(n, 10))
		}
	}
	return e, true
}

// maybeEndRoom emits EndRoom once an ended room has nobody and nothing in
// flight: freeing the slot earlier would lose unacknowledged transfers.
func (s *Scene) maybeEndRoom(out []Effect) ([]Effect, bool) {
	e, ok := s.endRoomEffect()
	if ok {
		out = append(out, e)
	}
	return out, ok
}

func (s *Scene) onRoomEnded(ev RoomEnded) []Effect {
	for i, r := range s.rooms {
		if r.id == ev.RoomID {
			s.rooms = append(s.rooms[:i], s.rooms[i+1:]...)
			break
		}
	}
	applied := &seenSet{floor: ev.AppliedFloor}
	for _, id := range ev.Applied {
		if n, ok := parseTransfer(s.def.ID, id); ok && !applied.has(n) {
			applied.seen = append(applied.seen, n)
			sort.Slice(applied.seen, func(i, j int) bool { return applied.seen[i] < applied.seen[j] })
		}
	}
	var out []Effect
	kept := s.outbox[:0]
	var back []TravelOut
	for _, t := range s.outbox {
		if t.To != ev.RoomID {
			kept = append(kept, t)
			continue
		}
		if n, ok := parseTransfer(s.def.ID, t.TransferID); !ok || !applied.has(n) {
			back = append(back, t) // the room never got it: the player is still ours
		}
	}
	clear(s.outbox[len(kept):])
	s.outbox = kept
	for _, t := range back {
		if s.players[t.Player.ID] != nil {
			out = append(out, Warn{Msg: fmt.Sprintf("scene %s: transfer %s: player %s already here", s.def.ID, t.TransferID, t.Player.ID)})
			continue
		}
		p := s.arrive(t.Player, t.Version)
		// The departed record here still holds the replies it would carry.
		s.sessionArrive(p.data.ID, t.Session, t.LastSeq, nil)
		p.data.X, p.data.Y = s.def.Spawn.X, s.def.Spawn.Y
		s.count(&p.data, func(e *LedgerEntry, n int64) { e.In += n })
		out = append(out, s.save(p, true))
	}
	// The room is gone and its outbox was empty, so no transfer from it can
	// arrive again: its dedupe record can go.
	delete(s.applied, ev.RoomID)
	return out
}

// ---- GM ----

// gmHash is the hash of a GM command without its request id.
func (s *Scene) gmHash(ev Event) uint64 {
	var err error
	s.opBuf, err = AppendEvent(s.opBuf[:0], ev)
	if err != nil {
		return 0 // refused by the encoder: it was never logged either
	}
	h := fnv.New64a()
	h.Write(s.opBuf)
	return h.Sum64() | 1 // never 0, which means "unknown"
}

// gmSeen answers a GM request id already applied: its stored reply for the
// same command, a conflict for another one. ok is false for a new id.
func (s *Scene) gmSeen(reqID string, hash uint64) (Result, bool) {
	for _, g := range s.gm {
		if g.reqID != reqID {
			continue
		}
		if g.hash != 0 && g.hash != hash {
			return errResult(ErrRequestConflict, "GM request id %s was already used for a different command; nothing applied", reqID), true
		}
		return g.body, true
	}
	return nil, false
}

func (s *Scene) gmRecord(g gmEntry) {
	if len(s.gm) >= GMMemory {
		copy(s.gm, s.gm[1:])
		s.gm = s.gm[:len(s.gm)-1]
	}
	s.gm = append(s.gm, g)
}

// gmForget drops the gives to player whose saves the data server never
// acknowledged (version above acked): a Reload discarded them.
func (s *Scene) gmForget(player string, acked uint64) {
	kept := s.gm[:0]
	for _, g := range s.gm {
		if g.player != player || g.version <= acked {
			kept = append(kept, g)
		}
	}
	clear(s.gm[len(kept):])
	s.gm = kept
}

func (s *Scene) onGMDamage(ev GMDamage) []Effect {
	if ev.ReqID == "" {
		return []Effect{GMReply{Body: errResult(ErrBadRequest, "GM request needs an id")}}
	}
	hash := s.gmHash(GMDamage{Monster: ev.Monster, Amount: ev.Amount})
	if body, ok := s.gmSeen(ev.ReqID, hash); ok {
		return []Effect{GMReply{ReqID: ev.ReqID, Body: body, Resent: true}}
	}
	out := make([]Effect, 1, 3)
	var body Result
	i, ok := s.monIx[ev.Monster]
	switch {
	case !ok:
		body = errResult(ErrNotFound, "no monster %s in %s", ev.Monster, s.def.ID)
	case ev.Amount <= 0 || ev.Amount > maxAmount:
		body = errResult(ErrBadRequest, "amount must be 1..%d", maxAmount)
	case s.mons[i].hp == 0:
		body = errResult(ErrMonsterDead, "%s is dead", ev.Monster)
	default:
		m := &s.mons[i]
		res := MonsterResult{Monster: m.def.ID, MaxHP: m.def.HP}
		if ev.Amount >= m.hp {
			res.Killed = true
			_, out = s.kill(m, nil, out)
		} else {
			m.hp -= ev.Amount
		}
		res.HP = m.hp
		body = res
	}
	s.gmRecord(gmEntry{reqID: ev.ReqID, hash: hash, body: body})
	out[0] = GMReply{ReqID: ev.ReqID, Body: body}
	return out
}

func (s *Scene) onGMGive(ev GMGive) []Effect {
	if ev.ReqID == "" {
		return []Effect{GMReply{Body: errResult(ErrBadRequest, "GM request needs an id")}}
	}
	hash := s.gmHash(GMGive{Player: ev.Player, Item: ev.Item, Count: ev.Count})
	if body, ok := s.gmSeen(ev.ReqID, hash); ok {
		return []Effect{GMReply{ReqID: ev.ReqID, Body: body, Resent: true}}
	}
	g := gmEntry{reqID: ev.ReqID, hash: hash}
	out := make([]Effect, 1, 3)
	var body Result
	p := s.players[ev.Player]
	switch {
	case p == nil:
		body = errResult(ErrNotInScene, "player %s is not in scene %s", ev.Player, s.def.ID)
	case ev.Item == "" || len(ev.Item) > maxIDLen:
		body = errResult(ErrBadRequest, "bad item name %q", ev.Item)
	case ev.Count == 0 || ev.Count > maxAmount || ev.Count < -maxAmount:
		body = errResult(ErrBadRequest, "count must be non-zero and within ±%d", maxAmount)
	default:
		if err := s.addItem(p, ev.Item, ev.Count); err != nil {
			body = errResult(ErrNotEnough, "%v", err)
			break
		}
		if ev.Count > 0 {
			s.led(ev.Item).Minted += ev.Count
		} else {
			s.led(ev.Item).Sunk -= ev.Count
		}
		sv := s.save(p, true)
		out = append(out, sv, s.profile(p))
		body = GiveResult{Player: p.data.ID, Item: ev.Item, Count: p.data.Count(ev.Item)}
		g.player, g.version = p.data.ID, sv.Version
	}
	g.body = body
	s.gmRecord(g)
	out[0] = GMReply{ReqID: ev.ReqID, Body: body}
	return out
}

// ---- randomness ----

// rng is splitmix64: tiny, fast, and its whole state is one word in the
// snapshot.
type rng struct{ state uint64 }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a number in [0, n); modulo bias is irrelevant at game sizes.
func (r *rng) intn(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return int64(r.next() % uint64(n))
}
