// The Reader's API: options, construction, reads (Get, All, Keys, Len),
// change subscriptions, stats and Close.

package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	// Prefix is the subject prefix; DefaultPrefix when empty.
	Prefix string
	// Registerer receives the reader's metrics (labelled with the module
	// name); nil = no metrics. Close unregisters them.
	Registerer prometheus.Registerer
	// Logger receives decode errors and resync notices; nil = no logs.
	Logger *zap.Logger
	// SnapshotWait bounds how long a snapshot waits for owner instances
	// before the reader counts as synced (default 500ms). Replies that come
	// later are still applied.
	SnapshotWait time.Duration
	// QuietWait ends a snapshot early once a complete reply has arrived and
	// no other reply arrived for this long (default 50ms).
	QuietWait time.Duration
	// LagWindow is how many recent updates the lag quantiles cover
	// (default 1024).
	LagWindow int
	// TombstoneTTL is how long deleted keys are remembered to reject older
	// updates still in flight (default 1 minute).
	TombstoneTTL time.Duration
	// ResyncEvery, if positive, also resynchronises periodically, as a
	// safety net; by default the reader resyncs after reconnects and
	// sequence gaps only.
	ResyncEvery time.Duration
	// Now overrides the clock (tests); nil = time.Now.
	Now func() time.Time
}

// Entry is one key of a replica.
type Entry[T any] struct {
	Key      string
	Value    T
	Version  uint64
	Instance string // owner instance that wrote it
	Epoch    uint64 // that instance's epoch
}

// Stats describes a reader's freshness.
type Stats struct {
	Module   string
	Keys     int
	Synced   bool   // a first snapshot has completed
	Messages uint64 // messages received on the update subject
	Applied  uint64 // entries applied (newer than held)
	Ignored  uint64 // entries ignored as stale or duplicate
	Resyncs  uint64 // snapshot requests sent
	Gaps     uint64 // sequence gaps detected (each triggers a resync)
	Errors   uint64 // undecodable messages or values
	// LastUpdate is when the newest update was received; Age is now minus
	// that (zero if none yet).
	LastUpdate time.Time
	Age        time.Duration
	// Lag is receive time minus the owner's publish stamp, over the last
	// LagWindow updates.
	LagP50, LagP99, LagMax time.Duration
	LagSamples             int
}

type item[T any] struct {
	val       T
	version   uint64
	instance  string
	epoch     uint64
	deleted   bool
	deletedAt time.Time
}

// Reader is a read-only replica of a module. It has no method that writes:
// only the owner's Writer can change the data. It is safe for concurrent use.
type Reader[T any] struct {
	m     Module
	nc    *nats.Conn
	opts  ReaderOptions
	upd   string
	snap  string
	inbox string
	log   *zap.Logger
	now   func() time.Time

	// applyMu serialises applying messages and delivering callbacks, so
	// subscribers see changes in the order they were applied.
	applyMu sync.Mutex
	closed  bool
	subs    map[int]func(key string, v T, deleted bool)
	nextSub int

	mu         sync.RWMutex // guards the fields below; taken after applyMu
	items      map[string]*item[T]
	live       int
	sessions   map[string]*session
	states     map[string]*partialState
	lag        []time.Duration
	lagPos     int
	lagN       int
	lastUpdate time.Time
	st         Stats

	synced   chan struct{}
	isSynced bool
	replied  chan struct{}
	resync   chan struct{}

	updSub, inboxSub *nats.Subscription
	statusCh         chan nats.Status
	collector        prometheus.Collector
	cancel           context.CancelFunc
	wg               sync.WaitGroup
	closeOnce        sync.Once
}

// NewReader starts a replica of module m for a process of the given role,
// which must be a declared subscriber (or the owner). It subscribes to
// updates, then asks every owner instance for a snapshot; it resyncs by
// itself after reconnects and detected gaps until Close (or ctx is done;
// Close must still be called).
func NewReader[T any](ctx context.Context, nc *nats.Conn, m Module, role Role, opts ReaderOptions) (*Reader[T], error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if role != m.Owner && !m.Subscribes(role) {
		return nil, fmt.Errorf("replica: module %s: cannot create reader as %q (subscribers %v): %w", m.Name, role, m.Subscribers, ErrNotSubscriber)
	}
	if nc == nil {
		return nil, fmt.Errorf("replica: module %s: nil NATS connection", m.Name)
	}
	upd, snap, err := subjects(opts.Prefix, m.Name)
	if err != nil {
		return nil, err
	}
	if opts.SnapshotWait <= 0 {
		opts.SnapshotWait = 500 * time.Millisecond
	}
	if opts.QuietWait <= 0 {
		opts.QuietWait = 50 * time.Millisecond
	}
	if opts.LagWindow <= 0 {
		opts.LagWindow = 1024
	}
	if opts.TombstoneTTL <= 0 {
		opts.TombstoneTTL = time.Minute
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	r := &Reader[T]{
		m: m, nc: nc, opts: opts, upd: upd, snap: snap, inbox: nc.NewRespInbox(),
		log:      log.With(zap.String("module", m.Name)),
		now:      now,
		subs:     map[int]func(string, T, bool){},
		items:    map[string]*item[T]{},
		sessions: map[string]*session{},
		states:   map[string]*partialState{},
		lag:      make([]time.Duration, opts.LagWindow),
		synced:   make(chan struct{}),
		replied:  make(chan struct{}, 1),
		resync:   make(chan struct{}, 1),
	}
	r.st.Module = m.Name
	if opts.Registerer != nil {
		c := newCollector(m.Name, func() Stats { return r.Stats() })
		if err := opts.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("replica: module %s: register metrics: %w", m.Name, err)
		}
		r.collector = c
	}
	// Subscribe to updates before asking for the snapshot so nothing falls
	// between them; versions make the overlap harmless.
	if r.updSub, err = nc.Subscribe(upd, func(msg *nats.Msg) { r.handle(msg, false) }); err != nil {
		r.unregister()
		return nil, fmt.Errorf("replica: module %s: subscribe %s: %w", m.Name, upd, err)
	}
	if r.inboxSub, err = nc.Subscribe(r.inbox, func(msg *nats.Msg) { r.handle(msg, true) }); err != nil {
		_ = r.updSub.Unsubscribe()
		r.unregister()
		return nil, fmt.Errorf("replica: module %s: subscribe inbox: %w", m.Name, err)
	}
	for _, s := range []*nats.Subscription{r.updSub, r.inboxSub} {
		// Bursts (an immediate module flooded, a big snapshot) should queue
		// rather than be dropped; a drop is still repaired by the gap
		// detection and resync.
		_ = s.SetPendingLimits(1<<20, 256<<20)
	}
	r.statusCh = nc.StatusChanged(nats.CONNECTED)
	ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Add(1)
	go r.run(ctx)
	return r, nil
}

// WaitSynced blocks until the first snapshot has completed or ctx is done.
func (r *Reader[T]) WaitSynced(ctx context.Context) error {
	select {
	case <-r.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("replica: module %s: wait for snapshot: %w", r.m.Name, ctx.Err())
	}
}

// Get returns the value of key and whether it exists.
func (r *Reader[T]) Get(key string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	it := r.items[key]
	if it == nil || it.deleted {
		var zero T
		return zero, false
	}
	return it.val, true
}

// Entry returns key's value with its version and writer.
func (r *Reader[T]) Entry(key string) (Entry[T], bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	it := r.items[key]
	if it == nil || it.deleted {
		return Entry[T]{}, false
	}
	return Entry[T]{Key: key, Value: it.val, Version: it.version, Instance: it.instance, Epoch: it.epoch}, true
}

// All returns every key, sorted by key.
func (r *Reader[T]) All() []Entry[T] {
	r.mu.RLock()
	out := make([]Entry[T], 0, r.live)
	for k, it := range r.items {
		if !it.deleted {
			out = append(out, Entry[T]{Key: k, Value: it.val, Version: it.version, Instance: it.instance, Epoch: it.epoch})
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Keys returns the keys, sorted.
func (r *Reader[T]) Keys() []string {
	r.mu.RLock()
	out := make([]string, 0, r.live)
	for k, it := range r.items {
		if !it.deleted {
			out = append(out, k)
		}
	}
	r.mu.RUnlock()
	slices.Sort(out)
	return out
}

// Len returns the number of keys.
func (r *Reader[T]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.live
}

// Subscribe calls fn once for every current key (sorted), then for every
// change as it is applied, in order; deleted reports a removal (v is then
// the zero value). fn runs on a NATS delivery goroutine and must be quick;
// it may call Get/All/Keys but not Subscribe or Close. The returned func
// stops the notifications.
func (r *Reader[T]) Subscribe(fn func(key string, v T, deleted bool)) (cancel func()) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.mu.Lock()
	id := r.nextSub
	r.nextSub++
	r.subs[id] = fn
	r.mu.Unlock()
	for _, e := range r.All() {
		fn(e.Key, e.Value, false)
	}
	return func() {
		r.mu.Lock()
		delete(r.subs, id)
		r.mu.Unlock()
	}
}

// Stats returns the reader's freshness figures.
func (r *Reader[T]) Stats() Stats {
	r.mu.RLock()
	st := r.st
	st.Keys = r.live
	st.Synced = r.isSynced
	st.LastUpdate = r.lastUpdate
	lags := slices.Clone(r.lag[:r.lagN])
	r.mu.RUnlock()
	if !st.LastUpdate.IsZero() {
		st.Age = r.now().Sub(st.LastUpdate)
	}
	if n := len(lags); n > 0 {
		slices.Sort(lags)
		st.LagSamples = n
		st.LagP50 = lags[(n-1)*50/100]
		st.LagP99 = lags[(n-1)*99/100]
		st.LagMax = lags[n-1]
	}
	return st
}

// Close stops the reader: its goroutine, its subscriptions and its metrics.
// The NATS connection belongs to the caller and stays open.
func (r *Reader[T]) Close() error {
	var err error
	r.closeOnce.Do(func() {
		r.cancel()
		r.wg.Wait()
		r.nc.RemoveStatusListener(r.statusCh)
		for _, s := range []*nats.Subscription{r.updSub, r.inboxSub} {
			if uerr := s.Unsubscribe(); uerr != nil && !errors.Is(uerr, nats.ErrConnectionClosed) && !errors.Is(uerr, nats.ErrBadSubscription) {
				err = errors.Join(err, fmt.Errorf("replica: module %s: unsubscribe: %w", r.m.Name, uerr))
			}
		}
		// Wait for a message being applied, and make sure none follows.
		r.applyMu.Lock()
		r.closed = true
		r.applyMu.Unlock()
		r.unregister()
	})
	return err
}

func (r *Reader[T]) unregister() {
	if r.collector != nil && r.opts.Registerer != nil {
		r.opts.Registerer.Unregister(r.collector)
	}
}
