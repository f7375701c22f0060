package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Prefix is the subject prefix; DefaultPrefix when empty. Tests use a
	// unique prefix so runs against a shared server do not collide.
	Prefix string
	// Instance names this owner instance, stable across its restarts
	// (e.g. "scene-3"), so that a respawned instance's Reset removes the keys
	// its previous incarnation held. Defaults to the owner role, which fits
	// single-instance owners such as the world manager.
	Instance string
	// Epoch is the incarnation number of the owner (informational: carried
	// on the wire and shown by readers; ordering comes from versions).
	Epoch uint64
	// MinVersion is a floor for versions, for an owner that persists the
	// last version it used and does not want to trust the wall clock.
	MinVersion uint64
	// Logger receives errors from the background flush; nil = no logs.
	Logger *zap.Logger
	// Now overrides the clock (tests); nil = time.Now.
	Now func() time.Time
}

// WriterStats counts what a writer did.
type WriterStats struct {
	Puts      uint64 // Put calls
	Deletes   uint64 // Delete calls
	Entries   uint64 // entries published on the update subject
	Messages  uint64 // messages published on the update subject
	Snapshots uint64 // snapshot requests answered
	Keys      int    // keys currently held
	Pending   int    // batched changes not yet published
	Version   uint64 // last version assigned
}

// Writer is the owner's write handle on a module. It is safe for concurrent
// use. Only the module's owner role can create one.
type Writer[T any] struct {
	m        Module
	nc       *nats.Conn
	opts     WriterOptions
	instance string
	session  string
	upd      string
	snap     string
	log      *zap.Logger

	mu      sync.Mutex
	clock   hlc
	seq     uint64
	state   map[string]wireEntry // current value of every key this instance holds
	pending map[string]wireEntry // batched changes since the last flush
	closed  bool
	stats   WriterStats

	sub      *nats.Subscription
	statusCh chan nats.Status
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// NewWriter creates the owner's writer for module m. role is the calling
// process's role; it must be m.Owner. The writer answers snapshot requests
// until Close or until ctx is done, and in Batched mode publishes pending
// changes every m.Interval.
func NewWriter[T any](ctx context.Context, nc *nats.Conn, m Module, role Role, opts WriterOptions) (*Writer[T], error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if role != m.Owner {
		return nil, fmt.Errorf("replica: module %s: cannot create writer as %q (owner is %q): %w", m.Name, role, m.Owner, ErrNotOwner)
	}
	if nc == nil {
		return nil, fmt.Errorf("replica: module %s: nil NATS connection", m.Name)
	}
	upd, snap, err := subjects(opts.Prefix, m.Name)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	inst := opts.Instance
	if inst == "" {
		inst = string(role)
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	w := &Writer[T]{
		m: m, nc: nc, opts: opts, instance: inst, session: nuid.Next(),
		upd: upd, snap: snap,
		log:     log.With(zap.String("module", m.Name), zap.String("instance", inst)),
		clock:   hlc{last: opts.MinVersion, now: now},
		state:   map[string]wireEntry{},
		pending: map[string]wireEntry{},
	}
	w.sub, err = nc.Subscribe(snap, w.answerSnapshot)
	if err != nil {
		return nil, fmt.Errorf("replica: module %s: subscribe %s: %w", m.Name, snap, err)
	}
	// After a reconnect, readers may have asked for a snapshot before our
	// subscription was restored; announcing our state closes that window.
	w.statusCh = nc.StatusChanged(nats.CONNECTED)
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(1)
	go w.run(ctx)
	return w, nil
}

func (w *Writer[T]) run(ctx context.Context) {
	defer w.wg.Done()
	var tick <-chan time.Time
	if w.m.Mode == Batched {
		t := time.NewTicker(w.m.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if err := w.Flush(); err != nil && !errors.Is(err, errClosed) {
				w.log.Warn("replica flush failed", zap.Error(err))
			}
		case <-w.statusCh:
			if err := w.announce(); err != nil && !errors.Is(err, errClosed) {
				w.log.Warn("replica announce after reconnect failed", zap.Error(err))
			}
		}
	}
}

var errClosed = errors.New("writer closed")

// Instance returns the owner instance name carried in updates.
func (w *Writer[T]) Instance() string { return w.instance }

// Put sets key to v. In Immediate mode it is published before Put returns
// (into the connection's buffer); in Batched mode at the next interval.
func (w *Writer[T]) Put(key string, v T) error {
	if key == "" {
		return fmt.Errorf("replica: module %s: put: empty key", w.m.Name)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("replica: module %s: put %q: encode: %w", w.m.Name, key, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("replica: module %s: put %q: %w", w.m.Name, key, errClosed)
	}
	w.stats.Puts++
	e := wireEntry{Key: key, Version: w.clock.next(), Value: b}
	w.state[key] = e
	return w.changedLocked(e)
}

// Delete removes key. The delete is a versioned tombstone, so a reader
// holding an older value drops it and ignores older updates still in flight.
func (w *Writer[T]) Delete(key string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("replica: module %s: delete %q: %w", w.m.Name, key, errClosed)
	}
	w.stats.Deletes++
	e := wireEntry{Key: key, Version: w.clock.next(), Deleted: true}
	delete(w.state, key)
	return w.changedLocked(e)
}

func (w *Writer[T]) changedLocked(e wireEntry) error {
	if w.m.Mode == Batched {
		w.pending[e.Key] = e // merge: the latest change to a key wins
		return nil
	}
	if err := w.publishLocked(kindUpdate, []wireEntry{e}); err != nil {
		return fmt.Errorf("replica: module %s: publish %q: %w", w.m.Name, e.Key, err)
	}
	return nil
}

// Reset replaces the instance's whole state with keys: every key gets a new
// version and keys this instance held before (in this or a previous
// incarnation) that are not in keys are deleted on every reader. A respawned
// owner calls it once it has rebuilt its state. It is published at once, in
// either mode.
func (w *Writer[T]) Reset(keys map[string]T) error {
	enc := make(map[string][]byte, len(keys))
	for k, v := range keys {
		if k == "" {
			return fmt.Errorf("replica: module %s: reset: empty key", w.m.Name)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("replica: module %s: reset %q: encode: %w", w.m.Name, k, err)
		}
		enc[k] = b
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("replica: module %s: reset: %w", w.m.Name, errClosed)
	}
	w.state = make(map[string]wireEntry, len(enc))
	clear(w.pending) // superseded by the state below
	for _, k := range slices.Sorted(maps.Keys(enc)) {
		w.state[k] = wireEntry{Key: k, Version: w.clock.next(), Value: enc[k]}
	}
	if err := w.publishStateLocked(w.upd); err != nil {
		return fmt.Errorf("replica: module %s: reset: %w", w.m.Name, err)
	}
	return nil
}

// announce republishes the current state (same versions) on the update
// subject.
func (w *Writer[T]) announce() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errClosed
	}
	return w.publishStateLocked(w.upd)
}

// Flush publishes the pending batched changes now.
func (w *Writer[T]) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("replica: module %s: flush: %w", w.m.Name, errClosed)
	}
	return w.flushLocked()
}

func (w *Writer[T]) flushLocked() error {
	if len(w.pending) == 0 {
		return nil
	}
	entries := make([]wireEntry, 0, len(w.pending))
	for _, e := range w.pending {
		entries = append(entries, e)
	}
	clear(w.pending)
	for _, c := range chunk(entries) {
		if err := w.publishLocked(kindUpdate, c); err != nil {
			return fmt.Errorf("replica: module %s: flush %d entries: %w", w.m.Name, len(entries), err)
		}
	}
	return nil
}

// publishLocked sends one message on the update subject; w.mu is held so
// that sequence numbers follow publish order.
func (w *Writer[T]) publishLocked(kind string, entries []wireEntry) error {
	w.seq++
	msg := wireMsg{
		Kind: kind, Module: w.m.Name, Instance: w.instance, Session: w.session,
		Epoch: w.opts.Epoch, Seq: w.seq, Sent: w.clock.now().UnixNano(),
		Entries: entries,
	}
	b, err := json.Marshal(&msg)
	if err != nil {
		return err
	}
	if err := w.nc.Publish(w.upd, b); err != nil {
		return err
	}
	w.stats.Messages++
	w.stats.Entries += uint64(len(entries))
	return nil
}

// stateMsgsLocked encodes the instance's complete state as one or more
// state messages. Pending batched changes are already in w.state, so the
// state is the freshest the owner has.
func (w *Writer[T]) stateMsgsLocked(onUpdateSubject bool) ([][]byte, error) {
	entries := make([]wireEntry, 0, len(w.state))
	for _, k := range slices.Sorted(maps.Keys(w.state)) {
		entries = append(entries, w.state[k])
	}
	chunks := chunk(entries)
	id := nuid.Next()
	wm := w.clock.last
	out := make([][]byte, 0, len(chunks))
	for i, c := range chunks {
		msg := wireMsg{
			Kind: kindState, Module: w.m.Name, Instance: w.instance, Session: w.session,
			Epoch: w.opts.Epoch, Sent: w.clock.now().UnixNano(),
			ID: id, Part: i, Parts: len(chunks), Watermark: wm, Entries: c,
		}
		if onUpdateSubject {
			w.seq++
		}
		msg.Seq = w.seq
		b, err := json.Marshal(&msg)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (w *Writer[T]) publishStateLocked(subject string) error {
	msgs, err := w.stateMsgsLocked(subject == w.upd)
	if err != nil {
		return err
	}
	for _, b := range msgs {
		if err := w.nc.Publish(subject, b); err != nil {
			return err
		}
		if subject == w.upd {
			w.stats.Messages++
		}
	}
	if subject == w.upd {
		w.stats.Entries += uint64(len(w.state))
	}
	return nil
}

// answerSnapshot runs on the NATS dispatch goroutine for each snapshot
// request: every owner instance answers with its complete state.
func (w *Writer[T]) answerSnapshot(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.stats.Snapshots++
	if err := w.publishStateLocked(m.Reply); err != nil {
		w.log.Warn("replica snapshot reply failed", zap.Error(err))
	}
}

// Stats returns the writer's counters.
func (w *Writer[T]) Stats() WriterStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stats
	st.Keys = len(w.state)
	st.Pending = len(w.pending)
	st.Version = w.clock.last
	return st
}

// Close publishes pending changes, stops answering snapshots and stops the
// background goroutine. The NATS connection belongs to the caller and stays
// open. Readers keep the instance's keys: an owner that closes is expected
// to come back, or its successor to Reset.
func (w *Writer[T]) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	err := w.flushLocked()
	w.closed = true
	w.mu.Unlock()

	w.cancel()
	w.wg.Wait()
	w.nc.RemoveStatusListener(w.statusCh)
	if uerr := w.sub.Unsubscribe(); uerr != nil && !errors.Is(uerr, nats.ErrConnectionClosed) && !errors.Is(uerr, nats.ErrBadSubscription) {
		err = errors.Join(err, fmt.Errorf("replica: module %s: unsubscribe: %w", w.m.Name, uerr))
	}
	if w.nc.IsConnected() {
		// Push the last batch out of the client buffer before returning.
		if ferr := w.nc.FlushTimeout(2 * time.Second); ferr != nil {
			err = errors.Join(err, fmt.Errorf("replica: module %s: flush connection: %w", w.m.Name, ferr))
		}
	}
	return err
}
