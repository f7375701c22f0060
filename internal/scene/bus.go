package scene

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/game"
)

// EventSubject is where another process delivers cross-scene events
// (a travelling player, its acknowledgement) to scene id.
func EventSubject(scene string) string { return "respawn.scene." + scene + ".event" }

// dialBus connects to the bus without waiting for it: a scene keeps
// serving while datasvr (and its embedded NATS server) restarts. Nothing
// is subscribed until setupBus, after the replay, so a standby can hold
// the connection ready.
func (p *Process) dialBus() error {
	nc, err := bus.Connect(p.cfg.NATS.ClientURL(), fmt.Sprintf("scene %s epoch %d", p.spec.Name, p.opt.Epoch), bus.RoleScene, p.secret, p.log)
	if err != nil {
		return err
	}
	p.nc = nc
	return nil
}

// setupBus subscribes the replayed scenes' subjects and starts the
// replicas and the data server link.
func (p *Process) setupBus() error {
	nc := p.nc
	p.host.remote = func(ctx context.Context, scene string, ev game.Event) error {
		raw, err := game.EncodeEvent(ev)
		if err != nil {
			return err
		}
		msg, err := nc.RequestWithContext(ctx, EventSubject(scene), raw)
		if err != nil {
			return fmt.Errorf("deliver to scene %s: %w", scene, err)
		}
		if len(msg.Data) > 0 {
			return fmt.Errorf("scene %s refused the event: %s", scene, msg.Data)
		}
		return nil
	}
	rep, err := newReplicas(p.ctx, nc, p.spec.Name, p.opt.Epoch, p.log)
	if err != nil {
		return fmt.Errorf("replicas: %w", err)
	}
	p.host.replicas = rep
	p.host.data = newDataLink(nc, p.opt.Epoch, p.log)
	p.pool = newWorkPool(DefaultBusQueue)
	p.admin.Registry.MustRegister(p.pool.mRefused, p.pool.mQueued)
	p.pool.run(p.ctx, &p.wg, DefaultBusWorkers)
	p.host.attach, p.host.detach = p.attach, p.detach
	for _, l := range p.host.sortedLoops() {
		if err := p.attach(l); err != nil {
			return err
		}
	}
	// The subscriptions reach the server before the process reports
	// itself up, when the server is there; a scene started while datasvr
	// restarts subscribes on reconnect.
	if nc.IsConnected() {
		if err := nc.FlushTimeout(5 * time.Second); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		// The server answers a subscription it refuses before the flush's
		// PONG: a bus that will not let this process do its job (an
		// external NATS configured without our permissions) stops the
		// start rather than leaving an unreachable scene running.
		if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
			return fmt.Errorf("subscribe as %s: %w", bus.RoleScene, err)
		}
	}
	return nil
}

// attach subscribes the subjects of one scene or room: events from other
// scenes, and the data server's GM give, kick and save-all. Their work
// runs on the bus pool. A subscription that fails is an error: a scene
// nobody can reach must not look healthy.
func (p *Process) attach(l *loop) error {
	subs := []struct {
		subject string
		fn      nats.MsgHandler
	}{
		{EventSubject(l.id), func(m *nats.Msg) { p.onBusEvent(l, m) }},
		{dataclient.SceneGiveSubject(l.id), func(m *nats.Msg) {
			p.queue(m, func(ctx context.Context) { p.onGive(ctx, l, m) }, dataclient.GiveReply{Error: errBusy})
		}},
		{dataclient.SceneKickSubject(l.id), func(m *nats.Msg) {
			p.queue(m, func(ctx context.Context) { p.onKick(ctx, l, m) }, dataclient.KickReply{Error: errBusy})
		}},
		{dataclient.SceneSaveAllSubject(l.id), func(m *nats.Msg) {
			p.queue(m, func(ctx context.Context) { p.onSaveAll(ctx, l, m) }, dataclient.SaveAllReply{Scene: l.id, Error: errBusy})
		}},
	}
	for _, s := range subs {
		sub, err := p.nc.Subscribe(s.subject, s.fn)
		if err != nil {
			p.detach(l)
			return fmt.Errorf("scene %s: subscribe %s: %w", l.id, s.subject, err)
		}
		l.subs = append(l.subs, sub)
	}
	return nil
}

// errBusy answers a bus message the pool has no room for.
const errBusy = "scene process busy: bus work queue full; retry"

// queue hands a message's work to the pool, or answers busy (a JSON reply
// with busy as its error) when the queue is full.
func (p *Process) queue(m *nats.Msg, job func(context.Context), busy any) {
	if p.pool.submit(job) {
		return
	}
	p.log.Warn("bus message refused: work queue full", zap.String("subject", m.Subject))
	if m.Reply != "" {
		raw, _ := json.Marshal(busy) // plain structs: cannot fail
		_ = m.Respond(raw)
	}
}

func (p *Process) detach(l *loop) {
	for _, sub := range l.subs {
		_ = sub.Unsubscribe() // the connection may be closing; nothing to undo
	}
	l.subs = nil
}

// onBusEvent accepts only the events other scenes may send; the answer is
// empty once the event is logged and applied, or an error text.
func (p *Process) onBusEvent(l *loop, m *nats.Msg) {
	answer := func(s string) {
		if m.Reply != "" {
			_ = m.Respond([]byte(s)) // the sender retries on its own if this is lost
		}
	}
	ev, err := game.DecodeEvent(m.Data)
	if err != nil {
		answer("bad event: " + err.Error())
		return
	}
	switch ev.(type) {
	case game.TravelIn, game.TravelAck:
	default:
		answer(fmt.Sprintf("event %T is not accepted from the bus", ev))
		return
	}
	job := func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := p.host.accept(ctx, l, ev); err != nil {
			answer(err.Error())
			return
		}
		answer("")
	}
	if !p.pool.submit(job) {
		p.log.Warn("bus event refused: work queue full", zap.String("subject", m.Subject))
		answer(errBusy)
	}
}
