package game

import (
	"hash/fnv"
	"sort"
)

// SessionWindow is how many of a session's latest requests keep their
// replies: a resend of one of them gets its original reply. A gateway must
// not pipeline more than this many requests per session (its default is 16).
const SessionWindow = 16

// Session limits. Like the gameplay constants they are part of the rules.
const (
	// MaxSessionLen bounds a session id.
	MaxSessionLen = 64
	// sessionBudget bounds the bytes of stored replies (plus entryOverhead
	// each) a scene keeps over all its session records. Past it the oldest
	// stored replies of the whole scene are dropped first; a resend of a
	// dropped one gets ErrSeqTooOld. At the 2000-player benchmark's load
	// (16 moves each) a scene uses about 1.4 MB of it.
	sessionBudget = 3 << 20
	// maxDeparted bounds the records kept for players who left or
	// travelled away (to answer resends of what was applied here); past it
	// the longest-departed goes first.
	maxDeparted = 256
	// entryOverhead is what a stored reply costs in the snapshot besides
	// its JSON: seq, hash, order, kind and length.
	entryOverhead = 32
	// recordOverhead bounds a record's snapshot bytes besides its entries:
	// player id (≤128), session id (≤64), moved-to scene (≤160), varints.
	recordOverhead = 400
)

// SessionSnapshotBound is the most bytes the session records of one scene
// can add to its snapshot: the stored-reply budget plus one record per
// possible player and departed player. Config validation keeps a log
// slot's half above it (plus room for the rest), so sessions can never make
// a snapshot outgrow its slot.
func SessionSnapshotBound() int {
	return sessionBudget + (maxPlayers+maxDeparted)*recordOverhead
}

// sessEntry is one applied request's stored reply.
type sessEntry struct {
	seq   uint64
	hash  uint64 // FNV-1a 64 of the encoded op
	order uint64 // scene-wide insertion counter: budget eviction is oldest first
	cost  int
	body  Result
}

// sessRec is a player's session record: one per player, while present and
// for a while after departing.
type sessRec struct {
	session string
	lastSeq uint64
	// head and n place the stored replies in ring (below). Every request
	// reads them with session and lastSeq: they share its cache line.
	head, n    int
	departed   bool
	departedAt uint64
	movedTo    string // where a departed player travelled ("" after a logout)
	// ring holds the stored replies: n of them from head, ascending seq,
	// all within SessionWindow of lastSeq. A fixed ring: a steady window
	// never allocates or copies.
	ring [SessionWindow]sessEntry
}

// entryRef locates a stored reply for budget eviction; refs whose entry is
// already gone are skipped.
type entryRef struct {
	player string
	order  uint64
}

func opHash(buf []byte, op Op) ([]byte, uint64) {
	e := encoder{b: buf[:0]}
	_ = e.op(op) // an unknown op hashes as its prefix; it is refused anyway
	h := fnv.New64a()
	h.Write(e.b)
	return e.b, h.Sum64()
}

// hashOp is opHash of op; a replayed move or attack takes the hash the
// Replayer keeps with its boxed op.
func (s *Scene) hashOp(op Op) uint64 {
	if s.replaying != nil {
		if h, ok := s.replaying.opHash(op); ok {
			return h
		}
	}
	var h uint64
	s.opBuf, h = opHash(s.opBuf, op)
	return h
}

func (s *Scene) reply(r Request, body Result) []Effect {
	return []Effect{Reply{Session: r.Session, Player: r.Player, Seq: r.Seq, Body: body}}
}

func (s *Scene) onRequest(r Request) []Effect {
	if r.Seq == 0 || r.Session == "" || r.Player == "" || len(r.Session) > MaxSessionLen {
		return s.reply(r, errResult(ErrBadRequest, "request needs a player, a session of 1..%d bytes and a seq > 0", MaxSessionLen))
	}
	rec, p := s.lookup(r.Player)
	if p == nil && (rec == nil || !rec.departed) {
		// Not recorded: nothing changed, and unknown players must not grow state.
		return s.reply(r, errResult(ErrNotInScene, "player %s is not in scene %s", r.Player, s.def.ID))
	}
	if rec == nil {
		// A present player nobody attached a session to yet (entered by a
		// GM command): the first session that speaks for it becomes current.
		rec = &sessRec{session: r.Session}
		s.setSession(r.Player, rec)
	}
	if rec.session != r.Session {
		return s.reply(r, errResult(ErrSessionReplaced, "session %s of player %s was replaced by a newer one", r.Session, r.Player))
	}
	if r.Seq <= rec.lastSeq && s.def.BreakDedupe && p != nil && !rec.departed {
		// Test hook (package testhook): the duplicate check is off, so the
		// resend is applied a second time, as a scene without it would.
		out := make([]Effect, 1, 2)
		var body Result
		body, out = s.applyOp(p, r.Op, out)
		out[0] = Reply{Session: r.Session, Player: r.Player, Seq: r.Seq, Body: body}
		return out
	}
	if r.Seq <= rec.lastSeq {
		hash := s.hashOp(r.Op)
		i := sort.Search(rec.n, func(i int) bool { return rec.at(i).seq >= r.Seq })
		if i == rec.n || rec.at(i).seq != r.Seq {
			return s.reply(r, errResult(ErrSeqTooOld, "seq %d of session %s is older than the last %d kept or was never applied (last applied %d)", r.Seq, r.Session, SessionWindow, rec.lastSeq))
		}
		if rec.at(i).hash != hash {
			return s.reply(r, errResult(ErrSeqReused, "seq %d of session %s was applied with another request", r.Seq, r.Session))
		}
		return []Effect{Reply{Session: r.Session, Player: r.Player, Seq: r.Seq, Body: rec.at(i).body, Resent: true}}
	}
	if rec.departed {
		rep := s.reply(r, errResult(ErrNotInScene, "player %s left scene %s", r.Player, s.def.ID))
		rep[0] = withMoved(rep[0], rec.movedTo)
		return rep
	}
	if r.Seq-rec.lastSeq > SessionWindow { // r.Seq > lastSeq: cannot wrap
		return s.reply(r, errResult(ErrSeqTooFar, "seq %d of session %s is more than %d past the last applied %d", r.Seq, r.Session, SessionWindow, rec.lastSeq))
	}
	hash := s.hashOp(r.Op)
	// lastSeq moves before the op runs: a travel carries the session on
	// with this request counted, so the destination never applies it again.
	prev := rec.lastSeq
	rec.lastSeq = r.Seq
	var out []Effect
	if s.replaying != nil && cap(s.quietOut) > 0 {
		out = s.quietOut[:1]
	} else {
		out = make([]Effect, 1, 2)
	}
	var body Result
	body, out = s.applyOp(p, r.Op, out)
	// The op may have moved the player away (travel, a room's end): the
	// record is still this one, departed or not, unless the departed cap
	// just dropped it.
	if s.sessionOf(r.Player) == rec {
		rec.lastSeq = prev
		s.remember(rec, r.Seq, hash, body)
		if rec.departed && s.replaying == nil {
			// The player left with this request (a travel, a dungeon
			// entry, a room's end): its reply goes along, so the
			// destination answers a resend of it as this scene would.
			for i := 1; i < len(out); i++ {
				if t, ok := out[i].(TravelOut); ok && t.Player.ID == r.Player {
					t.Replies = s.carriedReplies(r.Player, t.Session, t.LastSeq)
					out[i] = t
				}
			}
		}
	}
	if s.replaying != nil {
		if len(out) > 1 || out[0] != nil { // a move adds none (clear is a call)
			clear(out) // hold no effect past this event
		}
		s.quietOut = out[:0]
		return nil
	}
	out[0] = Reply{Session: r.Session, Player: r.Player, Seq: r.Seq, Body: body}
	return out
}

// lookup returns player's session record and state. A replayed request
// brings them as the Replayer last looked them up, while neither map has
// been written since (idEpoch): the same answer without hashing the id twice.
func (s *Scene) lookup(player string) (*sessRec, *playerState) {
	if s.replaying == nil || s.replaying.cur == nil {
		return s.sessions[player], s.players[player]
	}
	c := s.replaying.cur
	if c.player != player {
		return s.sessions[player], s.players[player]
	}
	if c.scene != s || c.epoch != s.idEpoch {
		c.scene, c.epoch = s, s.idEpoch
		c.rec, c.p = s.sessions[player], s.players[player]
	}
	return c.rec, c.p
}

// sessionOf is s.sessions[player], through lookup while replaying.
func (s *Scene) sessionOf(player string) *sessRec {
	if s.replaying == nil {
		return s.sessions[player]
	}
	rec, _ := s.lookup(player)
	return rec
}

func withMoved(e Effect, to string) Effect {
	r := e.(Reply)
	r.Moved = to
	return r
}

func (s *Scene) onAttach(ev Attach) []Effect {
	a := Attached{Player: ev.Player, Session: ev.Session}
	if ev.Player == "" || ev.Session == "" || len(ev.Session) > MaxSessionLen {
		a.Code = ErrBadRequest
		return []Effect{a}
	}
	rec := s.sessions[ev.Player]
	if s.players[ev.Player] == nil {
		a.Code = ErrNotInScene
		if rec != nil {
			a.Moved = rec.movedTo
		}
		return []Effect{a}
	}
	switch {
	case rec == nil:
		s.setSession(ev.Player, &sessRec{session: ev.Session})
	case rec.session != ev.Session:
		s.resetRecord(rec, ev.Session, 0)
	}
	a.LastSeq = s.sessions[ev.Player].lastSeq
	return []Effect{a}
}

// remember stores the reply of applied request seq.
func (s *Scene) remember(rec *sessRec, seq, hash uint64, body Result) {
	s.nextEntry++
	c := entryOverhead + resultCost(body)
	rec.lastSeq = seq
	s.trimWindow(rec) // leaves at most SessionWindow-1: room for this one
	rec.push(sessEntry{seq: seq, hash: hash, order: s.nextEntry, cost: c, body: body})
	s.sessBytes += c
	s.sessEntries++
	for s.sessBytes > sessionBudget && s.evictOldest() {
	}
}

// trimWindow drops stored replies that fell out of the window.
func (s *Scene) trimWindow(rec *sessRec) {
	n := 0
	for n < rec.n && rec.lastSeq-rec.at(n).seq >= SessionWindow {
		s.sessBytes -= rec.at(n).cost
		s.sessEntries--
		n++
	}
	rec.dropFront(n)
}

// at is the i-th stored reply, oldest first.
func (rec *sessRec) at(i int) *sessEntry { return &rec.ring[(rec.head+i)%SessionWindow] }

// push appends a stored reply; the caller has made room.
func (rec *sessRec) push(e sessEntry) {
	rec.ring[(rec.head+rec.n)%SessionWindow] = e
	rec.n++
}

// dropFront removes the k oldest stored replies.
func (rec *sessRec) dropFront(k int) {
	for ; k > 0; k-- {
		rec.ring[rec.head] = sessEntry{} // let the reply go
		rec.head = (rec.head + 1) % SessionWindow
		rec.n--
	}
	if rec.n == 0 {
		rec.head = 0
	}
}

// evictOldest drops the scene's oldest stored reply; false if none is left.
// The eviction order is built only when needed (at the budget), from the
// records: every entry live then, oldest first. Entries added later are
// newer than all of them, so the order stays right until it runs out, and
// is rebuilt then.
func (s *Scene) evictOldest() bool {
	for rebuilt := false; ; {
		for s.fifoHead < len(s.fifo) {
			ref := s.fifo[s.fifoHead]
			s.fifo[s.fifoHead] = entryRef{}
			s.fifoHead++
			rec := s.sessions[ref.player]
			if rec == nil || rec.n == 0 || rec.at(0).order != ref.order {
				continue // already gone: trimmed, reset or pruned
			}
			s.sessBytes -= rec.at(0).cost
			s.sessEntries--
			rec.dropFront(1)
			return true
		}
		if rebuilt || s.sessEntries == 0 {
			s.fifo, s.fifoHead = nil, 0
			return false
		}
		s.buildFIFO()
		rebuilt = true
	}
}

// buildFIFO lists every stored reply, oldest first. It depends on no map
// order (orders are unique).
func (s *Scene) buildFIFO() {
	refs := make([]entryRef, 0, s.sessEntries)
	for p, rec := range s.sessions {
		for i := 0; i < rec.n; i++ {
			refs = append(refs, entryRef{player: p, order: rec.at(i).order})
		}
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].order < refs[j].order })
	s.fifo, s.fifoHead = refs, 0
}

func (s *Scene) resetRecord(rec *sessRec, session string, lastSeq uint64) {
	for i := 0; i < rec.n; i++ {
		s.sessBytes -= rec.at(i).cost
		s.sessEntries--
	}
	rec.dropFront(rec.n)
	rec.session, rec.lastSeq = session, lastSeq
}

func (s *Scene) dropRecord(player string) {
	rec := s.sessions[player]
	if rec == nil {
		return
	}
	s.resetRecord(rec, "", 0)
	if rec.departed {
		s.departedN--
	}
	s.deleteSession(player)
}

// sessionArrive makes a present player's record current. Enter (session
// "") starts without one: the gateway attaches next. TravelIn carries the
// session on: the same session continues (its stored replies here from an
// earlier stay stay valid), another one replaces the record. The carried
// replies join the record's, so a resend of a request applied at the
// source gets its original reply here too.
func (s *Scene) sessionArrive(player, session string, lastSeq uint64, carried []CarriedReply) {
	rec := s.sessions[player]
	if session == "" || len(session) > MaxSessionLen {
		s.dropRecord(player)
		return
	}
	switch {
	case rec == nil:
		rec = &sessRec{session: session, lastSeq: lastSeq}
		s.setSession(player, rec)
	case rec.session != session:
		s.resetRecord(rec, session, lastSeq)
	case lastSeq > rec.lastSeq:
		rec.lastSeq = lastSeq
		s.trimWindow(rec)
	case lastSeq < rec.lastSeq:
		carried = nil // older than what is here: nothing to learn
	}
	if rec.departed {
		rec.departed, rec.departedAt, rec.movedTo = false, 0, ""
		s.departedN--
	}
	s.adoptReplies(rec, carried)
}

// adoptReplies stores carried replies in rec: only those newer than its
// newest stored one, ascending, with a body, within the window of its last
// seq; anything else is skipped (a TravelIn comes from another process).
// They are costed and evicted like replies applied here.
func (s *Scene) adoptReplies(rec *sessRec, carried []CarriedReply) {
	for _, c := range carried {
		if c.Body == nil || c.Seq == 0 || c.Seq > rec.lastSeq || rec.lastSeq-c.Seq >= SessionWindow {
			continue
		}
		if rec.n > 0 && c.Seq <= rec.at(rec.n-1).seq {
			continue
		}
		if rec.n == SessionWindow { // unreachable: all are in the window
			continue
		}
		s.nextEntry++
		cost := entryOverhead + resultCost(c.Body)
		rec.push(sessEntry{seq: c.Seq, hash: c.Hash, order: s.nextEntry, cost: cost, body: c.Body})
		s.sessBytes += cost
		s.sessEntries++
		for s.sessBytes > sessionBudget && s.evictOldest() {
		}
	}
}

// carriedReplies are the stored replies a transfer of player carries: those
// of its record while it still holds session, up to lastSeq (a record that
// came back and moved on keeps newer ones, which are not the transfer's).
func (s *Scene) carriedReplies(player, session string, lastSeq uint64) []CarriedReply {
	rec := s.sessions[player]
	if rec == nil || rec.session != session {
		return nil
	}
	var out []CarriedReply
	for i := 0; i < rec.n; i++ {
		e := rec.at(i)
		if e.seq <= lastSeq && lastSeq-e.seq < SessionWindow {
			out = append(out, CarriedReply{Seq: e.seq, Hash: e.hash, Body: e.body})
		}
	}
	return out
}

// sessionDepart marks a leaving player's record departed and returns the
// session to carry on. The record stays to answer resends until pruned.
func (s *Scene) sessionDepart(player, movedTo string) (string, uint64) {
	rec := s.sessions[player]
	if rec == nil {
		return "", 0
	}
	if !rec.departed {
		rec.departed = true
		s.departedN++
	}
	rec.departedAt, rec.movedTo = s.tick, movedTo
	session, last := rec.session, rec.lastSeq
	for s.departedN > maxDeparted {
		s.dropRecord(s.longestDeparted())
	}
	return session, last
}

// longestDeparted is the departed record to drop first: earliest departure,
// then smallest player id, so the choice is the same on every replay.
func (s *Scene) longestDeparted() string {
	best := ""
	var at uint64
	for p, rec := range s.sessions {
		if rec.departed && (best == "" || rec.departedAt < at || (rec.departedAt == at && p < best)) {
			best, at = p, rec.departedAt
		}
	}
	return best
}

// pruneSessions drops departed records older than sessionTTL.
func (s *Scene) pruneSessions() {
	if s.departedN == 0 {
		return // nothing to drop: skip the walk over every record
	}
	// Deleting by a per-entry condition does not depend on map order.
	for p, rec := range s.sessions {
		if rec.departed && s.tick-rec.departedAt > sessionTTL {
			s.dropRecord(p)
		}
	}
}

// resultCost bounds the JSON bytes of a stored reply (every string byte
// escaped at worst as \u00XX), cheaply and the same on every replay.
func resultCost(r Result) int {
	str := func(v string) int { return 2 + 6*len(v) }
	items := func(l []ItemCount) int {
		n := 2
		for _, ic := range l {
			n += 32 + str(ic.Item)
		}
		return n
	}
	switch r := r.(type) {
	case ErrorResult:
		return 24 + str(r.Code) + str(r.Error)
	case OKResult:
		return 2
	case MoveResult:
		return 12 + decimalLen(r.X) + decimalLen(r.Y)
	case AttackResult:
		return 200 + str(r.Monster) + items(r.Loot)
	case BuyResult:
		return 120 + str(r.Item)
	case TradeOfferResult:
		return 16 + str(r.TradeID)
	case TradeOffered:
		return 48 + str(r.TradeID) + str(r.From) + items(r.Give) + items(r.Want)
	case TradeResult:
		return 40 + str(r.TradeID) + items(r.Gave) + items(r.Got)
	case TravelResult:
		return 32 + str(r.TransferID) + str(r.To)
	case DungeonResult:
		return 40 + str(r.RoomID) + str(r.TransferID)
	case MonsterResult:
		return 100 + str(r.Monster)
	case GiveResult:
		return 100 + str(r.Player) + str(r.Item)
	}
	return 4096 // unreachable: the set of results is sealed
}

// decimalLen is len(strconv.Itoa(v)), without making the string: a stored
// move's cost is counted on every move.
func decimalLen(v int) int {
	n, u := 1, uint64(v)
	if v < 0 {
		n, u = 2, -u
	}
	for ; u >= 10; u /= 10 {
		n++
	}
	return n
}
