package scene

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// loop owns one scene's (or dungeon room's) state. Everything that changes
// the state is an event that arrives on in; the loop logs it, applies it,
// and hands the effects to the host. Nothing else touches st.
type loop struct {
	id     string
	parent string // for dungeon rooms: the scene that opened it
	h      *host
	log    *zap.Logger
	st     *game.Scene
	slot   *shmlog.Slot

	in   chan submission
	quit chan struct{}
	done chan struct{}

	buf       []byte
	sinceSnap int
	lastSnap  time.Time
	events    uint64 // applied since start, for the load report
	freed     bool
	started   atomic.Bool
	// players is read by the heartbeat reporter on another goroutine.
	players atomic.Int64
	// subs are this scene's bus subscriptions.
	subs []*nats.Subscription
	// published is the roster last published to the profile replica.
	published map[string]modules.PlayerProfile
	// moved is the latest position of each player who moved since the
	// positions were last put in their replica (replicas.flushPositions);
	// at most one entry per player present.
	moved map[string]modules.PlayerPosition
	// tickLag is the worst delay of a tick since the last load report.
	tickLag    time.Duration
	loadEvents uint64
	loadAt     time.Time
	// recent is what the scene did lately, for inspect (recent.go).
	recent recentRing
	// wakes are the gateway connections this loop queued frames for since
	// it last woke their writers (kick): at most the process's link
	// connections (scene.link_max_conns).
	wakes []*linkConn
}

// submission is one event for the loop, or a read of its state.
type submission struct {
	ev game.Event
	// read runs on the loop goroutine instead of an event (inspect).
	read func(*game.Scene)
	// then, with an event, runs on the loop goroutine right after it was
	// applied (not if it was refused): a caller that needs the state the
	// event left saves a second trip through the loop.
	then func(*game.Scene, []game.Effect)
	// done receives the event's effects (nil if it was refused) or is
	// closed after read.
	done chan<- result
	// link, instead of done, gets the effects on the loop goroutine
	// (linkConn.answer, which does not block): the gateway link's requests
	// wait on no goroutine of their own. linkID is the request's link id.
	link   *linkConn
	linkID uint64
}

type result struct {
	effects []game.Effect
	err     error
}

func newLoop(h *host, id, parent string, st *game.Scene, slot *shmlog.Slot) *loop {
	return &loop{
		id: id, parent: parent, h: h, st: st, slot: slot,
		log:      h.log.With(zap.String("scene", id)),
		in:       make(chan submission, 1024),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		lastSnap: time.Now(),
		loadAt:   time.Now(),
	}
}

// ErrStopped: the scene's loop is no longer running (room ended, process
// stopping).
var ErrStopped = errors.New("scene loop stopped")

// errUnloggable: the event cannot be encoded (a string or number over the
// log's limits), so it is refused for good, not for now.
var errUnloggable = errors.New("event cannot be logged")

// submit queues ev and waits for its effects. ctx bounds both waits: if
// it ends before the loop took the event nothing happened; if it ends
// after, the event is applied anyway and only its effects are lost to the
// caller (the error says which). Events that must not be dropped (save
// answers, room ends) are submitted with a context that does not end: the
// loop's own end still bounds them.
func (l *loop) submit(ctx context.Context, ev game.Event) ([]game.Effect, error) {
	return l.submitThen(ctx, ev, nil)
}

// submitThen is submit, and then (if not nil) runs on the loop goroutine
// with the state and the effects as soon as ev was applied.
func (l *loop) submitThen(ctx context.Context, ev game.Event, then func(*game.Scene, []game.Effect)) ([]game.Effect, error) {
	done := make(chan result, 1)
	select {
	case l.in <- submission{ev: ev, done: done, then: then}:
	case <-l.done:
		return nil, fmt.Errorf("scene %s: %w", l.id, ErrStopped)
	case <-ctx.Done():
		return nil, fmt.Errorf("scene %s: %T not queued: %w", l.id, ev, ctx.Err())
	}
	select {
	case r := <-done:
		return r.effects, r.err
	case <-l.done:
		return nil, fmt.Errorf("scene %s: %w", l.id, ErrStopped)
	case <-ctx.Done():
		return nil, fmt.Errorf("scene %s: %T queued, stopped waiting for its outcome (it still applies): %w", l.id, ev, ctx.Err())
	}
}

// submitLink queues a gateway link's request; c.answer gets its effects
// (or why it was refused) on the loop goroutine. Submissions from one
// goroutine are applied in the order made. If the loop has stopped, the
// answer is given at once on the caller's goroutine with ErrStopped.
func (l *loop) submitLink(req game.Request, c *linkConn, id uint64) {
	select {
	case l.in <- submission{ev: req, link: c, linkID: id}:
	case <-l.done:
		c.answer(nil, id, req, nil, fmt.Errorf("scene %s: %w", l.id, ErrStopped))
	}
}

// read runs fn on the loop goroutine; ctx bounds the wait.
func (l *loop) read(ctx context.Context, fn func(*game.Scene)) error {
	done := make(chan result, 1)
	select {
	case l.in <- submission{read: fn, done: done}:
	case <-l.done:
		return fmt.Errorf("scene %s: %w", l.id, ErrStopped)
	case <-ctx.Done():
		return fmt.Errorf("scene %s: read not queued: %w", l.id, ctx.Err())
	}
	select {
	case <-done:
		return nil
	case <-l.done:
		return fmt.Errorf("scene %s: %w", l.id, ErrStopped)
	case <-ctx.Done():
		return fmt.Errorf("scene %s: read: %w", l.id, ctx.Err())
	}
}

// loopBatch bounds the submissions a loop takes one after the other,
// without looking at its timers, before it wakes the gateway connections'
// writers for all of them.
const loopBatch = 64

func (l *loop) run() {
	defer func() {
		l.kick()
		close(l.done)
		// Answer what was queued behind the end (a room that just ended):
		// nobody else will.
		for {
			select {
			case s := <-l.in:
				if s.link != nil {
					s.link.answer(nil, s.linkID, s.ev, nil, fmt.Errorf("scene %s: %w", l.id, ErrStopped))
				}
			default:
				return
			}
		}
	}()
	cfg := l.h.cfg.Scene
	tick := time.NewTicker(time.Second / time.Duration(cfg.TickHz))
	defer tick.Stop()
	save := time.NewTicker(cfg.SaveInterval)
	defer save.Stop()
	// Unacknowledged transfers are resent until their destination answers.
	resend := time.NewTicker(time.Second)
	defer resend.Stop()
	for {
		select {
		case <-l.quit:
			if r := l.h.replicas; r != nil {
				r.flushPositions(l)
			}
			return
		case s := <-l.in:
			l.take(s)
			// Take what is queued already too (a bounded batch): the
			// writers are woken once for all of it, so one write carries
			// its replies and pushes instead of a wake-up and a write for
			// the first reply alone.
		batch:
			for n := 1; n < loopBatch && !l.freed; n++ {
				select {
				case s := <-l.in:
					l.take(s)
				default:
					break batch
				}
			}
		case t := <-tick.C:
			l.tickLag = max(l.tickLag, time.Since(t))
			_, _ = l.step(game.Tick{}) // a failed append is logged in step
		case <-save.C:
			_, _ = l.step(game.SaveTick{})
		case <-resend.C:
			for _, t := range l.st.PendingTransfers() {
				l.h.perform(l, []game.Effect{t}, false)
			}
			if time.Since(l.lastSnap) >= cfg.SnapshotInterval && l.sinceSnap > 0 {
				_ = l.snapshot() // logged in snapshot; the events stay in the log
			}
			if r := l.h.replicas; r != nil {
				r.flushPositions(l)
				now := time.Now()
				r.load(l, now.Sub(l.loadAt), l.events-l.loadEvents, l.tickLag)
				l.loadAt, l.loadEvents, l.tickLag = now, l.events, 0
			}
		}
		l.kick()
		if l.freed {
			return
		}
	}
}

// take handles one submission.
func (l *loop) take(s submission) {
	if s.read != nil {
		s.read(l.st)
		s.done <- result{}
		return
	}
	effs, err := l.step(s.ev)
	if s.then != nil && err == nil {
		s.then(l.st, effs)
	}
	if s.link != nil {
		s.link.answer(l, s.linkID, s.ev, effs, err)
	} else if s.done != nil {
		s.done <- result{effects: effs, err: err}
	}
}

// wakeLater notes that c's writer has frames from this loop to send; kick
// wakes it once the loop is done with what it took.
func (l *loop) wakeLater(c *linkConn) {
	if !slices.Contains(l.wakes, c) {
		l.wakes = append(l.wakes, c)
	}
}

// kick wakes the writers of the connections the loop queued frames for.
func (l *loop) kick() {
	for i, c := range l.wakes {
		c.wake()
		l.wakes[i] = nil
	}
	l.wakes = l.wakes[:0]
}

// step is the heart of the process: log, then apply, then perform.
func (l *loop) step(ev game.Event) ([]game.Effect, error) {
	var err error
	l.buf, err = game.AppendEvent(l.buf[:0], ev)
	if err != nil {
		l.log.Error("event refused: cannot encode", zap.Error(err))
		return nil, fmt.Errorf("scene %s: encode event: %w: %w", l.id, errUnloggable, err)
	}
	if err := l.append(l.buf); err != nil {
		// Never apply what is not in the log: a replay would not know it.
		l.log.Error("event refused: cannot log it", zap.Error(err))
		l.h.mLogErrors.Inc()
		return nil, err
	}
	l.h.mLogBytes.Add(float64(len(l.buf)))
	effs := l.st.Apply(ev)
	l.recent.record(ev, effs)
	l.players.Store(int64(l.st.Players()))
	l.events++
	l.h.mEvents.Inc()
	l.sinceSnap++
	if l.sinceSnap >= l.h.cfg.Scene.SnapshotEvents {
		l.snapshot()
	}
	if l.h.crash != nil {
		if _, ok := ev.(game.Request); ok && sendsAway(effs) {
			l.h.crash.Hit(crashpoint.SceneTravelApplied)
		}
	}
	l.h.perform(l, effs, true)
	if r := l.h.replicas; r != nil {
		r.afterStep(l, ev, effs)
	}
	return effs, nil
}

func (l *loop) append(rec []byte) error {
	_, err := l.slot.Append(rec)
	if errors.Is(err, shmlog.ErrSlotFull) {
		// The slot's event area is full: compact into a snapshot and retry.
		if serr := l.snapshot(); serr != nil {
			return fmt.Errorf("scene %s: log full and snapshot failed: %w", l.id, serr)
		}
		_, err = l.slot.Append(rec)
	}
	if err != nil {
		return fmt.Errorf("scene %s: log append: %w", l.id, err)
	}
	return nil
}

func (l *loop) snapshot() error {
	start := time.Now()
	if err := l.slot.Snapshot(l.st.Snapshot()); err != nil {
		l.log.Error("snapshot failed; events keep accumulating", zap.Error(err))
		return err
	}
	l.sinceSnap, l.lastSnap = 0, time.Now()
	// A snapshot is a good moment to make the log durable against a
	// machine crash too (the timer does it otherwise).
	if err := l.h.store.Flush(); err != nil {
		l.log.Error("flush event log", zap.Error(err))
	}
	l.h.mSnapshots.Observe(time.Since(start).Seconds())
	return nil
}

// start runs the loop on its own goroutine.
func (l *loop) start() {
	l.started.Store(true)
	go l.run()
}

func (l *loop) stop() {
	if !l.started.Load() {
		return // restored but never started (start-up failed)
	}
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.done
}

// sendsAway reports whether effs move a player to another scene.
func sendsAway(effs []game.Effect) bool {
	for _, e := range effs {
		if _, ok := e.(game.TravelOut); ok {
			return true
		}
	}
	return false
}
