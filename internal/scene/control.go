package scene

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/secret"
)

// control is the scene process's side of the control connection. The
// process keeps serving players whatever happens here: a lost manager only
// means reconnecting, with backoff, and reporting again.
type control struct {
	cfg    config.WorldMgr
	log    *zap.Logger
	secret *secret.Secret
	hello  func() ctlproto.Hello
	report func() []ctlproto.SceneReport
	// exit is called when the manager tells this process to go.
	exit func(e ctlproto.Exit)
}

func (c *control) run(ctx context.Context) {
	backoff := 20 * time.Millisecond
	failed := 0 // attempts since the last registration
	for ctx.Err() == nil {
		registered, err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if registered {
			backoff, failed = 20*time.Millisecond, 0
		}
		// One warning per loss, not one per attempt: a manager stopped for
		// a minute would otherwise fill the log.
		switch failed++; {
		case failed == 1:
			c.log.Warn("world manager connection lost; still serving, reconnecting",
				zap.Error(err), zap.Duration("backoff", backoff))
		case failed%100 == 0:
			c.log.Warn("still reconnecting to the world manager; still serving",
				zap.Int("attempts", failed), zap.Error(err))
		default:
			c.log.Debug("reconnect to the world manager failed", zap.Int("attempts", failed), zap.Error(err))
		}
		// Jitter: after a manager stall every scene reconnects at once.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		// Short ceiling: a restarted manager collects reports only for its
		// recovery window (2 × heartbeat timeout by default).
		backoff = min(backoff*2, c.cfg.HeartbeatTimeout/2)
	}
}

var errExit = errors.New("told to exit")

// session runs one connection until it breaks. registered says whether the
// manager accepted us on it.
func (c *control) session(ctx context.Context) (registered bool, err error) {
	d := net.Dialer{Timeout: c.cfg.HeartbeatTimeout}
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Listen)
	if err != nil {
		return false, err
	}
	conn := ctlproto.NewConn(nc)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// The manager proves it holds the cluster secret by signing its answer
	// over our nonce; we prove it by signing the hello over its nonce.
	f, err := conn.Receive(c.cfg.HeartbeatTimeout)
	if err != nil {
		return false, err
	}
	nm, err := ctlproto.DecodeChallenge(f)
	if err != nil {
		return false, err
	}
	ns, err := conn.SendHello(c.secret, nm, c.hello(), c.cfg.HeartbeatTimeout)
	if err != nil {
		return false, err
	}
	ss := ctlproto.Session{Secret: c.secret, Scene: ns, Manager: nm}
	f, err = conn.Receive(c.cfg.HeartbeatTimeout)
	if err != nil {
		return false, err
	}
	switch f.Type {
	case ctlproto.TypeExit:
		if err := c.exitWith(ss, f); err != nil {
			return false, err
		}
		return false, errExit
	case ctlproto.TypeWelcome:
		var w ctlproto.Welcome
		if err := ctlproto.OpenSigned(ss, f, &w); err != nil {
			return false, err
		}
	default:
		return false, errors.New("expected welcome, got " + f.Type.String())
	}
	c.log.Info("registered with world manager", zap.String("manager", c.cfg.Listen))

	errs := make(chan error, 1)
	go func() {
		t := time.NewTicker(c.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := conn.Send(ctlproto.TypeHeartbeat, ctlproto.Heartbeat{Scenes: c.report()}, c.cfg.HeartbeatTimeout); err != nil {
					errs <- err
					conn.Close()
					return
				}
			}
		}
	}()
	for {
		f, err := conn.Receive(c.cfg.HeartbeatTimeout)
		if err != nil {
			select {
			case werr := <-errs:
				return true, werr
			default:
			}
			return true, err
		}
		if f.Type == ctlproto.TypeExit {
			if err := c.exitWith(ss, f); err != nil {
				return true, err
			}
			return true, errExit
		}
	}
}

// exitWith obeys an exit only if the manager signed it.
func (c *control) exitWith(ss ctlproto.Session, f ctlproto.Frame) error {
	var e ctlproto.Exit
	if err := ctlproto.OpenSigned(ss, f, &e); err != nil {
		c.log.Error("ignoring an exit the world manager did not sign", zap.Error(err))
		return err
	}
	c.log.Warn("world manager told this process to exit", zap.String("reason", e.Reason))
	c.exit(e)
	return nil
}
