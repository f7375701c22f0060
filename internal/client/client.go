// Package client is the Go client of the respawn gateway: what cmd/bot,
// the tests and any Go tool use to play. It speaks internal/gwproto over
// TCP or WebSocket, logs in with a token, numbers requests, pipelines up
// to a window of them, delivers pushes, and hides gateway and scene
// failures: when its connection drops it reconnects (to the same gateway
// or the next in the list), resumes the session with its resume token and
// resends every unanswered request with its original seq, so each request
// is applied once and answered once.
//
// Typical use:
//
//	c, err := client.Dial(ctx, client.Options{
//		Gateways: []string{"127.0.0.1:7000", "ws://127.0.0.1:7011/"},
//		Token:    tok, // `respawn token issue alice`
//	})
//	if err != nil { ... }
//	defer c.Close()
//	rep, err := c.Request(ctx, map[string]any{"op": "move", "x": 3, "y": 4})
//	if err != nil { ... }        // the request's fate is unknown (closed, replaced, ctx)
//	if err := rep.Err(); err != nil { ... } // the game refused it (rep.Reason)
//
//	f := c.Go(map[string]any{"op": "attack", "monster": "boar"}) // pipelined
//	rep, err = f.Wait(ctx)
//
//	for p := range c.Pushes() { ... } // notices, chat, nearby positions
//
// A closed-loop player that sends its next request as soon as a reply
// comes uses GoFunc: its callback runs on the client's reader goroutine, so
// no goroutine has to be woken between a reply and the next request.
//
// Request and Go block while Window requests are unanswered (GoFunc
// returns ErrWindowFull instead). Replies with
// a retryable code (unavailable, rate_limited, window_full) are resent by
// the client with the same seq after a backoff, so callers see them only
// as latency. Stats counts what happened (resumes, relogins, server
// disconnects, duplicate replies).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/gwproto"
)

// Options configure Dial.
type Options struct {
	// Gateways to connect to, tried in order: "host:port" (TCP) or
	// "ws://host:port/" (WebSocket).
	Gateways []string
	// Token is the login token (`respawn token issue PLAYER`).
	Token string
	// Window bounds unanswered requests (default 16, and never more than
	// the gateway allows).
	Window int
	// Name is sent in HELLO for the gateway's logs.
	Name string
	// DialTimeout bounds one connection attempt with its handshake
	// (default 5 s).
	DialTimeout time.Duration
	// Reconnect is how long the client keeps trying to get back after a
	// lost connection before it gives up (default: the session TTL the
	// gateway announced, then a fresh login for another minute).
	Reconnect time.Duration
	// NoRetry returns retryable replies to the caller instead of resending.
	NoRetry bool
	// PushBuffer bounds Pushes (default 1024); pushes that find it full are
	// dropped and counted.
	PushBuffer int
	// DiscardPushes drops pushes as they arrive instead of buffering them
	// for Pushes (which then delivers nothing): for a client that never
	// reads them (bots), whose buffer would otherwise hold PushBuffer of
	// them, ~2 KB each for positions.
	DiscardPushes bool
	Log           *zap.Logger
}

// Reply is the gateway's answer to one request.
type Reply struct {
	Seq    uint64
	Code   gwproto.Code
	Body   json.RawMessage // the game's result (Code OK)
	Reason string          // the game's refusal code (Code GameError)
	Error  string
	Resent bool // answered after a resend (a failover or reconnect happened)
}

// OK reports success.
func (r Reply) OK() bool { return r.Code == gwproto.CodeOK }

// Err is nil for success, else an error naming the code and reason.
func (r Reply) Err() error {
	if r.OK() {
		return nil
	}
	if r.Reason != "" {
		return fmt.Errorf("request %d: %s (%s): %s", r.Seq, r.Code, r.Reason, r.Error)
	}
	return fmt.Errorf("request %d: %s: %s", r.Seq, r.Code, r.Error)
}

// Push is a server push.
type Push = gwproto.Push

// Stats counts what the client went through.
type Stats struct {
	Sent        uint64 // requests sent (first sends)
	Resends     uint64 // requests sent again (reconnect or retryable reply)
	Answered    uint64 // requests completed with a reply
	Duplicates  uint64 // replies for a request already answered or never sent
	Resumes     uint64 // sessions resumed after a lost connection
	Relogins    uint64 // sessions that had to log in again (their unanswered requests failed)
	Disconnects uint64 // connections the server closed with a code other than shutting_down
	Lost        uint64 // connections that ended without a CLOSE (a gateway died, the network broke)
	Dropped     uint64 // pushes dropped because Pushes was full
}

// Errors returned for requests whose reply will not come.
var (
	ErrClosed         = errors.New("client: closed")
	ErrReplaced       = errors.New("client: the player logged in elsewhere")
	ErrUnknownOutcome = errors.New("client: the session was lost; the request may or may not have been applied")
	// ErrWindowFull is GoFunc's answer when Window requests are unanswered:
	// it must not wait, since it may run on the goroutine whose replies
	// free the slots.
	ErrWindowFull = errors.New("client: window full")
)

// Future is a request in flight.
type Future struct {
	seq     uint64
	op      []byte
	done    chan struct{}      // nil for a GoFunc request
	fn      func(Reply, error) // GoFunc's callback
	rep     Reply
	err     error
	sent    bool
	sends   int
	retries int    // retryable replies so far
	use     uint64 // a GoFunc future's reuses: a retry timer set before one resends nothing
}

// failLocked ends f with err. A callback is not run here (the caller holds
// c.mu, and the callback may send again): it is appended to fns for the
// caller to run with runFailed once c.mu is released.
func (f *Future) failLocked(err error, fns []func(Reply, error)) []func(Reply, error) {
	f.err = err
	if f.fn != nil {
		return append(fns, f.fn)
	}
	close(f.done)
	return fns
}

func runFailed(fns []func(Reply, error), err error) {
	for _, fn := range fns {
		fn(Reply{}, err)
	}
}

// Done is closed when the request completed.
func (f *Future) Done() <-chan struct{} { return f.done }

// Seq is the request's sequence number.
func (f *Future) Seq() uint64 { return f.seq }

// Wait waits for the reply.
func (f *Future) Wait(ctx context.Context) (Reply, error) {
	select {
	case <-f.done:
		return f.rep, f.err
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
}

// Client is one player's connection. It is safe for concurrent use.
type Client struct {
	opt    Options
	log    *zap.Logger
	pushes chan Push

	mu      sync.Mutex
	cond    *sync.Cond // signalled when a window slot frees or the state changes
	nc      net.Conn
	gwIndex int
	welcome gwproto.Welcome
	session gwproto.Session
	resume  string
	nextSeq uint64
	// calls are the unanswered requests in seq order (seqs only grow): at
	// most a window of them, found by binary search, resent in order.
	calls []*Future
	// answered holds the last seqs answered (a ring; 0 is empty), to tell
	// a duplicate reply from a stray one. A ring, not a map: it is written
	// on every reply and read only when a reply has no request.
	answered [1024]uint64
	ansNext  int
	free     []*Future // GoFunc futures answered, for reuse (a closed loop allocates none)
	stats    Stats
	closed   bool
	fatal    error
	connGen  uint64
	wbuf     []byte
	wdl      time.Time // the write deadline set on nc

	done    chan struct{}
	closeMu sync.Once
	wg      sync.WaitGroup
}

// Dial connects to the first reachable gateway and logs in.
func Dial(ctx context.Context, opt Options) (*Client, error) {
	if len(opt.Gateways) == 0 {
		return nil, errors.New("client: no gateway address")
	}
	if opt.Window <= 0 {
		opt.Window = 16
	}
	if opt.DialTimeout <= 0 {
		opt.DialTimeout = 5 * time.Second
	}
	if opt.PushBuffer <= 0 {
		opt.PushBuffer = 1024
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	pushBuf := opt.PushBuffer
	if opt.DiscardPushes {
		// Not even the empty buffer: 1024 slots are 56 KB of pointers the
		// garbage collector scans every cycle, per client (56 MB for 1000
		// bots).
		pushBuf = 0
	}
	c := &Client{opt: opt, log: opt.Log, pushes: make(chan Push, pushBuf), done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	var last error
	for i := range opt.Gateways {
		nc, err := c.connect(ctx, i, false)
		if err == nil {
			c.mu.Lock()
			c.gwIndex = i
			c.startLocked(nc)
			c.mu.Unlock()
			return c, nil
		}
		last = err
		if code := gwproto.CodeOf(err, gwproto.CodeOK); code == gwproto.CodeBadToken || code == gwproto.CodeTokenExpired {
			break
		}
	}
	return nil, last
}

// Session is what the gateway said at the last login or resume.
func (c *Client) Session() gwproto.Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Gateway is the address of the gateway the client is (or was last)
// connected to.
func (c *Client) Gateway() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opt.Gateways[c.gwIndex]
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Pushes delivers server pushes (never closed: stop reading at Done).
func (c *Client) Pushes() <-chan Push { return c.pushes }

// Done is closed when the client stopped for good (Close, logout,
// replaced, or the session could not be recovered); Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the client stopped (nil while it runs or after Close).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fatal
}

// Request sends op (any JSON-marshalable value, or []byte of JSON) and
// waits for its reply.
func (c *Client) Request(ctx context.Context, op any) (Reply, error) {
	f, err := c.GoContext(ctx, op)
	if err != nil {
		return Reply{}, err
	}
	return f.Wait(ctx)
}

// Go sends op without waiting for the reply (pipelining). It blocks while
// the window is full.
func (c *Client) Go(op any) *Future {
	f, err := c.GoContext(context.Background(), op)
	if err != nil {
		f = &Future{done: make(chan struct{}), err: err}
		close(f.done)
	}
	return f
}

// GoContext is Go with a context bounding the wait for a window slot.
func (c *Client) GoContext(ctx context.Context, op any) (*Future, error) {
	var body []byte
	switch o := op.(type) {
	case []byte:
		body = o
	case json.RawMessage:
		body = o
	default:
		var err error
		if body, err = json.Marshal(op); err != nil {
			return nil, fmt.Errorf("client: encode op: %w", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.calls) >= c.windowLocked() && !c.closed && ctx.Err() == nil {
		// Only a caller that waits for a slot needs waking when ctx ends
		// (registering costs an allocation per request). A ctx ending
		// before the registration is seen by the check under the lock.
		c.mu.Unlock()
		stop := context.AfterFunc(ctx, func() {
			c.mu.Lock()
			c.cond.Broadcast()
			c.mu.Unlock()
		})
		defer stop()
		c.mu.Lock()
		for len(c.calls) >= c.windowLocked() && !c.closed && ctx.Err() == nil {
			c.cond.Wait()
		}
	}
	if c.closed {
		if c.fatal != nil {
			return nil, c.fatal
		}
		return nil, ErrClosed
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	f := &Future{op: body, done: make(chan struct{})}
	c.startCallLocked(f)
	return f, nil
}

// GoFunc sends op (JSON) and calls done once with its reply, or with the
// error that ends it (ErrUnknownOutcome after a lost session, ErrReplaced,
// ErrClosed, or why the client stopped). If GoFunc returns an error, done
// is never called.
//
// done runs on one of the client's goroutines: the reader's for a reply,
// the one that found the session lost (or Close's caller) for an error.
// It must not block, nor call Close or Logout; it may call GoFunc to send
// the next request. rep.Body is the reader's buffer: it is valid only
// until done returns. The client keeps op until done is called, to resend
// it after a resume: do not change it before.
//
// GoFunc never waits for a window slot: with Window requests unanswered it
// returns ErrWindowFull. A closed loop that sends from done never meets
// it, since the answered request's slot is free when done runs (unless Go
// callers share the client and take it).
func (c *Client) GoFunc(op []byte, done func(Reply, error)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		if c.fatal != nil {
			return c.fatal
		}
		return ErrClosed
	}
	if len(c.calls) >= c.windowLocked() {
		return ErrWindowFull
	}
	var f *Future
	if n := len(c.free); n > 0 {
		f, c.free = c.free[n-1], c.free[:n-1]
	} else {
		f = &Future{}
	}
	f.op, f.fn = op, done
	c.startCallLocked(f)
	return nil
}

// startCallLocked numbers f, registers it and sends it.
func (c *Client) startCallLocked(f *Future) {
	c.nextSeq++
	f.seq = c.nextSeq
	c.calls = append(c.calls, f)
	c.stats.Sent++
	c.sendLocked(f)
}

func (c *Client) windowLocked() int {
	w := c.opt.Window
	if c.welcome.Window > 0 && c.welcome.Window < w {
		w = c.welcome.Window
	}
	return w
}

// sendLocked writes f's REQUEST if connected; if not, the reconnect will.
func (c *Client) sendLocked(f *Future) {
	if c.nc == nil {
		return
	}
	if f.sent {
		c.stats.Resends++
	}
	f.sent = true
	f.sends++
	c.wbuf = gwproto.AppendFrame(c.wbuf[:0], gwproto.Frame{Type: gwproto.TypeRequest, ID: f.seq, Body: f.op})
	c.writeDeadlineLocked()
	if _, err := c.nc.Write(c.wbuf); err != nil {
		// The reader sees the broken connection and reconnects; f is resent then.
		c.nc.Close()
	}
}

// writeDeadlineLocked bounds the next write by DialTimeout. Moving a
// socket deadline is a timer update, so it is moved only once an eighth of
// DialTimeout has passed since it was set: a write gets between 7/8 of
// DialTimeout and all of it.
func (c *Client) writeDeadlineLocked() {
	now := time.Now()
	if c.wdl.Sub(now) >= c.opt.DialTimeout-c.opt.DialTimeout/8 {
		return
	}
	c.wdl = now.Add(c.opt.DialTimeout)
	_ = c.nc.SetWriteDeadline(c.wdl)
}

// Logout leaves the world: the player is saved and taken out of the scene.
func (c *Client) Logout(ctx context.Context) error {
	c.mu.Lock()
	nc := c.nc
	if nc != nil {
		b := gwproto.AppendFrame(nil, gwproto.Frame{Type: gwproto.TypeLogout})
		_, _ = nc.Write(b)
	}
	c.mu.Unlock()
	if nc == nil {
		return errors.New("client: not connected")
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		c.Close()
		return ctx.Err()
	}
}

// Close disconnects without logging out: the session stays in the scene
// for the session TTL.
func (c *Client) Close() error {
	c.stop(nil)
	c.wg.Wait()
	return nil
}

func (c *Client) stop(err error) {
	c.closeMu.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.fatal = err
		if c.nc != nil {
			c.nc.Close()
			c.nc = nil
		}
		fail := err
		if fail == nil {
			fail = ErrClosed
		}
		var fns []func(Reply, error)
		for _, f := range c.calls {
			fns = f.failLocked(fail, fns)
		}
		clear(c.calls)
		c.calls = c.calls[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
		close(c.done)
		runFailed(fns, fail)
	})
}

// connect dials gateway i, says HELLO and logs in (or resumes).
func (c *Client) connect(ctx context.Context, i int, resume bool) (net.Conn, error) {
	addr := c.opt.Gateways[i]
	ctx, cancel := context.WithTimeout(ctx, c.opt.DialTimeout)
	defer cancel()
	nc, err := dialTransport(ctx, addr)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	var b []byte
	b, _ = gwproto.AppendMsg(b, gwproto.TypeHello, gwproto.CodeOK, 0, gwproto.Hello{Version: gwproto.Version, Client: c.opt.Name})
	c.mu.Lock()
	tok := c.resume
	c.mu.Unlock()
	if resume {
		b, _ = gwproto.AppendMsg(b, gwproto.TypeResume, gwproto.CodeOK, 0, gwproto.Resume{Token: tok})
	} else {
		b, _ = gwproto.AppendMsg(b, gwproto.TypeLogin, gwproto.CodeOK, 0, gwproto.Login{Token: c.opt.Token})
	}
	if _, err := nc.Write(b); err != nil {
		return nil, fmt.Errorf("client: %s: %w", addr, err)
	}
	r := gwproto.NewReader(nc, 16<<20)
	var welcome gwproto.Welcome
	for {
		f, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("client: %s: handshake: %w", addr, err)
		}
		switch f.Type {
		case gwproto.TypeWelcome:
			if err := gwproto.DecodeBody(f, &welcome); err != nil {
				return nil, err
			}
		case gwproto.TypeClose:
			var e gwproto.ErrorBody
			_ = gwproto.DecodeBody(f, &e)
			return nil, &gwproto.Error{Code: f.Code, Msg: fmt.Sprintf("%s: %s", addr, e.Error)}
		case gwproto.TypeSession:
			var s gwproto.Session
			if err := gwproto.DecodeBody(f, &s); err != nil {
				return nil, err
			}
			_ = nc.SetDeadline(time.Time{})
			c.mu.Lock()
			c.welcome, c.session, c.resume = welcome, s, s.ResumeToken
			c.mu.Unlock()
			ok = true
			return &readerConn{Conn: nc, r: r}, nil
		}
	}
}

// readerConn keeps the frame reader that may hold bytes read past SESSION.
type readerConn struct {
	net.Conn
	r *gwproto.Reader
}

// sameAddr reports whether two gateway addresses name the same listener:
// "tcp://" is optional and a WebSocket URL's trailing "/" too.
func sameAddr(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimPrefix(s, "tcp://")
		if strings.HasPrefix(s, "ws://") || strings.HasPrefix(s, "wss://") {
			s = strings.TrimSuffix(s, "/")
		}
		return s
	}
	return norm(a) == norm(b)
}

func dialTransport(ctx context.Context, addr string) (net.Conn, error) {
	if strings.HasPrefix(addr, "ws://") || strings.HasPrefix(addr, "wss://") {
		ws, _, err := websocket.Dial(ctx, addr, nil)
		if err != nil {
			return nil, fmt.Errorf("client: websocket %s: %w", addr, err)
		}
		// The connection outlives the dial context.
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
	}
	addr = strings.TrimPrefix(addr, "tcp://")
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return nc, nil
}

// startLocked makes nc the connection, resends every unanswered request in
// seq order, and starts its reader.
func (c *Client) startLocked(nc net.Conn) {
	c.nc = nc
	c.wdl = time.Time{}
	c.connGen++
	gen := c.connGen
	for _, f := range c.calls {
		c.sendLocked(f)
	}
	c.cond.Broadcast()
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.readLoop(nc, gen) }()
	go func() { defer c.wg.Done(); c.pingLoop(nc, gen) }()
}

func (c *Client) pingLoop(nc net.Conn, gen uint64) {
	c.mu.Lock()
	idle := time.Duration(c.welcome.IdleMS) * time.Millisecond
	c.mu.Unlock()
	if idle <= 0 {
		idle = 30 * time.Second
	}
	t := time.NewTicker(max(idle/3, 10*time.Millisecond))
	defer t.Stop()
	for n := uint64(1); ; n++ {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.mu.Lock()
		if c.connGen != gen || c.nc == nil {
			c.mu.Unlock()
			return
		}
		c.writeDeadlineLocked()
		_, _ = c.nc.Write(gwproto.AppendFrame(nil, gwproto.Frame{Type: gwproto.TypePing, ID: n}))
		c.mu.Unlock()
	}
}

func (c *Client) readLoop(nc net.Conn, gen uint64) {
	r := nc.(*readerConn).r
	var closeCode gwproto.Code
	var closeMsg, moveTo string
	gotClose := false
	for {
		f, err := r.Next()
		if err != nil {
			break
		}
		switch f.Type {
		case gwproto.TypeReply:
			c.onReply(f)
		case gwproto.TypePush:
			c.onPush(f)
		case gwproto.TypePing:
			c.mu.Lock()
			if c.nc == nc {
				_, _ = nc.Write(gwproto.AppendFrame(nil, gwproto.Frame{Type: gwproto.TypePong, ID: f.ID}))
			}
			c.mu.Unlock()
		case gwproto.TypeClose:
			var e gwproto.ErrorBody
			_ = gwproto.DecodeBody(f, &e)
			gotClose, closeCode, closeMsg, moveTo = true, f.Code, e.Error, e.MoveTo
		}
		if gotClose {
			break
		}
	}
	nc.Close()
	c.mu.Lock()
	if c.connGen != gen || c.closed {
		c.mu.Unlock()
		return
	}
	c.nc = nil
	switch {
	case gotClose && closeCode == gwproto.CodeOK:
		c.mu.Unlock()
		c.stop(nil) // logged out
		return
	case gotClose && closeCode == gwproto.CodeSessionReplaced:
		c.stats.Disconnects++
		c.mu.Unlock()
		c.stop(fmt.Errorf("%w: %s", ErrReplaced, closeMsg))
		return
	case gotClose && closeCode != gwproto.CodeShuttingDown:
		c.stats.Disconnects++
		c.log.Warn("gateway closed the connection", zap.Stringer("code", closeCode), zap.String("why", closeMsg))
	case !gotClose:
		c.stats.Lost++
	}
	if gotClose && closeCode == gwproto.CodeShuttingDown {
		// The gateway is stopping (an upgrade): resume first where it says
		// to move, if that is one of ours, else on the next of our list,
		// not on the one going away. An address outside our list is not
		// followed: the server does not get to send us anywhere.
		c.gwIndex = (c.gwIndex + 1) % len(c.opt.Gateways)
		if i := slices.IndexFunc(c.opt.Gateways, func(a string) bool { return sameAddr(a, moveTo) }); moveTo != "" && i >= 0 {
			c.gwIndex = i
		}
	}
	// resume_failed: the session is gone; resuming it would fail again.
	resume := !(gotClose && closeCode == gwproto.CodeResumeFailed)
	c.mu.Unlock()
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.reconnect(resume) }()
}

// callLocked finds the unanswered request seq in calls.
func (c *Client) callLocked(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(c.calls, seq, func(f *Future, seq uint64) int {
		switch {
		case f.seq < seq:
			return -1
		case f.seq > seq:
			return 1
		}
		return 0
	})
}

func (c *Client) onReply(f gwproto.Frame) {
	rep := Reply{Seq: f.ID, Code: f.Code}
	if f.Code != gwproto.CodeOK {
		var e gwproto.ErrorBody
		_ = gwproto.DecodeBody(f, &e)
		rep.Reason, rep.Error = e.Reason, e.Error
	}
	c.mu.Lock()
	i, found := c.callLocked(f.ID)
	if !found {
		if (f.ID != 0 && slices.Contains(c.answered[:], f.ID)) || f.ID > c.nextSeq {
			c.stats.Duplicates++
		}
		c.mu.Unlock()
		return
	}
	fut := c.calls[i]
	if f.Code.Retryable() && !c.opt.NoRetry {
		// Back off per request (50 ms doubling to 2 s), so a long outage
		// does not turn into a stream of refused resends.
		delay := min(50*time.Millisecond<<min(fut.retries, 6), 2*time.Second)
		fut.retries++
		seq, use := fut.seq, fut.use
		c.mu.Unlock()
		time.AfterFunc(delay, func() {
			c.mu.Lock()
			// Still unanswered, and not reused since for another request.
			if i, ok := c.callLocked(seq); ok && c.calls[i] == fut && fut.use == use {
				c.sendLocked(fut)
			}
			c.mu.Unlock()
		})
		return
	}
	c.calls = slices.Delete(c.calls, i, i+1)
	c.answered[c.ansNext] = f.ID
	c.ansNext = (c.ansNext + 1) % len(c.answered)
	c.stats.Answered++
	rep.Resent = fut.sends > 1
	fn := fut.fn
	if fn == nil {
		// A Future's reply outlives the read buffer; a callback's does not.
		if f.Code == gwproto.CodeOK {
			rep.Body = append(json.RawMessage(nil), f.Body...)
		}
		fut.rep = rep
		close(fut.done)
	} else {
		if f.Code == gwproto.CodeOK {
			rep.Body = f.Body
		}
		// Nothing refers to fut now but a retry timer, which checks use.
		*fut = Future{use: fut.use + 1}
		if len(c.free) < 4 {
			c.free = append(c.free, fut)
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if fn != nil {
		fn(rep, nil)
	}
}

func (c *Client) onPush(f gwproto.Frame) {
	// Not the JSON decoder: a client gets a positions push every push
	// interval, and scanning each one twice cost the bot more CPU than
	// its requests did.
	p, err := gwproto.DecodePush(f.Body)
	if err != nil {
		return
	}
	if p.Kind == "resume_token" {
		var t struct {
			Token string `json:"token"`
		}
		if json.Unmarshal(p.Data, &t) == nil && t.Token != "" {
			c.mu.Lock()
			c.resume = t.Token
			c.mu.Unlock()
		}
		return
	}
	if c.opt.DiscardPushes {
		return
	}
	p.Data = append(json.RawMessage(nil), p.Data...)
	select {
	case c.pushes <- p:
	default:
		c.mu.Lock()
		c.stats.Dropped++
		c.mu.Unlock()
	}
}

// reconnect gets the session back: resume (if resume) on the same gateway
// or the next ones, with backoff, for the session TTL; if the session is
// gone, log in again (unanswered requests fail with ErrUnknownOutcome).
func (c *Client) reconnect(resume bool) {
	c.mu.Lock()
	ttl := time.Duration(c.welcome.SessionTTLMS) * time.Millisecond
	start := c.gwIndex
	c.mu.Unlock()
	if ttl <= 0 {
		ttl = time.Minute
	}
	limit := c.opt.Reconnect
	if limit <= 0 {
		limit = ttl + time.Minute
	}
	// Resume only well inside the TTL: after it the gateway may have taken
	// the player out of the scene, and a resend could apply twice.
	resumeUntil := time.Now().Add(ttl * 3 / 4)
	deadline := time.Now().Add(limit)
	backoff := 20 * time.Millisecond
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		select {
		case <-c.done:
			return
		default:
		}
		if resume && time.Now().After(resumeUntil) {
			resume = false
		}
		i := (start + attempt) % len(c.opt.Gateways)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		nc, err := c.connect(ctx, i, resume)
		cancel()
		if err == nil {
			var failed []func(Reply, error)
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				nc.Close()
				return
			}
			c.gwIndex = i
			if resume {
				c.stats.Resumes++
			} else {
				c.stats.Relogins++
				// A new session starts again at seq 1; what was unanswered
				// in the old one may or may not have been applied.
				for _, f := range c.calls {
					failed = f.failLocked(ErrUnknownOutcome, failed)
				}
				clear(c.calls)
				c.calls = c.calls[:0]
				c.nextSeq = 0
				c.answered, c.ansNext = [len(c.answered)]uint64{}, 0
			}
			c.startLocked(nc)
			c.mu.Unlock()
			// After startLocked: a callback sending its next request
			// finds the new session.
			runFailed(failed, ErrUnknownOutcome)
			c.log.Info("reconnected", zap.String("gateway", c.opt.Gateways[i]), zap.Bool("resumed", resume))
			return
		}
		switch gwproto.CodeOf(err, gwproto.CodeOK) {
		case gwproto.CodeResumeFailed, gwproto.CodeTokenExpired:
			if resume {
				resume = false
				continue
			}
		case gwproto.CodeBadToken:
			if !resume {
				c.stop(err)
				return
			}
			resume = false
			continue
		}
		// Every gateway tried once: wait before the next round.
		if (attempt+1)%len(c.opt.Gateways) == 0 {
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
			backoff = min(backoff*2, 500*time.Millisecond)
		}
	}
	c.stop(fmt.Errorf("client: could not reach any gateway for %s", limit))
}
