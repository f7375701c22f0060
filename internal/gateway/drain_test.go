package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
)

// closeSeen is the CLOSE one peer read, and when.
type closeSeen struct {
	code gwproto.Code
	body gwproto.ErrorBody
	at   time.Time
	err  error
}

// pipeSession is a logged-in session whose client is the returned peer
// of a synchronous pipe, with its writer and worker running as serve and
// start run them; the peer's frames are read until CLOSE into the channel.
func pipeSession(t *testing.T, g *Gateway, player, kind string) (*Session, <-chan closeSeen) {
	t.Helper()
	server, peer := net.Pipe()
	t.Cleanup(func() { peer.Close() })
	c := &clientConn{g: g, nc: server, kind: kind, out: make(chan []byte, 16), closing: make(chan struct{}), log: g.log}
	g.limits.track(c, true)
	go func() { c.writeLoop(); g.limits.track(c, false) }()
	s := liveSession(g, player, "s-"+player, "town", c)
	g.reg.install(s)
	go s.work()
	seen := make(chan closeSeen, 1)
	go func() {
		_ = peer.SetReadDeadline(time.Now().Add(20 * time.Second))
		r := gwproto.NewReader(peer, 1<<20)
		for {
			f, err := r.Next()
			if err != nil {
				seen <- closeSeen{err: err}
				return
			}
			if f.Type == gwproto.TypeClose {
				cs := closeSeen{code: f.Code, at: time.Now()}
				cs.err = gwproto.DecodeBody(f, &cs.body)
				seen <- cs
				return
			}
		}
	}()
	return s, seen
}

func wantMove(t *testing.T, who string, cs closeSeen, moveTo string) {
	t.Helper()
	if cs.err != nil {
		t.Fatalf("%s: no CLOSE: %v", who, cs.err)
	}
	if cs.code != gwproto.CodeShuttingDown || cs.body.MoveTo != moveTo {
		t.Fatalf("%s: CLOSE %s %+v, want shutting_down moving to %s", who, cs.code, cs.body, moveTo)
	}
}

// A drain stops accepting at once, tells the clients to move one after
// the other at drain_rate (TCP clients the TCP address of the next
// gateway, WebSocket clients its URL), keeps their sessions in the scene,
// and returns when they have gone.
func TestDrainPacesMovesAndAcceptsNothingNew(t *testing.T) {
	const n, rate = 12, 40 // 11 gaps of 25 ms: at least 275 ms from first to last
	g := startGateway(t, func(c *config.Gateway) { c.DrainRate = rate; c.DrainTimeout = 10 * time.Second })
	g.opt.MoveTo, g.opt.MoveToWS = "127.0.0.1:7102", "ws://127.0.0.1:7103/"
	sessions := make([]*Session, n)
	seen := make([]<-chan closeSeen, n)
	for i := range n {
		kind := "tcp"
		if i%3 == 2 {
			kind = "websocket"
		}
		sessions[i], seen[i] = pipeSession(t, g, fmt.Sprintf("p%02d", i), kind)
	}
	began := time.Now()
	res := make(chan DrainResult, 1)
	go func() { res <- g.Drain() }()
	poll.Until(t, 2*time.Second, func() error {
		if !g.draining.Load() {
			return fmt.Errorf("not draining yet")
		}
		return nil
	})
	if err := g.Healthy(); err == nil {
		t.Error("a draining gateway reports healthy")
	}
	// Listeners are closed before the first move.
	if nc, err := net.DialTimeout("tcp", g.Addr(), time.Second); err == nil {
		nc.Close()
		t.Error("a draining gateway accepted a TCP connection")
	}
	if nc, err := net.DialTimeout("tcp", g.WebSocketAddr(), time.Second); err == nil {
		nc.Close()
		t.Error("a draining gateway accepted a WebSocket connection")
	}
	var first, last time.Time
	for i := range n {
		cs := <-seen[i]
		want := g.opt.MoveTo
		if i%3 == 2 {
			want = g.opt.MoveToWS
		}
		wantMove(t, sessions[i].player, cs, want)
		if first.IsZero() || cs.at.Before(first) {
			first = cs.at
		}
		if cs.at.After(last) {
			last = cs.at
		}
	}
	r := <-res
	t.Logf("drain %+v; moves from %s to %s after it began", r, first.Sub(began).Round(time.Millisecond), last.Sub(began).Round(time.Millisecond))
	if r.Moved != n || r.Forced != 0 || r.Left != 0 {
		t.Errorf("drain result %+v, want %d moved, none forced or left", r, n)
	}
	// Paced: the schedule puts the last move (n-1)/rate after the first; a
	// loaded machine only makes that longer.
	if gap, want := last.Sub(first), time.Duration(n-1)*time.Second/rate; gap < want*9/10 {
		t.Errorf("moves spread over %s, want at least %s at %d/s", gap, want, rate)
	}
	for _, s := range sessions {
		s.mu.Lock()
		ended, leave := s.ended, s.leave
		s.mu.Unlock()
		if !ended || leave {
			t.Errorf("session %s: ended %v, leave %v; want ended and kept in its scene", s, ended, leave)
		}
	}
	if g.reg.count() != 0 {
		t.Errorf("%d sessions left in the registry", g.reg.count())
	}
}

// Many clients and a short drain: the moves are squeezed into the first
// half of the drain instead of following drain_rate.
func TestDrainSqueezesMovesIntoHalfTheTimeout(t *testing.T) {
	const n = 20
	g := startGateway(t, func(c *config.Gateway) { c.DrainRate = 1; c.DrainTimeout = 400 * time.Millisecond })
	seen := make([]<-chan closeSeen, n)
	for i := range n {
		_, seen[i] = pipeSession(t, g, fmt.Sprintf("q%02d", i), "tcp")
	}
	began := time.Now()
	r := g.Drain()
	for i := range n {
		wantMove(t, fmt.Sprint(i), <-seen[i], "")
	}
	if r.Moved != n || r.Left != 0 {
		t.Errorf("drain result %+v, want %d moved and none left", r, n)
	}
	// At 1/s the moves would take 19 s; squeezed they take 200 ms. The
	// bound is loose for a loaded machine, far below the unsqueezed time.
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("drain took %s", took)
	}
}

// A session whose request is in flight is told to move only once it is
// answered; one the scene never answers is told at the drain timeout
// (its client resends it with the same seq on the next gateway), and the
// drain ends there. A session with nothing in flight moves at once.
func TestDrainWaitsForRequestInFlightUntilTimeout(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	g := startGateway(t, func(c *config.Gateway) { c.DrainTimeout = timeout; c.HoldTimeout = 30 * time.Second })
	busy, busySeen := pipeSession(t, g, "busy", "tcp")
	_, idleSeen := pipeSession(t, g, "idle", "tcp")
	// No scene table here: the worker keeps trying to route this request
	// (as for a scene failing over) until the hold timeout.
	if code, msg := busy.enqueue(1, []byte(`{"op":"move","x":1,"y":1}`)); code != gwproto.CodeOK {
		t.Fatalf("enqueue: %s %s", code, msg)
	}
	poll.Until(t, 2*time.Second, func() error {
		busy.mu.Lock()
		defer busy.mu.Unlock()
		if len(busy.queue) != 0 {
			return fmt.Errorf("the worker has not taken the request yet")
		}
		return nil
	})
	// Queued behind it: not relayed by this gateway once it drains.
	if code, _ := busy.enqueue(2, []byte(`{"op":"move","x":2,"y":2}`)); code != gwproto.CodeOK {
		t.Fatalf("enqueue 2: %s", code)
	}
	began := time.Now()
	r := g.Drain()
	took := time.Since(began)
	idle := <-idleSeen
	wantMove(t, "idle", idle, "")
	bc := <-busySeen
	wantMove(t, "busy", bc, "")
	if d := idle.at.Sub(began); d > timeout/2 {
		t.Errorf("the idle session was told to move %s after the drain began, want at once", d)
	}
	if d := bc.at.Sub(began); d < timeout*9/10 {
		t.Errorf("the session with a request in flight was told to move after %s, before the drain timeout %s", d, timeout)
	}
	if r.Moved != 1 || r.Forced != 1 {
		t.Errorf("drain result %+v, want 1 moved and 1 forced", r)
	}
	if took > timeout+2*time.Second {
		t.Errorf("the drain took %s with a timeout of %s", took, timeout)
	}
}

// A WebSocket client gets CLOSE shutting_down in a binary message, then a
// WebSocket close with status 1000 (read as io.EOF), whether the drain
// tells it or the shutdown closes what is left without one.
func TestWebSocketClientGetsCloseAtShutdown(t *testing.T) {
	for _, drain := range []time.Duration{10 * time.Second, 0} {
		t.Run(fmt.Sprintf("drain_timeout=%s", drain), func(t *testing.T) {
			g := startGateway(t, func(c *config.Gateway) { c.DrainTimeout = drain })
			g.opt.MoveTo, g.opt.MoveToWS = "127.0.0.1:7102", "ws://127.0.0.1:7103/"
			nc := dialWS(t, g)
			if _, err := nc.Write(hello); err != nil {
				t.Fatal(err)
			}
			r := gwproto.NewReader(nc, 1<<20)
			if f, err := r.Next(); err != nil || f.Type != gwproto.TypeWelcome {
				t.Fatalf("want WELCOME, got %v %v", f.Type, err)
			}
			go g.Shutdown()
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			f, err := r.Next()
			if err != nil || f.Type != gwproto.TypeClose {
				t.Fatalf("want CLOSE over websocket, got %v %v", f.Type, err)
			}
			var e gwproto.ErrorBody
			if err := gwproto.DecodeBody(f, &e); err != nil || f.Code != gwproto.CodeShuttingDown || e.MoveTo != g.opt.MoveToWS {
				t.Fatalf("CLOSE %s %+v %v, want shutting_down moving to %s", f.Code, e, err, g.opt.MoveToWS)
			}
			if _, err := r.Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after CLOSE: %v, want a normal WebSocket close (EOF)", err)
			}
		})
	}
}
