package game

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"

	"github.com/respawn-dev/respawn/internal/player"
)

// ScriptEvent is one logged event and the scene or room it was applied to.
type ScriptEvent struct {
	Scene string
	Event Event
}

// Script is a random but reproducible run of a small world, for determinism
// and replay checks: replaying Events of one scene (in order) on New of its
// Def must end in Final[scene].
type Script struct {
	Defs   []SceneDef // the scenes given, then every room opened, in creation order
	Events []ScriptEvent
	Final  map[string][32]byte // state hash of every scene and room at the end
}

// EventsOf returns the events applied to scene id, in log order.
func (sc *Script) EventsOf(id string) []Event {
	var evs []Event
	for _, e := range sc.Events {
		if e.Scene == id {
			evs = append(evs, e.Event)
		}
	}
	return evs
}

// RandomEvents runs a simulated world of defs for n events chosen by a
// generator seeded with seed: players entering and leaving, every request
// kind (including duplicates, gaps and garbage), ticks, saves with acks and
// rejections, GM commands, trades, travel between scenes with out-of-order
// and resent transfers, and dungeon rooms opening and ending. Effects are
// routed the way the scene process would. The same arguments always give the
// same Script.
func RandomEvents(seed int64, n int, defs []SceneDef) *Script {
	w := newWorld(seed, defs)
	w.run(n)
	return w.script
}

// world is the simulated scene process + data server + gateway.
type world struct {
	r       *rand.Rand
	script  *Script
	scenes  map[string]*Scene // live scenes and rooms
	live    []string          // their ids, in creation order
	ended   map[string]*Scene // rooms that ended
	base    []string          // the top-level scenes
	players []*simPlayer
	queue   []ScriptEvent // messages in flight between scenes / from the data server
	datasvr map[string]simSaved
	gm      []Event // recent GM commands, to resend
	gmN     int
}

type simPlayer struct {
	id       string
	session  string
	sessions int
	seq      uint64
	last     *Request // last request sent, to resend
}

type simSaved struct {
	data    player.Data
	version uint64
}

func newWorld(seed int64, defs []SceneDef) *world {
	w := &world{
		r:       rand.New(rand.NewPCG(uint64(seed), 0x5eed)),
		script:  &Script{Final: map[string][32]byte{}},
		scenes:  map[string]*Scene{},
		ended:   map[string]*Scene{},
		datasvr: map[string]simSaved{},
	}
	for _, d := range defs {
		w.create(d)
		w.base = append(w.base, d.ID)
	}
	for i := 1; i <= 12; i++ {
		id := fmt.Sprintf("p%02d", i)
		w.players = append(w.players, &simPlayer{id: id})
		w.datasvr[id] = simSaved{data: player.Data{
			ID: id, Name: "Player " + id, Level: i % 3, Gold: int64(20 * i),
			Items: map[string]int64{"potion": int64(i % 4), "wolf_pelt": int64(i % 2)},
		}, version: 1}
		if w.datasvr[id].data.Items["potion"] == 0 {
			delete(w.datasvr[id].data.Items, "potion")
		}
		if w.datasvr[id].data.Items["wolf_pelt"] == 0 {
			delete(w.datasvr[id].data.Items, "wolf_pelt")
		}
	}
	return w
}

func (w *world) create(d SceneDef) {
	if w.scenes[d.ID] != nil || w.ended[d.ID] != nil {
		return
	}
	w.scenes[d.ID] = New(d)
	w.live = append(w.live, d.ID)
	w.script.Defs = append(w.script.Defs, cloneDef(d))
}

// apply logs ev for scene id, applies it and routes its effects.
func (w *world) apply(id string, ev Event) {
	s := w.scenes[id]
	if s == nil {
		return // a message for a room that ended: dropped, as the process does
	}
	w.script.Events = append(w.script.Events, ScriptEvent{Scene: id, Event: ev})
	w.route(s, s.Apply(ev))
}

func (w *world) route(s *Scene, effects []Effect) {
	for _, ef := range effects {
		switch ef := ef.(type) {
		case TravelOut:
			w.queue = append(w.queue, ScriptEvent{Scene: ef.To, Event: withClone(ef.In())})
		case AckTransfer:
			w.queue = append(w.queue, ScriptEvent{Scene: ef.To, Event: TravelAck{TransferID: ef.TransferID}})
		case Save:
			cur := w.datasvr[ef.Player.ID]
			switch {
			case w.r.IntN(100) == 0:
				w.queue = append(w.queue, ScriptEvent{Scene: s.ID(), Event: SaveRejected{Player: ef.Player.ID, Version: ef.Version, Reason: "stale epoch"}})
			case ef.Version >= cur.version: // equal: a resent save, acknowledged again
				w.datasvr[ef.Player.ID] = simSaved{data: ef.Player.Clone(), version: ef.Version}
				w.queue = append(w.queue, ScriptEvent{Scene: s.ID(), Event: SaveAck{Player: ef.Player.ID, Version: ef.Version}})
			default:
				// The data server's copy is newer: the process reloads the
				// player from it (a logged Reload), it does not drop it.
				w.queue = append(w.queue, ScriptEvent{Scene: s.ID(), Event: Reload{Player: cur.data.Clone(), Version: cur.version, Reason: "save refused as older"}})
			}
		case CreateRoom:
			w.create(ef.Def)
		case EndRoom:
			// Tell the parent first, then free the room: the order the process
			// must keep so a crash in between never loses a player.
			room := w.scenes[ef.RoomID]
			if room == nil {
				continue
			}
			delete(w.scenes, ef.RoomID)
			for i, id := range w.live {
				if id == ef.RoomID {
					w.live = append(w.live[:i], w.live[i+1:]...)
					break
				}
			}
			w.ended[ef.RoomID] = room
			w.apply(ef.Parent, RoomEnded{RoomID: ef.RoomID, Applied: ef.Applied, AppliedFloor: ef.AppliedFloor})
		}
	}
}

// located returns the scene a player is in, or "" if it is in no scene.
func (w *world) located(id string) string {
	for _, sid := range w.live {
		if w.scenes[sid].players[id] != nil {
			return sid
		}
	}
	return ""
}

// inTransit reports whether a player sits in some outbox or queued TravelIn.
func (w *world) inTransit(id string) bool {
	for _, sid := range w.live {
		for _, t := range w.scenes[sid].outbox {
			if t.Player.ID == id {
				return true
			}
		}
	}
	for _, q := range w.queue {
		if t, ok := q.Event.(TravelIn); ok && t.Player.ID == id {
			return true
		}
	}
	return false
}

func (w *world) pick(l []string) string { return l[w.r.IntN(len(l))] }

func (w *world) run(n int) {
	for len(w.script.Events) < n {
		w.step()
	}
	for id, s := range w.scenes {
		w.script.Final[id] = s.Hash()
	}
	for id, s := range w.ended {
		w.script.Final[id] = s.Hash()
	}
}

func (w *world) step() {
	sid := w.pick(w.live)
	s := w.scenes[sid]
	switch k := w.r.IntN(100); {
	case k < 25:
		w.apply(sid, Tick{})
	case k < 27:
		w.apply(sid, SaveTick{})
	case k < 45 && len(w.queue) > 0:
		i := w.r.IntN(len(w.queue))
		q := w.queue[i]
		w.queue = append(w.queue[:i], w.queue[i+1:]...)
		w.apply(q.Scene, q.Event)
	case k < 50:
		w.enter()
	case k < 52 && len(s.plist) > 0:
		id := s.plist[w.r.IntN(len(s.plist))].data.ID
		lv := Leave{Player: id}
		if w.r.IntN(2) == 0 {
			lv.Session = w.sp(id).session // maybe stale: then nothing happens
		}
		w.apply(sid, lv)
	case k < 56:
		w.gmCommand(s)
	case k < 57:
		// As after a crash: resend every pending transfer and room.
		for _, ef := range s.RecoveryEffects() {
			switch ef := ef.(type) {
			case TravelOut:
				w.queue = append(w.queue, ScriptEvent{Scene: ef.To, Event: ef.In()})
			case CreateRoom:
				w.create(ef.Def)
			}
		}
	case k < 58 && len(s.plist) > 0:
		// As after a log repair: the data server holds a newer version
		// than the scene, whose next save is refused; the process reloads
		// the player from the data server's copy.
		id := s.plist[w.r.IntN(len(s.plist))].data.ID
		cur := w.datasvr[id]
		_, v, _ := s.Player(id)
		cur.version = max(cur.version, v) + 1
		cur.data.Scene = sid
		w.datasvr[id] = cur
		w.apply(sid, Reload{Player: cur.data.Clone(), Version: cur.version, Reason: "save refused as older"})
	default:
		if len(s.plist) == 0 {
			w.apply(sid, Tick{})
			return
		}
		w.request(s, w.sp(s.plist[w.r.IntN(len(s.plist))].data.ID))
	}
}

func (w *world) sp(id string) *simPlayer {
	for _, p := range w.players {
		if p.id == id {
			return p
		}
	}
	panic("sim: unknown player " + id)
}

func (w *world) enter() {
	p := w.players[w.r.IntN(len(w.players))]
	if w.located(p.id) != "" || w.inTransit(p.id) {
		if loc := w.located(p.id); loc != "" && w.r.IntN(4) == 0 {
			saved := w.datasvr[p.id]
			w.apply(loc, Enter{Player: saved.data.Clone(), Version: saved.version}) // duplicate enter
		}
		return
	}
	saved := w.datasvr[p.id]
	to := saved.data.Scene
	if w.scenes[to] == nil || w.scenes[to].def.Kind == KindDungeon {
		to = w.pick(w.base)
	}
	p.sessions++
	p.session = fmt.Sprintf("%s-s%d", p.id, p.sessions)
	p.seq, p.last = 0, nil
	w.apply(to, Enter{Player: saved.data.Clone(), Version: saved.version})
	w.apply(to, Attach{Player: p.id, Session: p.session})
}

func (w *world) gmCommand(s *Scene) {
	if len(w.gm) > 0 && w.r.IntN(5) == 0 {
		w.apply(s.ID(), w.gm[w.r.IntN(len(w.gm))]) // resend (maybe to another scene)
		return
	}
	w.gmN++
	req := "gm-" + strconv.Itoa(w.gmN)
	var ev Event
	if w.r.IntN(2) == 0 && len(s.def.Monsters) > 0 {
		m := s.def.Monsters[w.r.IntN(len(s.def.Monsters))]
		ev = GMDamage{ReqID: req, Monster: m.ID, Amount: int64(w.r.IntN(int(m.HP))) + 1}
	} else {
		pid := w.players[w.r.IntN(len(w.players))].id
		items := []string{goldItem, "potion", "sword", "gem"}
		ev = GMGive{ReqID: req, Player: pid, Item: items[w.r.IntN(len(items))], Count: int64(w.r.IntN(21) - 8)}
	}
	w.gm = append(w.gm, ev)
	if len(w.gm) > 8 {
		w.gm = w.gm[1:]
	}
	w.apply(s.ID(), ev)
}

func (w *world) randomItems(d *player.Data, honest bool) []ItemCount {
	names := append([]string{goldItem}, d.ItemNames()...)
	var l []ItemCount
	for i := w.r.IntN(3); i > 0; i-- {
		it := names[w.r.IntN(len(names))]
		have := d.Count(it)
		c := int64(1)
		if have > 1 {
			c = 1 + w.r.Int64N(have)
		}
		if !honest {
			c += int64(w.r.IntN(3))
		}
		l = append(l, ItemCount{Item: it, Count: c})
	}
	return l
}

func (w *world) request(s *Scene, p *simPlayer) {
	if p.session == "" {
		p.sessions++
		p.session = fmt.Sprintf("%s-s%d", p.id, p.sessions)
	}
	if p.last != nil && w.r.IntN(12) == 0 {
		r := *p.last
		if r.Seq > 1 && w.r.IntN(2) == 0 {
			r.Seq-- // an older duplicate
		}
		w.apply(s.ID(), r)
		return
	}
	me := s.players[p.id]
	var op Op
	switch k := w.r.IntN(100); {
	case k < 30:
		op = Move{X: w.r.IntN(s.def.EffectiveWidth()+2) - 1, Y: w.r.IntN(s.def.EffectiveHeight())}
	case k < 55:
		id := "nobody"
		if len(s.def.Monsters) > 0 && w.r.IntN(10) > 0 {
			id = s.def.Monsters[w.r.IntN(len(s.def.Monsters))].ID
		}
		op = Attack{Monster: id}
	case k < 62:
		b := Buy{NPC: "merchant", Item: "potion", Count: int64(w.r.IntN(4))}
		if len(s.def.NPCs) > 0 {
			n := s.def.NPCs[w.r.IntN(len(s.def.NPCs))]
			b.NPC = n.ID
			if len(n.Shop) > 0 {
				b.Item = n.Shop[w.r.IntN(len(n.Shop))].Item
			}
		}
		op = b
	case k < 72:
		if len(s.plist) < 2 {
			op = Chat{Text: "anyone?"}
			break
		}
		other := s.plist[w.r.IntN(len(s.plist))]
		op = TradeOffer{To: other.data.ID, Give: w.randomItems(&me.data, w.r.IntN(5) > 0), Want: w.randomItems(&other.data, w.r.IntN(5) > 0)}
	case k < 82:
		id := "bogus"
		for _, t := range s.trades {
			if t.to == p.id {
				id = t.id
			}
		}
		op = TradeAccept{TradeID: id}
	case k < 88:
		to := "nowhere"
		if len(s.def.Exits) > 0 && w.r.IntN(8) > 0 {
			to = w.pick(s.def.Exits)
		}
		op = Travel{To: to}
	case k < 93:
		op = EnterDungeon{}
	default:
		op = Chat{Text: "hello from " + p.id}
	}
	switch k := w.r.IntN(40); {
	case k == 0:
		// seq 0: refused
	case k < 3:
		p.seq += 2 // a gap
	default:
		p.seq++
	}
	seq := p.seq
	if seq == 0 || w.r.IntN(40) == 0 {
		seq = 0
	}
	r := Request{Session: p.session, Player: p.id, Seq: seq, Op: op}
	if seq != 0 {
		p.last = &r
	}
	w.apply(s.ID(), r)
}

// worldTotals sums, per item, what players hold in every scene and what is
// in flight (in an outbox and not yet applied by its destination).
func (w *world) worldTotals() map[string]int64 {
	tot := map[string]int64{}
	add := func(d *player.Data) {
		tot[goldItem] += d.Gold
		for k, c := range d.Items {
			tot[k] += c
		}
	}
	ids := make([]string, 0, len(w.scenes))
	for id := range w.scenes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s := w.scenes[id]
		for _, p := range s.plist {
			add(&p.data)
		}
		for i := range s.outbox {
			t := &s.outbox[i]
			dst := w.scenes[t.To]
			if dst == nil {
				dst = w.ended[t.To]
			}
			n, _ := parseTransfer(t.From, t.TransferID)
			if dst != nil && dst.applied[t.From] != nil && dst.applied[t.From].has(n) {
				continue // the destination holds the player already
			}
			add(&t.Player)
		}
	}
	return tot
}

// withClone gives a queued TravelIn its own copy of the player.
func withClone(t TravelIn) TravelIn {
	t.Player = t.Player.Clone()
	return t
}
