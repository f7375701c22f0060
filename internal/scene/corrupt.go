package scene

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// ErrCorrupt: the scene's log is damaged; it serves nothing until repaired.
var ErrCorrupt = errors.New("scene log is corrupt")

// damageDefinition: the log was written under another scene definition
// (game.ErrDefinitionChanged). Held like damage: not replayed, not served,
// repaired by starting the scene fresh under the new definition.
const damageDefinition shmlog.DamageKind = "definition"

// corrupt is a scene or room whose slot of the log could not be replayed
// whole. It holds what a repair needs: the good prefix's state (nil when
// nothing replays) and the slot (nil when none could be attributed to it).
type corrupt struct {
	id, parent string
	def        game.SceneDef
	slot       *shmlog.Slot
	st         *game.Scene
	damage     shmlog.Damage
	since      time.Time
}

// reason is the one line the scene table and the API errors show.
func (c *corrupt) reason() string {
	d := c.damage
	switch {
	case c.slot == nil:
		return d.Reason
	case d.Kind == shmlog.DamageSnapshot:
		return fmt.Sprintf("snapshot damaged at slot %d half %s (file offset %d); %d acknowledged events at stake (seq %d..%d); run `respawn scene repair %s`",
			d.Slot, d.Half, d.FileOffset, d.Lost, d.FirstLost, d.LastLost, c.id)
	default:
		return fmt.Sprintf("record damaged at slot %d half %s offset %d (file offset %d): %s; %d acknowledged events at stake (seq %d..%d); run `respawn scene repair %s`",
			d.Slot, d.Half, d.Offset, d.FileOffset, d.Reason, d.Lost, d.FirstLost, d.LastLost, c.id)
	}
}

func (c *corrupt) err() error {
	return fmt.Errorf("scene %s: %w: %s", c.id, ErrCorrupt, c.reason())
}

// damageMetrics are the log-damage metrics of a scene process.
type damageMetrics struct {
	atStake *prometheus.GaugeVec   // by scene: acknowledged events at stake while corrupt
	found   *prometheus.CounterVec // by kind: damage found at open
}

func newDamageMetrics() damageMetrics {
	m := damageMetrics{
		atStake: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "respawn_scene_log_corrupt_events",
			Help: "Acknowledged events at stake in a corrupt scene's log (the scene is not served until repaired); absent when no scene is corrupt.",
		}, []string{"scene"}),
		found: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "respawn_scene_log_damage_total",
			Help: "Damage found in the event log at start, by kind: record, snapshot, snapshot_recovered, header, torn_tail, valid_flag.",
		}, []string{"kind"}),
	}
	// Exported at zero, so an alert on increase() sees the first damage.
	for _, k := range []string{"record", "snapshot", "snapshot_recovered", "header", "torn_tail", "valid_flag", "definition"} {
		m.found.WithLabelValues(k)
	}
	return m
}

// markCorrupt takes a scene or room out of service, loudly.
func (h *host) markCorrupt(c *corrupt) {
	c.since = time.Now()
	h.corrupt[c.id] = c
	h.mDamage.atStake.WithLabelValues(c.id).Set(float64(c.damage.Lost))
	h.log.Error("scene log corrupt: the scene is not served until `respawn scene repair`",
		zap.String("scene", c.id), zap.String("kind", string(c.damage.Kind)), zap.Int("slot", c.damage.Slot),
		zap.String("half", c.damage.Half), zap.Int("offset", c.damage.Offset), zap.Int64("file_offset", c.damage.FileOffset),
		zap.Uint64("good_seq", c.damage.GoodSeq), zap.Int("events_at_stake", c.damage.Lost),
		zap.Uint64("first_lost", c.damage.FirstLost), zap.Uint64("last_lost", c.damage.LastLost),
		zap.String("reason", c.reason()))
}

// missingSlot decides about a scene or room that has no slot: normal on a
// first start, but when Open quarantined slots whose headers cannot be
// read, one of them may be its log, and starting it empty would silently
// drop its history.
func (h *host) missingSlot(id, parent string, def game.SceneDef) bool {
	ds := h.store.Damaged()
	if len(ds) == 0 {
		return false
	}
	idx := make([]string, len(ds))
	for i, d := range ds {
		idx[i] = fmt.Sprint(d.Slot)
	}
	d := shmlog.Damage{Kind: shmlog.DamageHeader, Slot: ds[0].Slot, FileOffset: ds[0].FileOffset,
		Reason: fmt.Sprintf("no log slot found, and slot(s) %s have unreadable headers (one may be this scene's log); run `respawn scene repair %s` to start it from an empty state",
			strings.Join(idx, ", "), id)}
	h.markCorrupt(&corrupt{id: id, parent: parent, def: def, damage: d})
	return true
}

// adoptStray takes back a scene's slot whose valid flag was cleared by
// damage: a scene's slot is never freed (only rooms end), so a free slot
// still carrying a scene's id cannot be anything else. Its log is then
// validated like any other.
func (h *host) adoptStray(id string) (*shmlog.Slot, bool) {
	idx, ok := h.store.Stray(id)
	if !ok {
		return nil, false
	}
	slot, err := h.store.Adopt(idx)
	if err != nil {
		h.log.Error("a free log slot carries this scene's id but cannot be taken back", zap.String("scene", id), zap.Int("slot", idx), zap.Error(err))
		return nil, false
	}
	h.mDamage.found.WithLabelValues("valid_flag").Inc()
	h.log.Warn("scene log: the scene's slot was marked free (a damaged valid flag); taken back", zap.String("scene", id), zap.Int("slot", idx))
	return slot, true
}

// settleDamage deals with what Open found in a slot that still replays
// whole: a snapshot bypassed with the previous half (replaced at once by a
// fresh one), or a bad record at the tail dropped as torn. Neither loses an
// acknowledged event, but an operator should know.
func (h *host) settleDamage(id string, slot *shmlog.Slot, st *game.Scene) {
	if d, ok := slot.Damage(); ok && d.Recovered {
		h.mDamage.found.WithLabelValues("snapshot_recovered").Inc()
		h.log.Warn("scene log: damaged snapshot bypassed with the previous one; nothing lost", zap.String("scene", id),
			zap.Int("slot", d.Slot), zap.Int64("file_offset", d.FileOffset), zap.String("reason", d.Reason))
		if err := slot.Snapshot(st.Snapshot()); err != nil {
			h.log.Error("snapshot over a damaged one", zap.String("scene", id), zap.Error(err))
		}
	}
	if off, ok := slot.Torn(); ok {
		h.mDamage.found.WithLabelValues("torn_tail").Inc()
		h.log.Warn("scene log: the last record did not verify and nothing committed follows it; dropped like a torn write",
			zap.String("scene", id), zap.Int("slot", slot.Index()), zap.Int("offset", off))
	}
}

// reclaimQuarantined frees the slots Open quarantined once no scene or room
// can be missing one: every one found its slot or was rebuilt without it.
func (h *host) reclaimQuarantined() {
	for _, c := range h.corrupt {
		if c.slot == nil {
			return
		}
	}
	for _, d := range h.store.Damaged() {
		if err := h.store.Reclaim(d.Slot); err != nil {
			h.log.Error("reclaim a quarantined log slot", zap.Int("slot", d.Slot), zap.Error(err))
			continue
		}
		h.log.Warn("log slot header was unreadable and no scene or room is missing its slot: slot reclaimed",
			zap.Int("slot", d.Slot), zap.Int64("file_offset", d.FileOffset), zap.String("reason", d.Reason))
	}
}

// ErrNotHosted: no scene or room of that id lives in this process.
var ErrNotHosted = errors.New("scene is not hosted here")

// serving returns the loop of scene or room id, or why it cannot serve: a
// corrupt log (ErrCorrupt, with the reason and the repair command) or not
// hosted here (ErrNotHosted). Every way in (API, link) asks this.
func (h *host) serving(id string) (*loop, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l, ok := h.loops[id]; ok {
		return l, nil
	}
	if c, ok := h.corrupt[id]; ok {
		return nil, c.err()
	}
	return nil, fmt.Errorf("scene %q: %w", id, ErrNotHosted)
}

// linkLoop is serving for the gateway link: a corrupt scene is
// unavailable (the gateway holds and resends; the reason says why and what
// repairs it), not absent (which would send the gateway elsewhere).
func (p *Process) linkLoop(scene string) (*loop, string, error) {
	l, err := p.host.serving(scene)
	switch {
	case errors.Is(err, ErrCorrupt):
		return nil, scenelink.FailUnavailable, err
	case err != nil:
		return nil, scenelink.FailNoScene, fmt.Errorf("scene %q is not hosted by process %s", scene, p.spec.Name)
	}
	return l, "", nil
}

// damages returns the damage of every corrupt scene and room, by id.
func (h *host) damages() map[string]shmlog.Damage {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.corrupt) == 0 {
		return nil
	}
	out := make(map[string]shmlog.Damage, len(h.corrupt))
	for id, c := range h.corrupt {
		out[id] = c.damage
	}
	return out
}

// corruptOf returns the corrupt record of scene or room id.
func (h *host) corruptOf(id string) (*corrupt, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.corrupt[id]
	return c, ok
}

// RepairResult is the answer of POST /v1/scenes/{id}/repair: exactly what
// the repair dropped, and the state the scene serves again from.
type RepairResult struct {
	Scene string `json:"scene"`
	// Damage is what was found; Dropped counts the acknowledged events
	// (seq FirstDropped..LastDropped) that could not be replayed.
	Damage       shmlog.Damage `json:"damage"`
	Dropped      int           `json:"dropped"`
	FirstDropped uint64        `json:"first_dropped,omitempty"`
	LastDropped  uint64        `json:"last_dropped,omitempty"`
	// From says what the scene was rebuilt from: "snapshot seq N + events
	// to seq M" or "empty state".
	From string `json:"from"`
	// Players are the players the repaired scene holds; each is checked
	// against the data server (a save at its version), which holds a newer
	// copy of any whose state the repair lost.
	Players []string `json:"players"`
	Rooms   []string `json:"rooms,omitempty"`
}

// repair rebuilds a corrupt scene or room from its good prefix (or from an
// empty state when nothing replays) and serves it again.
func (h *host) repair(id string) (RepairResult, error) {
	h.mu.Lock()
	c, ok := h.corrupt[id]
	if !ok {
		h.mu.Unlock()
		if _, ok := h.loops[id]; ok {
			return RepairResult{}, fmt.Errorf("scene %s is not corrupt; nothing to repair", id)
		}
		return RepairResult{}, fmt.Errorf("scene %q is not hosted here", id)
	}
	if _, bad := h.corrupt[c.parent]; c.parent != "" && bad {
		h.mu.Unlock()
		return RepairResult{}, fmt.Errorf("room %s: repair its scene %s first", id, c.parent)
	}
	res := RepairResult{Scene: id, Damage: c.damage}
	st := c.st
	if st == nil {
		st = game.New(c.def)
		res.From = "empty state"
	} else {
		res.From = fmt.Sprintf("the log's good prefix, up to seq %d", c.damage.GoodSeq)
	}
	slot := c.slot
	var err error
	if slot == nil {
		slot, err = h.store.Create(id)
		if errors.Is(err, shmlog.ErrExists) {
			slot, _ = h.store.Get(id)
			err = nil
		}
		if err == nil {
			err = slot.Snapshot(st.Snapshot())
		}
	} else {
		_, err = slot.Repair(st.Snapshot())
	}
	if err != nil {
		h.mu.Unlock()
		return RepairResult{}, fmt.Errorf("repair scene %s: %w", id, err)
	}
	if err := h.store.Flush(); err != nil {
		h.log.Error("flush event log after repair", zap.Error(err))
	}
	if c.damage.Kind != shmlog.DamageHeader {
		res.Dropped, res.FirstDropped, res.LastDropped = c.damage.Lost, c.damage.FirstLost, c.damage.LastLost
	}
	delete(h.corrupt, id)
	h.mDamage.atStake.DeleteLabelValues(id)
	l := newLoop(h, id, c.parent, st, slot)
	h.loops[id] = l
	if r := h.replicas; r != nil {
		for pid, p := range l.roster() {
			r.warn(r.profiles.Put(pid, p))
		}
		l.published = l.roster()
	}
	for _, pv := range st.Inspect().Players {
		res.Players = append(res.Players, pv.ID)
	}
	if h.attach != nil {
		h.attach(l)
	}
	l.players.Store(int64(st.Players()))
	// Its rooms that were held back with it: replayed from their slots now,
	// before the scene's recovery effects would create them afresh.
	rooms := st.LiveRooms()
	for _, cr := range rooms {
		res.Rooms = append(res.Rooms, cr.RoomID)
		if h.loops[cr.RoomID] != nil || h.corrupt[cr.RoomID] != nil {
			continue
		}
		if err := h.restoreOne(cr.RoomID, id, cr.Def); err != nil {
			h.log.Error("restore a room of the repaired scene", zap.String("room", cr.RoomID), zap.Error(err))
			continue
		}
		if rl := h.loops[cr.RoomID]; rl != nil {
			if h.attach != nil {
				h.attach(rl)
			}
			rl.start()
		}
	}
	// Slots of its rooms that its rebuilt state no longer lists (their
	// creation was among the dropped events) are freed.
	for _, sid := range h.store.IDs() {
		if strings.HasPrefix(sid, id+"/") && h.loops[sid] == nil && !containsRoom(rooms, sid) {
			if _, ok := h.corrupt[sid]; ok {
				delete(h.corrupt, sid)
				h.mDamage.atStake.DeleteLabelValues(sid)
			}
			h.log.Warn("freeing the slot of a room the repaired scene no longer lists", zap.String("room", sid))
			if err := h.store.Free(sid); err != nil {
				h.log.Error("free room slot", zap.String("room", sid), zap.Error(err))
			}
		}
	}
	h.reclaimQuarantined()
	l.start()
	h.mu.Unlock()

	h.log.Warn("scene repaired and serving again", zap.String("scene", id), zap.String("from", res.From),
		zap.Int("events_dropped", res.Dropped), zap.Uint64("first_dropped", res.FirstDropped),
		zap.Uint64("last_dropped", res.LastDropped), zap.Strings("players", res.Players))

	_ = l.read(context.Background(), func(st *game.Scene) { // recovery must run while the loop lives
		// Every player's state may be older than the data server's copy
		// (its later saves were among the dropped events).
		effs := withVersionChecks(st, st.RecoveryEffects(), res.Players)
		h.perform(l, effs, false)
	})
	return res, nil
}

func containsRoom(rooms []game.CreateRoom, id string) bool {
	for _, r := range rooms {
		if r.RoomID == id {
			return true
		}
	}
	return false
}

// health is what the process reports for one of its scenes: corrupt, or
// running with a note about a corrupt room of it.
func (h *host) health(id string) (state, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.corrupt[id]; ok {
		return modules.SceneCorrupt, c.reason()
	}
	var notes []string
	for rid, c := range h.corrupt {
		if c.parent == id {
			notes = append(notes, "room "+rid+": "+c.reason())
		}
	}
	sort.Strings(notes)
	return modules.SceneRunning, strings.Join(notes, "; ")
}

// apiRepair is POST /v1/scenes/{id}/repair (?room= for a dungeon room).
func (p *Process) apiRepair(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if room := r.URL.Query().Get("room"); room != "" {
		id = room
	}
	res, err := p.host.repair(id)
	if err != nil {
		admin.WriteError(w, http.StatusConflict, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, res)
}
