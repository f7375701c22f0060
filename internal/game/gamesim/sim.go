// The simulated world: scenes, players, a data server and the messages in
// flight between them, stepped at random from a seed.

package gamesim

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
)

// ScriptEvent is one logged event and the scene or room it was applied to.
type ScriptEvent struct {
	Scene string
	Event game.Event
}

// Script is a random but reproducible run of a small World, for determinism
// and replay checks: replaying Events of one scene (in order) on New of its
// Def must end in Final[scene].
type Script struct {
	Defs   []game.SceneDef // the scenes given, then every room opened, in creation order
	Events []ScriptEvent
	Final  map[string][32]byte // state hash of every scene and room at the end
}

// EventsOf returns the events applied to scene id, in log order.
func (sc *Script) EventsOf(id string) []game.Event {
	var evs []game.Event
	for _, e := range sc.Events {
		if e.Scene == id {
			evs = append(evs, e.Event)
		}
	}
	return evs
}

// RandomEvents runs a simulated World of defs for n events chosen by a
// generator seeded with seed: players entering and leaving, every request
// kind (including duplicates, gaps and garbage), ticks, saves with acks and
// rejections, GM commands, trades, travel between scenes with out-of-order
// and resent transfers, and dungeon rooms opening and ending. Effects are
// routed the way the scene process would. The same arguments always give the
// same Script.
func RandomEvents(seed int64, n int, defs []game.SceneDef) *Script {
	w := NewWorld(seed, defs)
	w.Run(n)
	return w.script
}

// World is the simulated scene process + data server + gateway: the scenes
// and rooms, the players, the messages in flight and the data server's copies.
type World struct {
	r       *rand.Rand
	script  *Script
	scenes  map[string]*game.Scene // live scenes and rooms
	live    []string               // their ids, in creation order
	ended   map[string]*game.Scene // rooms that ended
	base    []string               // the top-level scenes
	players []*simPlayer
	queue   []ScriptEvent // messages in flight between scenes / from the data server
	datasvr map[string]simSaved
	gm      []game.Event // recent GM commands, to resend
	gmN     int
}

type simPlayer struct {
	id       string
	session  string
	sessions int
	seq      uint64
	last     *game.Request // last request sent, to resend
}

type simSaved struct {
	data    player.Data
	version uint64
}

// NewWorld returns a world of the scenes defs with twelve players stored at
// the data server and none online yet.
func NewWorld(seed int64, defs []game.SceneDef) *World {
	w := &World{
		r:       rand.New(rand.NewPCG(uint64(seed), 0x5eed)),
		script:  &Script{Final: map[string][32]byte{}},
		scenes:  map[string]*game.Scene{},
		ended:   map[string]*game.Scene{},
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

func (w *World) create(d game.SceneDef) {
	if w.scenes[d.ID] != nil || w.ended[d.ID] != nil {
		return
	}
	w.scenes[d.ID] = game.New(d)
	w.live = append(w.live, d.ID)
	w.script.Defs = append(w.script.Defs, w.scenes[d.ID].Def())
}

// apply logs ev for scene id, applies it and routes its effects.
func (w *World) apply(id string, ev game.Event) {
	s := w.scenes[id]
	if s == nil {
		return // a message for a room that ended: dropped, as the process does
	}
	w.script.Events = append(w.script.Events, ScriptEvent{Scene: id, Event: ev})
	w.route(s, s.Apply(ev))
}

func (w *World) route(s *game.Scene, effects []game.Effect) {
	for _, ef := range effects {
		switch ef := ef.(type) {
		case game.TravelOut:
			w.queue = append(w.queue, ScriptEvent{Scene: ef.To, Event: withClone(ef.In())})
		case game.AckTransfer:
			w.queue = append(w.queue, ScriptEvent{Scene: ef.To, Event: game.TravelAck{TransferID: ef.TransferID}})
		case game.Save:
			cur := w.datasvr[ef.Player.ID]
			switch {
			case w.r.IntN(100) == 0:
				w.queue = append(w.queue, ScriptEvent{Scene: s.ID(), Event: game.SaveRejected{Player: ef.Player.ID, Version: ef.Version, Reason: "stale epoch"}})
			case ef.Version >= cur.version: // equal: a resent save, acknowledged again
				w.datasvr[ef.Player.ID] = simSaved{data: ef.Player.Clone(), version: ef.Version}
				w.queue = append(w.queue, ScriptEvent{Scene: s.ID(), Event: game.SaveAck{Player: ef.Player.ID, Version: ef.Version}})
			default:
				// The data server's copy is newer: the process reloads the
				// player from it (a logged Reload), it does not drop it.
				w.queue = append(w.queue, ScriptEvent{Scene: s.ID(), Event: game.Reload{Player: cur.data.Clone(), Version: cur.version, Reason: "save refused as older"}})
			}
		case game.CreateRoom:
			w.create(ef.Def)
		case game.EndRoom:
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
			w.apply(ef.Parent, game.RoomEnded{RoomID: ef.RoomID, Applied: ef.Applied, AppliedFloor: ef.AppliedFloor})
		}
	}
}

// located returns the scene a player is in, or "" if it is in no scene.
func (w *World) located(id string) string {
	for _, sid := range w.live {
		if _, _, ok := w.scenes[sid].Player(id); ok {
			return sid
		}
	}
	return ""
}

// inTransit reports whether a player sits in some outbox or queued TravelIn.
func (w *World) inTransit(id string) bool {
	for _, sid := range w.live {
		for _, t := range w.scenes[sid].PendingTransfers() {
			if t.Player.ID == id {
				return true
			}
		}
	}
	for _, q := range w.queue {
		if t, ok := q.Event.(game.TravelIn); ok && t.Player.ID == id {
			return true
		}
	}
	return false
}

func (w *World) pick(l []string) string { return l[w.r.IntN(len(l))] }

// Run steps the world until its script holds at least n events, then
// records every scene's and room's state hash in the script's Final.
func (w *World) Run(n int) {
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

func (w *World) step() {
	sid := w.pick(w.live)
	s := w.scenes[sid]
	ids := s.PlayerIDs()
	switch k := w.r.IntN(100); {
	case k < 25:
		w.apply(sid, game.Tick{})
	case k < 27:
		w.apply(sid, game.SaveTick{})
	case k < 45 && len(w.queue) > 0:
		i := w.r.IntN(len(w.queue))
		q := w.queue[i]
		w.queue = append(w.queue[:i], w.queue[i+1:]...)
		w.apply(q.Scene, q.Event)
	case k < 50:
		w.enter()
	case k < 52 && len(ids) > 0:
		id := ids[w.r.IntN(len(ids))]
		lv := game.Leave{Player: id}
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
			case game.TravelOut:
				w.queue = append(w.queue, ScriptEvent{Scene: ef.To, Event: ef.In()})
			case game.CreateRoom:
				w.create(ef.Def)
			}
		}
	case k < 58 && len(ids) > 0:
		// As after a log repair: the data server holds a newer version
		// than the scene, whose next save is refused; the process reloads
		// the player from the data server's copy.
		id := ids[w.r.IntN(len(ids))]
		cur := w.datasvr[id]
		_, v, _ := s.Player(id)
		cur.version = max(cur.version, v) + 1
		cur.data.Scene = sid
		w.datasvr[id] = cur
		w.apply(sid, game.Reload{Player: cur.data.Clone(), Version: cur.version, Reason: "save refused as older"})
	default:
		if len(ids) == 0 {
			w.apply(sid, game.Tick{})
			return
		}
		w.request(s, w.sp(ids[w.r.IntN(len(ids))]))
	}
}

func (w *World) sp(id string) *simPlayer {
	for _, p := range w.players {
		if p.id == id {
			return p
		}
	}
	panic("sim: unknown player " + id)
}

func (w *World) enter() {
	p := w.players[w.r.IntN(len(w.players))]
	if w.located(p.id) != "" || w.inTransit(p.id) {
		if loc := w.located(p.id); loc != "" && w.r.IntN(4) == 0 {
			saved := w.datasvr[p.id]
			w.apply(loc, game.Enter{Player: saved.data.Clone(), Version: saved.version}) // duplicate enter
		}
		return
	}
	saved := w.datasvr[p.id]
	to := saved.data.Scene
	if w.scenes[to] == nil || w.scenes[to].Def().Kind == game.KindDungeon {
		to = w.pick(w.base)
	}
	p.sessions++
	p.session = fmt.Sprintf("%s-s%d", p.id, p.sessions)
	p.seq, p.last = 0, nil
	w.apply(to, game.Enter{Player: saved.data.Clone(), Version: saved.version})
	w.apply(to, game.Attach{Player: p.id, Session: p.session})
}

func (w *World) gmCommand(s *game.Scene) {
	if len(w.gm) > 0 && w.r.IntN(5) == 0 {
		w.apply(s.ID(), w.gm[w.r.IntN(len(w.gm))]) // resend (maybe to another scene)
		return
	}
	w.gmN++
	req := "gm-" + strconv.Itoa(w.gmN)
	var ev game.Event
	def := s.Def()
	if w.r.IntN(2) == 0 && len(def.Monsters) > 0 {
		m := def.Monsters[w.r.IntN(len(def.Monsters))]
		ev = game.GMDamage{ReqID: req, Monster: m.ID, Amount: int64(w.r.IntN(int(m.HP))) + 1}
	} else {
		pid := w.players[w.r.IntN(len(w.players))].id
		items := []string{player.GoldItem, "potion", "sword", "gem"}
		ev = game.GMGive{ReqID: req, Player: pid, Item: items[w.r.IntN(len(items))], Count: int64(w.r.IntN(21) - 8)}
	}
	w.gm = append(w.gm, ev)
	if len(w.gm) > 8 {
		w.gm = w.gm[1:]
	}
	w.apply(s.ID(), ev)
}

func (w *World) randomItems(d *player.Data, honest bool) []game.ItemCount {
	names := append([]string{player.GoldItem}, d.ItemNames()...)
	var l []game.ItemCount
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
		l = append(l, game.ItemCount{Item: it, Count: c})
	}
	return l
}

func (w *World) request(s *game.Scene, p *simPlayer) {
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
	me, _, _ := s.Player(p.id)
	def := s.Def()
	ids := s.PlayerIDs()
	var op game.Op
	switch k := w.r.IntN(100); {
	case k < 30:
		op = game.Move{X: w.r.IntN(def.EffectiveWidth()+2) - 1, Y: w.r.IntN(def.EffectiveHeight())}
	case k < 55:
		id := "nobody"
		if len(def.Monsters) > 0 && w.r.IntN(10) > 0 {
			id = def.Monsters[w.r.IntN(len(def.Monsters))].ID
		}
		op = game.Attack{Monster: id}
	case k < 62:
		b := game.Buy{NPC: "merchant", Item: "potion", Count: int64(w.r.IntN(4))}
		if len(def.NPCs) > 0 {
			n := def.NPCs[w.r.IntN(len(def.NPCs))]
			b.NPC = n.ID
			if len(n.Shop) > 0 {
				b.Item = n.Shop[w.r.IntN(len(n.Shop))].Item
			}
		}
		op = b
	case k < 72:
		if len(ids) < 2 {
			op = game.Chat{Text: "anyone?"}
			break
		}
		other, _, _ := s.Player(ids[w.r.IntN(len(ids))])
		op = game.TradeOffer{To: other.ID, Give: w.randomItems(&me, w.r.IntN(5) > 0), Want: w.randomItems(&other, w.r.IntN(5) > 0)}
	case k < 82:
		id := "bogus"
		if offers := s.TradesTo(p.id); len(offers) > 0 {
			id = offers[len(offers)-1]
		}
		op = game.TradeAccept{TradeID: id}
	case k < 88:
		to := "nowhere"
		if len(def.Exits) > 0 && w.r.IntN(8) > 0 {
			to = w.pick(def.Exits)
		}
		op = game.Travel{To: to}
	case k < 93:
		op = game.EnterDungeon{}
	default:
		op = game.Chat{Text: "hello from " + p.id}
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
	r := game.Request{Session: p.session, Player: p.id, Seq: seq, Op: op}
	if seq != 0 {
		p.last = &r
	}
	w.apply(s.ID(), r)
}

// Totals sums, per item, what players hold in every scene and what is
// in flight (in an outbox and not yet applied by its destination).
func (w *World) Totals() map[string]int64 {
	tot := map[string]int64{}
	add := func(d *player.Data) {
		tot[player.GoldItem] += d.Gold
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
		for _, pid := range s.PlayerIDs() {
			d, _, _ := s.Player(pid)
			add(&d)
		}
		for _, t := range s.PendingTransfers() {
			dst := w.scenes[t.To]
			if dst == nil {
				dst = w.ended[t.To]
			}
			if dst != nil && dst.TransferApplied(t.From, t.TransferID) {
				continue // the destination holds the player already
			}
			add(&t.Player)
		}
	}
	return tot
}

// Script returns the script recorded so far.
func (w *World) Script() *Script { return w.script }

// Scenes returns the live scenes and rooms by id.
func (w *World) Scenes() map[string]*game.Scene { return w.scenes }

// Ended returns the rooms that ended, by id.
func (w *World) Ended() map[string]*game.Scene { return w.ended }

// withClone gives a queued TravelIn its own copy of the player.
func withClone(t game.TravelIn) game.TravelIn {
	t.Player = t.Player.Clone()
	return t
}
