package game

// Replayer applies logged events (EncodeEvent's bytes) to a scene with
// their effects discarded: what a respawned scene process does with the
// events since its snapshot, and a standby as it follows the log. The state
// it builds is exactly the one DecodeEvent and Apply build
// (TestReplayerEqualsApply); it only allocates less per event, because a
// cold failover waits for the whole replay: ids are interned instead of
// copied out of every record, a request is applied without being boxed as
// an Event, and the effects nobody reads are not built.
type Replayer struct {
	ids interner
	// squares shares boxed values per square of the scene (a log is mostly
	// moves, and a box each is an allocation each); sized at the first
	// event, from the scene's definition.
	squares *squares
}

// NewReplayer returns a Replayer; one per scene being replayed (its ids are
// the scene's).
func NewReplayer() *Replayer { return &Replayer{ids: interner{m: map[string]string{}}} }

// Apply decodes one logged event and applies it to s. A record that does not
// decode gives DecodeEvent's error and changes nothing.
func (rp *Replayer) Apply(s *Scene, b []byte) error {
	if rp.squares == nil {
		rp.squares = newSquares(s.def)
	}
	d := decoder{b: b, ids: &rp.ids, moves: rp.squares}
	if len(b) > 0 && b[0] == evRequest {
		// Requests are most of a log: apply them without an Event box.
		kind := d.u8()
		r := d.request()
		if err := d.end(kind); err != nil {
			return err
		}
		s.replaying = rp
		s.onRequest(r)
		s.replaying = nil
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
	}
	if sq.moves[i] == nil {
		sq.moves[i] = m
	}
	return sq.moves[i]
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
