package datasvr

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/store"
	"github.com/respawn-dev/respawn/internal/validate"
)

// entry is one player in the cache.
//
// Locking: op serialises every change to one player (load, save, GM…)
// from the read of its current state to the journal fsync and the update,
// so two saves of one player can never be journaled in one order and
// applied in the other. The state fields are written with both op and
// Server.mu held, so a holder of op may read them without mu, and the
// flusher and eviction read them under mu alone.
type entry struct {
	id string
	op sync.Mutex

	// Under Server.mu:
	refs    int  // requests using this entry; >0 pins it in the cache
	loaded  bool // state below is valid
	exists  bool
	version uint64
	data    []byte // player.Data encoding; replaced, never modified in place
	owner   Owner
	dirty   bool
	lru     *list.Element
	// dirtySeq is a lower bound for the journal seq of the first record
	// not yet in the database; dirtyAt is when that change was made. The
	// flusher writes a player once it has been dirty for flush_interval,
	// and never checkpoints the journal past a dirty player's dirtySeq.
	dirtySeq uint64
	dirtyAt  time.Time
	lastSeq  uint64 // seq of the newest record of this player
	// provisional: created while the database was unreachable and not yet
	// checked against it (degrade.go); never flushed until it is.
	provisional bool
}

// journalRecord is one journal entry: the whole new state of one player.
// Replaying records in order therefore rebuilds every player without
// reading the database.
type journalRecord struct {
	Player  string          `json:"p"`
	Version uint64          `json:"v"`
	Owner   Owner           `json:"o"`
	Data    json.RawMessage `json:"d"`
	// Create marks a create made without the database ("provisional") and
	// its later check ("verified"); empty for every other change.
	Create string `json:"c,omitempty"`
	// GM is the operator request this change answers, recorded with it so
	// a retry after a crash is answered, not applied again (gmids.go).
	GM *gmRecord `json:"g,omitempty"`
}

func (e *entry) size() int64 { return int64(len(e.data)+len(e.id)) + 256 }

// acquire returns id's entry, pinned until unpin.
func (s *Server) acquire(id string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.players[id]
	if e == nil {
		e = &entry{id: id}
		s.players[id] = e
	}
	e.refs++
	s.settle(e)
	return e
}

func (s *Server) unpin(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.refs--
	s.settle(e)
	s.evict()
}

// settle puts e in or out of the eviction list after a change. Only clean,
// unowned, unpinned players may be evicted: online players and anything
// not yet in the database always stay. Called with mu held.
func (s *Server) settle(e *entry) {
	evictable := e.refs == 0 && e.loaded && e.exists && !e.dirty && e.owner.Scene == ""
	if e.refs == 0 && (!e.loaded || !e.exists) {
		// Nothing worth caching (unknown player, or a failed load).
		s.dropLRU(e)
		delete(s.players, e.id)
		return
	}
	switch {
	case evictable && e.lru == nil:
		e.lru = s.lru.PushBack(e)
		s.lruBytes += e.size()
	case evictable:
		s.lru.MoveToBack(e.lru)
	case !evictable:
		s.dropLRU(e)
	}
}

func (s *Server) dropLRU(e *entry) {
	if e.lru != nil {
		s.lru.Remove(e.lru)
		e.lru = nil
		s.lruBytes -= e.size()
	}
}

// evict drops least recently used offline players above the cache cap.
// Called with mu held.
func (s *Server) evict() {
	limit := s.cfg.Datasvr.CacheMaxBytes
	for limit > 0 && s.lruBytes > limit {
		front := s.lru.Front()
		if front == nil {
			return
		}
		e := front.Value.(*entry)
		s.dropLRU(e)
		delete(s.players, e.id)
		s.m.evictions.Add(1)
	}
}

// ensureLoaded fills e from the database if it is not cached. Called with
// e.op held. Without a reachable database an uncached player cannot be
// served: ErrUnavailable (retry later), and the outage is recorded.
func (s *Server) ensureLoaded(ctx context.Context, e *entry) error {
	if e.loaded {
		return nil
	}
	st := s.db()
	if st == nil {
		return s.errNoDB(e.id)
	}
	rec, err := st.Load(ctx, e.id)
	if errors.Is(err, store.ErrNotFound) {
		s.dbUp()
		s.mu.Lock()
		e.loaded, e.exists = true, false
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		if ctx.Err() == nil {
			s.dbDown(err)
		}
		return fmt.Errorf("%w: load player %s from database: %v", ErrUnavailable, e.id, err)
	}
	s.dbUp()
	s.mu.Lock()
	e.loaded, e.exists = true, true
	e.version = rec.Version
	e.data = rec.Data
	e.owner = Owner{Scene: rec.OwnerScene, Epoch: rec.OwnerEpoch}
	s.mu.Unlock()
	return nil
}

// commit journals the new state of e and applies it once it is durable.
// Called with e.op held. On error nothing changed.
func (s *Server) commit(e *entry, version uint64, owner Owner, data []byte) error {
	return s.commitRec(e, journalRecord{Version: version, Owner: owner, Data: data})
}

// commitRec is commit with the record's extra fields (create marks, GM
// request). r.Player is filled in.
func (s *Server) commitRec(e *entry, r journalRecord) error {
	r.Player = e.id
	payload, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("%w: player %s: encode journal record: %v", ErrBadRequest, e.id, err)
	}
	// Register as in flight before appending: the flusher must not
	// checkpoint past a record that is durable but not yet applied here.
	s.mu.Lock()
	start := s.journal.NextSeq()
	s.inflight[start]++
	s.mu.Unlock()

	seq, err := s.journal.Append(s.bg, payload)

	if err == nil && r.GM != nil {
		// Recorded before the in-flight mark goes, so no checkpoint can
		// drop the journal's copy before the request table has its own.
		s.gmids.put(*r.GM)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[start]--; s.inflight[start] == 0 {
		delete(s.inflight, start)
	}
	if err != nil {
		s.m.journalErrors.Add(1)
		return fmt.Errorf("%w: player %s: journal: %v", ErrUnavailable, e.id, err)
	}
	s.apply(e, &r, seq, time.Now())
	return nil
}

// apply sets e's state from r and marks it dirty. Called with mu held.
func (s *Server) apply(e *entry, r *journalRecord, seq uint64, at time.Time) {
	wasSize := e.size()
	e.loaded, e.exists = true, true
	e.version, e.owner, e.data = r.Version, r.Owner, r.Data
	switch r.Create {
	case createProvisional:
		e.provisional = true
		s.provisional[e.id] = true
	case createVerified:
		e.provisional = false
		delete(s.provisional, e.id)
	}
	if e.lru != nil {
		s.lruBytes += e.size() - wasSize
	}
	e.lastSeq = seq
	if !e.dirty {
		e.dirty, e.dirtySeq, e.dirtyAt = true, seq, at
		s.dirty[e.id] = e
	}
	s.settle(e)
}

// checkOwner applies the fencing rules for a write by scene/epoch. It
// returns the owner to record: a higher epoch of the holding scene takes
// the lease over (a respawned scene that rebuilt the player from its log).
func checkOwner(e *entry, scene string, epoch uint64) (Owner, error) {
	switch {
	case e.owner.Scene == "":
		return Owner{}, fmt.Errorf("%w: player %s is not held by any scene (scene %s epoch %d)", ErrNotOwner, e.id, scene, epoch)
	case e.owner.Scene != scene:
		return Owner{}, fmt.Errorf("%w: player %s is held by scene %s epoch %d, not %s", ErrNotOwner, e.id, e.owner.Scene, e.owner.Epoch, scene)
	case e.owner.Epoch == 0:
		return Owner{}, fmt.Errorf("%w: player %s was handed over to scene %s and must be loaded first", ErrNotOwner, e.id, scene)
	case epoch < e.owner.Epoch:
		return Owner{}, fmt.Errorf("%w: player %s: scene %s epoch %d, lease has epoch %d", ErrStaleEpoch, e.id, scene, epoch, e.owner.Epoch)
	}
	return Owner{Scene: scene, Epoch: epoch}, nil
}

// validScene applies the scene id rules (package validate) to the scene
// that takes a lease: it later names the NATS subjects GM changes go to.
func validScene(id string) error {
	if err := validate.SceneOrRoom(id); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
}

// validPlayer applies the player id rules (package validate) to every
// request that names a player, from a scene or a GM alike.
func validPlayer(id string) error {
	if err := validate.PlayerID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
}

// checkData verifies data is a player record for id.
func checkData(id string, data []byte) error {
	d, err := player.Decode(data)
	if err != nil {
		return fmt.Errorf("%w: player %s: %v", ErrBadRequest, id, err)
	}
	if d.ID != id {
		return fmt.Errorf("%w: player %s: data is for player %q", ErrBadRequest, id, d.ID)
	}
	return nil
}

// withPlayer runs fn with id's entry loaded and its op lock held.
func (s *Server) withPlayer(ctx context.Context, id string, fn func(e *entry) error) error {
	return s.withPlayerOr(ctx, id, false, fn)
}

// withPlayerOr is withPlayer; with orUnknown, a player the cache lacks while
// the database is unreachable is passed to fn as not existing (unloaded),
// for a create that will be journaled as provisional.
func (s *Server) withPlayerOr(ctx context.Context, id string, orUnknown bool, fn func(e *entry) error) error {
	if err := validPlayer(id); err != nil {
		return err
	}
	e := s.acquire(id)
	defer s.unpin(e)
	e.op.Lock()
	defer e.op.Unlock()
	if err := s.ensureLoaded(ctx, e); err != nil {
		if !orUnknown || !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			return err
		}
	}
	return fn(e)
}

func notFound(id string) error { return fmt.Errorf("%w: player %s", ErrNotFound, id) }

func newPlayerData(id, name string) ([]byte, error) {
	if name == "" {
		name = id
	}
	if err := validate.PlayerName(name); err != nil {
		return nil, fmt.Errorf("%w: player %s: %w", ErrBadRequest, id, err)
	}
	return player.Data{ID: id, Name: name, Level: 1}.Encode()
}

func (s *Server) load(ctx context.Context, req *LoadRequest) (LoadReply, error) {
	rep := LoadReply{Player: req.Player}
	if err := validScene(req.Scene); err != nil {
		return rep, err
	}
	if req.Epoch == 0 {
		return rep, fmt.Errorf("%w: player %s: scene %s: epoch must be positive", ErrBadRequest, req.Player, req.Scene)
	}
	log := s.log.With(zap.String("player", req.Player), zap.String("scene", req.Scene), zap.Uint64("epoch", req.Epoch))
	err := s.withPlayer(ctx, req.Player, func(e *entry) error {
		me := Owner{Scene: req.Scene, Epoch: req.Epoch}
		if !e.exists {
			if !req.Create {
				return notFound(e.id)
			}
			data, err := newPlayerData(e.id, req.Name)
			if err != nil {
				return err
			}
			if err := s.commit(e, 1, me, data); err != nil {
				return err
			}
			log.Info("player created on load")
			rep.Version, rep.Data = e.version, e.data
			return nil
		}
		switch {
		case req.Transfer && e.owner.Scene != req.Scene:
			return fmt.Errorf("%w: player %s was not handed over to scene %s (lease: scene %q epoch %d)",
				ErrNotOwner, e.id, req.Scene, e.owner.Scene, e.owner.Epoch)
		case e.owner.Scene == "":
		case e.owner.Scene != req.Scene:
			return fmt.Errorf("%w: player %s is held by scene %s epoch %d; load by %s refused until it is handed over or released",
				ErrNotOwner, e.id, e.owner.Scene, e.owner.Epoch, req.Scene)
		case req.Epoch < e.owner.Epoch:
			return fmt.Errorf("%w: player %s: scene %s epoch %d, lease has epoch %d", ErrStaleEpoch, e.id, req.Scene, req.Epoch, e.owner.Epoch)
		case req.Epoch == e.owner.Epoch:
			// A retried load by the holder: nothing changes.
			rep.Version, rep.Data = e.version, e.data
			return nil
		}
		prev := e.owner
		if err := s.commit(e, e.version+1, me, e.data); err != nil {
			return err
		}
		log.Debug("lease taken", zap.String("prev_scene", prev.Scene), zap.Uint64("prev_epoch", prev.Epoch), zap.Uint64("version", e.version))
		rep.Version, rep.Data = e.version, e.data
		// A handover leaves the lease to the destination with no epoch.
		rep.HandedOver = prev.Scene == req.Scene && prev.Epoch == 0
		return nil
	})
	if err == nil {
		s.m.loads.Add(1)
	}
	return rep, err
}

func (s *Server) save(ctx context.Context, req *SaveRequest) (Ack, error) {
	ack := Ack{Player: req.Player, Version: req.Version}
	if err := checkData(req.Player, req.Data); err != nil {
		return ack, err
	}
	err := s.withPlayer(ctx, req.Player, func(e *entry) error {
		if !e.exists {
			return notFound(e.id)
		}
		owner, err := checkOwner(e, req.Scene, req.Epoch)
		if err != nil && s.breakFencing && errors.Is(err, ErrStaleEpoch) {
			// Test hook (package testhook): the stale epoch is let through.
			owner, err = e.owner, nil
		}
		if err != nil {
			return err
		}
		if req.Version == e.version && bytes.Equal(req.Data, e.data) {
			// A resend of what we hold: the scene crashed before it logged
			// our acknowledgement. Acknowledge it again; nothing changes.
			return nil
		}
		if req.Version <= e.version {
			return fmt.Errorf("%w: player %s: scene %s sent version %d, datasvr has %d", ErrOldVersion, e.id, req.Scene, req.Version, e.version)
		}
		if owner != e.owner {
			s.log.Info("lease taken over by a newer epoch on save", zap.String("player", e.id),
				zap.String("scene", owner.Scene), zap.Uint64("epoch", owner.Epoch), zap.Uint64("prev_epoch", e.owner.Epoch))
		}
		return s.commit(e, req.Version, owner, cloneBytes(req.Data))
	})
	s.countSave(err)
	return ack, err
}

func (s *Server) countSave(err error) {
	switch {
	case err == nil:
		s.m.savesAccepted.Add(1)
	case errors.Is(err, ErrUnavailable):
		s.m.savesFailed.Add(1)
	default:
		s.m.savesRejected.Add(1)
	}
}

func (s *Server) release(ctx context.Context, req *ReleaseRequest) (Ack, error) {
	ack := Ack{Player: req.Player, Version: req.Version}
	if len(req.Data) > 0 {
		if err := checkData(req.Player, req.Data); err != nil {
			return ack, err
		}
	}
	err := s.withPlayer(ctx, req.Player, func(e *entry) error {
		if !e.exists {
			return notFound(e.id)
		}
		if e.owner.Scene == "" && (len(req.Data) == 0 || req.Version == e.version) {
			ack.Version = e.version
			return nil // a retried release
		}
		if _, err := checkOwner(e, req.Scene, req.Epoch); err != nil {
			return err
		}
		version, data := e.version+1, e.data
		if len(req.Data) > 0 {
			if req.Version <= e.version {
				return fmt.Errorf("%w: player %s: release by scene %s with version %d, datasvr has %d", ErrOldVersion, e.id, req.Scene, req.Version, e.version)
			}
			version, data = req.Version, cloneBytes(req.Data)
		}
		if err := s.commit(e, version, Owner{}, data); err != nil {
			return err
		}
		ack.Version = version
		s.log.Debug("lease released", zap.String("player", e.id), zap.String("scene", req.Scene), zap.Uint64("epoch", req.Epoch))
		return nil
	})
	return ack, err
}

func (s *Server) handover(ctx context.Context, req *HandoverRequest) (Ack, error) {
	ack := Ack{Player: req.Player, Version: req.Version}
	if err := validScene(req.To); err != nil {
		return ack, err
	}
	if req.To == req.Scene {
		return ack, fmt.Errorf("%w: player %s: handover from scene %s to itself", ErrBadRequest, req.Player, req.Scene)
	}
	if err := checkData(req.Player, req.Data); err != nil {
		return ack, err
	}
	err := s.withPlayer(ctx, req.Player, func(e *entry) error {
		if !e.exists {
			return notFound(e.id)
		}
		if e.owner.Scene == req.To && e.version == req.Version {
			return nil // a retried handover that already happened
		}
		if _, err := checkOwner(e, req.Scene, req.Epoch); err != nil {
			return err
		}
		if req.Version <= e.version {
			return fmt.Errorf("%w: player %s: handover by scene %s with version %d, datasvr has %d", ErrOldVersion, e.id, req.Scene, req.Version, e.version)
		}
		// One record moves the data and the lease together: before it is
		// durable the source owns the player, after it the destination
		// does, and the items live in exactly one place either way.
		if err := s.commit(e, req.Version, Owner{Scene: req.To}, cloneBytes(req.Data)); err != nil {
			return err
		}
		s.log.Info("player handed over", zap.String("player", e.id), zap.String("scene", req.Scene),
			zap.Uint64("epoch", req.Epoch), zap.String("to", req.To), zap.Uint64("version", req.Version))
		return nil
	})
	s.countSave(err)
	return ack, err
}

func (s *Server) create(ctx context.Context, req *CreateRequest) (Ack, error) {
	ack := Ack{Player: req.Player}
	if err := validReqID(req.ReqID); err != nil {
		return ack, err
	}
	hash := gmHash("create", req.Player, req.Name)
	if ok, err := s.gmCheck(req.ReqID, hash, &ack); ok || err != nil {
		return ack, err
	}
	err := s.withPlayerOr(ctx, req.Player, true, func(e *entry) error {
		if ok, err := s.gmCheck(req.ReqID, hash, &ack); ok || err != nil {
			return err
		}
		if e.exists {
			return fmt.Errorf("%w: player %s", ErrExists, e.id)
		}
		data, err := newPlayerData(e.id, req.Name)
		if err != nil {
			return err
		}
		r := journalRecord{Version: 1, Data: data}
		if !e.loaded {
			r.Create = createProvisional
		}
		if req.ReqID != "" {
			r.GM = newGMRecord(req.ReqID, "create", hash, Ack{Player: req.Player, Version: 1})
		}
		if err := s.commitRec(e, r); err != nil {
			return err
		}
		ack.Version = 1
		if r.Create == createProvisional {
			s.log.Warn("player created while the database is unreachable: provisional until it is checked there", zap.String("player", e.id))
		} else {
			s.log.Info("player created", zap.String("player", e.id))
		}
		return nil
	})
	return ack, err
}

func (s *Server) show(ctx context.Context, req *ShowRequest) (ShowReply, error) {
	rep := ShowReply{ID: req.Player}
	err := s.withPlayer(ctx, req.Player, func(e *entry) error {
		if !e.exists {
			return notFound(e.id)
		}
		d, err := player.Decode(e.data)
		if err != nil {
			return fmt.Errorf("player %s: stored data: %w", e.id, err)
		}
		s.mu.Lock()
		dirty := e.dirty
		s.mu.Unlock()
		rep = ShowReply{ID: e.id, Name: d.Name, Version: e.version, Gold: d.Gold, Items: d.Items,
			Online: e.owner.Scene != "" && e.owner.Epoch > 0, Dirty: dirty, Data: e.data}
		if rep.Items == nil {
			rep.Items = map[string]int64{}
		}
		if e.owner.Scene != "" {
			o := e.owner
			rep.Owner = &o
		}
		return nil
	})
	return rep, err
}

// giveOffline applies a GM give/take to a player no scene holds. It
// reports online=true (and does nothing) when a scene holds the lease.
func (s *Server) giveOffline(ctx context.Context, req *AdminGiveRequest, hash string) (rep GiveReply, owner Owner, online bool, err error) {
	rep.Player = req.Player
	err = s.withPlayer(ctx, req.Player, func(e *entry) error {
		// Again under the player's lock: a concurrent twin may have won.
		if ok, err := s.gmCheck(req.ReqID, hash, &rep); ok || err != nil {
			return err
		}
		if !e.exists {
			return notFound(e.id)
		}
		if e.owner.Scene != "" && e.owner.Epoch > 0 {
			owner, online = e.owner, true
			return nil
		}
		// Unclaimed (no lease, or handed over and not yet loaded):
		// datasvr's copy is the only one, so change it here.
		d, err := player.Decode(e.data)
		if err != nil {
			return fmt.Errorf("player %s: stored data: %w", e.id, err)
		}
		// The balance rules (validate.Add through player.Add): no negative
		// balance, nothing past validate.MaxBalance, no overflow.
		if err := d.Add(req.Item, req.Count); err != nil {
			return fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		data, err := d.Encode()
		if err != nil {
			return err
		}
		rep.Version, rep.Count = e.version+1, d.Count(req.Item)
		gm := newGMRecord(req.ReqID, "give", hash, rep)
		if err := s.commitRec(e, journalRecord{Version: e.version + 1, Owner: e.owner, Data: data, GM: gm}); err != nil {
			return err
		}
		s.log.Info("gm give applied offline", zap.String("player", e.id), zap.String("item", req.Item),
			zap.Int64("count", req.Count), zap.Uint64("version", e.version), zap.String("req_id", req.ReqID))
		return nil
	})
	return rep, owner, online, err
}

// forceRelease drops the lease of a player whose scene did not answer a
// kick (GM --force).
func (s *Server) forceRelease(ctx context.Context, id string, expect Owner) error {
	return s.withPlayer(ctx, id, func(e *entry) error {
		if !e.exists {
			return notFound(e.id)
		}
		if e.owner != expect {
			return nil // the lease moved meanwhile; nothing to force
		}
		if err := s.commit(e, e.version+1, Owner{}, e.data); err != nil {
			return err
		}
		s.log.Warn("lease force-released by GM kick", zap.String("player", e.id),
			zap.String("scene", expect.Scene), zap.Uint64("epoch", expect.Epoch))
		return nil
	})
}

func (s *Server) ownerOf(ctx context.Context, id string) (Owner, error) {
	var o Owner
	err := s.withPlayer(ctx, id, func(e *entry) error {
		if !e.exists {
			return notFound(e.id)
		}
		o = e.owner
		return nil
	})
	return o, err
}

func cloneBytes(b []byte) []byte { return append([]byte(nil), b...) }
