package dataclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/player"
)

var (
	// ErrQueueFull is returned by Enqueue when the queue already holds
	// its limit of players and this one is not among them. The scene
	// keeps the player dirty and enqueues again on its next save tick.
	ErrQueueFull = errors.New("datasvr: save queue full")
	// ErrClientClosed is returned by Enqueue after Close.
	ErrClientClosed = errors.New("datasvr: client closed")
)

// pending is the newest unsent (or in-flight) save of one player.
type pending struct {
	version  uint64
	data     []byte
	inflight bool   // a sender has it; version sent is sentVer
	sentVer  uint64 // version in flight
	queued   bool   // in the ready list
	retry    *time.Timer
	attempt  int
}

// saveQueue keeps the newest save per player and sends them with a few
// concurrent senders, retrying transient failures with backoff. It never
// blocks the caller: the game loop only encodes and hands over.
type saveQueue struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	cond   *sync.Cond
	m      map[string]*pending
	ready  []string
	closed bool
	empty  chan struct{} // closed while m is empty
}

func (c *Client) queue() *saveQueue {
	c.qOnce.Do(func() {
		q := &saveQueue{c: c, m: make(map[string]*pending), empty: make(chan struct{})}
		close(q.empty)
		q.cond = sync.NewCond(&q.mu)
		q.ctx, q.cancel = context.WithCancel(context.Background())
		for range max(c.senders, 1) {
			q.wg.Go(q.sender)
		}
		c.q = q
	})
	return c.q
}

// Enqueue hands a save to the background queue and returns at once. Only
// the newest version per player is kept: an older or equal version than
// one already queued is ignored. The outcome arrives through the
// WithOnResult callback. While datasvr is unreachable saves stay queued
// and are retried with backoff (at most the queue limit of players;
// beyond it Enqueue fails with ErrQueueFull).
func (c *Client) Enqueue(id string, version uint64, data player.Data) error {
	b, err := data.Encode()
	if err != nil {
		return err
	}
	return c.queue().put(id, version, b)
}

// Pending is how many players have a save queued or in flight.
func (c *Client) Pending() int {
	q := c.queue()
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.m)
}

// Flush waits until every enqueued save reached a final outcome (or ctx
// ends). Scenes call it on shutdown and for `respawn save-all`.
func (c *Client) Flush(ctx context.Context) error {
	q := c.queue()
	q.mu.Lock()
	empty := q.empty
	n := len(q.m)
	q.mu.Unlock()
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scene %s: %d players still waiting to be saved: %w", c.scene, n, ctx.Err())
	}
}

// Close stops the queue. Saves not yet acknowledged are dropped (call
// Flush first); a request in flight is abandoned.
func (c *Client) Close() {
	if c.q == nil {
		c.qOnce.Do(func() {}) // no queue was ever started; make sure none starts
		return
	}
	q := c.q
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	for _, p := range q.m {
		if p.retry != nil {
			p.retry.Stop()
		}
	}
	q.cond.Broadcast()
	q.mu.Unlock()
	q.cancel()
	q.wg.Wait()
}

func (q *saveQueue) put(id string, version uint64, data []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClientClosed
	}
	if p := q.m[id]; p != nil {
		if version <= p.version {
			return nil
		}
		p.version, p.data = version, data
		q.push(id, p)
		return nil
	}
	if len(q.m) >= q.c.queueLimit {
		return fmt.Errorf("%w: %d players queued; player %s version %d not queued", ErrQueueFull, len(q.m), id, version)
	}
	if len(q.m) == 0 {
		q.empty = make(chan struct{})
	}
	p := &pending{version: version, data: data}
	q.m[id] = p
	q.push(id, p)
	return nil
}

// push makes p eligible for sending unless it already is, is being sent,
// or is waiting out a retry backoff. Called with mu held.
func (q *saveQueue) push(id string, p *pending) {
	if p.queued || p.inflight || p.retry != nil {
		return
	}
	p.queued = true
	q.ready = append(q.ready, id)
	q.cond.Signal()
}

// take waits for the next player to send and marks it in flight.
func (q *saveQueue) take() (id string, version uint64, data []byte, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.closed {
			return "", 0, nil, false
		}
		for len(q.ready) > 0 {
			id = q.ready[0]
			q.ready[0] = ""
			q.ready = q.ready[1:]
			p := q.m[id]
			if p == nil || !p.queued {
				continue
			}
			p.queued, p.inflight, p.sentVer = false, true, p.version
			return id, p.version, p.data, true
		}
		q.ready = nil // let the backing array go
		q.cond.Wait()
	}
}

func (q *saveQueue) sender() {
	for {
		id, version, data, ok := q.take()
		if !ok {
			return
		}
		err := q.c.saveRaw(q.ctx, id, version, data)
		q.done(id, version, err)
	}
}

func (q *saveQueue) done(id string, version uint64, err error) {
	q.mu.Lock()
	p := q.m[id]
	if p == nil || q.closed {
		q.mu.Unlock()
		return
	}
	p.inflight = false
	if err != nil && isTransient(err) {
		p.attempt++
		delay := backoff(p.attempt)
		if p.attempt == 1 || p.attempt%20 == 0 {
			q.c.log.Warn("save not acknowledged; retrying", zap.String("player", id), zap.Uint64("version", version),
				zap.Int("attempt", p.attempt), zap.Duration("retry_in", delay), zap.Error(err))
		}
		p.retry = time.AfterFunc(delay, func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			p.retry = nil
			if !q.closed && q.m[id] == p {
				q.push(id, p)
			}
		})
		q.mu.Unlock()
		return
	}
	p.attempt = 0
	if p.version > version {
		q.push(id, p) // a newer version arrived while this one was in flight
	} else {
		delete(q.m, id)
		if len(q.m) == 0 {
			close(q.empty)
		}
	}
	q.mu.Unlock()
	if err != nil {
		// One line a second per reason: a stale scene's saves are refused
		// by the thousand, and the count says how many.
		if ok, n := q.c.rejects.Allow(ErrorOf(err).Code, time.Now()); ok {
			q.c.log.Warn("save rejected", zap.String("player", id), zap.Uint64("version", version), zap.Int("suppressed", n), zap.Error(err))
		}
	}
	if q.c.onResult != nil {
		q.c.onResult(id, version, err)
	}
}

// backoff is 50 ms doubling to 2 s: fast enough that a datasvr restart
// costs players little, slow enough not to hammer one that is down.
func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond
	for i := 1; i < attempt && d < 2*time.Second; i++ {
		d *= 2
	}
	return min(d, 2*time.Second)
}
