package game

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/player"
)

func attach(t testing.TB, s *Scene, pid, session string) Attached {
	t.Helper()
	effs := s.Apply(Attach{Player: pid, Session: session})
	if len(effs) != 1 {
		t.Fatalf("attach %s %s: %v", pid, session, effs)
	}
	return effs[0].(Attached)
}

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSessionRules walks every rule of onRequest in order, on one scene.
func TestSessionRules(t *testing.T) {
	s := New(defByID(t, "town"))
	enter(t, s, "p1", 100, nil)
	enter(t, s, "p2", 100, nil)
	if a := attach(t, s, "p1", "s1"); a.Code != "" || a.LastSeq != 0 {
		t.Fatalf("attach: %+v", a)
	}
	attach(t, s, "p2", "s2")
	buy := Buy{NPC: "merchant", Item: "potion", Count: 1}

	first, _ := do(t, s, "s1", "p1", 1, buy)
	if _, ok := first.Body.(BuyResult); !ok || first.Resent {
		t.Fatalf("first buy: %+v", first)
	}
	h := s.Hash()
	steps := []struct {
		name    string
		session string
		player  string
		seq     uint64
		op      Op
		code    string // "" means applied (or resent when resent is set)
		resent  bool
	}{
		{"seq 0", "s1", "p1", 0, buy, ErrBadRequest, false},
		{"no session", "", "p1", 2, buy, ErrBadRequest, false},
		{"session too long", strings.Repeat("s", MaxSessionLen+1), "p1", 2, buy, ErrBadRequest, false},
		{"resend, same body", "s1", "p1", 1, buy, "", true},
		{"resend, another body", "s1", "p1", 1, Buy{NPC: "merchant", Item: "potion", Count: 2}, ErrSeqReused, false},
		{"another player's session", "s1", "p2", 2, buy, ErrSessionReplaced, false},
		{"another player's session, an applied seq", "s1", "p2", 1, buy, ErrSessionReplaced, false},
		{"unknown player", "s9", "ghost", 1, buy, ErrNotInScene, false},
		{"unknown session of a present player", "s7", "p1", 1, buy, ErrSessionReplaced, false},
		{"more than a window ahead", "s1", "p1", 1 + SessionWindow + 1, buy, ErrSeqTooFar, false},
		{"way ahead, no overflow", "s1", "p1", math.MaxUint64, buy, ErrSeqTooFar, false},
	}
	for _, st := range steps {
		r, effs := do(t, s, st.session, st.player, st.seq, st.op)
		if r.Player != st.player || r.Session != st.session || r.Seq != st.seq {
			t.Fatalf("%s: reply addressed to %s/%s seq %d", st.name, r.Player, r.Session, r.Seq)
		}
		if st.code != "" {
			wantErr(t, r, st.code)
		} else if r.Resent != st.resent || jsonOf(t, r.Body) != jsonOf(t, first.Body) || len(effs) != 0 {
			t.Fatalf("%s: %+v %v, want the original reply %+v", st.name, r, effs, first.Body)
		}
		if s.Hash() != h {
			t.Fatalf("%s: state changed", st.name)
		}
	}
	if len(s.sessions) != 2 {
		t.Fatalf("%d session records, want 2 (refusals must not grow state)", len(s.sessions))
	}
	if d, _, _ := s.Player("p1"); d.Items["potion"] != 1 {
		t.Fatalf("potions %d: bought twice?", d.Items["potion"])
	}

	// Gaps are fine; a gap never applied is too old, not a fresh request.
	r, _ := do(t, s, "s1", "p1", 5, Move{X: 3, Y: 4})
	if r.Body != (MoveResult{X: 3, Y: 4}) || r.Resent {
		t.Fatalf("gap: %+v", r)
	}
	r, _ = do(t, s, "s1", "p1", 3, Move{X: 9, Y: 9})
	wantErr(t, r, ErrSeqTooOld)
	// Exactly a window ahead is applied; then seq 5 has left the window.
	r, _ = do(t, s, "s1", "p1", 5+SessionWindow, Move{X: 4, Y: 4})
	if r.Body != (MoveResult{X: 4, Y: 4}) {
		t.Fatalf("a window ahead: %+v", r)
	}
	r, _ = do(t, s, "s1", "p1", 5, Move{X: 3, Y: 4})
	wantErr(t, r, ErrSeqTooOld)
	if n := s.sessions["p1"].n; n > SessionWindow {
		t.Fatalf("%d stored replies, window is %d", n, SessionWindow)
	}

	// The records survive snapshot and restore: a resend after a crash
	// gets the same reply.
	s2, err := Restore(s.def, s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if s2.Hash() != s.Hash() {
		t.Fatal("restore changed the state")
	}
	r, _ = do(t, s2, "s1", "p1", 5+SessionWindow, Move{X: 4, Y: 4})
	if !r.Resent || r.Body != (MoveResult{X: 4, Y: 4}) {
		t.Fatalf("after restore: %+v", r)
	}

	// Resume: the same session changes nothing and reports the last seq.
	if a := attach(t, s, "p1", "s1"); a.Code != "" || a.LastSeq != 5+SessionWindow {
		t.Fatalf("resume: %+v", a)
	}
	// A new session resets the record: it starts at 1, the old one is dead.
	if a := attach(t, s, "p1", "s1b"); a.Code != "" || a.LastSeq != 0 {
		t.Fatalf("new session: %+v", a)
	}
	r, _ = do(t, s, "s1", "p1", 5+SessionWindow, Move{X: 4, Y: 4})
	wantErr(t, r, ErrSessionReplaced)
	r, _ = do(t, s, "s1b", "p1", 1, Move{X: 5, Y: 5})
	if r.Body != (MoveResult{X: 5, Y: 5}) || r.Resent {
		t.Fatalf("new session seq 1: %+v", r)
	}
	if a := attach(t, s, "ghost", "sg"); a.Code != ErrNotInScene {
		t.Fatalf("attach of an absent player: %+v", a)
	}
	if a := attach(t, s, "p1", ""); a.Code != ErrBadRequest {
		t.Fatalf("attach without a session: %+v", a)
	}
	if len(s.sessions) != 2 {
		t.Fatalf("%d session records, want 2", len(s.sessions))
	}

	// A stale logout leaves the newer session's player alone.
	s.Apply(Leave{Player: "p1", Session: "s1"})
	if _, _, ok := s.Player("p1"); !ok {
		t.Fatal("a stale leave removed the player")
	}
	s.Apply(Leave{Player: "p1", Session: "s1b"})
	if _, _, ok := s.Player("p1"); ok {
		t.Fatal("the current session's leave did not remove the player")
	}
	// Its applied requests still answer; new ones do not apply.
	r, _ = do(t, s, "s1b", "p1", 1, Move{X: 5, Y: 5})
	if !r.Resent {
		t.Fatalf("resend after leave: %+v", r)
	}
	r, _ = do(t, s, "s1b", "p1", 2, Move{X: 5, Y: 5})
	wantErr(t, r, ErrNotInScene)
}

// TestSessionMaxSeq: no arithmetic overflows at 2^64-1, and a session that
// reached it is not bricked: the client attaches a new session.
func TestSessionMaxSeq(t *testing.T) {
	s := New(defByID(t, "forest"))
	d := player.Data{ID: "p1", Name: "Ann", Gold: 5, Scene: "town"}
	s.Apply(TravelIn{TransferID: "town/t1", From: "town", Player: d, Version: 3, Session: "s", LastSeq: math.MaxUint64 - 2})
	if a := attach(t, s, "p1", "s"); a.LastSeq != math.MaxUint64-2 {
		t.Fatalf("session not carried by travel: %+v", a)
	}
	r, _ := do(t, s, "s", "p1", math.MaxUint64, Move{X: 3, Y: 3})
	if r.Body != (MoveResult{X: 3, Y: 3}) || r.Seq != math.MaxUint64 {
		t.Fatalf("seq 2^64-1: %+v", r)
	}
	r, _ = do(t, s, "s", "p1", math.MaxUint64, Move{X: 3, Y: 3})
	if !r.Resent || r.Body != (MoveResult{X: 3, Y: 3}) {
		t.Fatalf("resend of 2^64-1: %+v", r)
	}
	r, _ = do(t, s, "s", "p1", math.MaxUint64-1, Move{X: 3, Y: 3})
	wantErr(t, r, ErrSeqTooOld)
	r, _ = do(t, s, "s", "p1", 1, Move{X: 3, Y: 3})
	wantErr(t, r, ErrSeqTooOld)
	// Snapshot round trip at the edge.
	if _, err := Restore(s.def, s.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if a := attach(t, s, "p1", "s-next"); a.LastSeq != 0 {
		t.Fatalf("new session: %+v", a)
	}
	r, _ = do(t, s, "s-next", "p1", 1, Move{X: 4, Y: 4})
	if r.Body != (MoveResult{X: 4, Y: 4}) {
		t.Fatalf("after a new session: %+v", r)
	}
}

// TestSessionTravel: the session travels with the player, the source keeps
// its record to answer resends, and departed records are pruned.
func TestSessionTravel(t *testing.T) {
	town, forest := New(defByID(t, "town")), New(defByID(t, "forest"))
	enter(t, town, "p1", 10, nil)
	attach(t, town, "p1", "s1")
	do(t, town, "s1", "p1", 1, Move{X: 2, Y: 2})
	r, effs := do(t, town, "s1", "p1", 2, Travel{To: "forest"})
	outs := effectsOf[TravelOut](effs)
	if len(outs) != 1 || outs[0].Session != "s1" || outs[0].LastSeq != 2 {
		t.Fatalf("travel out: %+v", outs)
	}
	if got := town.PendingTransfers(); len(got) != 1 || got[0].Session != "s1" || got[0].LastSeq != 2 {
		t.Fatalf("outbox: %+v", got)
	}
	// The outbox's session survives a snapshot.
	if t2, err := Restore(town.def, town.Snapshot()); err != nil || t2.Hash() != town.Hash() || t2.PendingTransfers()[0].LastSeq != 2 {
		t.Fatalf("restore with a session in the outbox: %v", err)
	}
	again, _ := do(t, town, "s1", "p1", 2, Travel{To: "forest"})
	if !again.Resent || jsonOf(t, again.Body) != jsonOf(t, r.Body) {
		t.Fatalf("resend of the travel at the source: %+v", again)
	}
	next, _ := do(t, town, "s1", "p1", 3, Move{X: 1, Y: 1})
	wantErr(t, next, ErrNotInScene)
	if next.Moved != "forest" {
		t.Fatalf("moved = %q, want forest", next.Moved)
	}
	if a := attach(t, town, "p1", "s1"); a.Code != ErrNotInScene || a.Moved != "forest" {
		t.Fatalf("attach at the source: %+v", a)
	}

	o := outs[0]
	forest.Apply(o.In())
	// The destination never applies the travel's seq again: it answers a
	// resend with the source's reply...
	again, _ = do(t, forest, "s1", "p1", 2, Travel{To: "forest"})
	if !again.Resent || jsonOf(t, again.Body) != jsonOf(t, r.Body) {
		t.Fatalf("resend of the travel at the destination: %+v", again)
	}
	// ...and continues the sequence.
	r, _ = do(t, forest, "s1", "p1", 3, Move{X: 3, Y: 3})
	if r.Body != (MoveResult{X: 3, Y: 3}) {
		t.Fatalf("continue at the destination: %+v", r)
	}
	if a := attach(t, forest, "p1", "s1"); a.LastSeq != 3 {
		t.Fatalf("resume at the destination: %+v", a)
	}

	// Departed records go after the TTL.
	for i := 0; i < sessionTTL+pruneEvery; i++ {
		town.Apply(Tick{})
	}
	if len(town.sessions) != 0 || town.sessBytes != 0 || town.departedN != 0 {
		t.Fatalf("after the TTL: %d records, %d bytes, %d departed", len(town.sessions), town.sessBytes, town.departedN)
	}
}

// TestSessionTravelResend: a request the source applied with a travel (and
// the window before it) is answered at the destination with its original
// reply, Resent, and nothing changes there; however the TravelIn got there.
func TestSessionTravelResend(t *testing.T) {
	viaCodec := func(t *testing.T, in TravelIn) TravelIn {
		b, err := EncodeEvent(in)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		return ev.(TravelIn)
	}
	cases := []struct {
		name string
		// arrive hands the source's transfer to the destination.
		arrive func(t *testing.T, src *Scene, out TravelOut) TravelIn
	}{
		{"effect", func(t *testing.T, _ *Scene, out TravelOut) TravelIn { return out.In() }},
		{"logged", func(t *testing.T, _ *Scene, out TravelOut) TravelIn { return viaCodec(t, out.In()) }},
		{"resent after restore", func(t *testing.T, src *Scene, _ TravelOut) TravelIn {
			r, err := Restore(src.def, src.Snapshot())
			if err != nil {
				t.Fatal(err)
			}
			p := r.PendingTransfers()
			if len(p) != 1 {
				t.Fatalf("outbox: %+v", p)
			}
			return viaCodec(t, p[0].In())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			town, forest := New(defByID(t, "town")), New(defByID(t, "forest"))
			enter(t, town, "p1", 10, nil)
			attach(t, town, "p1", "s1")
			move, _ := do(t, town, "s1", "p1", 1, Move{X: 2, Y: 2})
			travel, effs := do(t, town, "s1", "p1", 2, Travel{To: "forest"})
			outs := effectsOf[TravelOut](effs)
			if len(outs) != 1 || len(outs[0].Replies) != 2 || outs[0].Replies[1].Seq != 2 {
				t.Fatalf("travel out carries %+v", outs)
			}
			in := tc.arrive(t, town, outs[0])
			forest.Apply(in)
			before := forest.Hash()
			for _, w := range []struct {
				seq  uint64
				op   Op
				want Reply
			}{{2, Travel{To: "forest"}, travel}, {1, Move{X: 2, Y: 2}, move}} {
				r, effs := do(t, forest, "s1", "p1", w.seq, w.op)
				if !r.Resent || jsonOf(t, r.Body) != jsonOf(t, w.want.Body) || len(effs) != 0 {
					t.Fatalf("resend of seq %d at the destination: %+v %v, want %+v", w.seq, r, effs, w.want.Body)
				}
			}
			// Another op under an applied seq is still refused.
			r, _ := do(t, forest, "s1", "p1", 2, Move{X: 1, Y: 1})
			wantErr(t, r, ErrSeqReused)
			if forest.Hash() != before {
				t.Fatal("a resend changed the destination")
			}
			// The carried replies are in the destination's snapshot.
			f2, err := Restore(forest.def, forest.Snapshot())
			if err != nil || f2.Hash() != forest.Hash() {
				t.Fatalf("restore the destination: %v", err)
			}
			if r, _ := do(t, f2, "s1", "p1", 2, Travel{To: "forest"}); !r.Resent || jsonOf(t, r.Body) != jsonOf(t, travel.Body) {
				t.Fatalf("resend after restoring the destination: %+v", r)
			}
			// The sequence goes on, and the next hop carries the
			// destination's window: seq 2, applied two scenes back, too.
			do(t, forest, "s1", "p1", 3, Move{X: 3, Y: 3})
			_, effs = do(t, forest, "s1", "p1", 4, Travel{To: "town"})
			back := effectsOf[TravelOut](effs)
			if len(back) != 1 || len(back[0].Replies) != 4 {
				t.Fatalf("second hop carries %+v", back)
			}
		})
	}
}

// TestSessionBound fills a scene with the worst its sessions can hold — as
// many players as it takes, long ids, a full window of the largest replies,
// the most departed records — and checks the sessions' share of the snapshot
// against SessionSnapshotBound, which config validation keeps below a slot.
func TestSessionBound(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a scene")
	}
	s := New(defByID(t, "town"))
	pid := func(i int) string { return strings.Repeat("p", maxIDLen-9) + string(rune('a'+i%26)) + itoa8(i) }
	session := func(i int) string { return strings.Repeat("s", MaxSessionLen-8) + itoa8(i) }
	big := Attack{Monster: strings.Repeat("<", maxIDLen)} // an error reply that escapes every byte
	const departed = maxDeparted + 50
	for i := 0; i < maxPlayers+departed; i++ {
		id := pid(i)
		s.Apply(Enter{Player: player.Data{ID: id, Name: "n", Scene: "town"}, Version: 1})
		attach(t, s, id, session(i))
		// Enough players fill the reply budget (about 3500 of these replies);
		// the rest add a record each with one stored reply.
		n := uint64(1)
		if i < departed+400 {
			n = SessionWindow
		}
		for seq := uint64(1); seq <= n; seq++ {
			s.Apply(Request{Session: session(i), Player: id, Seq: seq, Op: big})
		}
		if i < departed {
			s.Apply(Leave{Player: id, Session: session(i)})
		}
	}
	if s.departedN != maxDeparted || len(s.plist) != maxPlayers || s.sessBytes > sessionBudget || s.sessBytes < sessionBudget-4096 {
		t.Fatalf("departed %d, players %d, bytes %d", s.departedN, len(s.plist), s.sessBytes)
	}
	for _, rec := range s.sessions {
		for i := 0; i < rec.n; i++ {
			e := rec.at(i)
			if n := len(jsonOf(t, e.body)); n > e.cost-entryOverhead {
				t.Fatalf("reply of %d JSON bytes costed %d", n, e.cost-entryOverhead)
			}
		}
	}
	// Eviction at the budget is the same after a restore (its order is
	// rebuilt from the records): both copies go on to the same state.
	s2, err := Restore(s.def, s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for i := maxPlayers + departed - 50; i < maxPlayers+departed; i++ {
		for _, sc := range []*Scene{s, s2} {
			sc.Apply(Request{Session: session(i), Player: pid(i), Seq: 2, Op: big})
		}
	}
	if s.Hash() != s2.Hash() || s.sessBytes != s2.sessBytes {
		t.Fatal("eviction after a restore diverged")
	}
	with := len(s.Snapshot())
	s.sessions = map[string]*sessRec{}
	without := len(s.Snapshot())
	if got, bound := with-without, SessionSnapshotBound(); got > bound {
		t.Fatalf("sessions take %d snapshot bytes, bound %d", got, bound)
	} else {
		t.Logf("sessions take %d snapshot bytes (bound %d, snapshot %d)", got, bound, with)
	}
}

// The smallest log slot config accepts leaves room for a full scene's
// session records in a snapshot, and 1 MiB for everything else.
func TestSessionBoundFitsTheSmallestSlot(t *testing.T) {
	if need := 2 * (SessionSnapshotBound() + 1<<20); config.MinShmSlotSize < need {
		t.Fatalf("config.MinShmSlotSize %d < %d", config.MinShmSlotSize, need)
	}
}

func itoa8(i int) string {
	b := []byte("00000000")
	for j := len(b) - 1; j >= 0 && i > 0; j-- {
		b[j] = byte('0' + i%10)
		i /= 10
	}
	return string(b)
}

// TestTravelInRepliesCodec: carried replies round-trip through the event
// encoding, and a malformed list is a clear error, never a panic.
func TestTravelInRepliesCodec(t *testing.T) {
	in := TravelIn{TransferID: "town/t3", From: "town", Player: player.Data{ID: "p1", Name: "A", Scene: "forest"}, Version: 4, Session: "s1", LastSeq: 9,
		Replies: []CarriedReply{{Seq: 8, Hash: 1, Body: BuyResult{Item: "potion", Count: 1, Gold: 10, Have: 1}}, {Seq: 9, Hash: 2, Body: TravelResult{TransferID: "town/t3", To: "forest"}}}}
	b, err := EncodeEvent(in)
	if err != nil || b[0] != evTravelInReplies {
		t.Fatalf("encode: kind %d, %v", b[0], err)
	}
	ev, err := DecodeEvent(b)
	if err != nil || jsonOf(t, ev) != jsonOf(t, in) {
		t.Fatalf("round trip: %+v %v", ev, err)
	}
	// Without replies the older kind is written, so old logs stay byte-equal.
	in2 := in
	in2.Replies = nil
	if b2, _ := EncodeEvent(in2); b2[0] != evTravelInSession {
		t.Fatalf("without replies: kind %d", b2[0])
	}
	over := in
	over.Replies = make([]CarriedReply, SessionWindow+1)
	for i := range over.Replies {
		over.Replies[i] = CarriedReply{Seq: uint64(i + 1), Body: OKResult{}}
	}
	if _, err := EncodeEvent(over); err == nil {
		t.Fatal("encoded more replies than the window")
	}
	nobody := in
	nobody.Replies = []CarriedReply{{Seq: 9}}
	if _, err := EncodeEvent(nobody); err == nil {
		t.Fatal("encoded a reply without a body")
	}
	// Decoding: the list length byte follows the last seq; empty and
	// over-long lists are refused.
	head, _ := EncodeEvent(in2)
	head[0] = evTravelInReplies
	for _, k := range []byte{0, SessionWindow + 1} {
		if _, err := DecodeEvent(append(append([]byte(nil), head...), k)); err == nil {
			t.Fatalf("decoded a list of %d replies", k)
		}
	}
	// Replies a destination cannot use (outside the window, no newer than
	// what it has, out of order) are skipped, and cost nothing.
	forest := New(defByID(t, "forest"))
	bad := in
	bad.Replies = []CarriedReply{{Seq: 9, Hash: 2, Body: OKResult{}}, {Seq: 8, Hash: 1, Body: OKResult{}}, {Seq: 20, Body: OKResult{}}}
	forest.Apply(bad)
	if rec := forest.sessions["p1"]; rec == nil || rec.n != 1 || rec.at(0).seq != 9 || forest.sessEntries != 1 {
		t.Fatalf("adopted %+v", rec)
	}
}
