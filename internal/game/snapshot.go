package game

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
)

// SnapshotVersion is the first byte of every snapshot. Bump it when the
// layout changes and keep reading the old one.
const SnapshotVersion byte = 3

// EventFormat is the version of the event encoding (codec.go). Events
// carry no version byte of their own: a change to an event's layout adds a
// new event kind (the old kind stays decodable) and bumps this, so a
// binary's readable range says which logs it can replay.
const EventFormat = 2

// Snapshot layout, version 3 (same primitives as events, see codec.go):
//
//	u8 version | str scene id | u64le definition hash | bytes definition JSON
//	uv tick | u64le rng state
//	uv next transfer, next trade, next room | bool ended | uv empty since
//	monsters: uv n, (str id, v hp, uv respawn at)…            in def order
//	npcs:     uv n, (str id, uv path index)…                  in def order
//	players:  uv n, (player, uv version, bool dirty, uv acked, uv join, v hp)… by id
//	sessions: uv next entry, uv n, (str player, str session, uv last seq,
//	          bool departed, uv departed at, str moved to,
//	          uv k, (uv seq, u64le hash, uv order, result)…)…    by player
//	gm:       uv n, (str req id, u64le command hash, str player, uv version, result)… oldest first
//	trades:   uv n, (str id, from, to, items give, want, uv expires)… in creation order
//	outbox:   uv n, (str transfer id, from, to, player, uv version, str session, uv last seq)… in order
//	applied:  uv n, (str source, uv floor, uv k, uv counter…)… by source
//	rooms:    uv n, (str id, u64le seed)…                     in creation order
//	ledger:   uv n, (str item, v entered, left, in, out, minted, sunk)… by item
//
// A result (a stored reply) is a kind byte (0 = none) and length-prefixed JSON.
// Version 2 (still read) had no definition (it is not checked) and no
// command hash in gm entries (a repeated id is answered whatever its body).
// Version 1 (still read) kept one session per session id with only its
// last reply (str id, str player, uv last seq, uv last tick, result), and
// no session in the outbox: such records come back with their last seq and
// no stored replies.
// Everything is in a fixed order, so equal states give equal bytes: Hash
// relies on it.

// Snapshot returns the canonical encoding of the scene's state.
func (s *Scene) Snapshot() []byte {
	e := encoder{b: make([]byte, 0, max(256+len(s.plist)*96+len(s.sessions)*64, s.snapLen+s.snapLen/8))}
	e.u8(SnapshotVersion)
	e.str(s.def.ID)
	dj := defJSON(s.def)
	e.u64(DefHash(s.def))
	e.bytes(dj)
	e.uv(s.tick)
	e.u64(s.rng.state)
	e.uv(s.nextTransfer)
	e.uv(s.nextTrade)
	e.uv(s.nextRoom)
	e.boolean(s.ended)
	e.uv(s.emptySince)

	e.uv(uint64(len(s.mons)))
	for _, m := range s.mons {
		e.str(m.def.ID)
		e.v(m.hp)
		e.uv(m.respawnAt)
	}
	e.uv(uint64(len(s.npcs)))
	for _, n := range s.npcs {
		e.str(n.def.ID)
		e.uv(uint64(n.pathIndex))
	}
	e.uv(uint64(len(s.plist)))
	for _, p := range s.plist {
		e.player(&p.data)
		e.uv(p.version)
		e.boolean(p.dirty)
		e.uv(p.acked)
		e.uv(p.join)
		e.v(p.hp)
	}
	ids := make([]string, 0, len(s.sessions))
	for id := range s.sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	e.uv(s.nextEntry)
	e.uv(uint64(len(ids)))
	for _, id := range ids {
		rec := s.sessions[id]
		e.str(id)
		e.str(rec.session)
		e.uv(rec.lastSeq)
		e.boolean(rec.departed)
		e.uv(rec.departedAt)
		e.str(rec.movedTo)
		e.uv(uint64(rec.n))
		for i := 0; i < rec.n; i++ {
			en := rec.at(i)
			e.uv(en.seq)
			e.u64(en.hash)
			e.uv(en.order)
			e.result(en.body)
		}
	}
	e.uv(uint64(len(s.gm)))
	for _, g := range s.gm {
		e.str(g.reqID)
		e.u64(g.hash)
		e.str(g.player)
		e.uv(g.version)
		e.result(g.body)
	}
	e.uv(uint64(len(s.trades)))
	for _, t := range s.trades {
		e.str(t.id)
		e.str(t.from)
		e.str(t.to)
		e.items(t.give)
		e.items(t.want)
		e.uv(t.expires)
	}
	e.uv(uint64(len(s.outbox)))
	for i := range s.outbox {
		t := &s.outbox[i]
		e.str(t.TransferID)
		e.str(t.From)
		e.str(t.To)
		e.player(&t.Player)
		e.uv(t.Version)
		e.str(t.Session)
		e.uv(t.LastSeq)
	}
	srcs := make([]string, 0, len(s.applied))
	for src := range s.applied {
		srcs = append(srcs, src)
	}
	sort.Strings(srcs)
	e.uv(uint64(len(srcs)))
	for _, src := range srcs {
		ss := s.applied[src]
		e.str(src)
		e.uv(ss.floor)
		e.uv(uint64(len(ss.seen)))
		for _, n := range ss.seen {
			e.uv(n)
		}
	}
	e.uv(uint64(len(s.rooms)))
	for _, r := range s.rooms {
		e.str(r.id)
		e.u64(r.seed)
	}
	items := make([]string, 0, len(s.ledger))
	for k := range s.ledger {
		items = append(items, k)
	}
	sort.Strings(items)
	e.uv(uint64(len(items)))
	for _, k := range items {
		l := s.ledger[k]
		e.str(k)
		e.v(l.Entered)
		e.v(l.Left)
		e.v(l.In)
		e.v(l.Out)
		e.v(l.Minted)
		e.v(l.Sunk)
	}
	s.snapLen = len(e.b)
	return e.b
}

// Hash is the SHA-256 of the canonical snapshot: two scenes with equal
// hashes are in the same state.
func (s *Scene) Hash() [32]byte {
	return sha256.Sum256(s.Snapshot())
}

// Restore rebuilds a scene of def from Snapshot bytes. Monsters and NPCs are
// matched to def by id, so a definition edited between snapshot and restore
// keeps what still exists. Garbage gives an error, never a panic.
func Restore(def SceneDef, snap []byte) (*Scene, error) {
	s, err := restore(def, snap)
	if err != nil {
		return nil, fmt.Errorf("game: restore scene %q: %w", def.ID, err)
	}
	return s, nil
}

func restore(def SceneDef, snap []byte) (*Scene, error) {
	d := decoder{b: snap}
	version := d.u8()
	if d.err != nil {
		return nil, errors.New("empty snapshot")
	} else if version > SnapshotVersion || version == 0 {
		return nil, fmt.Errorf("snapshot format version %d, want 1..%d", version, SnapshotVersion)
	}
	if id := d.str(); d.err == nil && id != def.ID {
		return nil, fmt.Errorf("snapshot is of scene %q", id)
	}
	if version >= 3 {
		hash, recorded := d.u64(), d.bytes()
		if d.err != nil {
			return nil, d.err
		}
		if err := checkDef(recorded, hash, def); err != nil {
			return nil, err
		}
	}
	s := New(def)
	s.tick = d.uv()
	s.rng.state = d.u64()
	s.nextTransfer = d.uv()
	s.nextTrade = d.uv()
	s.nextRoom = d.uv()
	s.ended = d.boolean()
	s.emptySince = d.uv()

	n := d.length(maxListLen)
	for i := 0; i < n && d.err == nil; i++ {
		id, hp, at := d.str(), d.v(), d.uv()
		j, ok := s.monIx[id]
		if !ok {
			continue // removed from the definition
		}
		m := &s.mons[j]
		m.hp = min(max(hp, 0), m.def.HP)
		m.respawnAt = at
	}
	n = d.length(maxListLen)
	for i := 0; i < n && d.err == nil; i++ {
		id, idx := d.str(), d.uv()
		if j, ok := s.npcIx[id]; ok && idx < uint64(len(s.npcs[j].def.Path)) {
			s.npcs[j].pathIndex = int(idx)
		}
	}
	n = d.length(maxListLen)
	for i := 0; i < n && d.err == nil; i++ {
		p := &playerState{data: d.player()}
		p.version = d.uv()
		p.dirty = d.boolean()
		p.acked = d.uv()
		p.join = d.uv()
		p.hp = d.v()
		if d.err != nil {
			break
		}
		if p.data.ID == "" {
			return nil, fmt.Errorf("player %d: empty id", i)
		}
		if len(s.plist) > 0 && s.plist[len(s.plist)-1].data.ID >= p.data.ID {
			return nil, fmt.Errorf("player %q: out of order", p.data.ID)
		}
		s.setPlayer(p.data.ID, p)
		s.plist = append(s.plist, p)
	}
	var err error
	if version == 1 {
		err = s.restoreSessionsV1(&d)
	} else {
		err = s.restoreSessions(&d)
	}
	if err != nil {
		return nil, err
	}
	prev := ""
	n = d.length(maxListLen)
	for i := 0; i < n && d.err == nil; i++ {
		g := gmEntry{reqID: d.str()}
		if version >= 3 {
			g.hash, g.player, g.version = d.u64(), d.str(), d.uv()
		}
		g.body = d.result()
		if d.err == nil && g.body == nil {
			return nil, fmt.Errorf("gm request %q: no stored reply", g.reqID)
		}
		s.gm = append(s.gm, g)
	}
	n = d.length(maxListLen)
	for i := 0; i < n && d.err == nil; i++ {
		t := trade{id: d.str(), from: d.str(), to: d.str(), give: d.items(), want: d.items(), expires: d.uv()}
		s.trades = append(s.trades, t)
	}
	n = d.length(maxListLen)
	for i := 0; i < n && d.err == nil; i++ {
		t := TravelOut{TransferID: d.str(), From: d.str(), To: d.str()}
		t.Player = d.player()
		t.Version = d.uv()
		if version > 1 {
			t.Session = d.str()
			t.LastSeq = d.uv()
		}
		s.outbox = append(s.outbox, t)
	}
	n = d.length(maxListLen)
	prev = ""
	for i := 0; i < n && d.err == nil; i++ {
		src := d.str()
		ss := &seenSet{floor: d.uv()}
		k := d.length(dedupeWindow + 1)
		last := ss.floor
		for j := 0; j < k && d.err == nil; j++ {
			c := d.uv()
			if c <= last {
				return nil, fmt.Errorf("applied transfers from %q: counters out of order", src)
			}
			last = c
			ss.seen = append(ss.seen, c)
		}
		if i > 0 && src <= prev {
			return nil, fmt.Errorf("applied transfers from %q: out of order", src)
		}
		prev = src
		s.applied[src] = ss
	}
	n = d.length(maxListLen)
	for i := 0; i < n && d.err == nil; i++ {
		s.rooms = append(s.rooms, room{id: d.str(), seed: d.u64()})
	}
	n = d.length(maxListLen)
	prev = ""
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str()
		l := &LedgerEntry{Entered: d.v(), Left: d.v(), In: d.v(), Out: d.v(), Minted: d.v(), Sunk: d.v()}
		if i > 0 && k <= prev {
			return nil, fmt.Errorf("ledger %q: out of order", k)
		}
		prev = k
		s.ledger[k] = l
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return s, nil
}

func (s *Scene) restoreSessions(d *decoder) error {
	s.nextEntry = d.uv()
	n := d.length(maxListLen)
	prev := ""
	for i := 0; i < n && d.err == nil; i++ {
		id := d.str()
		rec := &sessRec{session: d.str(), lastSeq: d.uv(), departed: d.boolean(), departedAt: d.uv(), movedTo: d.str()}
		k := d.length(SessionWindow)
		for j := 0; j < k && d.err == nil; j++ {
			en := sessEntry{seq: d.uv(), hash: d.u64(), order: d.uv()}
			en.body = d.result()
			if d.err != nil {
				break
			}
			switch {
			case en.body == nil:
				return fmt.Errorf("session of %q: seq %d: no stored reply", id, en.seq)
			case en.seq > rec.lastSeq || rec.lastSeq-en.seq >= SessionWindow:
				return fmt.Errorf("session of %q: seq %d outside the window of %d", id, en.seq, rec.lastSeq)
			case j > 0 && en.seq <= rec.at(j-1).seq:
				return fmt.Errorf("session of %q: seq %d out of order", id, en.seq)
			case en.order == 0 || en.order > s.nextEntry:
				return fmt.Errorf("session of %q: seq %d: order %d past %d", id, en.seq, en.order, s.nextEntry)
			}
			en.cost = entryOverhead + resultCost(en.body)
			rec.push(en)
			s.sessBytes += en.cost
			s.sessEntries++
		}
		if d.err != nil {
			break
		}
		switch {
		case i > 0 && id <= prev:
			return fmt.Errorf("session of %q: out of order", id)
		case rec.session == "" || len(rec.session) > MaxSessionLen:
			return fmt.Errorf("session of %q: bad session id %q", id, rec.session)
		case rec.departed == (s.players[id] != nil):
			return fmt.Errorf("session of %q: departed=%v disagrees with the player list", id, rec.departed)
		}
		prev = id
		if rec.departed {
			s.departedN++
		}
		s.setSession(id, rec)
	}
	if d.err == nil && (s.departedN > maxDeparted || s.sessBytes > sessionBudget) {
		return fmt.Errorf("sessions over their bounds: %d departed, %d bytes", s.departedN, s.sessBytes)
	}
	return nil
}

// restoreSessionsV1 reads the version 1 table (one row per session id) as
// records of present players with their last seq and no stored replies; the
// most recently used session of a player wins.
func (s *Scene) restoreSessionsV1(d *decoder) error {
	n := d.length(maxListLen)
	used := map[string]uint64{}
	prev := ""
	for i := 0; i < n && d.err == nil; i++ {
		id, player, last, tick := d.str(), d.str(), d.uv(), d.uv()
		if d.result() == nil && d.err == nil {
			return fmt.Errorf("session %q: no stored reply", id)
		}
		if d.err != nil {
			break
		}
		if i > 0 && id <= prev {
			return fmt.Errorf("session %q: out of order", id)
		}
		prev = id
		if s.players[player] == nil || len(id) > MaxSessionLen {
			continue
		}
		if t, ok := used[player]; ok && t > tick {
			continue
		}
		used[player] = tick
		s.setSession(player, &sessRec{session: id, lastSeq: last})
	}
	return nil
}
