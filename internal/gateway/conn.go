package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/deadline"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/token"
)

// clientConn is one client connection: a reader (this goroutine of serve)
// and a writer goroutine draining a bounded queue.
type clientConn struct {
	g      *Gateway
	nc     net.Conn
	kind   string
	remote string
	log    *zap.Logger
	out    chan []byte

	closeOnce sync.Once
	closing   chan struct{}
	final     []byte // the CLOSE frame, written last
	code      gwproto.Code

	// sess is set by the reader after login; read by the writer's owner
	// only after the reader finished.
	sess    *Session
	limited int // requests in a row refused for rate

	idle deadline.Lazy // the read deadline after login (reader only)
	wdl  deadline.Lazy // the write deadline (writer only)

	// held is a positions push waiting, at most gateway.push_hold, for
	// the writer's next write to carry it (holdPositions).
	heldMu sync.Mutex
	held   []byte
}

func (g *Gateway) serve(nc net.Conn, kind string) {
	ip := remoteIP(nc)
	if !g.limits.admit(ip) {
		g.m.refused.Inc()
		// Tell the client why, briefly; it must not hold our goroutine.
		_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		b, _ := gwproto.AppendMsg(nil, gwproto.TypeClose, gwproto.CodeTooManyConnections, 0,
			gwproto.ErrorBody{Error: "too many connections"})
		_, _ = nc.Write(b)
		nc.Close()
		return
	}
	defer g.limits.release(ip)
	c := &clientConn{g: g, nc: nc, kind: kind, remote: ip, out: make(chan []byte, g.cfg.OutQueue), closing: make(chan struct{}),
		log: g.log.With(zap.String("remote", nc.RemoteAddr().String()), zap.String("transport", kind))}
	g.m.conns.Inc()
	defer g.m.conns.Dec()
	g.limits.track(c, true)
	defer g.limits.track(c, false)
	if g.ctx.Err() != nil || g.draining.Load() {
		c.closeWith(gwproto.CodeShuttingDown, "gateway stopping")
	}
	wdone := make(chan struct{})
	go func() { defer close(wdone); c.writeLoop() }()
	err := c.readLoop()
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.closeWith(gwproto.CodeOK, "")
	default:
		code := gwproto.CodeOf(err, gwproto.CodeBadFrame)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			code = gwproto.CodeIdleTimeout
			if c.sess == nil {
				code = gwproto.CodeHandshakeTimeout
			}
		}
		c.closeWith(code, err.Error())
	}
	<-wdone
	if c.code != gwproto.CodeOK {
		c.log.Info("client closed", zap.Stringer("code", c.code), zap.Error(err), zap.Stringer("session", sessField(c.sess)))
	}
	if c.sess != nil {
		g.reg.detach(c.sess, c)
	}
}

// readLoop reads and handles frames until the connection ends; a non-nil
// error says why the gateway closes it (a *gwproto.Error carries the code).
func (c *clientConn) readLoop() error {
	cfg := c.g.cfg
	r := gwproto.NewReader(c.nc, cfg.MaxFrame)
	// The whole handshake has one deadline: a client trickling bytes
	// (slowloris) is cut at it however it paces them.
	_ = c.nc.SetReadDeadline(time.Now().Add(cfg.LoginTimeout))
	helloDone := false
	for {
		f, err := r.Next()
		if err != nil {
			return err
		}
		if !f.Type.Known() {
			return &gwproto.Error{Code: gwproto.CodeUnknownType, Msg: fmt.Sprintf("unknown message type %d", f.Type)}
		}
		if c.sess != nil {
			c.idle.Extend(cfg.IdleTimeout, c.nc.SetReadDeadline)
		}
		switch {
		case f.Type == gwproto.TypePing:
			c.send(gwproto.TypePong, gwproto.CodeOK, f.ID, nil)
		case f.Type == gwproto.TypePong:
		case !helloDone:
			if f.Type != gwproto.TypeHello {
				return &gwproto.Error{Code: gwproto.CodeProtocol, Msg: fmt.Sprintf("%s before HELLO", f.Type)}
			}
			var h gwproto.Hello
			if err := gwproto.DecodeBody(f, &h); err != nil {
				return err
			}
			if h.Version != gwproto.Version {
				return &gwproto.Error{Code: gwproto.CodeUnsupportedVersion, Msg: fmt.Sprintf("version %d not supported; this gateway speaks %d", h.Version, gwproto.Version)}
			}
			helloDone = true
			c.send(gwproto.TypeWelcome, gwproto.CodeOK, 0, gwproto.Welcome{
				Version: gwproto.Version, Gateway: cfg.ID, MaxFrame: cfg.MaxFrame, Window: cfg.Window,
				Rate: float64(cfg.Rate), Burst: cfg.Burst, SessionTTLMS: cfg.SessionTTL.Milliseconds(), IdleMS: cfg.IdleTimeout.Milliseconds(),
			})
		case c.sess == nil:
			if err := c.login(f); err != nil {
				return err
			}
			c.idle.Extend(cfg.IdleTimeout, c.nc.SetReadDeadline)
		case f.Type == gwproto.TypeRequest:
			if err := c.request(f); err != nil {
				return err
			}
		case f.Type == gwproto.TypeLogout:
			c.g.reg.logout(c.sess, c)
			c.closeWith(gwproto.CodeOK, "logged out")
			return nil
		default:
			return &gwproto.Error{Code: gwproto.CodeProtocol, Msg: fmt.Sprintf("%s is not allowed after login", f.Type)}
		}
	}
}

// login handles LOGIN or RESUME.
func (c *clientConn) login(f gwproto.Frame) error {
	g := c.g
	now := g.now()
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.LoginTimeout+g.cfg.HoldTimeout)
	defer cancel()
	switch f.Type {
	case gwproto.TypeLogin:
		var m gwproto.Login
		if err := gwproto.DecodeBody(f, &m); err != nil {
			return err
		}
		player, err := token.VerifyLogin(g.opt.Secret, m.Token, now)
		if err != nil {
			g.m.logins.WithLabelValues("refused").Inc()
			return tokenError(err)
		}
		s, err := g.reg.login(ctx, player, c)
		if err != nil {
			g.m.logins.WithLabelValues("failed").Inc()
			return err
		}
		g.m.logins.WithLabelValues("ok").Inc()
		c.sess = s
		return nil
	case gwproto.TypeResume:
		var m gwproto.Resume
		if err := gwproto.DecodeBody(f, &m); err != nil {
			return err
		}
		r, err := token.VerifyResume(g.opt.Secret, m.Token, now)
		if err != nil {
			g.m.resumes.WithLabelValues("refused").Inc()
			return tokenError(err)
		}
		s, err := g.reg.resume(ctx, r, c)
		if err != nil {
			g.m.resumes.WithLabelValues("failed").Inc()
			return err
		}
		g.m.resumes.WithLabelValues("ok").Inc()
		c.sess = s
		return nil
	}
	return &gwproto.Error{Code: gwproto.CodeProtocol, Msg: fmt.Sprintf("%s before LOGIN or RESUME", f.Type)}
}

func tokenError(err error) error {
	if errors.Is(err, token.ErrExpired) {
		return &gwproto.Error{Code: gwproto.CodeTokenExpired, Msg: err.Error()}
	}
	return &gwproto.Error{Code: gwproto.CodeBadToken, Msg: err.Error()}
}

// request admits one REQUEST into the session's queue or answers it at
// once with why not.
func (c *clientConn) request(f gwproto.Frame) error {
	s := c.sess
	if f.ID == 0 {
		c.replyErr(0, gwproto.CodeBadRequest, "", "seq must be at least 1")
		return nil
	}
	if err := gwproto.ValidOp(f.Body); err != nil {
		c.replyErr(f.ID, gwproto.CodeBadRequest, "", err.Error())
		return nil
	}
	if !s.limiter.Allow() {
		c.limited++
		if c.limited > c.g.cfg.FloodLimit {
			return &gwproto.Error{Code: gwproto.CodeFlood, Msg: fmt.Sprintf("%d requests in a row over the rate limit", c.limited)}
		}
		c.g.m.replies.WithLabelValues(gwproto.CodeRateLimited.String()).Inc()
		c.replyErr(f.ID, gwproto.CodeRateLimited, "", "over the session's request rate; resend later with the same seq")
		return nil
	}
	c.limited = 0
	if code, msg := s.enqueue(f.ID, append([]byte(nil), f.Body...)); code != gwproto.CodeOK {
		c.g.m.replies.WithLabelValues(code.String()).Inc()
		c.replyErr(f.ID, code, "", msg)
	}
	return nil
}

func (c *clientConn) replyErr(seq uint64, code gwproto.Code, reason, msg string) {
	c.send(gwproto.TypeReply, code, seq, gwproto.ErrorBody{Reason: reason, Error: msg})
}

// send queues a frame; a client whose queue is full is cut (slow_consumer).
func (c *clientConn) send(t gwproto.Type, code gwproto.Code, id uint64, v any) {
	b, err := gwproto.AppendMsg(nil, t, code, id, v)
	if err != nil {
		c.log.Error("encode frame", zap.Error(err))
		return
	}
	c.sendRaw(b)
}

func (c *clientConn) sendRaw(b []byte) {
	select {
	case <-c.closing:
		return
	default:
	}
	if len(b) > c.g.cfg.MaxFrame {
		c.log.Warn("frame over max_frame dropped", zap.Int("bytes", len(b)))
		return
	}
	select {
	case c.out <- b:
	default:
		c.g.m.slow.Inc()
		c.closeWith(gwproto.CodeSlowConsumer, fmt.Sprintf("more than %d frames waiting to be written", cap(c.out)))
	}
}

// closeWith ends the connection: the writer flushes what is queued, writes
// CLOSE with code and msg (unless code is OK and msg empty: the client
// went away) and closes the socket. The first reason wins.
func (c *clientConn) closeWith(code gwproto.Code, msg string) {
	c.closeOnce.Do(func() {
		c.code = code
		if code != gwproto.CodeOK || msg != "" {
			body := gwproto.ErrorBody{Error: msg}
			if code == gwproto.CodeShuttingDown {
				body.MoveTo = c.g.opt.MoveTo
				if c.kind == "websocket" && c.g.opt.MoveToWS != "" {
					body.MoveTo = c.g.opt.MoveToWS
				}
			}
			c.final, _ = gwproto.AppendMsg(nil, gwproto.TypeClose, code, 0, body)
			c.g.m.closes.WithLabelValues(code.String()).Inc()
		}
		close(c.closing)
	})
}

func (c *clientConn) writeLoop() {
	defer c.nc.Close()
	buf := make([]byte, 0, 16<<10)
	for {
		select {
		case b := <-c.out:
			buf = append(buf[:0], b...)
			buf = c.drain(buf)
			buf = c.carryPositions(buf)
			if !c.write(buf) {
				c.closeWith(gwproto.CodeSlowConsumer, "write failed")
				return
			}
		case <-c.closing:
			buf = c.drain(buf[:0])
			buf = append(buf, c.final...)
			if len(buf) > 0 {
				c.write(buf)
			}
			return
		}
	}
}

// drain appends queued frames to buf, up to about 64 KiB: one write for
// many frames when a client has a backlog.
func (c *clientConn) drain(buf []byte) []byte {
	for len(buf) < 64<<10 {
		select {
		case b := <-c.out:
			buf = append(buf, b...)
		default:
			return buf
		}
	}
	return buf
}

// holdPositions keeps a positions push for the writer's next write: a
// client with a request in flight gets its reply within milliseconds, and
// the batch rides in that write instead of costing a write (and the
// client a read) of its own. A batch still held from before goes out now,
// ahead of it. releasePositions sends what nothing carried.
func (c *clientConn) holdPositions(frame []byte) {
	if old := c.swapHeld(frame); old != nil {
		c.sendAlone(old)
	}
}

// releasePositions sends the held positions push, if the writer did not
// carry it.
func (c *clientConn) releasePositions() {
	if frame := c.swapHeld(nil); frame != nil {
		c.sendAlone(frame)
	}
}

// carryPositions appends the held positions push to buf (the writer's
// next write), after the frames already in it.
func (c *clientConn) carryPositions(buf []byte) []byte {
	frame := c.swapHeld(nil)
	if frame == nil {
		return buf
	}
	c.g.m.positions.WithLabelValues("carried").Inc()
	return append(buf, frame...)
}

// swapHeld puts frame in the held slot and returns what was there.
func (c *clientConn) swapHeld(frame []byte) []byte {
	c.heldMu.Lock()
	defer c.heldMu.Unlock()
	old := c.held
	c.held = frame
	return old
}

func (c *clientConn) sendAlone(frame []byte) {
	c.g.m.positions.WithLabelValues("alone").Inc()
	c.sendRaw(frame)
}

func (c *clientConn) write(b []byte) bool {
	c.wdl.Extend(c.g.cfg.WriteTimeout, c.nc.SetWriteDeadline)
	_, err := c.nc.Write(b)
	return err == nil
}

func remoteIP(nc net.Conn) string {
	host, _, err := net.SplitHostPort(nc.RemoteAddr().String())
	if err != nil {
		return nc.RemoteAddr().String()
	}
	return host
}

type sessStringer struct{ s *Session }

func (s sessStringer) String() string {
	if s.s == nil {
		return "-"
	}
	return s.s.player + "/" + s.s.id
}

func sessField(s *Session) fmt.Stringer { return sessStringer{s} }
