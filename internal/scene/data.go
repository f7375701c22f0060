package scene

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/game"
)

// dataLink connects the scenes of this process to the data server: one
// dataclient.Client (lease holder) per scene or room, saves through its
// non-blocking queue, and the answers fed back to the scene as logged
// SaveAck / SaveRejected events.
type dataLink struct {
	nc    *nats.Conn
	epoch uint64
	log   *zap.Logger

	mu      sync.Mutex
	clients map[string]*dataclient.Client
	waiters map[string][]*ackWaiter // by player
	// unreleased are leaves whose final save or release was not answered
	// in time, by scene + player: the gateway's retried Leave finishes
	// them (at most maxUnreleased).
	unreleased map[string]unreleased
	reloading  map[string]bool // scene + player reloads in flight
}

func newDataLink(nc *nats.Conn, epoch uint64, log *zap.Logger) *dataLink {
	return &dataLink{nc: nc, epoch: epoch, log: log, clients: map[string]*dataclient.Client{}, waiters: map[string][]*ackWaiter{}, unreleased: map[string]unreleased{},
		reloading: map[string]bool{}}
}

// client returns the lease holder of scene (or room) l.
func (d *dataLink) client(l *loop) *dataclient.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.clients[l.id]
	if !ok {
		c = dataclient.NewClient(d.nc, l.id, d.epoch, d.log, dataclient.WithOnResult(func(p string, v uint64, err error) {
			d.result(l, p, v, err)
		}))
		d.clients[l.id] = c
	}
	return c
}

// save queues a Save effect; it runs on l's goroutine and does not block.
func (d *dataLink) save(l *loop, s game.Save) {
	if err := d.client(l).Enqueue(s.Player.ID, s.Version, s.Player); err != nil {
		// The queue is full only if datasvr has been away for a long time;
		// the player stays dirty in the scene and is saved again later.
		l.log.Error("save not queued", zap.String("player", s.Player.ID), zap.Uint64("version", s.Version), zap.Error(err))
	}
}

// result turns a save's final outcome into a logged event for the scene.
// A save refused as older than the data server's copy means this scene's
// history of the player lost to a newer one (a repaired log, a create that
// lost to the database's copy): the player is reloaded, not dropped. Only
// a genuinely newer owner (another scene, a newer epoch) drops it.
func (d *dataLink) result(l *loop, p string, v uint64, err error) {
	if errors.Is(err, dataclient.ErrOldVersion) {
		d.reload(l, p, v, err) // registered before waiters hear of it
		d.resolve(p, v, err)
		return
	}
	d.resolve(p, v, err)
	var ev game.Event = game.SaveAck{Player: p, Version: v}
	if err != nil {
		ev = game.SaveRejected{Player: p, Version: v, Reason: err.Error()}
		l.log.Warn("save rejected: a newer owner holds the player; the scene drops it", zap.String("player", p), zap.Uint64("version", v), zap.Error(err))
	}
	d.submitAsync(l, p, ev)
}

func (d *dataLink) submitAsync(l *loop, p string, ev game.Event) {
	go func() {
		// Not bounded by a deadline: the answer must be logged while the
		// loop lives.
		if _, serr := l.submit(context.Background(), ev); serr != nil && !errors.Is(serr, ErrStopped) {
			l.log.Warn("data server answer not logged", zap.String("player", p), zap.Error(serr))
		}
	}()
}

// maxReasonLen bounds the reason logged with a Reload event.
const maxReasonLen = 256

// reload fetches the data server's copy of p under this scene's lease (a
// load by the holder changes nothing there) and logs it as a Reload event,
// so a replay reloads the same data. One reload per player at a time.
func (d *dataLink) reload(l *loop, p string, v uint64, cause error) {
	key := l.id + "\x00" + p
	d.mu.Lock()
	if d.reloading[key] {
		d.mu.Unlock()
		return
	}
	d.reloading[key] = true
	d.mu.Unlock()
	reason := cause.Error()
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	// Not on the save queue's goroutine: reading the scene waits for its loop.
	go func() {
		defer func() {
			d.mu.Lock()
			delete(d.reloading, key)
			d.mu.Unlock()
		}()
		var cur uint64
		present := false
		if err := l.read(context.Background(), func(st *game.Scene) { _, cur, present = st.Player(p) }); err != nil || !present || cur > v {
			return // gone, or a newer save is on its way: its outcome decides
		}
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ld, err := d.client(l).Load(ctx, p)
			cancel()
			switch {
			case err == nil:
				l.log.Warn("player reloaded from the data server, which holds a newer version than this scene; the player stays",
					zap.String("player", p), zap.Uint64("refused_version", v), zap.Uint64("version", ld.Version), zap.String("cause", reason))
				// Synchronously: a GM give waiting on this reload retries
				// only once the Reload is logged and applied.
				if _, err := l.submit(context.Background(), game.Reload{Player: ld.Data, Version: ld.Version, Reason: reason}); err != nil && !errors.Is(err, ErrStopped) {
					l.log.Warn("reload not logged", zap.String("player", p), zap.Error(err))
				}
				return
			case errors.Is(err, dataclient.ErrUnavailable):
				select {
				case <-l.done:
					return
				case <-time.After(min(100*time.Millisecond<<min(attempt, 5), 2*time.Second)):
				}
			default:
				// Another scene or a newer epoch holds it now.
				l.log.Warn("reload refused: a newer owner holds the player; the scene drops it", zap.String("player", p), zap.Error(err))
				d.submitAsync(l, p, game.SaveRejected{Player: p, Version: v, Reason: err.Error()})
				return
			}
		}
	}()
}

// waitReloaded waits until no reload of player p in l is in flight.
func (d *dataLink) waitReloaded(ctx context.Context, l *loop, p string) error {
	key := l.id + "\x00" + p
	for {
		d.mu.Lock()
		busy := d.reloading[key]
		d.mu.Unlock()
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reload of player %s not finished: %w", p, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// unreleased is a leave not finished: the player is out of the scene, its
// final save (version, awaited by w) or the release is not yet answered.
type unreleased struct {
	session string
	version uint64
	w       *ackWaiter
	hasSave bool // the leave saved the player (version is that save)
	saved   bool // its acknowledgement was heard
	busy    bool // a leave call is finishing it now
}

// maxUnreleased bounds the unfinished leaves a scene process keeps; past
// it a leave is not tracked (if it times out the player stays leased to
// this scene until their next login takes them over).
const maxUnreleased = 4096

// errLeaveBusy: a retried leave found the first still waiting for the
// save or the release; the gateway retries again.
var errLeaveBusy = errors.New("the player's leave is still finishing; retry")

func unreleasedKey(scene, player string) string { return scene + "\x00" + player }

// startLeave records u, being finished by the caller; false if the table
// is full (u is then finished untracked).
func (d *dataLink) startLeave(scene, player string, u *unreleased) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.unreleased) >= maxUnreleased {
		d.log.Warn("too many unfinished leaves; this one is not tracked", zap.String("scene", scene), zap.String("player", player))
		return false
	}
	u.busy = true
	d.unreleased[unreleasedKey(scene, player)] = *u
	return true
}

// endLeave forgets the leave (finished) or keeps it for the retry
// (registering its waiter again, so a late acknowledgement still reaches
// it).
func (d *dataLink) endLeave(scene, player string, u unreleased, finished bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := unreleasedKey(scene, player)
	if finished {
		delete(d.unreleased, key)
		return
	}
	if u.hasSave && !u.saved && u.w != nil && !slices.Contains(d.waiters[player], u.w) {
		d.waiters[player] = append(d.waiters[player], u.w)
	}
	u.busy = false
	d.unreleased[key] = u
}

// resumeLeave returns the unfinished leave of player's session in scene,
// marked busy for the caller to finish; errLeaveBusy if another call is
// finishing it.
func (d *dataLink) resumeLeave(scene, player, session string) (unreleased, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := unreleasedKey(scene, player)
	u, ok := d.unreleased[key]
	if !ok || u.session != session {
		return unreleased{}, false, nil
	}
	if u.busy {
		return unreleased{}, false, errLeaveBusy
	}
	u.busy = true
	d.unreleased[key] = u
	return u, true, nil
}

// An ackWaiter waits for the outcome of a player's save at version or
// newer. It is registered (expect) before the event whose Save it waits
// for is submitted: the save is queued while the event is applied and its
// acknowledgement can arrive before the submitter has seen the Save
// effect, so a waiter registered only afterwards could miss it and wait
// until its deadline. Until its version is known it remembers the newest
// outcome it heard.
type ackWaiter struct {
	known   bool
	version uint64
	seen    bool
	seenV   uint64
	seenErr error
	done    chan error
}

// expect registers a waiter for player's next save outcomes; pair it with
// await (or savedAfter) and forget.
func (d *dataLink) expect(p string) *ackWaiter {
	w := &ackWaiter{done: make(chan error, 1)}
	d.mu.Lock()
	d.waiters[p] = append(d.waiters[p], w)
	d.mu.Unlock()
	return w
}

// await sets the version w waits for and returns the channel that gets
// its outcome, at once if it was already heard.
func (d *dataLink) await(p string, w *ackWaiter, version uint64) <-chan error {
	d.mu.Lock()
	defer d.mu.Unlock()
	w.known, w.version = true, version
	if w.seen && w.seenV >= version {
		d.deliver(p, w, w.seenErr)
	}
	return w.done
}

// forget drops w if it is still registered (its submitter gave up, or the
// event had no save).
func (d *dataLink) forget(p string, w *ackWaiter) {
	if d == nil || w == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drop(p, w)
}

func (d *dataLink) deliver(p string, w *ackWaiter, err error) {
	select {
	case w.done <- err:
	default:
	}
	d.drop(p, w)
}

func (d *dataLink) drop(p string, w *ackWaiter) {
	ws := d.waiters[p]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(d.waiters, p)
	} else {
		d.waiters[p] = ws
	}
}

func (d *dataLink) resolve(p string, v uint64, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range append([]*ackWaiter(nil), d.waiters[p]...) {
		switch {
		case !w.known:
			if !w.seen || v >= w.seenV {
				w.seen, w.seenV, w.seenErr = true, v, err
			}
		case w.version <= v:
			d.deliver(p, w, err)
		}
	}
}

// transfer moves a travelling player: hand the lease over at datasvr, then
// deliver the player. Unacknowledged transfers are resent every second, so
// a failure here is retried. fresh: the first send, not a resend.
func (d *dataLink) transfer(h *host, l *loop, t game.TravelOut, fresh bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := d.client(l).Handover(ctx, t.Player.ID, t.To, t.Version, t.Player)
	switch {
	case errors.Is(err, dataclient.ErrUnavailable):
		l.log.Warn("handover: datasvr unavailable; will retry", zap.String("player", t.Player.ID), zap.String("to", t.To), zap.Error(err))
		return
	case err != nil:
		// Already moved on (the destination claimed and saved it): the
		// destination's claim decides, and it dedupes the transfer.
		l.log.Info("handover refused; delivering for the destination to decide", zap.String("player", t.Player.ID), zap.String("to", t.To), zap.Error(err))
	case fresh:
		// The lease is the destination's; the player is not there yet.
		h.crash.Hit(crashpoint.LeaseHandoff)
	}
	h.deliver(t.To, t.In())
}

// claim takes the lease of a player arriving by transfer before the scene
// applies the arrival, so no save of it can come from here unowned, and
// returns the player as datasvr holds it: the data the source handed over,
// not the message's word, and the version datasvr now holds (taking a
// lease is itself a journaled change), which the scene's next save must
// exceed. A player not handed over to l is refused.
func (d *dataLink) claim(ctx context.Context, l *loop, player string) (dataclient.Loaded, error) {
	ld, err := d.client(l).Claim(ctx, player)
	if err != nil {
		return dataclient.Loaded{}, fmt.Errorf("claim player %s for %s: %w", player, l.id, err)
	}
	return ld, nil
}

// flush waits until every queued save of l reached an outcome.
func (d *dataLink) flush(ctx context.Context, l *loop) error {
	return d.client(l).Flush(ctx)
}

// flushAll waits for every queued save while the loops still run, so
// their acknowledgements are logged before the process exits.
func (d *dataLink) flushAll(ctx context.Context) {
	// Not under mu: outcomes arrive through result, which takes it.
	for id, c := range d.snapshotClients() {
		if err := c.Flush(ctx); err != nil {
			d.log.Warn("saves still queued at exit; the next incarnation resends them", zap.String("scene", id), zap.Error(err))
		}
	}
}

func (d *dataLink) close() {
	for _, c := range d.snapshotClients() {
		c.Close()
	}
}

func (d *dataLink) snapshotClients() map[string]*dataclient.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]*dataclient.Client, len(d.clients))
	for id, c := range d.clients {
		out[id] = c
	}
	return out
}
