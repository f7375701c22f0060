// Keeping a Reader in sync: the background loop, snapshot requests to the
// owner instances, resync requests, and garbage collection of tombstones,
// idle sessions and abandoned partial states.

package replica

import (
	"context"
	"time"

	"go.uber.org/zap"
)

func (r *Reader[T]) run(ctx context.Context) {
	defer r.wg.Done()
	var tick <-chan time.Time
	if r.opts.ResyncEvery > 0 {
		t := time.NewTicker(r.opts.ResyncEvery)
		defer t.Stop()
		tick = t.C
	}
	r.snapshot(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.statusCh:
			r.log.Info("replica resync after reconnect")
			r.snapshot(ctx)
		case <-r.resync:
			r.snapshot(ctx)
		case <-tick:
			r.snapshot(ctx)
		}
	}
}

// snapshot asks every owner instance for its state and waits until the
// replies have come in (or SnapshotWait has passed).
func (r *Reader[T]) snapshot(ctx context.Context) {
	select { // forget completions of earlier snapshots
	case <-r.replied:
	default:
	}
	r.mu.Lock()
	r.st.Resyncs++
	r.mu.Unlock()
	if err := r.nc.PublishRequest(r.snap, r.inbox, nil); err != nil {
		r.log.Warn("replica snapshot request failed", zap.Error(err))
	}
	deadline := time.NewTimer(r.opts.SnapshotWait)
	defer deadline.Stop()
	var quiet <-chan time.Time
wait:
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			break wait
		case <-r.replied:
			quiet = time.After(r.opts.QuietWait)
		case <-quiet:
			break wait
		}
	}
	r.mu.Lock()
	if !r.isSynced {
		r.isSynced = true
		close(r.synced)
	}
	r.gcLocked(r.now())
	r.mu.Unlock()
}

// gcLocked forgets old tombstones, idle sessions and abandoned partial states.
func (r *Reader[T]) gcLocked(now time.Time) {
	for k, it := range r.items {
		if it.deleted && now.Sub(it.deletedAt) > r.opts.TombstoneTTL {
			delete(r.items, k)
		}
	}
	for id, s := range r.sessions {
		if now.Sub(s.seen) > 10*time.Minute {
			delete(r.sessions, id)
		}
	}
	for id, p := range r.states {
		if now.Sub(p.started) > time.Minute {
			delete(r.states, id)
		}
	}
}

func (r *Reader[T]) requestResync() {
	select {
	case r.resync <- struct{}{}:
	default: // one is already queued
	}
}
