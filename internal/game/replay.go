package game

// Replayer applies logged events (EncodeEvent's bytes) to a scene with
// their effects discarded: what a respawned scene process does with the
// events since its snapshot, and a standby as it follows the log. The state
// it builds is exactly the one DecodeEvent and Apply build
// (TestReplayerEqualsApply, TestReplayerLookupsFollowTheMaps); it only
// costs less per event, because a cold failover waits for the whole replay:
// ids are interned instead of copied out of every record, a request's
// player and session record are looked up once while the scene's maps stay
// as they were, ops, replies and op hashes that repeat are made once, a
// request is applied without being boxed as an Event, and the effects
// nobody reads are not built.
type Replayer struct {
	ids interner
	// reqs are the requests' (session, player) pairs met so far, by the
	// bytes that encode them side by side in a request record: one hash
	// for both ids, and the pair remembers its player's lookups (reqIDs).
	reqs map[string]*reqIDs
	// cur is the pair of the request being applied (nil otherwise).
	cur *reqIDs
	// squares shares boxed values per square of the scene (a log is mostly
	// moves, and a box each is an allocation each); sized at the first
	// event, from the scene's definition.
	squares *squares
	// attack is the last Attack op decoded, boxed (decoder.attack): an Op
	// is never changed once made, so requests may share it.
	attack Op
	// attackHash is opHash of attackHashed (nil: none yet).
	attackHashed Op
	attackHash   uint64
	hashBuf      []byte
	// dead holds each monster's "is dead" refusal, by monster index: an
	// attack on a dead monster is a common request, and its reply the same
	// each time (errResult formats it anew).
	dead []deadRefusal
}

// reqIDs is one (session, player) pair of request records, with what
// Scene.lookup last found for the player in scene while its maps were at
// epoch (Scene.idEpoch): a log is the same players' requests over and over,
// and the maps change rarely between them.
type reqIDs struct {
	session, player string
	scene           *Scene
	epoch           uint64
	rec             *sessRec
	p               *playerState
}

type deadRefusal struct {
	monster string
	r       Result
}

// NewReplayer returns a Replayer; one per scene being replayed (its ids are
// the scene's).
func NewReplayer() *Replayer {
	return &Replayer{ids: interner{m: map[string]string{}}, reqs: map[string]*reqIDs{}}
}

// Apply decodes one logged event and applies it to s. A record that does not
// decode gives DecodeEvent's error and changes nothing.
func (rp *Replayer) Apply(s *Scene, b []byte) error {
	if rp.squares == nil {
		rp.squares = newSquares(s.def)
	}
	d := decoder{b: b, ids: &rp.ids, moves: rp.squares, attack: &rp.attack}
	if len(b) > 0 && b[0] == evRequest {
		// Requests are most of a log: apply them without an Event box.
		// The fields are read as decoder.request reads them, so a record
		// fails exactly as it does in DecodeEvent.
		kind := d.u8()
		ids := rp.requestIDs(&d)
		r := Request{Session: ids.session, Player: ids.player, Seq: d.uv()}
		r.Op = d.op()
		if err := d.end(kind); err != nil {
			return err
		}
		s.replaying, rp.cur = rp, ids
		s.onRequest(r)
		s.replaying, rp.cur = nil, nil
		return nil
	}
	ev, err := decodeEvent(d)
	if err != nil {
		return err
	}
	s.replaying = rp
	s.Apply(ev)
	s.replaying = nil
	return nil
}

// requestIDs reads a request record's session and player ids (d is past
// the kind byte) as one interned pair. A record that fails to decode gets an
// empty pair, with d's error set as two d.str() calls would set it.
func (rp *Replayer) requestIDs(d *decoder) *reqIDs {
	start := d.b
	for range 2 {
		n := d.length(maxStrLen)
		if d.err != nil {
			return &reqIDs{}
		}
		d.b = d.b[n:]
	}
	key := start[:len(start)-len(d.b)]
	if ids, ok := rp.reqs[string(key)]; ok { // no allocation for the lookup
		return ids
	}
	kd := decoder{b: key, ids: &rp.ids}
	ids := &reqIDs{session: kd.str(), player: kd.str()}
	if len(rp.reqs) < maxInterned && len(key) <= 2*maxInternedLen {
		rp.reqs[string(key)] = ids
	}
	return ids
}

// deadResult is errResult(ErrMonsterDead, "%s is dead", monster) for the
// monster at index i, made once.
func (rp *Replayer) deadResult(i int, monster string) Result {
	if i >= len(rp.dead) {
		rp.dead = append(rp.dead, make([]deadRefusal, i+1-len(rp.dead))...)
	}
	c := &rp.dead[i]
	if c.r == nil || c.monster != monster {
		*c = deadRefusal{monster: monster, r: ErrorResult{Code: ErrMonsterDead, Error: monster + " is dead"}}
	}
	return c.r
}

// opHash is opHash(op) for a move on the scene's grid and for the last
// Attack decoded: ok is false for any other op, which the caller hashes.
func (rp *Replayer) opHash(op Op) (h uint64, ok bool) {
	switch o := op.(type) {
	case Move:
		return rp.squares.moveHash(o)
	case Attack:
		if op != rp.attack {
			return 0, false
		}
		if rp.attackHashed != rp.attack {
			rp.hashBuf, rp.attackHash = opHash(rp.hashBuf, op)
			rp.attackHashed = rp.attack
		}
		return rp.attackHash, true
	}
	return 0, false
}

// maxInterned bounds an interner: a scene's ids are its players' and
// sessions' (a few thousand at most); past the bound strings are copied as
// usual, so a log of ever new ids cannot grow it without limit.
const (
	maxInterned    = 1 << 14
	maxInternedLen = 128
)

// interner hands out one string per distinct byte sequence it has seen.
type interner struct {
	m map[string]string
}

func (in *interner) get(b []byte) string {
	if s, ok := in.m[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if len(in.m) < maxInterned && len(b) <= maxInternedLen {
		in.m[s] = s
	}
	return s
}

// maxSquares bounds the squares boxed values are shared for (a 128x128
// scene; the default is 100x100): 2 x 16 B each, allocated as the boxes are
// first made. Moves off that grid are boxed as usual.
const maxSquares = 1 << 14

// squares hands out one boxed Move and one boxed MoveResult per square: an
// Op or a Result is never changed once made, so requests and stored
// replies may share them. No hashing and no growth: a log whose moves never
// repeat costs what it did without it.
type squares struct {
	w, h    int
	moves   []Op
	results []Result
	// hashes are opHash of the moves, made with them.
	hashes []uint64
	buf    []byte
}

func newSquares(def SceneDef) *squares {
	w, h := def.EffectiveWidth(), def.EffectiveHeight()
	if w <= 0 || h <= 0 || w*h > maxSquares {
		return &squares{} // nothing is on the grid
	}
	return &squares{w: w, h: h}
}

// at is the square's index, or -1 off the grid.
func (sq *squares) at(x, y int) int {
	if x < 0 || y < 0 || x >= sq.w || y >= sq.h {
		return -1
	}
	return y*sq.w + x
}

func (sq *squares) move(m Move) Op {
	i := sq.at(m.X, m.Y)
	if i < 0 {
		return m
	}
	if sq.moves == nil {
		sq.moves = make([]Op, sq.w*sq.h)
		sq.hashes = make([]uint64, sq.w*sq.h)
	}
	if sq.moves[i] == nil {
		sq.moves[i] = m
		sq.buf, sq.hashes[i] = opHash(sq.buf, sq.moves[i]) // the box: m would be boxed again
	}
	return sq.moves[i]
}

// moveHash is opHash(m) if m's square has its box; ok is false otherwise.
func (sq *squares) moveHash(m Move) (h uint64, ok bool) {
	i := sq.at(m.X, m.Y)
	if i < 0 || sq.moves == nil || sq.moves[i] == nil {
		return 0, false
	}
	return sq.hashes[i], true
}

func (sq *squares) moveResult(r MoveResult) Result {
	i := sq.at(r.X, r.Y)
	if i < 0 {
		return r
	}
	if sq.results == nil {
		sq.results = make([]Result, sq.w*sq.h)
	}
	if sq.results[i] == nil {
		sq.results[i] = r
	}
	return sq.results[i]
}
