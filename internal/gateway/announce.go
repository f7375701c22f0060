package gateway

import (
	"encoding/json"
	"fmt"

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

type announcer struct {
	g   *Gateway
	sub *nats.Subscription
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
	return a, nil
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
}
