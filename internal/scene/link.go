package scene

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/deadline"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/secret"
)

// The scene side of the gateway link (docs/link.md): a TCP listener on
// scene.host, authenticated connections from gateways, each frame handed to
// the right scene loop. Requests wait on no goroutine: the loop calls back
// with the effects and the reply is queued for the connection's writer,
// which sends everything queued in one write.

const (
	linkHandshakeTimeout = 5 * time.Second
	linkWriteTimeout     = 10 * time.Second
	linkJoinTimeout      = 10 * time.Second
	// linkMaxPushQueue bounds pushes waiting for one connection's writer;
	// past it pushes to that connection are dropped (and counted): a slow
	// gateway must not make the process hold unbounded memory.
	linkMaxPushQueue = 16384
)

type linkServer struct {
	p   *Process
	ln  net.Listener
	sec *secret.Secret
	log *zap.Logger

	maxFrame, maxInflight, maxConns int

	mu     sync.Mutex
	conns  map[*linkConn]struct{}
	groups map[string][]*linkConn // by client id: each push goes to one of a client's connections
	closed bool
	wg     sync.WaitGroup

	mConns   prometheus.Gauge
	mReqs    prometheus.Counter
	mDropped prometheus.Counter
	mClosed  *prometheus.CounterVec
}

func newLinkServer(p *Process, sec *secret.Secret) (*linkServer, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(p.cfg.Scene.Host, "0"))
	if err != nil {
		return nil, fmt.Errorf("gateway link listener: %w", err)
	}
	s := &linkServer{
		p: p, ln: ln, sec: sec, log: p.log.With(zap.String("link", ln.Addr().String())),
		maxFrame: p.cfg.Scene.LinkMaxFrame, maxInflight: p.cfg.Scene.LinkMaxInflight, maxConns: p.cfg.Scene.LinkMaxConns,
		conns: map[*linkConn]struct{}{}, groups: map[string][]*linkConn{},
		mConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "respawn_scene_link_connections", Help: "Authenticated gateway link connections.",
		}),
		mReqs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_scene_link_requests_total", Help: "Requests received over the gateway link.",
		}),
		mDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_scene_link_pushes_dropped_total", Help: "Pushes dropped because a gateway connection's queue was full.",
		}),
		mClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "respawn_scene_link_closed_total", Help: "Gateway link connections closed, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{"conn_limit", "auth", "garbage", "eof"} {
		s.mClosed.WithLabelValues(r) // exported at zero before the first close
	}
	if s.maxFrame <= 0 {
		s.maxFrame = scenelink.DefaultMaxFrame
	}
	if s.maxInflight <= 0 {
		s.maxInflight = scenelink.DefaultMaxInflight
	}
	if s.maxConns <= 0 {
		s.maxConns = scenelink.DefaultMaxConns
	}
	return s, nil
}

func (s *linkServer) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.mConns, s.mReqs, s.mDropped, s.mClosed}
}

// Addr is the link's listen address.
func (s *linkServer) Addr() string { return s.ln.Addr().String() }

func (s *linkServer) serve() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("gateway link accept", zap.Error(err))
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if len(s.conns) >= s.maxConns {
			s.mu.Unlock()
			s.log.Warn("gateway link refused: too many connections", zap.String("remote", nc.RemoteAddr().String()), zap.Int("limit", s.maxConns))
			s.mClosed.WithLabelValues("conn_limit").Inc()
			refuse(nc, fmt.Sprintf("too many connections (limit %d)", s.maxConns))
			continue
		}
		c := &linkConn{s: s, nc: nc, wakeCh: make(chan struct{}, 1), done: make(chan struct{}),
			log: s.log.With(zap.String("remote", nc.RemoteAddr().String()))}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() { defer s.wg.Done(); c.run() }()
	}
}

func refuse(nc net.Conn, reason string) {
	var e scenelink.Encoder
	(&scenelink.CloseMsg{Reason: reason}).Append(&e)
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = nc.Write(e.B)
	nc.Close()
}

// close stops accepting, closes every connection and waits for them.
func (s *linkServer) close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*linkConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.shut("scene process stopping")
	}
	s.wg.Wait()
}

func (s *linkServer) joined(c *linkConn) {
	s.mu.Lock()
	s.groups[c.clientID] = append(s.groups[c.clientID], c)
	s.mu.Unlock()
	s.mConns.Inc()
}

func (s *linkServer) remove(c *linkConn, authed bool) {
	s.mu.Lock()
	delete(s.conns, c)
	if authed {
		g := s.groups[c.clientID]
		for i, o := range g {
			if o == c {
				g = append(g[:i], g[i+1:]...)
				break
			}
		}
		if len(g) == 0 {
			delete(s.groups, c.clientID)
		} else {
			s.groups[c.clientID] = g
		}
	}
	s.mu.Unlock()
	if authed {
		s.mConns.Dec()
	}
}

// push sends a client-facing effect to one connection of every gateway;
// each gateway filters by its own sessions. It runs on the scene's loop,
// so it encodes once and never blocks.
func (s *linkServer) push(l *loop, e game.Effect) {
	s.mu.Lock()
	if len(s.groups) == 0 {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	p := scenelink.Push{Scene: l.id}
	var body any
	var frame []byte
	switch e := e.(type) {
	case game.Broadcast:
		p.Kind, body = "notice", e.Body
	case game.ChatOut:
		p.Kind, body = "chat", struct {
			From string `json:"from"`
			Name string `json:"name"`
			Text string `json:"text"`
		}{e.From, e.Name, e.Text}
	case game.PositionChanged:
		frame = positionFrame(l.id, e)
	case game.Kick:
		p.Kind, p.Player, body = "kick", e.Player, struct {
			Reason string `json:"reason"`
		}{e.Reason}
	case game.Notify:
		p.Kind, p.Player, body = "notify", e.Player, e.Body
	default:
		return
	}
	if frame == nil {
		raw, err := json.Marshal(body)
		if err != nil {
			l.log.Error("push not encoded", zap.String("kind", p.Kind), zap.Error(err))
			return
		}
		p.Body = raw
		var enc scenelink.Encoder
		p.Append(&enc)
		frame = enc.B
	}
	s.mu.Lock()
	for _, g := range s.groups {
		if !g[0].queuePush(l, frame) {
			s.mDropped.Inc()
		}
	}
	s.mu.Unlock()
}

// positionFrame encodes a position push (one per move) with its body
// written by hand (jsonfast.go), not by json.Marshal: the frame, shared by
// every connection's queue, is the only allocation.
func positionFrame(scene string, e game.PositionChanged) []byte {
	var small [128]byte
	body := appendPositionBody(small[:0], e)
	p := scenelink.Push{Scene: scene, Kind: "position", Body: body}
	enc := scenelink.Encoder{B: make([]byte, 0, 5+4*binary.MaxVarintLen32+len(p.Scene)+len(p.Kind)+len(body))}
	p.Append(&enc)
	return enc.B
}

// linkConn is one gateway connection.
type linkConn struct {
	s        *linkServer
	nc       net.Conn
	log      *zap.Logger
	clientID string
	inflight atomic.Int64

	mu     sync.Mutex
	queue  []outFrame
	pushes int
	wakeCh chan struct{}
	done   chan struct{}
	once   sync.Once
	reason string
}

// outFrame is a frame waiting for the writer: a reply to encode there (off
// the scene loop) or bytes already encoded.
type outFrame struct {
	raw   []byte
	id    uint64
	rep   game.Reply // by value: the queue's slots are reused, a pointer was an allocation per reply
	isRep bool
}

// shut closes the connection once, telling the peer why.
func (c *linkConn) shut(reason string) {
	c.once.Do(func() {
		c.mu.Lock()
		c.reason = reason
		c.mu.Unlock()
		close(c.done)
	})
}

func (c *linkConn) run() {
	authed := false
	defer func() {
		c.nc.Close()
		c.s.remove(c, authed)
	}()
	r := bufio.NewReaderSize(c.nc, 64<<10)
	if err := c.handshake(r); err != nil {
		c.log.Warn("gateway link refused", zap.Error(err))
		c.s.mClosed.WithLabelValues("auth").Inc()
		return
	}
	authed = true
	c.s.joined(c)
	wdone := make(chan struct{})
	go func() { defer close(wdone); c.writeLoop() }()
	go func() {
		// Unblock the reader when the connection is shut from elsewhere.
		<-c.done
		_ = c.nc.SetReadDeadline(time.Now())
	}()
	reason := c.readLoop(r)
	c.shut(reason)
	<-wdone
	c.mu.Lock()
	reason = c.reason
	c.mu.Unlock()
	c.log.Info("gateway link closed", zap.String("reason", reason))
}

func (c *linkConn) handshake(r *bufio.Reader) error {
	_ = c.nc.SetDeadline(time.Now().Add(linkHandshakeTimeout))
	typ, body, _, err := scenelink.ReadFrame(r, 4<<10, nil)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	var ch scenelink.ClientHello
	if typ != scenelink.TClientHello {
		refuse(c.nc, "expected a client hello")
		return fmt.Errorf("handshake: frame type %d, want client hello", typ)
	}
	if err := ch.Decode(body); err != nil {
		refuse(c.nc, "bad client hello")
		return fmt.Errorf("handshake: %w", err)
	}
	if ch.Version != scenelink.Version {
		refuse(c.nc, fmt.Sprintf("protocol version %d, this scene speaks %d", ch.Version, scenelink.Version))
		return fmt.Errorf("handshake: protocol version %d", ch.Version)
	}
	if ch.ClientID == "" || len(ch.ClientID) > 64 {
		refuse(c.nc, "bad client id")
		return errors.New("handshake: bad client id")
	}
	snonce, err := scenelink.NewNonce()
	if err != nil {
		return err
	}
	var e scenelink.Encoder
	(&scenelink.ServerHello{Nonce: snonce, MAC: scenelink.SceneProof(c.s.sec, ch.Nonce, snonce),
		Process: c.s.p.spec.Name, Epoch: c.s.p.opt.Epoch}).Append(&e)
	if _, err := c.nc.Write(e.B); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	typ, body, _, err = scenelink.ReadFrame(r, 4<<10, nil)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	var pr scenelink.ClientProof
	if typ != scenelink.TClientProof || pr.Decode(body) != nil {
		refuse(c.nc, "expected a client proof")
		return fmt.Errorf("handshake: frame type %d, want client proof", typ)
	}
	if !scenelink.VerifyGateway(c.s.sec, pr.MAC, ch.Nonce, snonce) {
		refuse(c.nc, "authentication failed")
		return errors.New("handshake: the gateway does not hold the cluster secret")
	}
	e.B = e.B[:0]
	(&scenelink.Welcome{MaxInflight: uint64(c.s.maxInflight), MaxFrame: uint64(c.s.maxFrame)}).Append(&e)
	if _, err := c.nc.Write(e.B); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.clientID = ch.ClientID
	return nil
}

// readLoop handles frames until the connection ends; it returns why.
func (c *linkConn) readLoop(r *bufio.Reader) string {
	var buf []byte
	for {
		typ, body, nbuf, err := scenelink.ReadFrame(r, c.s.maxFrame, buf)
		buf = nbuf
		if err != nil {
			select {
			case <-c.done:
				return "closed"
			default:
			}
			if errors.Is(err, scenelink.ErrFrame) {
				c.s.mClosed.WithLabelValues("garbage").Inc()
				return "garbage: " + err.Error()
			}
			c.s.mClosed.WithLabelValues("eof").Inc()
			return "read: " + err.Error()
		}
		if reason := c.handle(typ, body); reason != "" {
			c.s.mClosed.WithLabelValues("garbage").Inc()
			return reason
		}
	}
}

// handle dispatches one frame; a non-empty result closes the connection.
func (c *linkConn) handle(typ byte, body []byte) string {
	switch typ {
	case scenelink.TRequest:
		var m scenelink.Request
		if err := m.Decode(body); err != nil {
			return "garbage: " + err.Error()
		}
		if c.inflight.Add(1) > int64(c.s.maxInflight) {
			return fmt.Sprintf("more than %d requests in flight", c.s.maxInflight)
		}
		c.s.mReqs.Inc()
		c.request(m)
	case scenelink.TJoin, scenelink.TLeave:
		var m scenelink.Session
		if err := m.Decode(body); err != nil {
			return "garbage: " + err.Error()
		}
		if c.inflight.Add(1) > int64(c.s.maxInflight) {
			return fmt.Sprintf("more than %d requests in flight", c.s.maxInflight)
		}
		// Joins and leaves wait on the data server: their own goroutine,
		// bounded by the in-flight limit.
		if typ == scenelink.TJoin {
			go c.join(m)
		} else {
			go c.leave(m)
		}
	case scenelink.TClose:
		var m scenelink.CloseMsg
		_ = m.Decode(body)
		return "closed by the gateway: " + m.Reason
	default:
		return fmt.Sprintf("garbage: unexpected frame type %d", typ)
	}
	return ""
}

func (c *linkConn) fail(id uint64, typ byte, code, msg string) {
	c.failBy(nil, id, typ, code, msg)
}

// failBy is fail from loop l's goroutine (nil: any other).
func (c *linkConn) failBy(l *loop, id uint64, typ byte, code, msg string) {
	var e scenelink.Encoder
	(&scenelink.Fail{ID: id, Code: code, Error: msg}).Append(&e, typ)
	c.queueReply(l, outFrame{raw: e.B})
}

func (c *linkConn) request(m scenelink.Request) {
	l, code, err := c.s.p.linkLoop(m.Scene)
	if err != nil {
		c.fail(m.ID, scenelink.TFail, code, err.Error())
		return
	}
	op, err := DecodeOp(m.Op)
	if err != nil {
		c.fail(m.ID, scenelink.TFail, scenelink.FailBadRequest, err.Error())
		return
	}
	l.submitLink(game.Request{Session: m.Session, Player: m.Player, Seq: m.Seq, Op: op}, c, m.ID)
}

// answer queues the reply to request id (ev, a game.Request) from its
// effects, or a failure. It runs on loop l's goroutine (nil: the loop has
// stopped) and does not block.
func (c *linkConn) answer(l *loop, id uint64, ev game.Event, effs []game.Effect, err error) {
	if err != nil {
		code := scenelink.FailUnavailable
		if errors.Is(err, errUnloggable) {
			code = scenelink.FailBadRequest
		}
		c.failBy(l, id, scenelink.TFail, code, err.Error())
		return
	}
	req, _ := ev.(game.Request)
	for _, e := range effs {
		if r, ok := e.(game.Reply); ok && r.Session == req.Session && r.Player == req.Player {
			c.queueReply(l, outFrame{id: id, rep: r, isRep: true})
			return
		}
	}
	c.failBy(l, id, scenelink.TFail, scenelink.FailUnavailable, "the scene gave no answer")
}

// heldBy finds the scene named in a data server's not-owner refusal.
var heldBy = regexp.MustCompile(`held by scene (\S+) epoch`)

func (c *linkConn) join(m scenelink.Session) {
	jr, code, err := c.s.p.join(m.Scene, m.Player, m.Session)
	if err != nil {
		c.fail(m.ID, scenelink.TFail, code, err.Error())
		return
	}
	var e scenelink.Encoder
	(&scenelink.JoinReply{ID: m.ID, JoinResult: jr}).Append(&e)
	c.queueReply(nil, outFrame{raw: e.B})
}

func (c *linkConn) leave(m scenelink.Session) {
	code, err := c.s.p.leave(m.Scene, m.Player, m.Session)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	c.fail(m.ID, scenelink.TLeaveReply, code, msg)
}

// join brings a player into scene (loading them under the scene's lease
// if not present) and attaches session. It returns a scenelink Fail code
// with an error.
func (p *Process) join(scene, player, session string) (scenelink.JoinResult, string, error) {
	jr := scenelink.JoinResult{Scene: scene}
	l, code, err := p.linkLoop(scene)
	if err != nil {
		return jr, code, err
	}
	ctx, cancel := context.WithTimeout(p.ctx, linkJoinTimeout)
	defer cancel()
	// A join ends with an attach that took: the player's view is read in
	// the same turn of the loop (one trip through it, not two; a failover
	// re-joins every session of the scene at once).
	var view game.PlayerView
	var inView bool
	attach := func() (game.Attached, error) {
		effs, err := l.submitThen(ctx, game.Attach{Player: player, Session: session}, func(st *game.Scene, _ []game.Effect) {
			view, inView = st.PlayerView(player)
		})
		if err != nil {
			return game.Attached{}, err
		}
		for _, e := range effs {
			if a, ok := e.(game.Attached); ok {
				return a, nil
			}
		}
		return game.Attached{}, errors.New("the scene gave no answer")
	}
	joined := func(a game.Attached) (scenelink.JoinResult, string, error) {
		jr.LastSeq = a.LastSeq
		if inView {
			raw, err := json.Marshal(view)
			if err != nil {
				return jr, scenelink.FailUnavailable, err
			}
			jr.State = raw
		}
		return jr, "", nil
	}
	a, err := attach()
	if err != nil {
		return jr, scenelink.FailUnavailable, err
	}
	switch {
	case a.Code == game.ErrBadRequest:
		return jr, scenelink.FailBadRequest, fmt.Errorf("player %q session %q: bad ids", player, session)
	case a.Code == game.ErrNotInScene:
		// A player travelling away from here (in this scene's outbox) is
		// followed once the destination has them: until the handover this
		// scene may still hold the lease, and loading would enter a second
		// copy of the player beside the transfer.
		moved, err := p.awaitDeparture(ctx, l, player)
		if err != nil {
			return jr, scenelink.FailUnavailable, err
		}
		if moved == "" {
			moved = a.Moved // the session record says where they went
		}
		if moved != "" && moved != scene {
			jr.Moved = moved
			return jr, "", nil
		}
		if p.host.data == nil {
			return jr, scenelink.FailUnavailable, errors.New("no data server link")
		}
		ld, err := p.host.data.client(l).Load(ctx, player)
		switch {
		case errors.Is(err, dataclient.ErrNotOwner):
			if m := heldBy.FindStringSubmatch(err.Error()); m != nil && m[1] != scene {
				jr.Moved = m[1]
				return jr, "", nil
			}
			return jr, scenelink.FailRefused, err
		case errors.Is(err, dataclient.ErrUnavailable):
			return jr, scenelink.FailUnavailable, err
		case err != nil:
			return jr, scenelink.FailRefused, err
		}
		if ld.HandedOver || p.host.isArriving(player) {
			// A travel into this scene whose transfer has not been applied
			// yet: it carries the session (its last seq), so wait for it
			// rather than entering a copy without the session, which would
			// restart the session's seqs at 0 here.
			a, err = p.awaitArrival(ctx, l, player, attach)
			if err != nil {
				return jr, scenelink.FailUnavailable, err
			}
			return joined(a)
		}
		if last := ld.Data.Scene; last != "" && last != scene {
			// The data server says they were last elsewhere: give the lease
			// back and send the gateway there.
			if err := p.host.data.client(l).Release(ctx, player, ld.Version, nil); err != nil {
				return jr, scenelink.FailUnavailable, err
			}
			jr.Moved = last
			return jr, "", nil
		}
		effs, err := l.submit(ctx, game.Enter{Player: ld.Data, Version: ld.Version})
		if err != nil {
			return jr, scenelink.FailUnavailable, err
		}
		for _, e := range effs {
			switch e := e.(type) {
			case game.Warn:
				return jr, scenelink.FailRefused, errors.New(e.Msg)
			case game.Kick:
				return jr, scenelink.FailRefused, errors.New(e.Reason)
			}
		}
		if a, err = attach(); err != nil {
			return jr, scenelink.FailUnavailable, err
		}
		if a.Code != "" {
			return jr, scenelink.FailRefused, fmt.Errorf("player %s did not stay in scene %s: %s", player, scene, a.Code)
		}
	}
	return joined(a)
}

// awaitDeparture waits while player is in l's outbox (travelling away,
// not yet acknowledged by the destination) and returns where they went, or
// "" if they were not travelling from here.
func (p *Process) awaitDeparture(ctx context.Context, l *loop, player string) (string, error) {
	var t *time.Ticker
	moved := ""
	for {
		pending := false
		if err := l.read(ctx, func(st *game.Scene) {
			for _, tr := range st.PendingTransfers() {
				if tr.Player.ID == player {
					pending, moved = true, tr.To
				}
			}
		}); err != nil {
			return "", err
		}
		if !pending {
			return moved, nil
		}
		if t == nil {
			t = time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", fmt.Errorf("player %s: the transfer out of scene %s to %s is not acknowledged yet: %w", player, l.id, moved, ctx.Err())
		}
	}
}

// awaitArrival attaches once the travelling player's transfer has been
// applied here (it is in flight, or resent by its source's recovery), or
// fails when ctx ends: the gateway then retries the join. It polls with
// reads, which are not logged.
func (p *Process) awaitArrival(ctx context.Context, l *loop, player string, attach func() (game.Attached, error)) (game.Attached, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		var here bool
		if err := l.read(ctx, func(st *game.Scene) { _, here = st.PlayerView(player) }); err != nil {
			return game.Attached{}, err
		}
		if here {
			a, err := attach()
			if err == nil && a.Code != "" {
				err = fmt.Errorf("player %s: %s", player, a.Code)
			}
			return a, err
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return game.Attached{}, fmt.Errorf("player %s: the transfer into scene %s did not arrive: %w", player, l.id, ctx.Err())
		}
	}
}

// leave takes the player out if session is still current, waits until the
// final save is durable, and gives the lease back so any scene may load
// the player at their next login. A leave that could not finish (the save
// or the release not answered in time) is kept, and the gateway's retry,
// which finds the player already out of the scene, finishes it.
func (p *Process) leave(scene, player, session string) (string, error) {
	l, code, err := p.linkLoop(scene)
	if err != nil {
		return code, err
	}
	if session == "" {
		return scenelink.FailBadRequest, errors.New("leave needs the session")
	}
	ctx, cancel := context.WithTimeout(p.ctx, linkJoinTimeout)
	defer cancel()
	d := p.host.data
	var w *ackWaiter
	if d != nil {
		w = d.expect(player)
	}
	effs, err := l.submit(ctx, game.Leave{Player: player, Session: session})
	if err != nil {
		d.forget(player, w)
		return scenelink.FailUnavailable, err
	}
	left := false
	var version uint64
	for _, e := range effs {
		switch e := e.(type) {
		case game.Broadcast:
			left = left || (e.Body.Type == "player_left" && e.Body.ID == player)
		case game.Save:
			if e.Player.ID == player {
				version = e.Version
			}
		}
	}
	if d == nil {
		return "", nil
	}
	if !left {
		d.forget(player, w)
		u, ok, err := d.resumeLeave(l.id, player, session)
		if err != nil {
			return scenelink.FailUnavailable, err
		}
		if ok {
			return p.finishLeave(ctx, l, player, u, true)
		}
		return "", nil // not here, or a stale leave: nothing to do
	}
	u := unreleased{session: session, version: version, w: w, hasSave: version != 0}
	return p.finishLeave(ctx, l, player, u, d.startLeave(l.id, player, &u))
}

// finishLeave waits for the leave's final save and releases the lease; if
// either is not answered in time the leave is kept for the retry.
// tracked: u is in the table of unfinished leaves (startLeave,
// resumeLeave) and is kept there or forgotten here.
func (p *Process) finishLeave(ctx context.Context, l *loop, player string, u unreleased, tracked bool) (string, error) {
	d := p.host.data
	end := func(finished bool) {
		switch {
		case tracked:
			d.endLeave(l.id, player, u, finished)
		case !finished:
			d.forget(player, u.w) // untracked: nobody finishes it
		}
	}
	if u.hasSave && !u.saved {
		select {
		case err := <-d.await(player, u.w, u.version):
			if err != nil {
				d.forget(player, u.w)
				end(true)
				return scenelink.FailUnavailable, err // refused: a newer owner has the player
			}
			u.saved = true
		case <-ctx.Done():
			end(false)
			err := fmt.Errorf("final save of player %s version %d not acknowledged: %w", player, u.version, ctx.Err())
			p.log.Info("leave not finished in time; kept for the gateway's retry", zap.String("scene", l.id), zap.String("player", player), zap.Error(err))
			return scenelink.FailUnavailable, err
		}
	}
	d.forget(player, u.w)
	if err := d.client(l).Release(ctx, player, u.version, nil); err != nil {
		end(false)
		p.log.Info("leave not finished in time; kept for the gateway's retry", zap.String("scene", l.id), zap.String("player", player), zap.Error(err))
		return scenelink.FailUnavailable, err
	}
	end(true)
	return "", nil
}

// queueReply queues an answer; answers are bounded by the in-flight limit,
// so they are never dropped. From a loop's goroutine (l not nil) the
// writer is woken when the loop is done with what it took (loop.kick).
func (c *linkConn) queueReply(l *loop, f outFrame) {
	c.inflight.Add(-1)
	c.mu.Lock()
	c.queue = append(c.queue, f)
	c.mu.Unlock()
	c.wakeBy(l)
}

// queuePush queues an encoded push from loop l; false if the connection's
// push queue is full.
func (c *linkConn) queuePush(l *loop, frame []byte) bool {
	c.mu.Lock()
	if c.pushes >= linkMaxPushQueue {
		c.mu.Unlock()
		return false
	}
	c.pushes++
	c.queue = append(c.queue, outFrame{raw: frame})
	c.mu.Unlock()
	c.wakeBy(l)
	return true
}

func (c *linkConn) wakeBy(l *loop) {
	if l != nil {
		l.wakeLater(c)
		return
	}
	c.wake()
}

// wake tells the writer there is something to send.
func (c *linkConn) wake() {
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
}

func (c *linkConn) writeLoop() {
	var batch []outFrame
	var enc scenelink.Encoder
	var wdl deadline.Lazy
	for {
		select {
		case <-c.wakeCh:
		case <-c.done:
			c.mu.Lock()
			reason := c.reason
			c.mu.Unlock()
			enc.B = enc.B[:0]
			(&scenelink.CloseMsg{Reason: reason}).Append(&enc)
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.nc.Write(enc.B)
			return
		}
		// Let the loops finish what they are answering: one write then
		// carries more replies (fewer syscalls under load, no delay idle).
		runtime.Gosched()
		c.mu.Lock()
		batch, c.queue = c.queue, batch[:0]
		c.pushes = 0
		c.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		enc.B = enc.B[:0]
		for i := range batch {
			f := &batch[i]
			if !f.isRep {
				enc.B = append(enc.B, f.raw...)
			} else if err := appendReply(&enc, f.id, &f.rep); err != nil {
				c.log.Error("reply not encoded", zap.Uint64("seq", f.rep.Seq), zap.Error(err))
			}
			*f = outFrame{}
		}
		wdl.Extend(linkWriteTimeout, c.nc.SetWriteDeadline)
		if _, err := c.nc.Write(enc.B); err != nil {
			c.shut("write: " + err.Error())
			return
		}
		if cap(enc.B) > 4<<20 {
			enc.B = nil // do not pin a burst's buffer
		}
	}
}

func appendReply(enc *scenelink.Encoder, id uint64, r *game.Reply) error {
	m := scenelink.ReplyMsg{ID: id, Reply: scenelink.Reply{Seq: r.Seq, Resent: r.Resent, Moved: r.Moved}}
	if er, ok := r.Body.(game.ErrorResult); ok {
		m.Code, m.Error = er.Code, er.Error
	}
	var small [128]byte
	body, err := game.AppendResultJSON(small[:0], r.Body)
	if err != nil {
		return err
	}
	m.Body = body
	m.Append(enc)
	return nil
}
