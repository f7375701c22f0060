package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
)

// server is a scripted gateway for the client's own logic: it answers the
// handshake and lets the test decide what happens to each request.
type server struct {
	t  testing.TB
	ln net.Listener

	mu      sync.Mutex
	logins  []string // "login" or "resume:TOKEN" per connection
	seen    []uint64 // every REQUEST seq received, in order, across connections
	conns   []net.Conn
	onFrame func(nc net.Conn, f gwproto.Frame) // nil: answer every request OK
}

func newServer(t testing.TB) *server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, ln: ln}
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	go s.accept()
	return s
}

func (s *server) accept() {
	for n := 0; ; n++ {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, nc)
		s.mu.Unlock()
		go s.serve(nc, n)
	}
}

func send(nc net.Conn, t gwproto.Type, code gwproto.Code, id uint64, v any) {
	b, _ := gwproto.AppendMsg(nil, t, code, id, v)
	_, _ = nc.Write(b)
}

// restart replaces the server's listener with one on the same port whose
// connections are served by handle (serveFrames), until the test ends:
// the gateway a reconnecting client comes back to.
func (s *server) restart(t *testing.T, handle func(nc net.Conn, fr gwproto.Frame) bool) {
	t.Helper()
	s.ln.Close()
	ln, err := net.Listen("tcp", s.ln.Addr().String())
	if err != nil {
		t.Skipf("could not listen again on the same port: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go serveFrames(nc, 16, func(fr gwproto.Frame) bool { return handle(nc, fr) })
		}
	}()
}

// serveFrames reads nc's frames until it closes, answers HELLO with a
// WELCOME offering window, and hands every other frame to fn; fn returns
// false once it has closed nc.
func serveFrames(nc net.Conn, window int, fn func(f gwproto.Frame) bool) {
	r := gwproto.NewReader(nc, 1<<20)
	for {
		f, err := r.Next()
		if err != nil {
			return
		}
		if f.Type == gwproto.TypeHello {
			send(nc, gwproto.TypeWelcome, 0, 0, gwproto.Welcome{Version: 1, Window: window, SessionTTLMS: 60000, IdleMS: 30000})
			continue
		}
		if !fn(f) {
			return
		}
	}
}

func (s *server) serve(nc net.Conn, n int) {
	serveFrames(nc, 4, func(f gwproto.Frame) bool {
		switch f.Type {
		case gwproto.TypeLogin, gwproto.TypeResume:
			kind := "login"
			if f.Type == gwproto.TypeResume {
				var m gwproto.Resume
				_ = gwproto.DecodeBody(f, &m)
				kind = "resume:" + m.Token
			}
			s.mu.Lock()
			s.logins = append(s.logins, kind)
			s.mu.Unlock()
			send(nc, gwproto.TypeSession, 0, 0, gwproto.Session{Player: "alice", Session: "s1", ResumeToken: "r1", Resumed: f.Type == gwproto.TypeResume})
		case gwproto.TypeRequest:
			s.mu.Lock()
			s.seen = append(s.seen, f.ID)
			on := s.onFrame
			s.mu.Unlock()
			if on != nil {
				on(nc, gwproto.Frame{Type: f.Type, ID: f.ID, Body: append([]byte(nil), f.Body...)})
				break
			}
			send(nc, gwproto.TypeReply, 0, f.ID, json.RawMessage(f.Body))
		}
		return true
	})
}

// dial connects a client to s with o (s is its only gateway) and returns
// it with a 10 s context for the test's requests; both end with the test.
func (s *server) dial(t *testing.T, o Options) (*Client, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	o.Gateways = []string{s.ln.Addr().String()}
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, ctx
}

func (s *server) set(fn func(nc net.Conn, f gwproto.Frame)) {
	s.mu.Lock()
	s.onFrame = fn
	s.mu.Unlock()
}

func (s *server) snapshot() ([]string, []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.logins...), append([]uint64(nil), s.seen...)
}

// A dropped connection is resumed with the resume token and every
// unanswered request is resent, in seq order, with its original seq; a
// reply that comes twice is counted, not delivered twice.
func TestResumeResendsUnansweredInOrder(t *testing.T) {
	srv := newServer(t)
	c, ctx := srv.dial(t, Options{Token: "v1.alice.1.x"})
	if rep, err := c.Request(ctx, map[string]any{"op": "move", "x": 1}); err != nil || !rep.OK() || rep.Seq != 1 {
		t.Fatalf("first request: %+v %v", rep, err)
	}
	// The gateway now swallows requests and then dies.
	swallowed := make(chan uint64, 8)
	srv.set(func(_ net.Conn, f gwproto.Frame) { swallowed <- f.ID })
	futs := []*Future{c.Go(map[string]any{"op": "a"}), c.Go(map[string]any{"op": "b"}), c.Go(map[string]any{"op": "c"})}
	for range futs {
		<-swallowed
	}
	// Answer seq 3 on the way out (2 and 4 are lost with the connection).
	srv.mu.Lock()
	dead := srv.conns[0]
	srv.mu.Unlock()
	send(dead, gwproto.TypeReply, 0, 3, json.RawMessage(`{"op":"b"}`))
	if _, err := futs[1].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	srv.set(nil)
	dead.Close()
	for i, f := range futs {
		rep, err := f.Wait(ctx)
		if err != nil || !rep.OK() || rep.Seq != uint64(i+2) {
			t.Fatalf("request %d: %+v %v", i, rep, err)
		}
	}
	logins, seen := srv.snapshot()
	if len(logins) != 2 || logins[0] != "login" || logins[1] != "resume:r1" {
		t.Fatalf("logins %v, want a login then a resume with the token", logins)
	}
	// 1, then 2 3 4 on the first connection, then only 2 and 4 resent in order.
	want := []uint64{1, 2, 3, 4, 2, 4}
	if len(seen) != len(want) {
		t.Fatalf("requests seen %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("requests seen %v, want %v", seen, want)
		}
	}
	// A late duplicate of an answered reply is counted, not delivered.
	srv.mu.Lock()
	live := srv.conns[1]
	srv.mu.Unlock()
	send(live, gwproto.TypeReply, 0, 2, json.RawMessage(`{}`))
	poll.Until(t, 5*time.Second, poll.True("the duplicate reply to be counted", func() bool { return c.Stats().Duplicates == 1 }))
	st := c.Stats()
	if st.Resumes != 1 || st.Lost != 1 || st.Relogins != 0 || st.Disconnects != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Retryable replies are resent with the same seq; the caller only sees
// the final answer.
func TestRetryableRepliesAreResent(t *testing.T) {
	srv := newServer(t)
	var mu sync.Mutex
	tries := 0
	srv.set(func(nc net.Conn, f gwproto.Frame) {
		mu.Lock()
		tries++
		n := tries
		mu.Unlock()
		if n < 3 {
			send(nc, gwproto.TypeReply, gwproto.CodeUnavailable, f.ID, gwproto.ErrorBody{Error: "scene down"})
			return
		}
		send(nc, gwproto.TypeReply, 0, f.ID, json.RawMessage(`{"x":1}`))
	})
	c, ctx := srv.dial(t, Options{Token: "t"})
	rep, err := c.Request(ctx, map[string]any{"op": "move"})
	if err != nil || !rep.OK() || !rep.Resent {
		t.Fatalf("%+v %v", rep, err)
	}
	if _, seen := srv.snapshot(); len(seen) != 3 || seen[0] != 1 || seen[2] != 1 {
		t.Fatalf("seqs sent %v, want 1 three times", seen)
	}
}

// The window bounds unanswered requests: Go blocks until a reply frees a
// slot; a context ends the wait.
func TestWindowBlocks(t *testing.T) {
	srv := newServer(t)
	held := make(chan gwproto.Frame, 16)
	srv.set(func(_ net.Conn, f gwproto.Frame) { held <- f })
	c, ctx := srv.dial(t, Options{Token: "t", Window: 8})
	for range 4 { // the server's window (4) is smaller than ours (8)
		c.Go(map[string]any{"op": "x"})
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := c.GoContext(short, map[string]any{"op": "x"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fifth request with a full window: %v", err)
	}
}

// A session the gateway no longer has (resume_failed) is logged in again:
// what was unanswered fails with ErrUnknownOutcome and seqs restart at 1.
// session_replaced stops the client for good.
func TestReloginAndReplaced(t *testing.T) {
	srv := newServer(t)
	held := make(chan uint64, 4)
	srv.set(func(_ net.Conn, f gwproto.Frame) { held <- f.ID })
	c, ctx := srv.dial(t, Options{Token: "t"})
	f := c.Go(map[string]any{"op": "x"})
	<-held
	// From now on resumes are refused.
	var resumes, logins int
	var mu sync.Mutex
	srv.restart(t, func(nc net.Conn, fr gwproto.Frame) bool {
		switch fr.Type {
		case gwproto.TypeResume:
			mu.Lock()
			resumes++
			mu.Unlock()
			send(nc, gwproto.TypeClose, gwproto.CodeResumeFailed, 0, gwproto.ErrorBody{Error: "gone"})
			nc.Close()
			return false
		case gwproto.TypeLogin:
			mu.Lock()
			logins++
			mu.Unlock()
			send(nc, gwproto.TypeSession, 0, 0, gwproto.Session{Player: "alice", Session: "s2", ResumeToken: "r2"})
		case gwproto.TypeRequest:
			if fr.ID == 1 {
				send(nc, gwproto.TypeReply, 0, 1, json.RawMessage(`{}`))
				return true
			}
			send(nc, gwproto.TypeClose, gwproto.CodeSessionReplaced, 0, gwproto.ErrorBody{Error: "elsewhere"})
			nc.Close()
			return false
		}
		return true
	})
	srv.mu.Lock()
	srv.conns[0].Close()
	srv.mu.Unlock()
	if _, err := f.Wait(ctx); !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("unanswered request after a relogin: %v", err)
	}
	rep, err := c.Request(ctx, map[string]any{"op": "y"})
	if err != nil || rep.Seq != 1 {
		t.Fatalf("first request of the new session: %+v %v", rep, err)
	}
	mu.Lock()
	if resumes != 1 || logins != 1 {
		t.Fatalf("%d resumes, %d logins", resumes, logins)
	}
	mu.Unlock()
	if st := c.Stats(); st.Relogins != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The next request is answered by session_replaced: the client stops.
	if _, err := c.Request(ctx, map[string]any{"op": "z"}); !errors.Is(err, ErrReplaced) {
		t.Fatalf("after session_replaced: %v", err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("client did not stop")
	}
}

// CLOSE resume_failed (the scene lost the session) makes the client log in
// again instead of resuming.
func TestResumeFailedLogsInAgain(t *testing.T) {
	srv := newServer(t)
	var once sync.Once
	srv.set(func(nc net.Conn, f gwproto.Frame) {
		first := false
		once.Do(func() { first = true })
		if first {
			send(nc, gwproto.TypeReply, gwproto.CodeSeqTooFar, f.ID, gwproto.ErrorBody{Reason: "seq_too_far"})
			send(nc, gwproto.TypeClose, gwproto.CodeResumeFailed, 0, gwproto.ErrorBody{Error: "lost"})
			nc.Close()
			return
		}
		send(nc, gwproto.TypeReply, 0, f.ID, json.RawMessage(`{}`))
	})
	c, ctx := srv.dial(t, Options{Token: "t"})
	rep, err := c.Request(ctx, map[string]any{"op": "x"})
	if err != nil || rep.Code != gwproto.CodeSeqTooFar {
		t.Fatalf("%+v %v", rep, err)
	}
	poll.Until(t, 5*time.Second, poll.True("the client to log in again", func() bool { return c.Stats().Relogins == 1 }))
	if logins, _ := srv.snapshot(); len(logins) != 2 || logins[1] != "login" {
		t.Fatalf("logins %v, want login twice (no resume)", logins)
	}
	if rep, err := c.Request(ctx, map[string]any{"op": "y"}); err != nil || !rep.OK() || rep.Seq != 1 {
		t.Fatalf("after the relogin: %+v %v", rep, err)
	}
}

// Pushes arrive on Pushes, in order, or are dropped at once with
// DiscardPushes; a resume_token push updates the token either way.
func TestPushesDeliveredOrDiscarded(t *testing.T) {
	for _, discard := range []bool{false, true} {
		s := newServer(t)
		s.set(func(nc net.Conn, f gwproto.Frame) {
			var b []byte
			b = gwproto.AppendPush(b, "positions", "town", []byte(`{"players":[{"id":"bob","x":1,"y":2}]}`))
			b = gwproto.AppendPush(b, "resume_token", "town", []byte(`{"token":"r2"}`))
			b = gwproto.AppendPush(b, "chat", "town", []byte(`{"from":"bob","name":"Bob","text":"hi"}`))
			b = gwproto.AppendFrame(b, gwproto.Frame{Type: gwproto.TypeReply, ID: f.ID, Body: []byte(`{}`)})
			_, _ = nc.Write(b)
		})
		c, ctx := s.dial(t, Options{DiscardPushes: discard})
		if rep, err := c.Request(ctx, []byte(`{"op":"move","x":1,"y":1}`)); err != nil || !rep.OK() {
			t.Fatalf("discard=%v: request: %v %v", discard, err, rep.Err())
		}
		c.mu.Lock()
		tok := c.resume
		c.mu.Unlock()
		if tok != "r2" {
			t.Fatalf("discard=%v: resume token %q, want r2", discard, tok)
		}
		var got []string
		for len(got) < 2 {
			select {
			case p := <-c.Pushes():
				got = append(got, p.Kind+" "+string(p.Data))
				continue
			default:
			}
			break
		}
		want := []string{`positions {"players":[{"id":"bob","x":1,"y":2}]}`, `chat {"from":"bob","name":"Bob","text":"hi"}`}
		if discard {
			want = nil
		}
		if len(got) != len(want) || (len(want) > 0 && (got[0] != want[0] || got[1] != want[1])) {
			t.Fatalf("discard=%v: pushes %q, want %q", discard, got, want)
		}
		if st := c.Stats(); st.Dropped != 0 {
			t.Fatalf("discard=%v: %d counted dropped", discard, st.Dropped)
		}
	}
}
