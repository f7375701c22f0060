package scene

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/replica"
)

// replicas publishes what this process owns to the rest of the cluster:
// the profiles and positions of its players, its scenes' load, and the
// world chat its players say.
type replicas struct {
	log       *zap.Logger
	profiles  *replica.Writer[modules.PlayerProfile]
	positions *replica.Writer[modules.PlayerPosition]
	loads     *replica.Writer[modules.SceneLoad]
	chat      *modules.Chat
}

func newReplicas(ctx context.Context, nc *nats.Conn, process string, epoch uint64, log *zap.Logger) (*replicas, error) {
	opt := replica.WriterOptions{Instance: "scene-" + process, Epoch: epoch, Logger: log}
	r := &replicas{log: log}
	var err error
	if r.profiles, err = replica.NewWriter[modules.PlayerProfile](ctx, nc, modules.PlayerProfiles, replica.RoleScene, opt); err != nil {
		return nil, err
	}
	if r.positions, err = replica.NewWriter[modules.PlayerPosition](ctx, nc, modules.PlayerPositions, replica.RoleScene, opt); err != nil {
		return nil, err
	}
	if r.loads, err = replica.NewWriter[modules.SceneLoad](ctx, nc, modules.SceneLoads, replica.RoleScene, opt); err != nil {
		return nil, err
	}
	if r.chat, err = modules.NewChat(nc, modules.ChatOptions{}); err != nil {
		return nil, err
	}
	return r, nil
}

// republish replaces everything this process published before a crash with
// the restored state, so no reader keeps a pre-crash view.
func (r *replicas) republish(loops []*loop) error {
	profiles := map[string]modules.PlayerProfile{}
	positions := map[string]modules.PlayerPosition{}
	for _, l := range loops {
		for id, p := range l.roster() {
			profiles[id] = p
		}
		for _, pv := range l.st.Inspect().Players {
			positions[pv.ID] = modules.PlayerPosition{ID: pv.ID, Scene: l.id, X: float64(pv.X), Y: float64(pv.Y)}
		}
		l.published = l.roster()
	}
	if err := r.profiles.Reset(profiles); err != nil {
		return fmt.Errorf("republish profiles: %w", err)
	}
	if err := r.positions.Reset(positions); err != nil {
		return fmt.Errorf("republish positions: %w", err)
	}
	return nil
}

// afterStep publishes what one applied event changed. It runs on the
// scene's loop goroutine.
func (r *replicas) afterStep(l *loop, ev game.Event, effs []game.Effect) {
	rosterChanged := false
	switch ev.(type) {
	case game.Enter, game.Leave, game.TravelIn, game.SaveRejected, game.RoomEnded:
		rosterChanged = true
	}
	travelling := map[string]bool{}
	for _, e := range effs {
		switch e := e.(type) {
		case game.PositionChanged:
			if e.Kind == "player" {
				r.warn(r.positions.Put(e.ID, modules.PlayerPosition{ID: e.ID, Scene: l.id, X: float64(e.X), Y: float64(e.Y)}))
			}
		case game.ProfileChanged, game.Kick:
			rosterChanged = true
		case game.TravelOut:
			// The destination publishes the player on arrival; publishing
			// "offline" here could overtake that.
			travelling[e.Player.ID] = true
			rosterChanged = true
		case game.ChatOut:
			r.warn(r.chat.Publish(modules.ChatMessage{From: e.From, Scene: e.Scene, Text: e.Text}))
		}
	}
	if !rosterChanged {
		return
	}
	now := l.roster()
	for id, p := range now {
		if old, ok := l.published[id]; !ok || old != p {
			r.warn(r.profiles.Put(id, p))
		}
	}
	for id, p := range l.published {
		if _, here := now[id]; !here && !travelling[id] {
			p.Online = false
			r.warn(r.profiles.Put(id, p))
		}
	}
	l.published = now
}

func (r *replicas) load(l *loop, elapsed time.Duration, events uint64, tickLag time.Duration) {
	r.warn(r.loads.Put(l.id, modules.SceneLoad{
		Scene: l.id, Players: int(l.players.Load()),
		EventsPerSec: float64(events) / elapsed.Seconds(),
		TickLagMS:    float64(tickLag.Microseconds()) / 1000,
	}))
}

func (r *replicas) warn(err error) {
	if err != nil {
		// Replicas converge by themselves after a reconnect; a failed
		// publish only delays a reader.
		r.log.Debug("replica publish", zap.Error(err))
	}
}

func (r *replicas) close() {
	for _, c := range []interface{ Close() error }{r.profiles, r.positions, r.loads} {
		if err := c.Close(); err != nil {
			r.log.Debug("close replica writer", zap.Error(err))
		}
	}
}

// roster is the profile of every player present, as published.
func (l *loop) roster() map[string]modules.PlayerProfile {
	out := map[string]modules.PlayerProfile{}
	for _, pv := range l.st.Inspect().Players {
		d, _, ok := l.st.Player(pv.ID)
		if !ok {
			continue
		}
		out[pv.ID] = modules.PlayerProfile{ID: d.ID, Name: d.Name, Level: d.Level, Scene: l.id, Online: true}
	}
	return out
}
