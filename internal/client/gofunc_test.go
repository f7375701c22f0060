package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
)

// calls records what GoFunc callbacks received, per request.
type calls struct {
	mu   sync.Mutex
	got  map[string]int // request name → callbacks run for it
	errs map[string]error
	reps map[string]Reply
	all  chan struct{} // closed when want callbacks have run
	want int
	n    int
}

func newCalls(want int) *calls {
	return &calls{got: map[string]int{}, errs: map[string]error{}, reps: map[string]Reply{}, all: make(chan struct{}), want: want}
}

// record stores one callback; the body is copied (it is only valid during
// the callback).
func (k *calls) record(name string, rep Reply, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	rep.Body = append(json.RawMessage(nil), rep.Body...)
	k.got[name]++
	k.errs[name], k.reps[name] = err, rep
	k.n++
	if k.n == k.want {
		close(k.all)
	}
}

func (k *calls) wait(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-k.all:
	case <-ctx.Done():
		k.mu.Lock()
		defer k.mu.Unlock()
		t.Fatalf("%d callbacks of %d: %v", k.n, k.want, k.got)
	}
}

// exactlyOnce fails unless every request's callback ran once.
func (k *calls) exactlyOnce(t *testing.T) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for name, n := range k.got {
		if n != 1 {
			t.Errorf("%s: callback ran %d times", name, n)
		}
	}
	if len(k.got) != k.want {
		t.Errorf("callbacks for %d requests, want %d", len(k.got), k.want)
	}
}

// A closed loop: each callback sends the next request. Every reply reaches
// its callback once, in seq order, with its body, across connections that
// die before or after answering (resumed, the unanswered one resent).
func TestGoFuncChainsThroughResumes(t *testing.T) {
	srv := newServer(t)
	var mu sync.Mutex
	killed := map[uint64]bool{}
	srv.set(func(nc net.Conn, f gwproto.Frame) {
		mu.Lock()
		first := !killed[f.ID]
		killed[f.ID] = true
		mu.Unlock()
		switch {
		case first && f.ID%7 == 0: // dies before answering: resent after the resume
			nc.Close()
		case first && f.ID%11 == 0: // dies after answering: not resent
			send(nc, gwproto.TypeReply, 0, f.ID, json.RawMessage(f.Body))
			nc.Close()
		default:
			send(nc, gwproto.TypeReply, 0, f.ID, json.RawMessage(f.Body))
		}
	})
	c, ctx := srv.dial(t, Options{Token: "t"})
	const n = 40
	k := newCalls(n)
	var next func(i int)
	next = func(i int) {
		name := fmt.Sprintf("r%d", i)
		op := []byte(fmt.Sprintf(`{"op":"move","i":%d}`, i))
		err := c.GoFunc(op, func(rep Reply, err error) {
			k.record(name, rep, err)
			if i < n {
				next(i + 1)
			}
		})
		if err != nil {
			t.Errorf("GoFunc %s: %v", name, err)
		}
	}
	next(1)
	k.wait(t, ctx)
	k.exactlyOnce(t)
	k.mu.Lock()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("r%d", i)
		rep, err := k.reps[name], k.errs[name]
		if err != nil || !rep.OK() || rep.Seq != uint64(i) || string(rep.Body) != fmt.Sprintf(`{"op":"move","i":%d}`, i) {
			t.Errorf("%s: %+v %v", name, rep, err)
		}
		// The request after one answered on a dying connection is written
		// to it too, and so resent.
		if rep.Resent != (i%7 == 0 || (i > 1 && (i-1)%11 == 0)) {
			t.Errorf("%s: resent %v", name, rep.Resent)
		}
	}
	k.mu.Unlock()
	st := c.Stats()
	// 7 14 21 28 35 die unanswered; 11 22 33 after answering (12 23 34
	// resent).
	if st.Sent != n || st.Answered != n || st.Resumes != 8 || st.Resends != 8 || st.Duplicates != 0 || st.Relogins != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A lost session (a relogin) fails the unanswered requests' callbacks with
// ErrUnknownOutcome, once each; a callback can send again at once, into
// the new session (seq 1). Replaced and Close reach callbacks the same way;
// GoFunc on a stopped client returns the error and never calls back.
func TestGoFuncErrorsReachCallbackOnce(t *testing.T) {
	srv := newServer(t)
	held := make(chan uint64, 8)
	srv.set(func(_ net.Conn, f gwproto.Frame) { held <- f.ID })
	c, ctx := srv.dial(t, Options{Token: "t", Window: 8})
	// Resumes are refused from now on; logins succeed, request 1 of the new
	// session is answered, the next is answered by session_replaced.
	srv.restart(t, func(nc net.Conn, fr gwproto.Frame) bool {
		switch fr.Type {
		case gwproto.TypeResume:
			send(nc, gwproto.TypeClose, gwproto.CodeResumeFailed, 0, gwproto.ErrorBody{Error: "gone"})
			nc.Close()
			return false
		case gwproto.TypeLogin:
			send(nc, gwproto.TypeSession, 0, 0, gwproto.Session{Player: "alice", Session: "s2", ResumeToken: "r2"})
		case gwproto.TypeRequest:
			if fr.ID == 1 {
				send(nc, gwproto.TypeReply, 0, 1, json.RawMessage(`{"new":1}`))
				return true
			}
			send(nc, gwproto.TypeClose, gwproto.CodeSessionReplaced, 0, gwproto.ErrorBody{Error: "elsewhere"})
			nc.Close()
			return false
		}
		return true
	})

	k := newCalls(5)
	for _, name := range []string{"a", "b", "c"} {
		if err := c.GoFunc([]byte(`{"op":"x"}`), func(rep Reply, err error) {
			k.record(name, rep, err)
			if name == "c" {
				// Chained from a failed callback: the new session.
				if err := c.GoFunc([]byte(`{"op":"y"}`), func(rep Reply, err error) {
					k.record("after-relogin", rep, err)
					if err := c.GoFunc([]byte(`{"op":"z"}`), func(rep Reply, err error) { k.record("replaced", rep, err) }); err != nil {
						t.Errorf("GoFunc z: %v", err)
					}
				}); err != nil {
					t.Errorf("GoFunc y: %v", err)
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		<-held
	}
	srv.mu.Lock()
	srv.conns[0].Close()
	srv.mu.Unlock()
	k.wait(t, ctx)
	k.exactlyOnce(t)
	k.mu.Lock()
	for _, name := range []string{"a", "b", "c"} {
		if !errors.Is(k.errs[name], ErrUnknownOutcome) {
			t.Errorf("%s: %v, want ErrUnknownOutcome", name, k.errs[name])
		}
	}
	if rep := k.reps["after-relogin"]; k.errs["after-relogin"] != nil || rep.Seq != 1 || string(rep.Body) != `{"new":1}` {
		t.Errorf("after the relogin: %+v %v", rep, k.errs["after-relogin"])
	}
	if !errors.Is(k.errs["replaced"], ErrReplaced) {
		t.Errorf("replaced: %v", k.errs["replaced"])
	}
	k.mu.Unlock()
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("client did not stop")
	}
	if err := c.GoFunc([]byte(`{}`), func(Reply, error) { t.Error("callback after GoFunc failed") }); !errors.Is(err, ErrReplaced) {
		t.Fatalf("GoFunc on a replaced client: %v", err)
	}
	if st := c.Stats(); st.Relogins != 1 || st.Answered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Close fails unanswered callbacks with ErrClosed; a late reply after a
// callback has run is counted as a duplicate, not delivered again; GoFunc
// does not wait for a window slot.
func TestGoFuncCloseDuplicateAndWindow(t *testing.T) {
	srv := newServer(t)
	held := make(chan gwproto.Frame, 8)
	srv.set(func(_ net.Conn, f gwproto.Frame) { held <- f })
	c, ctx := srv.dial(t, Options{Token: "t"}) // the server's window is 4
	k := newCalls(4)
	for i := range 4 {
		name := fmt.Sprintf("r%d", i+1)
		if err := c.GoFunc([]byte(`{}`), func(rep Reply, err error) { k.record(name, rep, err) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.GoFunc([]byte(`{}`), func(Reply, error) { t.Error("callback of a refused request") }); !errors.Is(err, ErrWindowFull) {
		t.Fatalf("fifth request: %v, want ErrWindowFull", err)
	}
	var nc net.Conn
	for range 4 {
		<-held
	}
	srv.mu.Lock()
	nc = srv.conns[0]
	srv.mu.Unlock()
	// Request 1 is answered twice: one callback, one duplicate.
	send(nc, gwproto.TypeReply, 0, 1, json.RawMessage(`{"ok":1}`))
	send(nc, gwproto.TypeReply, 0, 1, json.RawMessage(`{"ok":1}`))
	poll.Until(t, 5*time.Second, poll.True("the duplicate reply to be counted", func() bool { return c.Stats().Duplicates == 1 }))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	k.wait(t, ctx)
	k.exactlyOnce(t)
	k.mu.Lock()
	if rep := k.reps["r1"]; k.errs["r1"] != nil || string(rep.Body) != `{"ok":1}` {
		t.Errorf("r1: %+v %v", rep, k.errs["r1"])
	}
	for _, name := range []string{"r2", "r3", "r4"} {
		if !errors.Is(k.errs[name], ErrClosed) {
			t.Errorf("%s: %v, want ErrClosed", name, k.errs[name])
		}
	}
	k.mu.Unlock()
	if st := c.Stats(); st.Duplicates != 1 || st.Answered != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := c.GoFunc([]byte(`{}`), func(Reply, error) { t.Error("callback after Close") }); !errors.Is(err, ErrClosed) {
		t.Fatalf("GoFunc after Close: %v", err)
	}
}

// A retryable reply sets a resend timer; if the request is answered before
// it fires, the timer must resend nothing, even though the callback's
// next request may be reusing the answered one's Future by then.
func TestGoFuncRetryTimerAfterAnswer(t *testing.T) {
	srv := newServer(t)
	held := make(chan gwproto.Frame, 4)
	srv.set(func(nc net.Conn, f gwproto.Frame) {
		if f.ID == 1 {
			// Retry later... then answered at once (the timer is now stale).
			send(nc, gwproto.TypeReply, gwproto.CodeUnavailable, 1, gwproto.ErrorBody{Error: "busy"})
			send(nc, gwproto.TypeReply, 0, 1, json.RawMessage(`{"n":1}`))
			return
		}
		held <- f // request 2 is held past the timer
	})
	c, ctx := srv.dial(t, Options{Token: "t"})
	k := newCalls(2)
	if err := c.GoFunc([]byte(`{"n":1}`), func(rep Reply, err error) {
		k.record("r1", rep, err)
		if err := c.GoFunc([]byte(`{"n":2}`), func(rep Reply, err error) { k.record("r2", rep, err) }); err != nil {
			t.Errorf("GoFunc r2: %v", err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	f2 := <-held
	time.Sleep(200 * time.Millisecond) // the retry timer (50 ms) fires meanwhile
	srv.mu.Lock()
	nc := srv.conns[0]
	srv.mu.Unlock()
	send(nc, gwproto.TypeReply, 0, f2.ID, json.RawMessage(`{"n":2}`))
	k.wait(t, ctx)
	k.exactlyOnce(t)
	if _, seen := srv.snapshot(); len(seen) != 2 || seen[0] != 1 || seen[1] != 2 {
		t.Fatalf("requests seen %v, want 1 2 (no resend from the stale timer)", seen)
	}
	if st := c.Stats(); st.Resends != 0 || st.Duplicates != 0 || st.Answered != 2 {
		t.Fatalf("stats %+v", st)
	}
}
