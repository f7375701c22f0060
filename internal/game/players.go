// Players arriving and leaving: Enter, Leave, Reload and rejected saves,
// the per-player save/version bookkeeping and the item ledger.

package game

import (
	"fmt"
	"sort"

	"github.com/respawn-dev/respawn/internal/player"
)

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
	s.setPlayer(p.data.ID, p)
	i := sort.Search(len(s.plist), func(i int) bool { return s.plist[i].data.ID >= p.data.ID })
	s.plist = append(s.plist, nil)
	copy(s.plist[i+1:], s.plist[i:])
	s.plist[i] = p
}

// removePlayer takes p out of the scene and cancels its trades.
func (s *Scene) removePlayer(p *playerState) {
	id := p.data.ID
	s.deletePlayer(id)
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
