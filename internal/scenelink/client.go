// Package scenelink is the link between gateways and scene processes: a few
// persistent, authenticated TCP connections per scene process, each carrying
// many players' joins, requests and leaves, multiplexed by correlation id,
// and the scene's pushes (notices, chat, positions, kicks, notifications)
// back. The scene side lives in internal/scene (link.go); this package is
// the wire format, the handshake and the gateway's Client. docs/link.md
// describes the protocol.
package scenelink

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/deadline"
	"github.com/respawn-dev/respawn/internal/secret"
)

// Options configure Dial.
type Options struct {
	Addr   string
	Secret *secret.Secret
	// Conns is how many persistent connections to open to the scene
	// process (default 2). One player's traffic always uses one of them.
	Conns int
	Log   *zap.Logger
	// PushBuffer bounds Pushes (default 8192); pushes that find it full are
	// dropped and counted (DroppedPushes): a slow consumer must not stall
	// replies.
	PushBuffer int
	// HandshakeTimeout bounds Dial's handshake when ctx has no earlier
	// deadline (default 5 s).
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one write to the socket (default 10 s); a scene
	// that does not read for that long is treated as gone.
	WriteTimeout time.Duration
}

// Errors. Every error the Client returns wraps one of these or a context
// error.
var (
	// ErrUnavailable: connection lost or process gone: the request may or
	// may not have been applied; resend it with the same seq (to this scene
	// process's successor once the scene table names it).
	ErrUnavailable = errors.New("scenelink: scene unavailable")
	// ErrAuth: the scene process does not hold our secret, or refused ours.
	ErrAuth = errors.New("scenelink: authentication failed")
	// ErrNoScene: the process does not host that scene (the table moved on).
	ErrNoScene = errors.New("scenelink: scene not hosted by this process")
	// ErrBadRequest: the scene refused a malformed join, request or leave.
	ErrBadRequest = errors.New("scenelink: bad request")
	// ErrRefused: the data server refused the join (unknown player, the
	// lease is held elsewhere and could not be resolved).
	ErrRefused = errors.New("scenelink: refused")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("scenelink: client closed")
)

// Req is one client request to relay. Op is the JSON op form scene.DecodeOp
// accepts (internal/scene/op.go); it passes through unchanged.
type Req struct {
	Scene, Player, Session string
	Seq                    uint64
	Op                     []byte
}

// Reply is the scene's answer to a Req, exactly once per (session, seq):
// Resent marks the stored reply of a request applied before.
type Reply struct {
	Seq    uint64
	Code   string // "" ok, else the game error code (game.Err*)
	Error  string
	Body   json.RawMessage // the game.Result as JSON ({} for an error)
	Resent bool
	Moved  string // the player is not in this scene; where they went, if known
}

// JoinResult answers Join.
type JoinResult struct {
	Scene string
	// Moved is set when the player is in another scene (per the data
	// server, or because they travelled from here): join there instead.
	Moved string
	// LastSeq is the highest seq applied in the session (0 for a new one).
	LastSeq uint64
	// State is the player's view: {"id","name","gold","items","x","y","hp"}.
	State json.RawMessage
}

// Push is a server push: Player "" means everyone in Scene. Kinds: notice
// (game.Notice), chat ({"from","name","text"}), position ({"kind","id","x",
// "y"}), notify (a game.Result for Player), kick ({"reason"}).
type Push struct {
	Scene, Player, Kind string
	Body                json.RawMessage
}

// Client is a gateway's link to one scene process. It is safe for
// concurrent use.
type Client struct {
	opt      Options
	log      *zap.Logger
	conns    []*conn
	pushes   chan Push
	dropped  atomic.Uint64
	done     chan struct{}
	alive    atomic.Int64
	closed   atomic.Bool
	errMu    sync.Mutex
	err      error
	process  string
	epoch    uint64
	maxFrame int
}

// Dial opens opt.Conns authenticated connections to the scene process at
// opt.Addr. It fails (ErrAuth) if the process does not prove it holds
// opt.Secret or refuses ours.
func Dial(ctx context.Context, opt Options) (*Client, error) {
	if opt.Secret == nil {
		return nil, errors.New("scenelink: dial: no secret")
	}
	if opt.Conns <= 0 {
		opt.Conns = 2
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	if opt.PushBuffer <= 0 {
		opt.PushBuffer = 8192
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = 5 * time.Second
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = 10 * time.Second
	}
	idb, err := NewNonce()
	if err != nil {
		return nil, err
	}
	c := &Client{
		opt: opt, log: opt.Log.With(zap.String("scene_link", opt.Addr)),
		pushes: make(chan Push, opt.PushBuffer), done: make(chan struct{}),
	}
	clientID := hex.EncodeToString(idb[:8])
	// The connections handshake at once, not one after the other: after a
	// failover every held request waits for the whole dial.
	type dialed struct {
		cn  *conn
		hs  handshook
		err error
	}
	results := make([]dialed, opt.Conns)
	var dialing sync.WaitGroup
	for i := range opt.Conns {
		dialing.Go(func() {
			cn, hs, err := c.dialOne(ctx, i, clientID)
			results[i] = dialed{cn, hs, err}
		})
	}
	dialing.Wait()
	var firstErr error
	for _, d := range results {
		if d.err != nil && firstErr == nil {
			firstErr = d.err
		}
	}
	if firstErr != nil {
		for _, d := range results {
			if d.cn != nil {
				d.cn.nc.Close()
			}
		}
		return nil, firstErr
	}
	for _, d := range results {
		c.conns = append(c.conns, d.cn)
	}
	// Every connection reached the same listener; the first one's word is
	// the process's.
	hs := results[0].hs
	c.process, c.epoch, c.maxFrame = hs.process, hs.epoch, hs.maxFrame
	c.alive.Store(int64(len(c.conns)))
	var readers sync.WaitGroup
	for _, cn := range c.conns {
		readers.Add(1)
		go func() { defer readers.Done(); cn.readLoop() }()
		go cn.writeLoop()
	}
	// Pushes closes once no reader can send on it any more.
	go func() { readers.Wait(); close(c.pushes) }()
	return c, nil
}

// readHandshake reads the next handshake frame, which must be of type
// want (named what in errors); a close frame is the scene refusing us.
func (c *Client) readHandshake(r *bufio.Reader, want byte, what string) ([]byte, error) {
	typ, body, _, err := ReadFrame(r, DefaultMaxFrame, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: handshake with %s: %v", ErrUnavailable, c.opt.Addr, err)
	}
	if typ == TClose {
		var m CloseMsg
		_ = m.Decode(body)
		return nil, fmt.Errorf("%w: %s refused the link: %s", ErrAuth, c.opt.Addr, m.Reason)
	}
	if typ != want {
		return nil, fmt.Errorf("%w: handshake with %s: frame type %d, want %s", ErrFrame, c.opt.Addr, typ, what)
	}
	return body, nil
}

// handshook is what one connection's handshake said about the process.
type handshook struct {
	process  string
	epoch    uint64
	maxFrame int
}

func (c *Client) dialOne(ctx context.Context, idx int, clientID string) (*conn, handshook, error) {
	d := net.Dialer{}
	dctx, cancel := context.WithTimeout(ctx, c.opt.HandshakeTimeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", c.opt.Addr)
	if err != nil {
		return nil, handshook{}, fmt.Errorf("%w: dial %s: %v", ErrUnavailable, c.opt.Addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	dl, _ := dctx.Deadline()
	_ = nc.SetDeadline(dl)
	fail := func(err error) (*conn, handshook, error) {
		nc.Close()
		return nil, handshook{}, err
	}
	cnonce, err := NewNonce()
	if err != nil {
		return fail(err)
	}
	var e Encoder
	(&ClientHello{Version: Version, Nonce: cnonce, ClientID: clientID}).Append(&e)
	if _, err := nc.Write(e.B); err != nil {
		return fail(fmt.Errorf("%w: handshake with %s: %v", ErrUnavailable, c.opt.Addr, err))
	}
	r := bufio.NewReaderSize(nc, 64<<10)
	body, err := c.readHandshake(r, TServerHello, "server hello")
	if err != nil {
		return fail(err)
	}
	var sh ServerHello
	if err := sh.Decode(body); err != nil {
		return fail(fmt.Errorf("handshake with %s: %w", c.opt.Addr, err))
	}
	if !VerifyScene(c.opt.Secret, sh.MAC, cnonce, sh.Nonce) {
		return fail(fmt.Errorf("%w: %s did not prove it holds the cluster secret", ErrAuth, c.opt.Addr))
	}
	e.B = e.B[:0]
	(&ClientProof{MAC: GatewayProof(c.opt.Secret, cnonce, sh.Nonce)}).Append(&e)
	if _, err := nc.Write(e.B); err != nil {
		return fail(fmt.Errorf("%w: handshake with %s: %v", ErrUnavailable, c.opt.Addr, err))
	}
	body, err = c.readHandshake(r, TWelcome, "welcome")
	if err != nil {
		return fail(err)
	}
	var w Welcome
	if err := w.Decode(body); err != nil {
		return fail(fmt.Errorf("handshake with %s: %w", c.opt.Addr, err))
	}
	_ = nc.SetDeadline(time.Time{})
	if w.MaxInflight == 0 || w.MaxInflight > 1<<20 {
		w.MaxInflight = DefaultMaxInflight
	}
	if w.MaxFrame == 0 || w.MaxFrame > 1<<30 {
		w.MaxFrame = DefaultMaxFrame
	}
	return &conn{
		c: c, idx: idx, nc: nc, r: r,
		pending: map[uint64]*call{},
		slots:   make(chan struct{}, w.MaxInflight),
		wake:    make(chan struct{}, 1),
		dead:    make(chan struct{}),
	}, handshook{process: sh.Process, epoch: sh.Epoch, maxFrame: int(w.MaxFrame)}, nil
}

// Process and Epoch name the scene process incarnation this client talks to.
func (c *Client) Process() string { return c.process }

// Epoch is the epoch of the scene process this client talks to.
func (c *Client) Epoch() uint64 { return c.epoch }

// Pushes delivers server pushes for the scenes of this process. Player ""
// means everyone in Scene. It is closed after Done.
func (c *Client) Pushes() <-chan Push { return c.pushes }

// DroppedPushes counts pushes dropped because Pushes was full.
func (c *Client) DroppedPushes() uint64 { return c.dropped.Load() }

// Done is closed when the connections to the process are lost (or Close):
// losing one ends them all, so a caller redials and resends in order.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why Done was closed.
func (c *Client) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Close closes every connection. Waiting calls return ErrUnavailable
// (wrapping ErrClosed).
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	for _, cn := range c.conns {
		cn.kill(ErrClosed)
	}
	<-c.done
	return nil
}

// Join makes sure the player is in the scene (loaded from the data server
// under the scene's lease if not present) and makes session the player's
// current session. If the player is in another scene, JoinResult.Moved
// names it and nothing changes here.
func (c *Client) Join(ctx context.Context, scene, player, session string) (JoinResult, error) {
	m := Session{Scene: scene, Player: player, Session: session}
	res, err := c.call(ctx, player, func(e *Encoder, id uint64) { m.ID = id; m.Append(e, TJoin) })
	if err != nil {
		return JoinResult{}, fmt.Errorf("join player %s session %s to scene %s: %w", player, session, scene, err)
	}
	return res.join, nil
}

// Request relays one client request. The reply is the scene's, exactly once
// per (session, seq). ErrUnavailable means it may or may not have been
// applied: resend it with the same seq.
func (c *Client) Request(ctx context.Context, r Req) (Reply, error) {
	res, err := c.call(ctx, r.Player, func(e *Encoder, id uint64) {
		(&Request{ID: id, Req: r}).Append(e)
	})
	if err != nil {
		return Reply{}, fmt.Errorf("request seq %d of player %s session %s in scene %s: %w", r.Seq, r.Player, r.Session, r.Scene, err)
	}
	return res.reply, nil
}

// Go sends r without waiting for the reply: frames leave in the order Go
// (and Request) are called, so one goroutine can pipeline a session's
// requests in seq order. done is called exactly once, with the reply or an
// error as Request would return, from the connection's reader goroutine: it
// must not block. Go itself blocks only while the connection has its
// scene's limit of requests in flight (until ctx ends).
func (c *Client) Go(ctx context.Context, r Req, done func(Reply, error)) {
	c.start(ctx, r.Player, func(e *Encoder, id uint64) {
		(&Request{ID: id, Req: r}).Append(e)
	}, func(res callResult, err error) {
		if err != nil {
			err = fmt.Errorf("request seq %d of player %s session %s in scene %s: %w", r.Seq, r.Player, r.Session, r.Scene, err)
		}
		done(res.reply, err)
	})
}

// TryGo is Go that never waits: if the player's connection has its
// scene's limit of requests in flight, or is dead, it returns false and
// done is not called (the caller relays r another way). Otherwise done is
// called exactly once, as for Go. It lets a gateway send a request from
// the client's reader goroutine, which must not block on one scene.
func (c *Client) TryGo(r Req, done func(Reply, error)) bool {
	return c.begin(nil, r.Player, func(e *Encoder, id uint64) {
		(&Request{ID: id, Req: r}).Append(e)
	}, func(res callResult, err error) {
		if err != nil {
			err = fmt.Errorf("request seq %d of player %s session %s in scene %s: %w", r.Seq, r.Player, r.Session, r.Scene, err)
		}
		done(res.reply, err)
	})
}

// Leave saves the player and takes them out of the scene, if session is
// still their current one (a stale logout must not remove a newer
// session's player). Leaving a player who is not here is not an error.
func (c *Client) Leave(ctx context.Context, scene, player, session string) error {
	m := Session{Scene: scene, Player: player, Session: session}
	_, err := c.call(ctx, player, func(e *Encoder, id uint64) { m.ID = id; m.Append(e, TLeave) })
	if err != nil {
		return fmt.Errorf("leave player %s session %s from scene %s: %w", player, session, scene, err)
	}
	return nil
}

// route picks the connection of player: always the same one, so the
// player's requests stay in order. If it is lost, so is the client.
func (c *Client) route(player string) (*conn, error) {
	// FNV-1a inline: hash/fnv allocates, and this runs per request.
	h := uint32(2166136261)
	for i := 0; i < len(player); i++ {
		h ^= uint32(player[i])
		h *= 16777619
	}
	cn := c.conns[int(h%uint32(len(c.conns)))]
	select {
	case <-cn.dead:
		return nil, cn.deadErr()
	default:
		return cn, nil
	}
}

type callResult struct {
	reply Reply
	join  JoinResult
}

// call is one in-flight join, request or leave: finish gets its outcome
// exactly once.
type call struct {
	finish func(callResult, error)
}

func (c *Client) call(ctx context.Context, player string, enc func(*Encoder, uint64)) (callResult, error) {
	type outcome struct {
		res callResult
		err error
	}
	ch := make(chan outcome, 1)
	c.start(ctx, player, enc, func(res callResult, err error) { ch <- outcome{res, err} })
	select {
	case o := <-ch:
		return o.res, o.err
	case <-ctx.Done():
		// The slot is freed when the answer (or the connection's end)
		// arrives, so the scene never sees more than its limit in flight.
		return callResult{}, ctx.Err()
	}
}

// start queues one frame and arranges for finish to get its outcome.
func (c *Client) start(ctx context.Context, player string, enc func(*Encoder, uint64), finish func(callResult, error)) {
	c.begin(ctx, player, enc, finish)
}

// begin is start; with a nil ctx it does not wait for a slot: it returns
// false, without calling finish, when none is free or the connection is
// dead. Otherwise it returns true and finish gets the outcome.
func (c *Client) begin(ctx context.Context, player string, enc func(*Encoder, uint64), finish func(callResult, error)) bool {
	cn, err := c.route(player)
	if err != nil {
		if ctx == nil {
			return false
		}
		finish(callResult{}, err)
		return true
	}
	if ctx == nil {
		select {
		case cn.slots <- struct{}{}:
		default:
			return false
		}
	} else {
		select {
		case cn.slots <- struct{}{}:
		case <-cn.dead:
			finish(callResult{}, cn.deadErr())
			return true
		case <-ctx.Done():
			finish(callResult{}, ctx.Err())
			return true
		}
	}
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		<-cn.slots
		if ctx == nil {
			return false
		}
		finish(callResult{}, cn.deadErr())
		return true
	}
	cn.nextID++
	id := cn.nextID
	start := len(cn.out.B)
	enc(&cn.out, id)
	if n := len(cn.out.B) - start - 4; n > c.maxFrame {
		cn.out.B = cn.out.B[:start]
		cn.mu.Unlock()
		<-cn.slots
		finish(callResult{}, fmt.Errorf("%w: frame of %d bytes over the scene's limit %d", ErrBadRequest, n, c.maxFrame))
		return true
	}
	cn.pending[id] = &call{finish: finish}
	cn.mu.Unlock()
	select {
	case cn.wake <- struct{}{}:
	default:
	}
	return true
}

// conn is one connection: a writer that sends whatever accumulated in out
// in one write, and a reader that completes calls by id.
type conn struct {
	c   *Client
	idx int
	nc  net.Conn
	r   *bufio.Reader

	mu      sync.Mutex
	out     Encoder // frames not yet written
	nextID  uint64
	pending map[uint64]*call
	err     error // set once the connection is dead

	slots chan struct{} // in-flight calls
	wake  chan struct{}
	dead  chan struct{}
}

func (cn *conn) deadErr() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.err == nil {
		return ErrUnavailable
	}
	return cn.err
}

// kill ends the connection once: every waiting call fails with
// ErrUnavailable, and the client is done when it was the last one.
func (cn *conn) kill(why error) {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	if errors.Is(why, ErrUnavailable) {
		cn.err = why
	} else {
		cn.err = fmt.Errorf("%w: %w", ErrUnavailable, why)
	}
	pending := cn.pending
	cn.pending = nil
	close(cn.dead)
	cn.mu.Unlock()
	cn.nc.Close()
	for _, cl := range pending {
		<-cn.slots
		cl.finish(callResult{}, cn.err)
	}
	c := cn.c
	if c.alive.Add(-1) == 0 {
		c.errMu.Lock()
		c.err = cn.err
		c.errMu.Unlock()
		close(c.done)
		return
	}
	if !errors.Is(why, ErrClosed) {
		// One connection lost while the process lives (garbage, a write
		// timeout): end them all, so the caller redials and resends in seq
		// order. Moving a player to another connection instead could let a
		// later seq overtake an earlier one that died with this connection.
		c.log.Warn("scene link connection lost; closing the others", zap.Int("conn", cn.idx), zap.Error(why))
		for _, o := range c.conns {
			if o != cn {
				o.kill(fmt.Errorf("connection %d to the same process lost: %w", cn.idx, why))
			}
		}
	}
}

func (cn *conn) writeLoop() {
	var buf []byte
	var wdl deadline.Lazy
	for {
		select {
		case <-cn.wake:
		case <-cn.dead:
			return
		}
		runtime.Gosched() // let concurrent callers add to this write
		cn.mu.Lock()
		buf, cn.out.B = cn.out.B, buf[:0]
		cn.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		wdl.Extend(cn.c.opt.WriteTimeout, cn.nc.SetWriteDeadline)
		if _, err := cn.nc.Write(buf); err != nil {
			cn.kill(fmt.Errorf("write: %w", err))
			return
		}
		if cap(buf) > 1<<20 {
			buf = nil // do not pin a burst's buffer forever
		}
	}
}

func (cn *conn) readLoop() {
	var buf []byte
	for {
		typ, body, nbuf, err := ReadFrame(cn.r, cn.c.maxFrame, buf)
		buf = nbuf
		if err != nil {
			cn.kill(fmt.Errorf("read: %w", err))
			return
		}
		if err := cn.handle(typ, body); err != nil {
			cn.kill(err)
			return
		}
	}
}

func (cn *conn) handle(typ byte, body []byte) error {
	switch typ {
	case TReply:
		var m ReplyMsg
		if err := m.Decode(body); err != nil {
			return err
		}
		cn.complete(m.ID, callResult{reply: m.Reply}, nil)
	case TJoinReply:
		var m JoinReply
		if err := m.Decode(body); err != nil {
			return err
		}
		cn.complete(m.ID, callResult{join: m.JoinResult}, nil)
	case TLeaveReply, TFail:
		var m Fail
		if err := m.Decode(body); err != nil {
			return err
		}
		cn.complete(m.ID, callResult{}, failErr(m))
	case TPush:
		var p Push
		if err := p.Decode(body); err != nil {
			return err
		}
		select {
		case cn.c.pushes <- p:
		default:
			cn.c.dropped.Add(1)
		}
	case TClose:
		var m CloseMsg
		_ = m.Decode(body)
		return fmt.Errorf("closed by the scene: %s", m.Reason)
	default:
		return fmt.Errorf("%w: unknown frame type %d", ErrFrame, typ)
	}
	return nil
}

func failErr(m Fail) error {
	switch m.Code {
	case "":
		return nil
	case FailUnavailable:
		return fmt.Errorf("%w: %s", ErrUnavailable, m.Error)
	case FailNoScene:
		return fmt.Errorf("%w: %s", ErrNoScene, m.Error)
	case FailBadRequest:
		return fmt.Errorf("%w: %s", ErrBadRequest, m.Error)
	case FailRefused:
		return fmt.Errorf("%w: %s", ErrRefused, m.Error)
	}
	return fmt.Errorf("%w: %s: %s", ErrUnavailable, m.Code, m.Error)
}

func (cn *conn) complete(id uint64, res callResult, err error) {
	cn.mu.Lock()
	cl := cn.pending[id]
	delete(cn.pending, id)
	cn.mu.Unlock()
	if cl == nil {
		return // not ours (the connection is dying): nothing waits for it
	}
	<-cn.slots
	cl.finish(res, err)
}
