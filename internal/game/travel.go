// Travel between scenes: outgoing transfers, their ids, and the
// exactly-once application of incoming ones (seenSet).

package game

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// seenSet remembers which transfers from one source were applied: every
// counter <= floor, plus the sorted counters above it. In-order arrival keeps
// seen empty; out-of-order arrival is bounded by dedupeWindow.
type seenSet struct {
	floor uint64
	seen  []uint64
}

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
