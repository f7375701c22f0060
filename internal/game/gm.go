// GM commands (damage, give) and the bounded memory of GM request ids
// that makes a retried command answer without applying twice.

package game

import "hash/fnv"

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
