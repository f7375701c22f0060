// Applying messages to a Reader: decoding an update or snapshot reply,
// session gap detection, version ordering, tombstones, and multi-part state
// messages that delete what an instance no longer holds.

package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

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
