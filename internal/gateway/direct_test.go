package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/replica"
	"github.com/respawn-dev/respawn/internal/scenelink"
)

// linkScene speaks the scene's side of the link (handshake, joins,
// requests, leaves) and records the request seqs it gets, in order. A
// request whose seq is in hold is answered only once that channel closes
// (never, if it does not).
type linkScene struct {
	t    *testing.T
	addr string
	ln   net.Listener

	mu    sync.Mutex
	seqs  []uint64
	joins int
	conns []net.Conn
	hold  map[uint64]chan struct{}
	// forgot: a process whose state lost the sessions' attaches (a
	// repaired log): a request of a session not joined here is answered
	// not_in_scene.
	forgot bool
	joined map[string]bool
}

func startLinkScene(t *testing.T, g *Gateway, process string, epoch uint64) *linkScene {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls := &linkScene{t: t, addr: ln.Addr().String(), ln: ln, hold: map[uint64]chan struct{}{}, joined: map[string]bool{}}
	t.Cleanup(ls.kill)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			ls.mu.Lock()
			ls.conns = append(ls.conns, nc)
			ls.mu.Unlock()
			go ls.serve(g, nc, process, epoch)
		}
	}()
	return ls
}

// kill closes the listener and every connection: the process died.
func (ls *linkScene) kill() {
	ls.ln.Close()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, nc := range ls.conns {
		nc.Close()
	}
}

func (ls *linkScene) holdSeq(seq uint64) chan struct{} {
	ch := make(chan struct{})
	ls.mu.Lock()
	ls.hold[seq] = ch
	ls.mu.Unlock()
	return ch
}

func (ls *linkScene) joinCount() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.joins
}

func (ls *linkScene) seen() []uint64 {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return slices.Clone(ls.seqs)
}

func (ls *linkScene) serve(g *Gateway, nc net.Conn, process string, epoch uint64) {
	defer nc.Close()
	r := bufio.NewReader(nc)
	var wmu sync.Mutex
	send := func(enc func(*scenelink.Encoder)) {
		var e scenelink.Encoder
		enc(&e)
		wmu.Lock()
		defer wmu.Unlock()
		_, _ = nc.Write(e.B)
	}
	typ, body, _, err := scenelink.ReadFrame(r, scenelink.DefaultMaxFrame, nil)
	var ch scenelink.ClientHello
	if err != nil || typ != scenelink.TClientHello || ch.Decode(body) != nil {
		return
	}
	snonce, err := scenelink.NewNonce()
	if err != nil {
		return
	}
	send(func(e *scenelink.Encoder) {
		(&scenelink.ServerHello{Nonce: snonce, MAC: scenelink.SceneProof(g.opt.Secret, ch.Nonce, snonce), Process: process, Epoch: epoch}).Append(e)
	})
	if typ, _, _, err = scenelink.ReadFrame(r, scenelink.DefaultMaxFrame, nil); err != nil || typ != scenelink.TClientProof {
		return
	}
	send(func(e *scenelink.Encoder) {
		(&scenelink.Welcome{MaxInflight: 64, MaxFrame: scenelink.DefaultMaxFrame}).Append(e)
	})
	var buf []byte
	for {
		typ, body, buf, err = scenelink.ReadFrame(r, scenelink.DefaultMaxFrame, buf)
		if err != nil {
			return
		}
		switch typ {
		case scenelink.TJoin:
			var m scenelink.Session
			if m.Decode(body) != nil {
				return
			}
			ls.mu.Lock()
			ls.joins++
			ls.joined[m.Session] = true
			ls.mu.Unlock()
			send(func(e *scenelink.Encoder) {
				(&scenelink.JoinReply{ID: m.ID, JoinResult: scenelink.JoinResult{Scene: m.Scene}}).Append(e)
			})
		case scenelink.TLeave:
			var m scenelink.Session
			if m.Decode(body) != nil {
				return
			}
			send(func(e *scenelink.Encoder) { (&scenelink.Fail{ID: m.ID}).Append(e, scenelink.TLeaveReply) })
		case scenelink.TRequest:
			var m scenelink.Request
			if m.Decode(body) != nil {
				return
			}
			ls.mu.Lock()
			if ls.forgot && !ls.joined[m.Session] {
				ls.mu.Unlock()
				send(func(e *scenelink.Encoder) {
					(&scenelink.ReplyMsg{ID: m.ID, Reply: scenelink.Reply{Seq: m.Seq, Code: game.ErrNotInScene, Error: "not here"}}).Append(e)
				})
				continue
			}
			ls.seqs = append(ls.seqs, m.Seq)
			wait := ls.hold[m.Seq]
			ls.mu.Unlock()
			reply := func() {
				send(func(e *scenelink.Encoder) {
					(&scenelink.ReplyMsg{ID: m.ID, Reply: scenelink.Reply{Seq: m.Seq, Body: []byte(fmt.Sprintf(`{"seq":%d}`, m.Seq))}}).Append(e)
				})
			}
			if wait == nil {
				reply()
				continue
			}
			go func() {
				<-wait
				reply()
			}()
		}
	}
}

// sceneTable writes the gateway's scene table.
func sceneTable(t *testing.T, g *Gateway) func(modules.SceneRow) {
	t.Helper()
	w, err := replica.NewWriter[modules.SceneRow](t.Context(), g.opt.NATS, modules.SceneTable, replica.RoleWorldMgr,
		replica.WriterOptions{Instance: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return func(row modules.SceneRow) {
		t.Helper()
		if err := w.Put(row.ID, row); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 5*time.Second, func() error {
			if got, ok := g.rt.table.Get(row.ID); !ok || got != row {
				return fmt.Errorf("the gateway's table does not show %+v yet", row)
			}
			return nil
		})
	}
}

// replySession is a session joined to its scene whose client's frames
// (replies) are read into the returned channel.
func replySession(t *testing.T, g *Gateway, player string) (*Session, <-chan gwproto.Frame) {
	t.Helper()
	server, peer := net.Pipe()
	t.Cleanup(func() { peer.Close() })
	c := &clientConn{g: g, nc: server, kind: "tcp", out: make(chan []byte, 16), closing: make(chan struct{}), log: g.log}
	g.limits.track(c, true)
	go func() { c.writeLoop(); g.limits.track(c, false) }()
	s := liveSession(g, player, "s-"+player, "town", c)
	g.reg.install(s)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.joinNow(ctx); err != nil {
		t.Fatal(err)
	}
	go s.work()
	frames := make(chan gwproto.Frame, 64)
	go func() {
		defer close(frames)
		r := gwproto.NewReader(peer, 1<<20)
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			f.Body = slices.Clone(f.Body)
			frames <- f
		}
	}()
	return s, frames
}

func nextReply(t *testing.T, frames <-chan gwproto.Frame) gwproto.Frame {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatal("the client connection ended before a reply")
			}
			if f.Type == gwproto.TypeReply {
				return f
			}
		case <-timeout:
			t.Fatal("no reply within 10 s")
		}
	}
}

func wantReply(t *testing.T, frames <-chan gwproto.Frame, seq uint64) {
	t.Helper()
	f := nextReply(t, frames)
	if f.ID != seq || f.Code != gwproto.CodeOK || string(f.Body) != fmt.Sprintf(`{"seq":%d}`, seq) {
		t.Fatalf("reply %d %s %s, want seq %d ok", f.ID, f.Code, f.Body, seq)
	}
}

// enqueueMove queues request seq, a move to (seq, seq), as the client's
// reader would.
func enqueueMove(t *testing.T, s *Session, seq uint64) {
	t.Helper()
	if code, msg := s.enqueue(seq, []byte(fmt.Sprintf(`{"op":"move","x":%d,"y":%d}`, seq, seq))); code != gwproto.CodeOK {
		t.Fatalf("enqueue %d: %s %s", seq, code, msg)
	}
}

// failoverStart is a gateway whose session of player is joined to the
// town's process of epoch 1 (first), with request 1 answered.
func failoverStart(t *testing.T, player string) (g *Gateway, put func(modules.SceneRow), first *linkScene, s *Session, frames <-chan gwproto.Frame) {
	t.Helper()
	g = startGateway(t, func(c *config.Gateway) { c.HoldTimeout = 10 * time.Second })
	put = sceneTable(t, g)
	first = startLinkScene(t, g, "town", 1)
	put(modules.SceneRow{ID: "town", Process: "town", Epoch: 1, State: modules.SceneRunning, Link: first.addr})
	s, frames = replySession(t, g, player)
	enqueueMove(t, s, 1)
	wantReply(t, frames, 1)
	return g, put, first, s, frames
}

func inFlight(s *Session) (direct, redo *pending, queued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.direct, s.redo, len(s.queue)
}

// A request arriving with nothing in flight is sent directly; one arriving
// while it is unanswered waits behind it; when the process dies with the
// direct request unanswered, the worker resends it to the successor before
// the one queued behind it, so the successor sees the seqs in order.
func TestDirectRelayKeepsOrderThroughAFailover(t *testing.T) {
	g, put, first, s, frames := failoverStart(t, "ann")

	first.holdSeq(2) // never answered: the process dies first
	enqueueMove(t, s, 2)
	if d, _, q := inFlight(s); d == nil || d.seq != 2 || q != 0 {
		t.Fatalf("request 2 not sent directly: direct %v, %d queued", d, q)
	}
	enqueueMove(t, s, 3)
	// The worker must leave 3 queued while 2 is unanswered.
	time.Sleep(50 * time.Millisecond) // give a wrongly eager worker the chance to take it
	if d, _, q := inFlight(s); d == nil || q != 1 {
		t.Fatalf("request 3 did not wait behind the direct request 2: direct %v, %d queued", d, q)
	}
	poll.Until(t, 5*time.Second, func() error {
		if got := first.seen(); !slices.Equal(got, []uint64{1, 2}) {
			return fmt.Errorf("first process saw seqs %v, want [1 2]", got)
		}
		return nil
	})

	second := startLinkScene(t, g, "town", 2)
	first.kill()
	put(modules.SceneRow{ID: "town", Process: "town", Epoch: 2, State: modules.SceneRunning, Link: second.addr})
	wantReply(t, frames, 2)
	wantReply(t, frames, 3)
	if got := second.seen(); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("the successor saw seqs %v, want [2 3]", got)
	}
	// The successor restored the session's attach from the log: the
	// resend went without a join round trip.
	if n := second.joinCount(); n != 0 {
		t.Fatalf("the session joined the successor %d times; its state holds the attach already", n)
	}

	// Joined on the successor's link, the next request goes directly.
	second.holdSeq(4)
	enqueueMove(t, s, 4)
	if d, _, q := inFlight(s); d == nil || d.seq != 4 || q != 0 {
		t.Fatalf("request 4 not sent directly after the failover: direct %v, %d queued", d, q)
	}
}

// A direct request the scene never answers is answered unavailable after
// the hold time, as one the worker relays is, and the session goes on.
func TestDirectRequestUnansweredExpires(t *testing.T) {
	const hold = 400 * time.Millisecond
	g := startGateway(t, func(c *config.Gateway) { c.HoldTimeout = hold })
	put := sceneTable(t, g)
	ls := startLinkScene(t, g, "town", 1)
	put(modules.SceneRow{ID: "town", Process: "town", Epoch: 1, State: modules.SceneRunning, Link: ls.addr})
	s, frames := replySession(t, g, "bo")

	release := ls.holdSeq(1)
	began := time.Now()
	enqueueMove(t, s, 1)
	f := nextReply(t, frames)
	if f.ID != 1 || f.Code != gwproto.CodeUnavailable {
		t.Fatalf("reply %d %s %s, want seq 1 unavailable", f.ID, f.Code, f.Body)
	}
	if took := time.Since(began); took < hold || took > hold+time.Second {
		t.Fatalf("answered unavailable after %s, want soon after the hold time %s", took, hold)
	}
	// Its late answer is dropped; the next request is answered.
	close(release)
	enqueueMove(t, s, 2)
	wantReply(t, frames, 2)
}

// A drain waits for a direct request's answer before telling the client
// to move, and the client has that answer before the CLOSE.
func TestDrainWaitsForDirectRequest(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.DrainTimeout = 5 * time.Second; c.HoldTimeout = 10 * time.Second })
	put := sceneTable(t, g)
	ls := startLinkScene(t, g, "town", 1)
	put(modules.SceneRow{ID: "town", Process: "town", Epoch: 1, State: modules.SceneRunning, Link: ls.addr})
	s, frames := replySession(t, g, "cy")
	release := ls.holdSeq(1)
	enqueueMove(t, s, 1)
	if d, _, _ := inFlight(s); d == nil {
		t.Fatal("request 1 not sent directly")
	}
	drained := make(chan DrainResult, 1)
	go func() { drained <- g.Drain() }()
	select {
	case r := <-drained:
		t.Fatalf("the drain ended (%+v) with a direct request unanswered", r)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	wantReply(t, frames, 1)
	var closed gwproto.Frame
	for f := range frames {
		if f.Type == gwproto.TypeClose {
			closed = f
			break
		}
	}
	if closed.Code != gwproto.CodeShuttingDown {
		t.Fatalf("after the reply: CLOSE %s, want shutting_down", closed.Code)
	}
	if r := <-drained; r.Moved != 1 || r.Forced != 0 {
		t.Fatalf("drain %+v, want 1 moved, none forced", r)
	}
}

// A successor whose state does not hold the session's attach (a repaired
// log) answers the resend not_in_scene: the session joins it then, and the
// request is answered, once.
func TestFailoverJoinsWhenTheSuccessorForgotTheSession(t *testing.T) {
	g, put, first, s, frames := failoverStart(t, "bea")

	first.holdSeq(2)
	enqueueMove(t, s, 2)
	poll.Until(t, 5*time.Second, func() error {
		if got := first.seen(); !slices.Equal(got, []uint64{1, 2}) {
			return fmt.Errorf("first process saw seqs %v, want [1 2]", got)
		}
		return nil
	})
	second := startLinkScene(t, g, "town", 2)
	second.mu.Lock()
	second.forgot = true
	second.mu.Unlock()
	first.kill()
	put(modules.SceneRow{ID: "town", Process: "town", Epoch: 2, State: modules.SceneRunning, Link: second.addr})
	wantReply(t, frames, 2)
	if n := second.joinCount(); n != 1 {
		t.Fatalf("the session joined the successor %d times, want 1 (after its not_in_scene)", n)
	}
	if got := second.seen(); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("the successor applied seqs %v, want [2]", got)
	}
}
