package scene

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/shmlog"
	"github.com/respawn-dev/respawn/internal/version"
)

// host owns the process's event log and the loops of its scenes and rooms,
// and performs the effects the loops hand it.
type host struct {
	cfg   *config.Config
	log   *zap.Logger
	epoch uint64
	store *shmlog.Store
	// remote delivers an event to a scene of another process (nil: none).
	remote func(ctx context.Context, scene string, ev game.Event) error
	// data is the link to the data server (nil: none, in unit tests).
	data *dataLink
	// attach is called for every new loop (a room) to subscribe its
	// subjects; detach when it ends.
	attach func(*loop) error
	detach func(*loop)
	// breakDedupe: test hook RESPAWN_TEST_BREAK=dedupe (package testhook).
	breakDedupe bool
	// follow is a standby's copy of its scenes, followed from the live log
	// while it waited (standby.go); restore takes them over. nil: none.
	follow *follower
	// released: a handoff closed the loops and the log early (release).
	released bool
	// crash: armed crash points (RESPAWN_TEST_CRASH, package crashpoint).
	crash *crashpoint.Points
	// replicas publishes profiles, positions, load and chat (nil: none).
	replicas *replicas
	// push sends a client-facing effect (broadcast, chat, position, kick,
	// notification) to the connected gateways (nil: none).
	push func(l *loop, e game.Effect)

	mu    sync.Mutex
	loops map[string]*loop
	// arriving counts, by player, transfers into this process being
	// claimed and applied: a gateway's join waits for them (link.go).
	arriving map[string]int
	// corrupt are the scenes and rooms whose log slot is damaged: not
	// served, not in loops, until repair (corrupt.go).
	corrupt map[string]*corrupt

	mEvents    prometheus.Counter
	mLogErrors prometheus.Counter
	mSnapshots prometheus.Histogram
	mReplay    prometheus.Gauge
	mLogBytes  prometheus.Counter
	mDamage    damageMetrics
}

// LogPath is where a scene process keeps its event log.
func LogPath(shmDir, process string) string { return filepath.Join(shmDir, process+".log") }

func newHost(cfg *config.Config, log *zap.Logger, epoch uint64) *host {
	return &host{
		cfg: cfg, log: log, epoch: epoch, loops: map[string]*loop{}, corrupt: map[string]*corrupt{}, arriving: map[string]int{},
		mDamage: newDamageMetrics(),
		mEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_scene_events_total", Help: "Events logged and applied.",
		}),
		mLogErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_scene_log_errors_total", Help: "Events refused because they could not be logged.",
		}),
		mSnapshots: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "respawn_scene_snapshot_seconds", Help: "Time to snapshot a scene into its log slot.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 14),
		}),
		mReplay: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "respawn_scene_replay_seconds", Help: "How long the last start's log replay took.",
		}),
		mLogBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_scene_log_appended_bytes_total", Help: "Event record bytes appended to the event log.",
		}),
	}
}

func (h *host) collectors() []prometheus.Collector {
	slotsFree := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "respawn_scene_log_slots_free", Help: "Event log slots not in use (each scene and dungeon room takes one).",
	}, func() float64 { return float64(h.store.FreeSlots()) }) // the store is open before the metrics are registered
	players := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "respawn_scene_players", Help: "Players in this process's scenes and rooms.",
	}, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		var n int64
		for _, l := range h.loops {
			n += l.players.Load()
		}
		return float64(n)
	})
	return []prometheus.Collector{h.mEvents, h.mLogErrors, h.mSnapshots, h.mReplay, h.mLogBytes, slotsFree, players, h.mDamage.atStake, h.mDamage.found}
}

// open opens (or creates) the log, waiting briefly if a previous
// incarnation still holds its lock: the manager kills that one before
// spawning us, but the kernel may take a moment to release the lock.
func (h *host) open(ctx context.Context, path string, standby bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("event log directory: %w", err)
	}
	// A slot's half holds a snapshot, and a scene's session records alone
	// may take game.SessionSnapshotBound() of it (TestSessionBound): say so
	// loudly when a slot is too small for a full scene (tests use small ones).
	if need := 2 * (game.SessionSnapshotBound() + 1<<20); h.cfg.Scene.ShmSlotSize < need {
		h.log.Warn("scene.shm_slot_size is too small for a full scene's session records; a crowded scene may fail to snapshot",
			zap.Int("shm_slot_size", h.cfg.Scene.ShmSlotSize), zap.Int("session_bound", game.SessionSnapshotBound()), zap.Int("recommended", need))
	}
	opt := shmlog.Options{Slots: h.cfg.Scene.ShmSlots, SlotSize: h.cfg.Scene.ShmSlotSize, Crash: h.crash}
	if standby {
		return h.waitOpen(ctx, path, opt)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := shmlog.Open(path, opt)
		if err == nil {
			h.store = st
			return nil
		}
		if !errors.Is(err, shmlog.ErrLocked) || time.Now().After(deadline) {
			return fmt.Errorf("open event log: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitOpen opens the log as a standby: it blocks until the primary's lock
// is released (the primary exited, was killed, or handed over), however
// long that takes, or ctx ends.
func (h *host) waitOpen(ctx context.Context, path string, opt shmlog.Options) error {
	opt.WaitLock = true
	type opened struct {
		st  *shmlog.Store
		err error
	}
	got := make(chan opened, 1)
	go func() {
		st, err := shmlog.Open(path, opt)
		got <- opened{st, err}
	}()
	select {
	case o := <-got:
		if o.err != nil {
			return fmt.Errorf("open event log: %w", o.err)
		}
		h.store = o.st
		return nil
	case <-ctx.Done():
		// The blocked open may still get the lock: give it back at once.
		go func() {
			if o := <-got; o.st != nil {
				_ = o.st.Close()
			}
		}()
		return ctx.Err()
	}
}

// restore rebuilds every hosted scene and live room from the log: the
// latest snapshot, then every event after it, with effects discarded.
func (h *host) restore(scenes []string) error {
	start := time.Now()
	for _, id := range scenes {
		def, ok := h.cfg.SceneDef(id)
		if !ok {
			return fmt.Errorf("scene %s: no definition", id)
		}
		def.BreakDedupe = h.breakDedupe
		if err := h.restoreOne(id, "", def); err != nil {
			return err
		}
	}
	// Rooms: each live room of a scene, created if a crash came between
	// logging its creation and taking its slot.
	for _, id := range scenes {
		if h.loops[id] == nil {
			continue // corrupt: its rooms wait for its repair
		}
		for _, cr := range h.loops[id].st.LiveRooms() {
			if err := h.restoreOne(cr.RoomID, id, cr.Def); err != nil {
				return err
			}
		}
	}
	// Slots nobody claims are rooms whose end was logged by the parent
	// just before a crash: free them.
	for _, id := range h.store.IDs() {
		parent, _, _ := strings.Cut(id, "/")
		if h.corrupt[id] != nil || h.corrupt[parent] != nil {
			continue // held for a repair
		}
		if _, ok := h.loops[id]; !ok && strings.Contains(id, "/") {
			h.log.Info("freeing the slot of an ended room", zap.String("room", id))
			if err := h.store.Free(id); err != nil {
				return fmt.Errorf("free ended room %s: %w", id, err)
			}
		} else if !ok {
			h.log.Warn("log slot of a scene this process does not host; left alone", zap.String("slot", id))
		}
	}
	h.reclaimQuarantined()
	h.mReplay.Set(time.Since(start).Seconds())
	return nil
}

func (h *host) restoreOne(id, parent string, def game.SceneDef) error {
	slot, ok := h.store.Get(id)
	if !ok && parent == "" {
		slot, ok = h.adoptStray(id)
	}
	if !ok {
		if h.missingSlot(id, parent, def) {
			return nil // corrupt: one of the unreadable slots may be its log
		}
		var err error
		if slot, err = h.store.Create(id); err != nil {
			return fmt.Errorf("scene %s: take a log slot: %w", id, err)
		}
		// A new log starts with a snapshot, so it records the definition
		// its events are applied under: a replay under another one is
		// refused (game.ErrDefinitionChanged), never silently diverges.
		if err := slot.Snapshot(game.New(def).Snapshot()); err != nil {
			return fmt.Errorf("scene %s: first snapshot: %w", id, err)
		}
	}
	st, n, err := h.replay(slot, def)
	if errors.Is(err, game.ErrDefinitionChanged) {
		// Only this scene stops, loudly, as for a damaged log: its history
		// was acknowledged under the old definition. The process serves the
		// others; a repair starts it fresh under the new one.
		h.log.Error("scene definition changed since its log was written; refusing to replay it under the new one",
			zap.String("scene", id), zap.Error(err))
		h.mDamage.found.WithLabelValues(string(damageDefinition)).Inc()
		h.markCorrupt(&corrupt{id: id, parent: parent, def: def, damage: shmlog.Damage{Kind: damageDefinition, Slot: slot.Index(),
			Reason: fmt.Sprintf("%v; put the old definition back and restart the process, or run `respawn scene repair %s` to start it fresh under the new one (its world state is dropped, players come back from the data server)", err, id)}})
		return nil
	}
	if de := (*shmlog.DamageError)(nil); errors.As(err, &de) {
		// Only this scene or room stops; the process serves the others.
		h.mDamage.found.WithLabelValues(string(de.Damage.Kind)).Inc()
		h.markCorrupt(&corrupt{id: id, parent: parent, def: def, slot: slot, st: st, damage: de.Damage})
		return nil
	}
	if err != nil {
		return err
	}
	h.settleDamage(id, slot, st)
	l := newLoop(h, id, parent, st, slot)
	l.sinceSnap = n
	h.loops[id] = l
	h.log.Info("scene restored", zap.String("scene", id), zap.Int("events_replayed", n), zap.Uint64("tick", st.Tick()))
	return nil
}

// Replay rebuilds a scene from its slot: snapshot, then events. It returns
// the scene and how many events were applied on top of the snapshot.
func Replay(slot *shmlog.Slot, def game.SceneDef) (*game.Scene, int, error) {
	rp := newReplayer(def)
	err := slot.Replay(rp.apply)
	if de := (*shmlog.DamageError)(nil); errors.As(err, &de) {
		// The good prefix's state (nil when nothing replayed) is what a
		// repair rebuilds from.
		return rp.st, rp.n, fmt.Errorf("scene %s: replay: %w", slot.ID(), err)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("scene %s: replay: %w", slot.ID(), err)
	}
	return rp.state(), rp.n, nil
}

// replayer folds a slot's records into a scene's state: Replay's work,
// and a standby's as it follows the live log (standby.go).
type replayer struct {
	def  game.SceneDef
	info version.Info
	st   *game.Scene
	n    int // events applied
	ev   *game.Replayer
}

func newReplayer(def game.SceneDef) *replayer {
	return &replayer{def: def, info: VersionInfo(), ev: game.NewReplayer()}
}

func (rp *replayer) apply(r shmlog.Record) error {
	if r.Kind == shmlog.KindSnapshot {
		if len(r.Payload) == 0 {
			rp.st = game.New(rp.def)
			return nil
		}
		if err := checkSnapshotFormat(rp.info, r.Payload); err != nil {
			return err
		}
		var err error
		rp.st, err = game.Restore(rp.def, r.Payload)
		return err
	}
	if rp.st == nil {
		rp.st = game.New(rp.def)
	}
	if err := rp.ev.Apply(rp.st, r.Payload); err != nil {
		return fmt.Errorf("event %d: %w", r.Seq, err)
	}
	rp.n++
	return nil
}

// state is the state replayed so far (the initial one if nothing was).
func (rp *replayer) state() *game.Scene {
	if rp.st == nil {
		rp.st = game.New(rp.def)
	}
	return rp.st
}

// startAll starts every loop, then performs what recovery owes: rooms to
// create, transfers to resend, ended rooms to free.
func (h *host) startAll() {
	h.mu.Lock()
	loops := h.sortedLoops()
	var republish func() error
	if h.replicas != nil {
		republish = h.replicas.prepareRepublish(loops)
	}
	for _, l := range loops {
		l.start()
	}
	h.mu.Unlock()
	if republish != nil {
		// Off the start's path: the players' view of the restored world
		// need not wait for the other processes' replicas of it.
		go func() {
			began := time.Now()
			if err := republish(); err != nil {
				h.log.Warn("republish replicas", zap.Error(err))
			}
			h.log.Info("replicas republished", zap.Duration("took", time.Since(began)))
		}()
	}
	for _, l := range loops {
		_ = l.read(context.Background(), func(st *game.Scene) {
			// A log on a disk after a machine crash can be behind the data
			// server (its last pages never reached the disk, the saves
			// they led to did): every player is checked, not only the
			// dirty ones.
			h.perform(l, withVersionChecks(st, st.RecoveryEffects(), st.PlayerIDs()), false)
		})
	}
}

func (h *host) sortedLoops() []*loop {
	out := make([]*loop, 0, len(h.loops))
	for _, l := range h.loops {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// rooms returns the live dungeon rooms opened from scene parent.
func (h *host) rooms(parent string) []*loop {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*loop
	for _, l := range h.sortedLoops() {
		if l.parent == parent {
			out = append(out, l)
		}
	}
	return out
}

func (h *host) loop(id string) (*loop, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.loops[id]
	return l, ok
}

// stopAll stops every loop, snapshots and flushes the log, and closes it.
func (h *host) stopAll(waitSaves, snapshot bool) {
	if h.released {
		// release did the loops and the log; what is left is the bus.
		h.closeLinks()
		return
	}
	h.mu.Lock()
	loops := h.sortedLoops()
	h.mu.Unlock()
	if h.data != nil && waitSaves {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		// Players changed since the last save tick are saved now too, not
		// only snapshotted: after a shutdown the data server holds what
		// every client was told, with no scene left to resend it.
		for _, l := range loops {
			if !l.started.Load() {
				continue
			}
			if _, err := l.submit(ctx, game.SaveTick{}); err != nil && !errors.Is(err, ErrStopped) {
				h.log.Warn("final save tick", zap.String("scene", l.id), zap.Error(err))
			}
		}
		h.data.flushAll(ctx)
		cancel()
	}
	h.stopLoops(loops, snapshot)
	h.closeLinks()
	h.closeLog()
}

// release stops the loops (taking no more events), snapshots them if
// asked, and closes the log, releasing its lock to the successor: a
// handoff's first step. stopAll afterwards does only the rest.
func (h *host) release(snapshot bool) {
	h.mu.Lock()
	loops := h.sortedLoops()
	h.mu.Unlock()
	h.stopLoops(loops, snapshot)
	h.closeLog()
	h.released = true
}

func (h *host) stopLoops(loops []*loop, snapshot bool) {
	for _, l := range loops {
		l.stop()
		if !l.freed && snapshot {
			_ = l.snapshot() // logged: a failed snapshot only means a longer replay
		}
	}
}

func (h *host) closeLinks() {
	if h.data != nil {
		h.data.close()
	}
	if h.replicas != nil {
		h.replicas.close()
	}
}

func (h *host) closeLog() {
	if h.store != nil {
		if err := h.store.Close(); err != nil {
			h.log.Error("close event log", zap.Error(err))
		}
	}
}

// deliver hands ev to scene to, here or in another process, without
// blocking the caller's loop.
func (h *host) deliver(to string, ev game.Event) {
	if l, ok := h.loop(to); ok {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := h.accept(ctx, l, ev); err != nil {
				h.log.Warn("local delivery failed", zap.String("to", to), zap.Error(err))
			}
		}()
		return
	}
	if h.remote == nil {
		h.log.Warn("no route to scene", zap.String("to", to))
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := h.remote(ctx, to, ev); err != nil {
			// Transfers are resent until acknowledged, so this is retried.
			h.log.Warn("remote delivery failed; will retry", zap.String("to", to), zap.Error(err))
		}
	}()
}

// accept applies an event that came from another scene. A travelling
// player's lease is claimed first, so the scene never holds a player it
// cannot save, and the player is what datasvr handed over under that
// lease, never what the message says: a forged or replayed TravelIn
// names a player but can neither move one that was not handed over here
// nor bring in any gold or item datasvr does not hold.
func (h *host) accept(ctx context.Context, l *loop, ev game.Event) error {
	if in, ok := ev.(game.TravelIn); ok && h.data != nil {
		// A resend of a transfer applied here (its acknowledgement was lost,
		// e.g. with this scene's previous process) is only acknowledged, and
		// must not claim: a claim at a newer epoch is a journaled change that
		// bumps datasvr's version past the player's last save, so the next
		// save here, of changes already acknowledged to the player, would be
		// refused as old and the reload that follows would drop them.
		var applied bool
		if err := l.read(ctx, func(st *game.Scene) { applied = st.TransferApplied(in.From, in.TransferID) }); err != nil {
			return err
		}
		if applied {
			_, err := l.submit(ctx, ev)
			return err
		}
		// Marked before the claim and cleared after the apply, so a join
		// that loads the player in between sees it (link.go).
		h.markArriving(in.Player.ID, 1)
		defer h.markArriving(in.Player.ID, -1)
		ld, err := h.data.claim(ctx, l, in.Player.ID)
		if err != nil {
			return err
		}
		if ld.Data.ID != in.Player.ID {
			return fmt.Errorf("claim player %s for %s: datasvr returned player %q", in.Player.ID, l.id, ld.Data.ID)
		}
		// Logged with the claimed data and version, so a replay agrees.
		in.Player, in.Version = ld.Data, ld.Version
		ev = in
	}
	_, err := l.submit(ctx, ev)
	return err
}

// withVersionChecks adds to effs (a recovery's effects) a save of each of
// players at the version the scene holds, for those effs and the next save
// tick do not save anyway. The data server acknowledges such a save when it
// has nothing newer (a resend of what it holds changes nothing there) and
// refuses it as old when it has, and that refusal makes the scene reload
// the data server's copy (dataLink.result): the newer of the log and the
// data server wins. A player another scene now owns is refused as such and
// dropped here.
func withVersionChecks(st *game.Scene, effs []game.Effect, players []string) []game.Effect {
	asked := map[string]bool{}
	for _, e := range effs {
		if sv, ok := e.(game.Save); ok {
			asked[sv.Player.ID] = true
		}
	}
	for _, pid := range st.DirtyPlayers() {
		asked[pid] = true // saved at the next save tick
	}
	for _, pid := range players {
		if d, v, ok := st.Player(pid); ok && v > 0 && !asked[pid] {
			effs = append(effs, game.Save{Player: d, Version: v, Urgent: true})
		}
	}
	return effs
}

// perform carries out effects on the goroutine of the loop that made them.
// fresh: effs just left Apply (not a resend or a recovery's redo).
func (h *host) perform(l *loop, effs []game.Effect, fresh bool) {
	// A travelling player's data goes with the handover, which moves the
	// lease; a separate save of it would race the handover and lose.
	var leaving map[string]bool // nil for almost every event: no travel
	for _, e := range effs {
		if t, ok := e.(game.TravelOut); ok {
			if leaving == nil {
				leaving = map[string]bool{}
			}
			leaving[t.Player.ID] = true
		}
	}
	for _, e := range effs {
		switch e := e.(type) {
		case game.Save:
			if h.data != nil && !leaving[e.Player.ID] {
				h.data.save(l, e)
			}
		case game.TravelOut:
			if h.data != nil {
				go h.data.transfer(h, l, e, fresh)
			} else {
				h.deliver(e.To, e.In())
			}
		case game.AckTransfer:
			h.deliver(e.To, game.TravelAck{TransferID: e.TransferID})
		case game.CreateRoom:
			if err := h.createRoom(l.id, e); err != nil {
				l.log.Error("create room", zap.String("room", e.RoomID), zap.Error(err))
			}
		case game.EndRoom:
			h.endRoom(l, e)
		case game.Warn:
			l.log.Warn("scene warning", zap.String("msg", e.Msg))
		case game.Broadcast, game.ChatOut, game.PositionChanged, game.Kick, game.Notify:
			if h.push != nil {
				h.push(l, e)
			}
		}
		// Replies go to the waiting caller (GM API, gateway link).
	}
}

func (h *host) createRoom(parent string, cr game.CreateRoom) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.loops[cr.RoomID]; ok {
		return nil
	}
	if c, ok := h.corrupt[cr.RoomID]; ok {
		return c.err() // its slot holds its history: never start it afresh over that
	}
	slot, ok := h.store.Get(cr.RoomID)
	st := game.New(cr.Def)
	if !ok {
		var err error
		if slot, err = h.store.Create(cr.RoomID); err != nil {
			return fmt.Errorf("room %s: %w", cr.RoomID, err)
		}
		// The room's definition is recorded from its first record on.
		if err := slot.Snapshot(st.Snapshot()); err != nil {
			return fmt.Errorf("room %s: first snapshot: %w", cr.RoomID, err)
		}
	}
	l := newLoop(h, cr.RoomID, parent, st, slot)
	h.loops[cr.RoomID] = l
	var err error
	if h.attach != nil {
		// The room runs without its subjects (its parent, in this
		// process, still reaches it); the failure is the caller's to log.
		err = h.attach(l)
	}
	l.start()
	l.log.Info("room created", zap.String("parent", parent), zap.Int("slot", slot.Index()), zap.Int("free_slots", h.store.FreeSlots()))
	if err != nil {
		return fmt.Errorf("room %s: %w", cr.RoomID, err)
	}
	return nil
}

// endRoom runs on the room's own loop: tell the parent (which logs it),
// then free the slot. A crash in between leaves a slot the parent no
// longer lists, which restore frees.
func (h *host) endRoom(room *loop, e game.EndRoom) {
	parent, ok := h.loop(e.Parent)
	if ok {
		// No deadline: the parent must log the end while it lives.
		if _, err := parent.submit(context.Background(), game.RoomEnded{RoomID: e.RoomID, Applied: e.Applied, AppliedFloor: e.AppliedFloor}); err != nil {
			room.log.Error("parent did not take the room's end; keeping the slot", zap.Error(err))
			return
		}
	}
	h.mu.Lock()
	delete(h.loops, e.RoomID)
	h.mu.Unlock()
	if h.detach != nil {
		h.detach(room)
	}
	if err := h.store.Free(e.RoomID); err != nil {
		room.log.Error("free room slot", zap.Error(err))
	}
	room.freed = true
	room.log.Info("room ended; slot freed", zap.Int("free_slots", h.store.FreeSlots()))
}

func (h *host) markArriving(player string, d int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.arriving[player] += d; h.arriving[player] <= 0 {
		delete(h.arriving, player)
	}
}

func (h *host) isArriving(player string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.arriving[player] > 0
}
