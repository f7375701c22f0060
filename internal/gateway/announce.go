package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// SubjectSession is where a gateway announces each login and resume, so
// any other gateway holding that player's session drops it: its client is
// told (session_replaced) and its cleanup must not take the player out of
// the scene the new gateway now serves.
const SubjectSession = "respawn.gateway.session"

// Announcement is the body published on SubjectSession.
type Announcement struct {
	Gateway string `json:"gateway"`
	Player  string `json:"player"`
	Session string `json:"session"`
}

// SubjectWho asks the gateways whether one of them serves a session
// ({"player","session"}); a gateway that does answers. A gateway asks
// before its expired session takes the player out of the scene, in case
// the announcement of a resume elsewhere was lost.
const SubjectWho = "respawn.gateway.who"

type announcer struct {
	g   *Gateway
	sub *nats.Subscription
	who *nats.Subscription
}

func newAnnouncer(g *Gateway) (*announcer, error) {
	a := &announcer{g: g}
	sub, err := g.opt.NATS.Subscribe(SubjectSession, func(m *nats.Msg) {
		var an Announcement
		if err := json.Unmarshal(m.Data, &an); err != nil || an.Player == "" {
			g.log.Warn("bad session announcement", zap.ByteString("data", m.Data))
			return
		}
		if an.Gateway == g.cfg.ID {
			return
		}
		g.reg.takenElsewhere(an.Player, an.Session)
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: subscribe %s: %w", SubjectSession, err)
	}
	a.sub = sub
	a.who, err = g.opt.NATS.Subscribe(SubjectWho, func(m *nats.Msg) {
		var q Announcement
		if json.Unmarshal(m.Data, &q) != nil || q.Gateway == g.cfg.ID {
			return
		}
		if s := g.reg.get(q.Player); s != nil && s.id == q.Session && s.live() != nil {
			b, _ := json.Marshal(Announcement{Gateway: g.cfg.ID, Player: q.Player, Session: q.Session})
			_ = m.Respond(b)
		}
	})
	if err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("gateway: subscribe %s: %w", SubjectWho, err)
	}
	return a, nil
}

// servedElsewhere reports whether another gateway serves the session (an
// answer within a short wait), and whether it could ask at all.
func (a *announcer) servedElsewhere(player, session string) (elsewhere, asked bool) {
	b, _ := json.Marshal(Announcement{Gateway: a.g.cfg.ID, Player: player, Session: session})
	_, err := a.g.opt.NATS.Request(SubjectWho, b, 250*time.Millisecond)
	switch {
	case err == nil:
		return true, true
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders):
		return false, true
	default:
		return false, false
	}
}

// announce tells the other gateways that this one now has player's
// session. Best effort: with NATS down the scene's session check still
// turns the other gateway's next request away (session_replaced).
func (a *announcer) announce(player, session string) {
	b, _ := json.Marshal(Announcement{Gateway: a.g.cfg.ID, Player: player, Session: session})
	if err := a.g.opt.NATS.Publish(SubjectSession, b); err != nil {
		a.g.log.Warn("announce session", zap.String("player", player), zap.Error(err))
	}
}

func (a *announcer) close() {
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	if a.who != nil {
		_ = a.who.Unsubscribe()
	}
}
