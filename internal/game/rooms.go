// Dungeon rooms: ending a room and taking its players back to the parent.

package game

import (
	"fmt"
	"sort"
	"strconv"
)

type room struct {
	id   string
	seed uint64
}

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
