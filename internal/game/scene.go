// The Scene type: its state, construction, read-only accessors, the event
// dispatch (Apply) and the clock (ticks, regeneration, respawns, save ticks).

package game

import (
	"fmt"

	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/scenedef"
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

	// players and sessions (the players' session records, session.go) are
	// by player id. They are written only through setPlayer, setSession and
	// their deletes, which count the writes in idEpoch: a Replayer keeps
	// what it looked up in them while that count stays the same.
	players  map[string]*playerState
	sessions map[string]*sessRec
	idEpoch  uint64
	plist    []*playerState // sorted by id: the only order players are visited in

	sessBytes   int // stored replies' cost, at most sessionBudget
	sessEntries int
	nextEntry   uint64
	departedN   int
	fifo        []entryRef // stored replies oldest first, built for eviction at the budget; derived
	fifoHead    int
	opBuf       []byte // scratch for hashing ops
	// replaying is the Replayer applying an event, whose effects are
	// discarded: the hot handlers skip building the ones they need not and
	// share its boxed results; never changes what the state becomes.
	// quietOut is their scratch.
	replaying *Replayer
	quietOut  []Effect
	// snapLen is the last snapshot's size: the next one's buffer starts
	// at about that size instead of growing to it. Not state.
	snapLen int

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

// PlayerIDs returns the ids of the players in the scene, sorted (the order
// the scene visits them in). For tools and test drivers.
func (s *Scene) PlayerIDs() []string {
	ids := make([]string, len(s.plist))
	for i, p := range s.plist {
		ids[i] = p.data.ID
	}
	return ids
}

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

func (s *Scene) onTick() []Effect {
	s.tick++
	var out []Effect
	for i := range s.mons {
		m := &s.mons[i]
		if m.hp == 0 && m.respawnAt != 0 && s.tick >= m.respawnAt {
			m.hp, m.respawnAt = m.def.HP, 0
			if s.replaying == nil {
				out = append(out, Broadcast{Scene: s.def.ID, Body: Notice{Type: "monster_respawned", ID: m.def.ID, Name: m.def.Name}})
			}
		}
	}
	for i := range s.npcs {
		n := &s.npcs[i]
		if n.def.Kind != NPCEscort || len(n.def.Path) < 2 || s.tick%n.def.EffectiveStepTicks() != 0 {
			continue
		}
		n.pathIndex = (n.pathIndex + 1) % len(n.def.Path)
		if s.replaying == nil { // a replay discards the effects
			pt := n.def.Path[n.pathIndex]
			out = append(out, PositionChanged{Scene: s.def.ID, Kind: "npc", ID: n.def.ID, X: pt.X, Y: pt.Y})
		}
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

// setPlayer, deletePlayer, setSession and deleteSession are the only writes
// to s.players and s.sessions (see idEpoch).
func (s *Scene) setPlayer(id string, p *playerState) {
	s.players[id] = p
	s.idEpoch++
}

func (s *Scene) deletePlayer(id string) {
	delete(s.players, id)
	s.idEpoch++
}

func (s *Scene) setSession(player string, rec *sessRec) {
	s.sessions[player] = rec
	s.idEpoch++
}

func (s *Scene) deleteSession(player string) {
	delete(s.sessions, player)
	s.idEpoch++
}
