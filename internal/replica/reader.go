package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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

type session struct {
	last uint64
	seen time.Time
}

// partialState collects the parts of one state message.
type partialState struct {
	instance string
	wm       uint64
	parts    int
	got      map[int]bool
	keys     map[string]struct{}
	started  time.Time
}

type change[T any] struct {
	key     string
	val     T
	deleted bool
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

// The status header NATS sets on a "no responders" answer (nats.go keeps
// these names unexported).
const (
	statusHeader = "Status"
	noResponders = "503"
)

// handle applies one message from the update subject or, if reply, a
// snapshot reply on the reader's inbox.
func (r *Reader[T]) handle(msg *nats.Msg, reply bool) {
	if reply && len(msg.Data) == 0 && msg.Header.Get(statusHeader) == noResponders {
		// NATS answers a snapshot request nobody subscribes to with an
		// empty "503 no responders" message: the owner is not up yet (every
		// worldmgr start, before its scenes). Not a bad message: its
		// first publication will reach us, and it resets the state.
		r.log.Debug("replica: no owner answered the snapshot request yet", zap.String("module", r.m.Name))
		return
	}
	var wm wireMsg
	decodeErr := json.Unmarshal(msg.Data, &wm)
	if decodeErr == nil && wm.Kind != kindUpdate && wm.Kind != kindState {
		decodeErr = fmt.Errorf("unknown kind %q", wm.Kind)
	}
	if decodeErr == nil && reply && wm.Kind != kindState {
		decodeErr = errors.New("snapshot reply is not a state")
	}

	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.closed {
		return
	}
	now := r.now()
	r.mu.Lock()
	if decodeErr != nil {
		r.st.Errors++
		r.mu.Unlock()
		r.log.Warn("replica: undecodable message", zap.String("subject", msg.Subject), zap.Error(decodeErr))
		return
	}
	gap := false
	s := r.sessions[wm.Session]
	if s == nil {
		s = &session{}
		r.sessions[wm.Session] = s
		// A session first seen mid-stream after we synced means we missed
		// its first messages (its snapshot reply may still be in flight,
		// in which case the resync is merely redundant).
		gap = !reply && r.isSynced && wm.Seq != 1
	} else if !reply && wm.Seq > s.last+1 {
		gap = true
	}
	s.last = max(s.last, wm.Seq)
	s.seen = now
	if gap {
		r.st.Gaps++
	}
	if !reply {
		r.st.Messages++
		r.lastUpdate = now
		lag := max(now.Sub(time.Unix(0, wm.Sent)), 0)
		r.lag[r.lagPos] = lag
		r.lagPos = (r.lagPos + 1) % len(r.lag)
		r.lagN = min(r.lagN+1, len(r.lag))
	}
	var changes []change[T]
	for _, e := range wm.Entries {
		r.applyLocked(&wm, e, now, &changes)
	}
	complete := false
	if wm.Kind == kindState {
		complete = r.stateLocked(&wm, now, &changes)
	}
	subs := slices.Collect(maps.Values(r.subs))
	r.mu.Unlock()

	for _, c := range changes {
		for _, fn := range subs {
			fn(c.key, c.val, c.deleted)
		}
	}
	if gap {
		r.requestResync()
	}
	if reply && complete {
		select {
		case r.replied <- struct{}{}:
		default:
		}
	}
}

func (r *Reader[T]) applyLocked(wm *wireMsg, e wireEntry, now time.Time, changes *[]change[T]) {
	cur := r.items[e.Key]
	if cur != nil && e.Version <= cur.version {
		r.st.Ignored++
		return
	}
	if e.Deleted {
		r.st.Applied++
		if cur == nil {
			// Remember the tombstone so an older Put still in flight
			// cannot resurrect the key.
			r.items[e.Key] = &item[T]{version: e.Version, instance: wm.Instance, epoch: wm.Epoch, deleted: true, deletedAt: now}
			return
		}
		r.tombstoneLocked(e.Key, cur, e.Version, now, changes)
		cur.instance, cur.epoch = wm.Instance, wm.Epoch
		return
	}
	var v T
	if err := json.Unmarshal(e.Value, &v); err != nil {
		r.st.Errors++
		r.log.Warn("replica: undecodable value", zap.String("key", e.Key), zap.Uint64("version", e.Version), zap.Error(err))
		return
	}
	r.st.Applied++
	if cur == nil || cur.deleted {
		r.live++
	}
	r.items[e.Key] = &item[T]{val: v, version: e.Version, instance: wm.Instance, epoch: wm.Epoch}
	*changes = append(*changes, change[T]{key: e.Key, val: v})
}

func (r *Reader[T]) tombstoneLocked(key string, it *item[T], version uint64, now time.Time, changes *[]change[T]) {
	if !it.deleted {
		r.live--
		*changes = append(*changes, change[T]{key: key, deleted: true})
	}
	var zero T
	it.val, it.version, it.deleted, it.deletedAt = zero, version, true, now
}

// stateLocked records a part of a state message; when all parts are in,
// the keys the instance held at or before the watermark that the state does
// not contain are deleted. It reports whether the state is complete.
func (r *Reader[T]) stateLocked(wm *wireMsg, now time.Time, changes *[]change[T]) bool {
	p := r.states[wm.ID]
	if p == nil {
		p = &partialState{instance: wm.Instance, wm: wm.Watermark, parts: wm.Parts, got: map[int]bool{}, keys: map[string]struct{}{}, started: now}
		r.states[wm.ID] = p
	}
	if p.got[wm.Part] {
		return false
	}
	p.got[wm.Part] = true
	for _, e := range wm.Entries {
		p.keys[e.Key] = struct{}{}
	}
	if len(p.got) < p.parts {
		return false
	}
	delete(r.states, wm.ID)
	for _, k := range slices.Sorted(maps.Keys(r.items)) {
		it := r.items[k]
		if it.deleted || it.instance != p.instance || it.version > p.wm {
			continue
		}
		if _, ok := p.keys[k]; !ok {
			// Keep the old version: a newer write of this key by another
			// instance (a player who moved) must still win.
			r.st.Applied++
			r.tombstoneLocked(k, it, it.version, now, changes)
		}
	}
	return true
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
