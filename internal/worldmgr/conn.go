package worldmgr

import (
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
)

// sceneConn is the manager's side of one scene process's control
// connection. Its reader and heartbeat goroutines report to the loop; the
// loop alone decides what a frame or a silence means.
type sceneConn struct {
	m       *Manager
	c       *ctlproto.Conn
	process string // set by the loop on hello
	stop    chan struct{}
	once    sync.Once
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
		c := &sceneConn{m: m, c: ctlproto.NewConn(nc), stop: make(chan struct{})}
		m.wg.Add(1)
		go func() { defer m.wg.Done(); c.read() }()
	}
}

func (c *sceneConn) read() {
	m := c.m
	timeout := m.cfg.WorldMgr.HeartbeatTimeout
	log := m.log.With(zap.String("remote", c.c.RemoteAddr()))
	defer c.close()

	f, err := c.c.Receive(timeout)
	if err != nil {
		if errors.Is(err, ctlproto.ErrFrame) {
			log.Warn("control connection refused: bad first frame", zap.Error(err))
		}
		return
	}
	var h ctlproto.Hello
	if f.Type != ctlproto.TypeHello {
		log.Warn("control connection refused: first frame must be hello", zap.Stringer("type", f.Type))
		return
	}
	if err := f.Decode(&h); err != nil || h.Process == "" || h.PID <= 0 {
		log.Warn("control connection refused: bad hello", zap.Error(err), zap.String("process", h.Process), zap.Int("scene_pid", h.PID))
		return
	}
	if !m.do(func() { m.hello(c, h) }) {
		return
	}
	m.wg.Add(1)
	go func() { defer m.wg.Done(); c.heartbeats(m.cfg.WorldMgr) }()

	for {
		f, err := c.c.Receive(timeout)
		if err != nil {
			reason := "control connection closed"
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				reason = "heartbeat timeout (hung process?)"
			case errors.Is(err, ctlproto.ErrFrame):
				reason = "bad frame: " + err.Error()
			}
			m.do(func() { m.connClosed(c, reason) })
			return
		}
		switch f.Type {
		case ctlproto.TypeHeartbeat:
			var hb ctlproto.Heartbeat
			if err := f.Decode(&hb); err != nil {
				log.Warn("bad heartbeat", zap.Error(err))
				continue
			}
			m.do(func() { m.heartbeat(c, hb) })
		default:
			log.Warn("unexpected control frame", zap.Stringer("type", f.Type))
		}
	}
}

func (c *sceneConn) heartbeats(w config.WorldMgr) {
	t := time.NewTicker(w.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if err := c.c.Send(ctlproto.TypeHeartbeat, ctlproto.Heartbeat{}, w.HeartbeatTimeout); err != nil {
				c.close() // the reader notices and reports
				return
			}
		}
	}
}

func (c *sceneConn) welcome(w config.WorldMgr) error {
	return c.c.Send(ctlproto.TypeWelcome, ctlproto.Welcome{HeartbeatInterval: w.HeartbeatInterval, HeartbeatTimeout: w.HeartbeatTimeout}, w.HeartbeatTimeout)
}

// exit tells the process to exit and drops the connection.
func (c *sceneConn) exit(reason string) {
	_ = c.c.Send(ctlproto.TypeExit, ctlproto.Exit{Reason: reason}, c.m.cfg.WorldMgr.HeartbeatTimeout) // it may be gone already
	c.close()
}

func (c *sceneConn) close() {
	c.once.Do(func() {
		close(c.stop)
		c.c.Close()
	})
}
