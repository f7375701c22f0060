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
	ids     interner
	moves   moveBoxes
	results map[MoveResult]Result // one boxed result per square, as moves
}

// NewReplayer returns a Replayer; one per scene being replayed (its ids are
// the scene's).
func NewReplayer() *Replayer {
	return &Replayer{ids: interner{m: map[string]string{}}, moves: moveBoxes{m: map[Move]Op{}}, results: map[MoveResult]Result{}}
}

// Apply decodes one logged event and applies it to s. A record that does not
// decode gives DecodeEvent's error and changes nothing.
func (rp *Replayer) Apply(s *Scene, b []byte) error {
	d := decoder{b: b, ids: &rp.ids, moves: &rp.moves}
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

// moveBoxes hands out one Op per distinct Move: an Op is immutable, so
// requests may share it. Bounded like an interner (a scene's squares).
type moveBoxes struct {
	m map[Move]Op
}

func (mb *moveBoxes) get(m Move) Op {
	if op, ok := mb.m[m]; ok {
		return op
	}
	var op Op = m
	if len(mb.m) < maxInterned {
		mb.m[m] = op
	}
	return op
}

// moveResult is r boxed, shared like the moves: a stored reply is never
// changed, only replaced.
func (rp *Replayer) moveResult(r MoveResult) Result {
	if b, ok := rp.results[r]; ok {
		return b
	}
	var b Result = r
	if len(rp.results) < maxInterned {
		rp.results[r] = b
	}
	return b
}
