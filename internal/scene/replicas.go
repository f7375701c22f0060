package scene

import (
	"context"
	"fmt"
	"sync"
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

	// While the republish after a start is published (off the start's
	// path: the loops already run), the profile and position updates the
	// loops make are held here, in order, and published after it: an
	// update published first would be overwritten by the older state.
	mu      sync.Mutex
	holding bool
	held    []func()
	flushed chan struct{} // closed when the held updates are out
}

// maxHeld bounds the updates held during a republish; a loop that would
// add more waits until the republish is out.
const maxHeld = 1 << 16

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

// prepareRepublish prepares the replacement of everything this process
// published before a crash with the restored state, so no reader keeps a
// pre-crash view. It reads that state (before the loops start) and returns
// the publishing of it, to run while the loops run: until it is done their
// updates are held (put) and then published in order.
func (r *replicas) prepareRepublish(loops []*loop) func() error {
	profiles, positions := r.restored(loops)
	r.mu.Lock()
	r.holding, r.flushed = true, make(chan struct{})
	r.mu.Unlock()
	return func() error {
		defer r.release()
		if err := r.profiles.Reset(profiles); err != nil {
			return fmt.Errorf("republish profiles: %w", err)
		}
		if err := r.positions.Reset(positions); err != nil {
			return fmt.Errorf("republish positions: %w", err)
		}
		return nil
	}
}

// put publishes one update now, or holds it while a republish is out.
func (r *replicas) put(publish func() error) {
	r.mu.Lock()
	if r.holding && len(r.held) < maxHeld {
		r.held = append(r.held, func() { r.warn(publish()) })
		r.mu.Unlock()
		return
	}
	flushed := r.flushed
	holding := r.holding
	r.mu.Unlock()
	if holding {
		<-flushed // over the bound: wait for the republish, keeping the order
	}
	r.warn(publish())
}

// release publishes the held updates, in order, and stops holding.
func (r *replicas) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fn := range r.held {
		fn()
	}
	r.held, r.holding = nil, false
	if r.flushed != nil {
		close(r.flushed)
	}
}

// restored is every player's profile and position in the restored loops.
func (r *replicas) restored(loops []*loop) (map[string]modules.PlayerProfile, map[string]modules.PlayerPosition) {
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
	return profiles, positions
}

// afterStep publishes what one applied event changed. It runs on the
// scene's loop goroutine.
func (r *replicas) afterStep(l *loop, ev game.Event, effs []game.Effect) {
	rosterChanged := false
	switch ev.(type) {
	case game.Enter, game.Leave, game.TravelIn, game.SaveRejected, game.RoomEnded:
		rosterChanged = true
	}
	var travelling map[string]bool // nil for almost every event
	for _, e := range effs {
		switch e := e.(type) {
		case game.PositionChanged:
			if e.Kind == "player" {
				// Kept, not put: the module is batched (2 s), so encoding
				// every move for it was waste; see flushPositions.
				if l.moved == nil {
					l.moved = map[string]modules.PlayerPosition{}
				}
				l.moved[e.ID] = modules.PlayerPosition{ID: e.ID, Scene: l.id, X: float64(e.X), Y: float64(e.Y)}
			}
		case game.ProfileChanged, game.Kick:
			rosterChanged = true
		case game.TravelOut:
			// The destination publishes the player on arrival; publishing
			// "offline" here could overtake that.
			if travelling == nil {
				travelling = map[string]bool{}
			}
			travelling[e.Player.ID] = true
			rosterChanged = true
		case game.ChatOut:
			r.warn(r.chat.Publish(modules.ChatMessage{From: e.From, Scene: e.Scene, Text: e.Text}))
		}
	}
	if !rosterChanged {
		return
	}
	// Positions first: a player leaving (a travel above all) has their
	// last position here put before anything the destination publishes.
	r.flushPositions(l)
	now := l.roster()
	for id, p := range now {
		if old, ok := l.published[id]; !ok || old != p {
			r.put(func() error { return r.profiles.Put(id, p) })
		}
	}
	for id, p := range l.published {
		if _, here := now[id]; !here && !travelling[id] {
			p.Online = false
			r.put(func() error { return r.profiles.Put(id, p) })
		}
	}
	l.published = now
}

// flushPositions puts the latest position of every player of l who moved
// since the last flush. The loop calls it once a second, before any roster
// change and when it stops, so a position reaches the (2 s batched)
// replica at most a second later than when every move was put, and a
// player's position is put before they leave. Runs on l's goroutine.
func (r *replicas) flushPositions(l *loop) {
	for id, pos := range l.moved {
		r.put(func() error { return r.positions.Put(id, pos) })
	}
	clear(l.moved)
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
