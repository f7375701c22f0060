package scene

import (
	"context"
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

// connectNATS connects to the bus without waiting for it: a scene keeps
// serving while datasvr (and its embedded NATS server) restarts.
func (p *Process) connectNATS() error {
	nc, err := bus.Connect(p.cfg.NATS.ClientURL(), fmt.Sprintf("scene %s epoch %d", p.spec.Name, p.opt.Epoch), p.log)
	if err != nil {
		return err
	}
	p.nc = nc
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
	p.host.attach, p.host.detach = p.attach, p.detach
	for _, l := range p.host.sortedLoops() {
		p.attach(l)
	}
	return nil
}

// attach subscribes the subjects of one scene or room: events from other
// scenes, and the data server's GM give, kick and save-all.
func (p *Process) attach(l *loop) {
	subs := map[string]nats.MsgHandler{
		EventSubject(l.id):                   func(m *nats.Msg) { p.onBusEvent(l, m) },
		dataclient.SceneGiveSubject(l.id):    func(m *nats.Msg) { go p.onGive(l, m) },
		dataclient.SceneKickSubject(l.id):    func(m *nats.Msg) { go p.onKick(l, m) },
		dataclient.SceneSaveAllSubject(l.id): func(m *nats.Msg) { go p.onSaveAll(l, m) },
	}
	for subj, fn := range subs {
		sub, err := p.nc.Subscribe(subj, fn)
		if err != nil {
			l.log.Error("subscribe", zap.String("subject", subj), zap.Error(err))
			continue
		}
		l.subs = append(l.subs, sub)
	}
}

func (p *Process) detach(l *loop) {
	for _, sub := range l.subs {
		_ = sub.Unsubscribe() // the connection may be closing; nothing to undo
	}
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
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.host.accept(ctx, l, ev); err != nil {
			answer(err.Error())
			return
		}
		answer("")
	}()
}
