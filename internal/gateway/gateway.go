// Package gateway is the client gateway: it accepts game clients over TCP
// and WebSocket (internal/gwproto frames), logs them in with signed tokens,
// brings each player into the scene the data server says they were last
// in, and relays their requests to the scene process hosting that scene
// over a scenelink.Client per process, routed from the replica of the
// scene table.
//
// A scene process that dies costs clients latency, never their
// connection: the gateway holds the scene's requests (bounded in count,
// bytes and time), follows the scene table to the new process, re-joins
// and resends what was not answered with the original seqs; the scene's
// per-player session record makes that exactly once. A gateway that dies
// costs clients one reconnect: they resume their session on any gateway
// with the resume token.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/console"
	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/replica"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/testhook"
)

// Options configure a Gateway.
type Options struct {
	// Config is this gateway's settings (config.GatewayInstance).
	Config config.Gateway
	// DefaultScene is where a player with no recorded scene enters.
	DefaultScene string
	Secret       *secret.Secret
	// OperatorToken lets the gateway create the character of a token's
	// player that the data server does not know.
	OperatorToken string
	// NATS reaches the scene table, the data server and the other
	// gateways.
	NATS       *nats.Conn
	Log        *zap.Logger
	Registerer prometheus.Registerer
	// Now is the clock for tokens (tests); nil = time.Now.
	Now func() time.Time
	// MoveTo is another gateway's client address, sent with CLOSE
	// shutting_down so this one's clients resume there when it stops
	// (an upgrade); empty: they pick from their own list.
	MoveTo string
	// MoveToWS is the same gateway's WebSocket URL (ws://host:port/),
	// sent instead of MoveTo to WebSocket clients; empty: MoveTo.
	MoveToWS string
}

// Gateway is one gateway. New prepares it, Start listens, Shutdown stops
// it (idempotent).
type Gateway struct {
	opt  Options
	cfg  config.Gateway
	log  *zap.Logger
	now  func() time.Time
	m    *metrics
	reg  *registry
	rt   *router
	pos  *positions
	loc  *locator
	ann  *announcer
	ctx  context.Context
	stop context.CancelFunc

	tcp    net.Listener
	ws     net.Listener
	wsSrv  *http.Server
	limits *connLimits

	// resumeGrace is added to the session TTL before a dropped session
	// leaves its scene: its resume token (valid for the TTL) can then never
	// find the player gone.
	resumeGrace time.Duration

	wg           sync.WaitGroup
	shutdownOnce sync.Once
	// draining is set when the drain starts: new connections are closed
	// at once and /healthz says so.
	draining  atomic.Bool
	drainOnce sync.Once
	drained   DrainResult
	// breakResend: test hook RESPAWN_TEST_BREAK=resend (package testhook).
	breakResend bool
	// crash: armed crash points (RESPAWN_TEST_CRASH, package crashpoint).
	crash *crashpoint.Points
}

// New validates the options and builds a gateway; it does not listen yet.
func New(opt Options) (*Gateway, error) {
	if opt.Secret == nil {
		return nil, errors.New("gateway: no cluster secret")
	}
	if opt.NATS == nil {
		return nil, errors.New("gateway: no NATS connection")
	}
	if opt.DefaultScene == "" {
		return nil, errors.New("gateway: no default scene")
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Registerer == nil {
		opt.Registerer = prometheus.NewRegistry()
	}
	ctx, stop := context.WithCancel(context.Background())
	g := &Gateway{opt: opt, cfg: opt.Config, log: opt.Log, now: opt.Now, ctx: ctx, stop: stop, resumeGrace: 2 * time.Second,
		limits: &connLimits{max: opt.Config.MaxConns, perIP: opt.Config.MaxConnsPerIP, byIP: map[string]int{}, open: map[*clientConn]struct{}{}}}
	m, err := newMetrics(opt.Registerer, g)
	if err != nil {
		stop()
		return nil, err
	}
	g.m = m
	g.reg = newRegistry(g)
	g.pos = newPositions(g)
	g.loc = &locator{g: g}
	g.rt = newRouter(g)
	breaks, err := testhook.FromEnv()
	if err != nil {
		stop()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if g.breakResend = breaks.Has(testhook.Resend); g.breakResend {
		g.log.Warn("TEST HOOK: requests whose scene connection broke are dropped, not resent", zap.String("env", testhook.Env))
	}
	if g.crash, err = crashpoint.FromEnv(); err != nil {
		stop()
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if armed := g.crash.Armed(); len(armed) > 0 {
		g.log.Warn("TEST HOOK: crash points armed", zap.Strings("points", armed), zap.String("env", crashpoint.Env))
	}
	return g, nil
}

// Start subscribes to the scene table and the other gateways and starts
// listening. It returns once the listeners are bound; the table may still
// be syncing (logins wait for it).
func (g *Gateway) Start() error {
	table, err := replica.NewReader[modules.SceneRow](g.ctx, g.opt.NATS, modules.SceneTable, replica.RoleGateway,
		replica.ReaderOptions{Logger: g.log, Registerer: g.opt.Registerer})
	if err != nil {
		return fmt.Errorf("gateway: scene table: %w", err)
	}
	g.rt.start(table)
	if g.ann, err = newAnnouncer(g); err != nil {
		g.Shutdown()
		return err
	}
	g.tcp, err = net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		g.Shutdown()
		return fmt.Errorf("gateway %s: listen %s: %w", g.cfg.ID, g.cfg.Listen, err)
	}
	if g.cfg.WebSocket != "" {
		if g.ws, err = net.Listen("tcp", g.cfg.WebSocket); err != nil {
			g.Shutdown()
			return fmt.Errorf("gateway %s: listen websocket %s: %w", g.cfg.ID, g.cfg.WebSocket, err)
		}
		g.wsSrv = &http.Server{Handler: http.HandlerFunc(g.serveWebSocket), ReadHeaderTimeout: g.cfg.LoginTimeout}
		g.wg.Add(1)
		go func() { defer g.wg.Done(); _ = g.wsSrv.Serve(g.ws) }()
	}
	g.wg.Add(2)
	go func() { defer g.wg.Done(); g.acceptTCP() }()
	go func() { defer g.wg.Done(); g.pos.run(g.ctx) }()
	g.log.Info("gateway listening", zap.String("gateway", g.cfg.ID), zap.String("tcp", g.tcp.Addr().String()),
		zap.String("websocket", g.cfg.WebSocket))
	return nil
}

// Addr is the TCP listener's address.
func (g *Gateway) Addr() string { return g.tcp.Addr().String() }

// WebSocketAddr is the WebSocket listener's address ("" if disabled).
func (g *Gateway) WebSocketAddr() string {
	if g.ws == nil {
		return ""
	}
	return g.ws.Addr().String()
}

// Healthy reports whether the gateway can route: its scene table replica
// has synced.
func (g *Gateway) Healthy() error {
	if g.draining.Load() {
		return errors.New("draining: clients are moving to another gateway")
	}
	if !g.rt.synced() {
		return errors.New("scene table replica not synced yet")
	}
	return nil
}

// Drain stops accepting and moves every client to another gateway (see
// drain), returning when they have gone or gateway.drain_timeout passed.
// Only the first call drains; later ones return its result.
func (g *Gateway) Drain() DrainResult {
	g.drainOnce.Do(func() { g.drained = g.drain() })
	return g.drained
}

// Shutdown drains the gateway, then closes what is left (CLOSE
// shutting_down, so those clients resume elsewhere too) without taking
// players out of their scenes: the sessions stay in the scenes for their
// clients to resume. Safe to call more than once.
func (g *Gateway) Shutdown() {
	g.shutdownOnce.Do(func() {
		g.Drain()
		g.stop()
		g.reg.closeAll()
		g.limits.closeAll(gwproto.CodeShuttingDown, "gateway stopping")
		if g.ann != nil {
			g.ann.close()
		}
		g.rt.close()
		g.wg.Wait()
	})
}

func (g *Gateway) acceptTCP() {
	var delay time.Duration
	for {
		nc, err := g.tcp.Accept()
		if err != nil {
			if g.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			g.log.Warn("accept failed", zap.Error(err), zap.Duration("retry_in", delay))
			time.Sleep(delay) // bounded backoff of the accept loop
			continue
		}
		delay = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		g.wg.Add(1)
		go func() { defer g.wg.Done(); g.serve(nc, "tcp") }()
	}
}

func (g *Gateway) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		// A browser opening the WebSocket address gets the play client:
		// same origin and port as the socket it then opens.
		console.PlayPage(w, r)
		return
	}
	// Tokens travel in frames, not cookies, so another origin gains
	// nothing from opening a socket: accept browser clients from anywhere.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept already answered the HTTP request
	}
	// Not g.ctx: cancelling that would close the socket before the writer
	// sends CLOSE shutting_down at shutdown. The writer closes it (with a
	// WebSocket close, status 1000) after its last frame.
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	g.wg.Add(1)
	defer g.wg.Done()
	g.serve(nc, "websocket")
}

// newID returns a random 128-bit id in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

// connLimits bounds connections per gateway and per client address.
type connLimits struct {
	mu    sync.Mutex
	max   int
	perIP int
	total int
	byIP  map[string]int
	open  map[*clientConn]struct{} // every connection, to close them at shutdown
}

func (l *connLimits) track(c *clientConn, on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on {
		l.open[c] = struct{}{}
	} else {
		delete(l.open, c)
	}
}

// closeAll closes every connection (logged in or not) with code.
func (l *connLimits) closeAll(code gwproto.Code, msg string) {
	l.mu.Lock()
	all := make([]*clientConn, 0, len(l.open))
	for c := range l.open {
		all = append(all, c)
	}
	l.mu.Unlock()
	for _, c := range all {
		c.closeWith(code, msg)
	}
}

func (l *connLimits) admit(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.byIP[ip] >= l.perIP {
		return false
	}
	l.total++
	l.byIP[ip]++
	return true
}

func (l *connLimits) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

func (l *connLimits) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
