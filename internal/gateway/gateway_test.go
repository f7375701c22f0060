package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/token"
)

func testSecret(t testing.TB) *secret.Secret {
	s, err := secret.New([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startGateway runs a gateway on random ports against an embedded NATS
// server with no data server and no scenes: enough for everything that
// happens before a player is in a scene.
func startGateway(t *testing.T, mutate func(*config.Gateway)) *Gateway {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := config.Default().Gateway
	cfg.Listen, cfg.WebSocket, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.LoginTimeout = 2 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	g, err := New(Options{Config: cfg, DefaultScene: "town", Secret: testSecret(t), NATS: nc, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Shutdown)
	return g
}

func frame(t gwproto.Type, id uint64, body string) []byte {
	return gwproto.AppendFrame(nil, gwproto.Frame{Type: t, ID: id, Body: []byte(body)})
}

var hello = frame(gwproto.TypeHello, 0, `{"version":1}`)

// expectClose reads frames until CLOSE and returns its code; it fails if
// the connection ends without one.
func expectClose(t *testing.T, nc net.Conn) (gwproto.Code, string) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := gwproto.NewReader(nc, 1<<20)
	for {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("connection ended without CLOSE: %v", err)
		}
		if f.Type == gwproto.TypeClose {
			var e gwproto.ErrorBody
			_ = gwproto.DecodeBody(f, &e)
			// And then the gateway closes the socket.
			if _, err := r.Next(); !errors.Is(err, io.EOF) && !errors.Is(err, gwproto.ErrTruncated) {
				var ne net.Error
				if !errors.As(err, &ne) {
					t.Fatalf("after CLOSE: %v, want the connection closed", err)
				}
			}
			return f.Code, e.Error
		}
	}
}

func TestBadInputClosesThatClientOnly(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.MaxFrame = 4096 })
	sec := testSecret(t)
	expired, _ := token.IssueLogin(sec, "alice", time.Now().Add(-time.Minute))
	other, _ := secret.New([]byte("another secret of sixteen+ bytes"))
	forged, _ := token.IssueLogin(other, "alice", time.Now().Add(time.Hour))
	oversize := make([]byte, gwproto.HeaderLen)
	binary.BigEndian.PutUint32(oversize, 1<<20)
	oversize[4] = byte(gwproto.TypeHello)
	unknown := frame(99, 0, "")
	for _, c := range []struct {
		name  string
		send  []byte
		half  bool // close our write side after sending (truncation)
		want  gwproto.Code
		inMsg string
	}{
		{name: "garbage", send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), want: gwproto.CodeFrameTooLarge},
		{name: "oversize", send: oversize, want: gwproto.CodeFrameTooLarge},
		{name: "length below header", send: []byte{0, 0, 0, 2, 1, 1}, want: gwproto.CodeBadFrame},
		{name: "truncated", send: hello[:9], half: true, want: gwproto.CodeBadFrame, inMsg: "truncated"},
		{name: "unknown type", send: append(append([]byte{}, hello...), unknown...), want: gwproto.CodeUnknownType},
		{name: "request before hello", send: frame(gwproto.TypeRequest, 1, `{"op":"move"}`), want: gwproto.CodeProtocol},
		{name: "request before login", send: append(append([]byte{}, hello...), frame(gwproto.TypeRequest, 1, `{"op":"move"}`)...), want: gwproto.CodeProtocol},
		{name: "bad version", send: frame(gwproto.TypeHello, 0, `{"version":99}`), want: gwproto.CodeUnsupportedVersion},
		{name: "hello not json", send: frame(gwproto.TypeHello, 0, `version 1`), want: gwproto.CodeBadFrame},
		{name: "malformed token", send: append(append([]byte{}, hello...), frame(gwproto.TypeLogin, 0, `{"token":"nope"}`)...), want: gwproto.CodeBadToken},
		{name: "forged token", send: append(append([]byte{}, hello...), frame(gwproto.TypeLogin, 0, `{"token":"`+forged+`"}`)...), want: gwproto.CodeBadToken},
		{name: "expired token", send: append(append([]byte{}, hello...), frame(gwproto.TypeLogin, 0, `{"token":"`+expired+`"}`)...), want: gwproto.CodeTokenExpired},
		{name: "login token as resume", send: append(append([]byte{}, hello...), frame(gwproto.TypeResume, 0, `{"token":"`+expired+`"}`)...), want: gwproto.CodeBadToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", g.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(c.send); err != nil {
				t.Fatal(err)
			}
			if c.half {
				_ = nc.(*net.TCPConn).CloseWrite()
			}
			code, msg := expectClose(t, nc)
			if code != c.want || !strings.Contains(msg, c.inMsg) {
				t.Fatalf("CLOSE %s %q, want %s", code, msg, c.want)
			}
		})
	}
	// The gateway still serves everyone else.
	handshake(t, g.Addr())
}

// handshake says HELLO and checks WELCOME.
func handshake(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write(hello); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := gwproto.NewReader(nc, 1<<20).Next()
	if err != nil || f.Type != gwproto.TypeWelcome {
		t.Fatalf("want WELCOME, got %v %v", f.Type, err)
	}
	var w gwproto.Welcome
	if err := gwproto.DecodeBody(f, &w); err != nil || w.Version != gwproto.Version || w.Window != 16 {
		t.Fatalf("welcome %+v %v", w, err)
	}
	return nc
}

func TestSlowlorisCutAtLoginDeadline(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.LoginTimeout = 300 * time.Millisecond })
	nc, err := net.Dial("tcp", g.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	// One byte every 50 ms: each read makes progress, the deadline is for
	// the whole handshake.
	go func() {
		for _, b := range hello {
			if _, err := nc.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // the slow client's pace
		}
	}()
	code, _ := expectClose(t, nc)
	if code != gwproto.CodeHandshakeTimeout {
		t.Fatalf("CLOSE %s, want handshake_timeout", code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cut after %s", d)
	}
}

func TestConnectionLimits(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.MaxConnsPerIP = 2; c.MaxConns = 3 })
	a := handshake(t, g.Addr())
	handshake(t, g.Addr())
	nc, err := net.Dial("tcp", g.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if code, _ := expectClose(t, nc); code != gwproto.CodeTooManyConnections {
		t.Fatalf("third connection from one address: %s", code)
	}
	// A freed slot is usable again.
	a.Close()
	poll.Until(t, 2*time.Second, func() error {
		if n := g.limits.count(); n != 2-1 {
			return errors.New("slot not freed yet")
		}
		return nil
	})
	handshake(t, g.Addr())
}

// dialWS opens a WebSocket to g's WebSocket listener and returns it as the
// byte stream the gateway reads (binary messages). Closed when the test
// ends.
func dialWS(t *testing.T, g *Gateway) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+g.WebSocketAddr()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}

func TestWebSocketSameFrames(t *testing.T) {
	g := startGateway(t, nil)
	nc := dialWS(t, g)
	// HELLO split over two messages, then a garbage frame: the stream is
	// what counts, not message boundaries.
	if _, err := nc.Write(hello[:5]); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(hello[5:]); err != nil {
		t.Fatal(err)
	}
	r := gwproto.NewReader(nc, 1<<20)
	f, err := r.Next()
	if err != nil || f.Type != gwproto.TypeWelcome {
		t.Fatalf("want WELCOME over websocket, got %v %v", f.Type, err)
	}
	if _, err := nc.Write(frame(42, 0, "")); err != nil {
		t.Fatal(err)
	}
	f, err = r.Next()
	if err != nil || f.Type != gwproto.TypeClose || f.Code != gwproto.CodeUnknownType {
		t.Fatalf("want CLOSE unknown_type, got %v %v %v", f.Type, f.Code, err)
	}
}

func TestPingBeforeLogin(t *testing.T) {
	g := startGateway(t, nil)
	nc := handshake(t, g.Addr())
	if _, err := nc.Write(frame(gwproto.TypePing, 77, "")); err != nil {
		t.Fatal(err)
	}
	f, err := gwproto.NewReader(nc, 1<<20).Next()
	if err != nil || f.Type != gwproto.TypePong || f.ID != 77 {
		t.Fatalf("want PONG 77, got %v %d %v", f.Type, f.ID, err)
	}
}

func TestLoginWithoutDataServerFailsClearly(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) {
		c.LoginTimeout = 500 * time.Millisecond
		c.HoldTimeout = 500 * time.Millisecond
	})
	tok, _ := token.IssueLogin(testSecret(t), "alice", time.Now().Add(time.Hour))
	nc := handshake(t, g.Addr())
	if _, err := nc.Write(frame(gwproto.TypeLogin, 0, `{"token":"`+tok+`"}`)); err != nil {
		t.Fatal(err)
	}
	code, msg := expectClose(t, nc)
	if code != gwproto.CodeLoginFailed || !strings.Contains(msg, "alice") {
		t.Fatalf("CLOSE %s %q, want login_failed naming the player", code, msg)
	}
	if g.reg.count() != 0 {
		t.Fatalf("%d sessions left after a failed login", g.reg.count())
	}
}

func testConn(g *Gateway) *clientConn {
	return &clientConn{g: g, out: make(chan []byte, 16), closing: make(chan struct{}), log: g.log}
}

// Pitaya #251: a quick reconnect that logs in before the old connection's
// cleanup ran must not lose its new session to that cleanup.
func TestOldConnectionCleanupKeepsNewSession(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.SessionTTL = 50 * time.Millisecond })
	g.resumeGrace = 10 * time.Millisecond
	c1, c2 := testConn(g), testConn(g)
	s1 := g.reg.newSession("alice", "s1", "town", c1)
	g.reg.install(s1)
	// The second login replaces the first before c1's cleanup runs.
	s2 := g.reg.newSession("alice", "s2", "town", c2)
	if old := g.reg.install(s2); old != s1 {
		t.Fatalf("install returned %v, want s1", old)
	}
	s1.end(gwproto.CodeSessionReplaced, "logged in again", false)
	select {
	case <-c1.closing:
	default:
		t.Fatal("the old connection was not told")
	}
	if c1.code != gwproto.CodeSessionReplaced {
		t.Fatalf("old connection closed with %s", c1.code)
	}
	// Now the old connection's cleanup runs, late.
	g.reg.detach(s1, c1)
	g.reg.logout(s1, c1)
	g.reg.expire(s1, s1.gen)
	if got := g.reg.get("alice"); got != s2 {
		t.Fatalf("alice's session is %v, want s2", got)
	}
	if s2.conn != c2 {
		t.Fatal("s2 lost its connection")
	}
	// s2's own connection drops; a resume arrives before the TTL: the
	// expiry timer of the drop must not end the resumed session.
	g.reg.detach(s2, c2)
	c3 := testConn(g)
	if _, ok := s2.attach(c3); !ok {
		t.Fatal("attach failed")
	}
	time.Sleep(2 * (g.cfg.SessionTTL + g.resumeGrace)) // past the TTL timer of the drop
	if g.reg.get("alice") != s2 || s2.ended {
		t.Fatal("the resumed session was expired by the timer of the earlier drop")
	}
	// A drop that is not resumed expires.
	g.reg.detach(s2, c3)
	poll.Until(t, 5*time.Second, func() error {
		if g.reg.get("alice") != nil {
			return errors.New("still registered")
		}
		return nil
	})
}

func TestAnnouncementFromAnotherGatewayEndsLocalSession(t *testing.T) {
	g := startGateway(t, nil)
	c := testConn(g)
	s := g.reg.newSession("bob", "s1", "town", c)
	g.reg.install(s)
	b, _ := jsonMarshal(Announcement{Gateway: "other", Player: "bob", Session: "s1"})
	if err := g.opt.NATS.Publish(SubjectSession, b); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		if g.reg.get("bob") != nil {
			return errors.New("still here")
		}
		return nil
	})
	<-c.closing
	s.mu.Lock()
	leave := s.leave
	s.mu.Unlock()
	if c.code != gwproto.CodeSessionReplaced || leave {
		t.Fatalf("code %s leave %v: want session_replaced without leaving the scene", c.code, s.leave)
	}
	// Our own announcements are ignored.
	s2 := g.reg.newSession("bob", "s2", "town", testConn(g))
	g.reg.install(s2)
	g.ann.announce("bob", "s2")
	if err := g.opt.NATS.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // nothing should happen; give it the chance
	if g.reg.get("bob") != s2 {
		t.Fatal("own announcement ended the session")
	}
}

func TestPositionsBatchedAndFiltered(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.ViewRadius = 10; c.MaxPositions = 2; c.PushHold = 0 })
	near, far := testConn(g), testConn(g)
	sNear := liveSession(g, "near", "a", "town", near)
	sFar := liveSession(g, "far", "b", "town", far)
	g.reg.install(sNear)
	g.reg.install(sFar)
	for _, p := range []struct {
		id   string
		x, y int
	}{{"near", 0, 0}, {"far", 100, 100}, {"m1", 3, 3}, {"m2", -5, 2}, {"m3", 9, -9}, {"m4", 50, 50}} {
		g.pos.update(pushOf("town", p.id, p.x, p.y))
	}
	g.pos.flush()
	got := readPositions(t, near)
	// m1..m3 are within 10 of (0,0); at most 2, nearest first.
	if len(got.Players) != 2 || got.Players[0].ID != "m1" || got.Players[1].ID != "m2" {
		t.Fatalf("near client got %+v", got.Players)
	}
	farGot := readPositions(t, far)
	if len(farGot.Players) != 0 {
		t.Fatalf("far client got %+v", farGot.Players)
	}
	// Nothing moved: no batch at all.
	g.pos.flush()
	select {
	case b := <-near.out:
		t.Fatalf("unexpected frame %q", b)
	default:
	}
	// A player who left is reported gone.
	g.pos.notice(scenelink.Push{Scene: "town", Kind: "notice", Body: []byte(`{"type":"player_left","id":"m2"}`)})
	g.pos.flush()
	if got := readPositions(t, near); len(got.Gone) != 1 || got.Gone[0] != "m2" || len(got.Players) != 0 {
		t.Fatalf("after m2 left: %+v", got)
	}
}

// pipeConn is a client connection with its writer running, and the frames
// its client reads, one slice per read.
func pipeConn(t *testing.T, g *Gateway) (*clientConn, <-chan []byte) {
	t.Helper()
	server, peer := net.Pipe()
	t.Cleanup(func() { peer.Close() })
	c := &clientConn{g: g, nc: server, kind: "tcp", out: make(chan []byte, 16), closing: make(chan struct{}), log: g.log}
	go c.writeLoop()
	reads := make(chan []byte, 16)
	go func() {
		defer close(reads)
		buf := make([]byte, 64<<10)
		for {
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			reads <- slices.Clone(buf[:n])
		}
	}()
	return c, reads
}

// frameTypes decodes the frames of one read.
func frameTypes(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) > 0 {
		f, n, err := gwproto.Decode(b, 1<<20)
		if err != nil || n == 0 {
			t.Fatalf("read holds a torn frame: %v", err)
		}
		kind := f.Type.String()
		if f.Type == gwproto.TypePush {
			var p gwproto.Push
			if err := gwproto.DecodeBody(f, &p); err != nil {
				t.Fatal(err)
			}
			kind += " " + p.Kind
		}
		out = append(out, kind)
		b = b[n:]
	}
	return out
}

func nextRead(t *testing.T, reads <-chan []byte) []byte {
	t.Helper()
	select {
	case b, ok := <-reads:
		if !ok {
			t.Fatal("connection closed")
		}
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written within 5 s")
	}
	return nil
}

// A positions batch waits for the client's next reply and rides in its
// write: one write, one read, for both.
func TestPositionsRideOnTheNextReply(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.PushHold = time.Hour / 2; c.PushInterval = time.Hour })
	c, reads := pipeConn(t, g)
	g.reg.install(liveSession(g, "ann", "a", "town", c))
	g.pos.update(pushOf("town", "ann", 0, 0))
	g.pos.update(pushOf("town", "ben", 1, 1))
	g.pos.flush()
	c.heldMu.Lock()
	held := c.held != nil
	c.heldMu.Unlock()
	if !held || len(c.out) != 0 {
		t.Fatalf("the batch was not held for the next write (held %v, %d frames queued)", held, len(c.out))
	}
	c.send(gwproto.TypeReply, gwproto.CodeOK, 7, map[string]int{"x": 1})
	if got := frameTypes(t, nextRead(t, reads)); !slices.Equal(got, []string{"REPLY", "PUSH positions"}) {
		t.Fatalf("one write carried %v, want the reply and then the positions", got)
	}
}

// A batch no write carried within push_hold goes out alone.
func TestPositionsHeldGoOutAlone(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.PushHold = 20 * time.Millisecond; c.PushInterval = time.Hour })
	c, reads := pipeConn(t, g)
	g.reg.install(liveSession(g, "ann", "a", "town", c))
	g.pos.update(pushOf("town", "ann", 0, 0))
	g.pos.update(pushOf("town", "ben", 1, 1))
	g.pos.flush()
	if got := frameTypes(t, nextRead(t, reads)); !slices.Equal(got, []string{"PUSH positions"}) {
		t.Fatalf("got %v, want the positions alone", got)
	}
	// The next batch, with the previous one gone out, is held afresh; a
	// flush while one is still held sends the older first.
	g.pos.update(pushOf("town", "ben", 2, 2))
	g.pos.flush()
	g.pos.update(pushOf("town", "ben", 3, 3))
	g.pos.flush()
	var xs []int
	for len(xs) < 2 {
		b := nextRead(t, reads)
		for len(b) > 0 {
			f, n, err := gwproto.Decode(b, 1<<20)
			if err != nil || n == 0 {
				t.Fatalf("torn frame: %v", err)
			}
			var p gwproto.Push
			var pos gwproto.Positions
			if err := gwproto.DecodeBody(f, &p); err != nil || jsonUnmarshal(p.Data, &pos) != nil || len(pos.Players) != 1 {
				t.Fatalf("frame %s: %v", b[:n], err)
			}
			xs = append(xs, pos.Players[0].X)
			b = b[n:]
		}
	}
	if !slices.Equal(xs, []int{2, 3}) {
		t.Fatalf("batches arrived with ben at x %v, want [2 3] (in order)", xs)
	}
}

func readPositions(t *testing.T, c *clientConn) gwproto.Positions {
	t.Helper()
	var out gwproto.Positions
	for {
		select {
		case b := <-c.out:
			f, _, err := gwproto.Decode(b, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			var p gwproto.Push
			if err := gwproto.DecodeBody(f, &p); err != nil || p.Kind != "positions" {
				t.Fatalf("push %s: %v", b, err)
			}
			if err := jsonUnmarshal(p.Data, &out); err != nil {
				t.Fatal(err)
			}
			return out
		default:
			return out
		}
	}
}

var _ = bytes.Equal

func TestShutdownClosesEveryConnection(t *testing.T) {
	g := startGateway(t, nil)
	nc := handshake(t, g.Addr()) // not logged in: no session holds it
	done := make(chan struct{})
	go func() { defer close(done); g.Shutdown() }()
	if code, _ := expectClose(t, nc); code != gwproto.CodeShuttingDown {
		t.Fatalf("CLOSE %s, want shutting_down", code)
	}
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown waited for a connection in its handshake")
	}
}

// A client that does not read is cut alone once its queue is full.
func TestSlowReaderIsCutAlone(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.OutQueue = 4; c.WriteTimeout = 200 * time.Millisecond })
	server, peer := net.Pipe() // synchronous: nothing is written until the peer reads
	defer peer.Close()
	c := &clientConn{g: g, nc: server, out: make(chan []byte, g.cfg.OutQueue), closing: make(chan struct{}), log: g.log}
	wdone := make(chan struct{})
	go func() { defer close(wdone); c.writeLoop() }()
	for i := range 20 {
		c.send(gwproto.TypePush, gwproto.CodeOK, uint64(i), gwproto.Push{Kind: "notice", Scene: "town", Data: []byte(`{}`)})
	}
	expectCutAsSlow(t, c, wdone)
}

// The same over a real TCP socket: the kernel's buffers fill, the writer
// blocks, the queue fills, and the client is cut without the sender ever
// waiting for it.
func TestSlowTCPReaderIsCutWithoutBlockingTheSender(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.OutQueue = 8; c.WriteTimeout = 200 * time.Millisecond })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := &clientConn{g: g, nc: server, out: make(chan []byte, g.cfg.OutQueue), closing: make(chan struct{}), log: g.log}
	wdone := make(chan struct{})
	go func() { defer close(wdone); c.writeLoop() }()
	body := make([]byte, 32<<10)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range 10000 {
			select {
			case <-c.closing:
				return
			default:
			}
			c.send(gwproto.TypePush, gwproto.CodeOK, uint64(i), body)
		}
	}()
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("the sender blocked on a client that does not read")
	}
	expectCutAsSlow(t, c, wdone)
}

// expectCutAsSlow waits for c to be closed as a slow consumer and for its
// writer (wdone) to give up its blocked write at the write deadline.
func expectCutAsSlow(t *testing.T, c *clientConn, wdone <-chan struct{}) {
	t.Helper()
	select {
	case <-c.closing:
	case <-time.After(2 * time.Second):
		t.Fatal("a client that never reads was not cut")
	}
	if c.code != gwproto.CodeSlowConsumer {
		t.Fatalf("closed with %s, want slow_consumer", c.code)
	}
	select {
	case <-wdone:
	case <-time.After(3 * time.Second):
		t.Fatal("the writer is still blocked on the slow client")
	}
}

// More unanswered requests than the window are refused, not queued.
func TestWindowBoundsUnansweredRequests(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.Window = 3 })
	s := g.reg.newSession("carol", "s1", "town", testConn(g))
	// No worker runs: nothing is answered.
	for seq := uint64(1); seq <= 3; seq++ {
		if code, msg := s.enqueue(seq, []byte(`{"op":"move"}`)); code != gwproto.CodeOK {
			t.Fatalf("seq %d: %s %s", seq, code, msg)
		}
	}
	// A resend of a queued seq is not queued twice, and is not refused.
	if code, _ := s.enqueue(2, []byte(`{"op":"move"}`)); code != gwproto.CodeOK {
		t.Fatalf("resend of a queued seq: %s", code)
	}
	if n := testutil.ToFloat64(g.m.resends); n != 1 {
		t.Fatalf("respawn_gateway_resends_total = %g, want 1", n)
	}
	if code, _ := s.enqueue(4, []byte(`{"op":"move"}`)); code != gwproto.CodeWindowFull {
		t.Fatalf("fourth unanswered request: %s, want window_full", code)
	}
	s.mu.Lock()
	n := len(s.queue)
	s.mu.Unlock()
	if n != 3 {
		t.Fatalf("%d queued, want 3", n)
	}
	s.end(gwproto.CodeOK, "", false)
}

// Requests for a scene that is down are held, bounded per process in count
// and bytes; beyond, they are answered unavailable at once.
func TestHoldLimits(t *testing.T) {
	g := startGateway(t, func(c *config.Gateway) { c.HoldMax = 2; c.HoldMaxBytes = 1 << 20 })
	// The table is empty: town is down.
	a := g.reg.newSession("a", "s1", "town", testConn(g))
	b := g.reg.newSession("b", "s2", "town", testConn(g))
	if code, _ := a.enqueue(1, []byte(`{"op":"move"}`)); code != gwproto.CodeOK {
		t.Fatalf("first held: %s", code)
	}
	if code, _ := b.enqueue(1, []byte(`{"op":"move"}`)); code != gwproto.CodeOK {
		t.Fatalf("second held: %s", code)
	}
	if code, _ := b.enqueue(2, []byte(`{"op":"move"}`)); code != gwproto.CodeUnavailable {
		t.Fatalf("third held: %s, want unavailable", code)
	}
	// Ending a session releases what it held.
	a.end(gwproto.CodeOK, "", false)
	if code, _ := b.enqueue(3, []byte(`{"op":"move"}`)); code != gwproto.CodeOK {
		t.Fatalf("after a release: %s", code)
	}
	b.end(gwproto.CodeOK, "", false)
	g2 := startGateway(t, func(c *config.Gateway) { c.HoldMaxBytes = 20 })
	d := g2.reg.newSession("d", "s1", "town", testConn(g2))
	if code, _ := d.enqueue(1, []byte(`{"op":"move","x":1,"y":2}`)); code != gwproto.CodeUnavailable {
		t.Fatalf("over hold_max_bytes: %s, want unavailable", code)
	}
}

// A session that expires here while another gateway serves it (its resume
// announcement was lost) does not take the player out of the scene.
func TestExpiryAsksTheOtherGateways(t *testing.T) {
	a := startGateway(t, nil)
	cfg := a.cfg
	cfg.ID = "other"
	cfg.Listen, cfg.WebSocket = "127.0.0.1:0", ""
	b, err := New(Options{Config: cfg, DefaultScene: "town", Secret: testSecret(t), NATS: a.opt.NATS, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	ca := testConn(a)
	sa := liveSession(a, "dave", "s1", "town", ca)
	a.reg.install(sa)
	a.reg.detach(sa, ca)
	// B serves the same session (the client resumed there); A never heard.
	sb := liveSession(b, "dave", "s1", "town", testConn(b))
	b.reg.install(sb)
	a.reg.expire(sa, sa.gen)
	if a.reg.get("dave") != nil {
		t.Fatal("the expired session is still registered")
	}
	sa.mu.Lock()
	ended, leave := sa.ended, sa.leave
	sa.mu.Unlock()
	if !ended || leave {
		t.Fatalf("ended %v leave %v: want ended without leaving the scene", ended, leave)
	}
	// With nobody else serving it, an expiry leaves the scene.
	cc := testConn(a)
	sc := liveSession(a, "erin", "s2", "town", cc)
	a.reg.install(sc)
	a.reg.detach(sc, cc)
	a.reg.expire(sc, sc.gen)
	sc.mu.Lock()
	leave = sc.leave
	sc.mu.Unlock()
	if !leave {
		t.Fatal("an expired session nobody serves did not leave the scene")
	}
}
