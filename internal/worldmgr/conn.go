package worldmgr

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/ctlproto"
)

// sceneConn is the manager's side of one scene process's control
// connection. Its reader reports frames to the loop and its writer sends
// what the loop queued plus heartbeats; the loop alone (the supervisor)
// decides what a frame or a silence means, so the reader has no deadline
// once the peer is authenticated.
type sceneConn struct {
	m       *Manager
	id      connID
	c       *ctlproto.Conn
	remote  string
	session ctlproto.Session
	outbox  chan outgoing
	stop    chan struct{}
	once    sync.Once
}

type outgoing struct {
	t   ctlproto.Type
	msg any
}

func (m *Manager) accept() {
	for {
		nc, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				m.log.Error("control accept", zap.Error(err))
			}
			return
		}
		select {
		case m.connSlots <- struct{}{}:
		default:
			m.refused.note(nc.RemoteAddr().String(), "too many control connections", nil)
			nc.Close()
			continue
		}
		c := &sceneConn{m: m, id: connID(m.nextConn.Add(1)), c: ctlproto.NewConn(nc), remote: nc.RemoteAddr().String(),
			outbox: make(chan outgoing, 8), stop: make(chan struct{})}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer func() { <-m.connSlots }()
			c.read()
		}()
	}
}

func (c *sceneConn) read() {
	m := c.m
	timeout := m.cfg.WorldMgr.HeartbeatTimeout
	defer c.close()

	// Nothing counts before the peer proved it holds the cluster secret.
	nm, err := c.c.SendChallenge(timeout)
	if err != nil {
		return
	}
	f, err := c.c.Receive(timeout)
	if err != nil {
		if errors.Is(err, ctlproto.ErrFrame) {
			m.refused.note(c.remote, "bad first frame", err)
			m.mAuthFailures.Inc()
		}
		return
	}
	h, ns, err := ctlproto.OpenHello(m.secret, nm, f)
	switch {
	case errors.Is(err, ctlproto.ErrBadHello):
		// Authenticated, but out of bounds (an epoch near 2^64): refused,
		// not an attack on the secret.
		m.refused.note(c.remote, "hello out of bounds", err)
		return
	case errors.Is(err, ctlproto.ErrAuth):
		m.refused.note(c.remote, "not authenticated", err)
		m.mAuthFailures.Inc()
		return
	case err != nil:
		m.refused.note(c.remote, "bad first frame", err)
		m.mAuthFailures.Inc()
		return
	}
	c.session = ctlproto.Session{Secret: m.secret, Scene: ns, Manager: nm}
	m.wg.Add(1)
	go func() { defer m.wg.Done(); c.write() }()
	if !m.do(func() { m.helloFrom(c, h) }) {
		return
	}

	log := m.log.With(zap.String("remote", c.remote), zap.String("process", h.Process), zap.Int("scene_pid", h.PID))
	for {
		f, err := c.c.Receive(0)
		if err != nil {
			reason := "control connection closed"
			if errors.Is(err, ctlproto.ErrFrame) {
				reason = "bad frame: " + err.Error()
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				reason = "control connection: " + err.Error()
			}
			m.do(func() {
				delete(m.conns, c.id)
				m.sup.connClosed(time.Now(), c.id, reason)
			})
			return
		}
		switch f.Type {
		case ctlproto.TypeHeartbeat:
			var hb ctlproto.Heartbeat
			if err := f.Decode(&hb); err != nil {
				log.Warn("bad heartbeat", zap.Error(err))
				continue
			}
			if err := hb.Validate(); err != nil {
				log.Warn("heartbeat report out of bounds; ignoring its report", zap.Error(err))
				hb.Scenes = nil
			}
			m.do(func() { m.sup.heartbeat(time.Now(), c.id, hb.Scenes) })
		default:
			log.Warn("unexpected control frame", zap.Stringer("type", f.Type))
		}
	}
}

// write sends queued messages, and heartbeats once the peer is welcomed.
func (c *sceneConn) write() {
	w := c.m.cfg.WorldMgr
	t := time.NewTicker(w.HeartbeatInterval)
	defer t.Stop()
	var beat <-chan time.Time // none before the welcome: the peer waits for it first
	for {
		select {
		case <-c.stop:
			return
		case out := <-c.outbox:
			err := c.c.SendSigned(c.session, out.t, out.msg, w.HeartbeatTimeout)
			if err != nil || out.t == ctlproto.TypeExit {
				c.close()
				return
			}
			if out.t == ctlproto.TypeWelcome {
				beat = t.C
			}
		case <-beat:
			if err := c.c.Send(ctlproto.TypeHeartbeat, ctlproto.Heartbeat{}, w.HeartbeatTimeout); err != nil {
				c.close() // the reader notices and reports
				return
			}
		}
	}
}

// send queues a signed message without blocking the loop; a peer so slow
// that its queue is full is closed.
func (c *sceneConn) send(t ctlproto.Type, msg any) {
	select {
	case c.outbox <- outgoing{t: t, msg: msg}:
	default:
		c.close()
	}
}

func (c *sceneConn) close() {
	c.once.Do(func() {
		close(c.stop)
		c.c.Close()
	})
}

// refusalLog logs each refused peer once, with its address, but at most
// refusalsPerSecond lines a second, so a flood of them cannot flood the
// log; the lines left out are counted in the next one.
type refusalLog struct {
	log        *zap.Logger
	mu         sync.Mutex
	window     time.Time
	lines      int
	suppressed int
}

const refusalsPerSecond = 5

func (r *refusalLog) note(remote, what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.window) >= time.Second {
		r.window, r.lines = now, 0
	}
	if r.lines >= refusalsPerSecond {
		r.suppressed++
		return
	}
	r.lines++
	r.log.Warn("control connection refused: "+what, zap.String("remote", remote), zap.Error(err),
		zap.Int("suppressed_before", r.suppressed))
	r.suppressed = 0
}
