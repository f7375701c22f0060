// Player requests: the dispatch from an Op to its handler, and the
// movement ops (move, travel, enter a dungeon).

package game

import (
	"fmt"
	"strconv"
)

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
		if s.replaying == nil {
			out = append(out, PositionChanged{Scene: s.def.ID, Kind: "player", ID: p.data.ID, X: op.X, Y: op.Y})
		}
	}
	if s.replaying != nil {
		return s.replaying.squares.moveResult(MoveResult{X: op.X, Y: op.Y}), out
	}
	return MoveResult{X: op.X, Y: op.Y}, out
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
