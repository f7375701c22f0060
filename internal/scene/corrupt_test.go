package scene

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// twoScenes is one process hosting town and forest in one log.
func twoScenes(t *testing.T, path string) *host {
	t.Helper()
	cfg := config.Default()
	cfg.Scene.ShmSlots = 8
	cfg.Scene.ShmSlotSize = 16 << 20
	h := newHost(&cfg, zaptest.NewLogger(t), 1)
	if err := h.open(t.Context(), path, false); err != nil {
		t.Fatal(err)
	}
	if err := h.restore([]string{"town", "forest"}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	h.startAll()
	return h
}

// crash stops the loops and closes the log without the snapshot a clean
// stop takes: what kill -9 leaves.
func crash(h *host) {
	for _, l := range h.sortedLoops() {
		l.stop()
	}
	h.store.Close()
}

func hogger(t *testing.T, l *loop) int64 {
	t.Helper()
	var hp int64 = -1
	if err := l.read(context.Background(), func(st *game.Scene) {
		for _, m := range st.Inspect().Monsters {
			if m.ID == "hogger" {
				hp = m.HP
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return hp
}

// seqOf replays scene's slot read-only and returns the seq of the GM
// command reqID, the last seq, and where the slot lies in the file.
func seqOf(t *testing.T, path, scene, reqID string) (at, last uint64, slot [2]int64) {
	t.Helper()
	st, err := shmlog.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sl, _ := st.Get(scene)
	size := int64(st.Options().SlotSize)
	slot = [2]int64{4096 + int64(sl.Index())*size, size} // the documented layout
	if err := sl.Replay(func(r shmlog.Record) error {
		last = r.Seq
		if r.Kind != shmlog.KindEvent {
			return nil
		}
		ev, err := game.DecodeEvent(r.Payload)
		if err != nil {
			return err
		}
		if d, ok := ev.(game.GMDamage); ok && d.ReqID == reqID {
			at = r.Seq
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if at == 0 {
		t.Fatalf("no GM command %s in %s's log", reqID, scene)
	}
	return at, last, slot
}

// flip changes one byte of the only occurrence of marker in the slot
// (offset, size) of the file.
func flip(t *testing.T, path string, slot [2]int64, marker string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw := make([]byte, slot[1])
	if _, err := f.ReadAt(raw, slot[0]); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(raw, []byte(marker)); n != 1 {
		t.Fatalf("marker %q found %d times, want once", marker, n)
	}
	i := int64(bytes.Index(raw, []byte(marker)))
	if _, err := f.WriteAt([]byte{raw[i] ^ 0x20}, slot[0]+i); err != nil {
		t.Fatal(err)
	}
}

// A flipped byte mid-log of one scene: that scene is corrupt, with the
// acknowledged events at stake counted exactly, and serves nothing; the
// other scene of the process serves. Repair rebuilds it from the good
// prefix, says what it dropped, and it serves and logs again.
func TestCorruptSceneIsHeldAndRepaired(t *testing.T) {
	path := LogPath(t.TempDir(), "world")
	h := twoScenes(t, path)
	forest, _ := h.loop("forest")
	if _, err := forest.submit(context.Background(), game.Enter{Player: player.Data{ID: "p1", Name: "Ann"}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := forest.submit(context.Background(), game.GMDamage{ReqID: fmt.Sprintf("gm-damage-%d-of-5", i), Monster: "hogger", Amount: 10}); err != nil {
			t.Fatal(err)
		}
	}
	if hp := hogger(t, forest); hp != 950 {
		t.Fatalf("hogger at %d HP, want 950", hp)
	}
	crash(h)
	at, last, slot := seqOf(t, path, "forest", "gm-damage-3-of-5")
	flip(t, path, slot, "gm-damage-3-of-5")

	h = twoScenes(t, path)
	defer h.stopAll(true, true)
	if _, err := h.serving("forest"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "respawn scene repair forest") {
		t.Fatalf("a corrupt scene is served, or refused without saying why: %v", err)
	}
	c, ok := h.corruptOf("forest")
	if !ok {
		t.Fatal("forest is not corrupt")
	}
	d := c.damage
	if d.Kind != shmlog.DamageRecord || d.GoodSeq != at-1 || d.FirstLost != at || d.LastLost != last || d.Lost != int(last-at+1) {
		t.Fatalf("damage %+v, want seqs %d..%d (%d events) at stake", d, at, last, last-at+1)
	}
	if st, reason := h.health("forest"); st != modules.SceneCorrupt || reason == "" {
		t.Fatalf("forest reports %s %q", st, reason)
	}
	if st, reason := h.health("town"); st != modules.SceneRunning || reason != "" {
		t.Fatalf("town reports %s %q", st, reason)
	}
	town, _ := h.loop("town")
	if _, err := town.submit(context.Background(), game.Tick{}); err != nil {
		t.Fatalf("town does not serve: %v", err)
	}
	if !errors.Is(c.err(), ErrCorrupt) {
		t.Fatalf("error %v", c.err())
	}

	res, err := h.repair("forest")
	if err != nil {
		t.Fatal(err)
	}
	if res.Dropped != d.Lost || res.FirstDropped != at || res.LastDropped != last || len(res.Players) != 1 || res.Players[0] != "p1" {
		t.Fatalf("repair result %+v", res)
	}
	if _, err := h.repair("forest"); err == nil {
		t.Fatal("a second repair did something")
	}
	forest, ok = h.loop("forest")
	if !ok {
		t.Fatal("forest not served after repair")
	}
	if hp := hogger(t, forest); hp != 980 {
		t.Fatalf("hogger at %d HP after repair, want 980 (commands 3..5 dropped)", hp)
	}
	if _, err := forest.submit(context.Background(), game.GMDamage{ReqID: "after-repair", Monster: "hogger", Amount: 5}); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.health("forest"); st != modules.SceneRunning {
		t.Fatalf("forest reports %s after repair", st)
	}
	crash(h)

	// The repaired log replays by itself.
	h = twoScenes(t, path)
	forest, ok = h.loop("forest")
	if !ok {
		t.Fatal("forest corrupt again after repair and a crash")
	}
	if hp := hogger(t, forest); hp != 975 {
		t.Fatalf("hogger at %d HP after repair and a crash, want 975", hp)
	}
}

// Garbage in an unused slot header: the process starts, its scenes serve,
// and the slot is reclaimed because no scene is missing its slot.
func TestGarbageInAnUnusedSlotHeader(t *testing.T) {
	path := LogPath(t.TempDir(), "world")
	h := twoScenes(t, path)
	free := h.store.FreeSlots()
	geo := h.store.Options()
	crash(h)

	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	garbage := bytes.Repeat([]byte{0xa5, 0x5a, 0xff, 0x13}, 64)
	garbage[0] |= 1 // the valid flag
	if _, err := f.WriteAt(garbage, 4096+int64(geo.Slots-1)*int64(geo.SlotSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	h = twoScenes(t, path)
	defer h.stopAll(true, true)
	for _, id := range []string{"town", "forest"} {
		if _, ok := h.loop(id); !ok {
			t.Fatalf("%s not served", id)
		}
	}
	if h.store.FreeSlots() != free || len(h.store.Damaged()) != 0 {
		t.Fatalf("%d free slots (want %d), %d quarantined", h.store.FreeSlots(), free, len(h.store.Damaged()))
	}
}

// A scene whose slot cannot be found while an unreadable slot exists may
// have lost its id: it is corrupt, never silently started empty; repair
// starts it empty and then reclaims the unreadable slot.
func TestSceneMissingItsSlotNextToAnUnreadableOne(t *testing.T) {
	path := LogPath(t.TempDir(), "world")
	h := twoScenes(t, path)
	idx, _ := h.store.SlotIndex("forest")
	geo := h.store.Options()
	crash(h)

	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Scramble forest's id (its checksum no longer matches).
	if _, err := f.WriteAt([]byte("XX"), 4096+int64(idx)*int64(geo.SlotSize)+16); err != nil {
		t.Fatal(err)
	}
	f.Close()

	h = twoScenes(t, path)
	defer h.stopAll(true, true)
	if _, ok := h.loop("town"); !ok {
		t.Fatal("town not served")
	}
	if st, reason := h.health("forest"); st != modules.SceneCorrupt {
		t.Fatalf("forest is %s (%s), want corrupt", st, reason)
	}
	res, err := h.repair("forest")
	if err != nil {
		t.Fatal(err)
	}
	if res.From != "empty state" {
		t.Fatalf("repair from %q", res.From)
	}
	if _, ok := h.loop("forest"); !ok || len(h.store.Damaged()) != 0 {
		t.Fatalf("after repair: forest served %v, %d slots quarantined", ok, len(h.store.Damaged()))
	}
}

// A damaged record in a dungeon room's slot stops that room only: its
// scene serves (and reports the room), and the room is repaired alone.
func TestCorruptRoomIsHeldWhileItsSceneServes(t *testing.T) {
	path := LogPath(t.TempDir(), "world")
	h := twoScenes(t, path)
	forest, _ := h.loop("forest")
	ctx := context.Background()
	if _, err := forest.submit(ctx, game.Enter{Player: player.Data{ID: "p1", Name: "Ann"}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := forest.submit(ctx, game.Request{Session: "s1", Player: "p1", Seq: 1, Op: game.EnterDungeon{}}); err != nil {
		t.Fatal(err)
	}
	var room *loop
	poll.Until(t, 5*time.Second, func() error {
		var rooms []string
		_ = forest.read(ctx, func(st *game.Scene) { rooms = st.Inspect().Rooms })
		if len(rooms) != 1 {
			return fmt.Errorf("rooms %v", rooms)
		}
		var ok bool
		if room, ok = h.loop(rooms[0]); !ok {
			return fmt.Errorf("room %s has no loop", rooms[0])
		}
		return nil
	})
	for i := 1; i <= 4; i++ {
		if _, err := room.submit(ctx, game.GMDamage{ReqID: fmt.Sprintf("room-hit-%d-of-4", i), Monster: "kobold-1", Amount: 1}); err != nil {
			t.Fatal(err)
		}
	}
	id := room.id
	crash(h)
	at, last, slot := seqOf(t, path, id, "room-hit-2-of-4")
	flip(t, path, slot, "room-hit-2-of-4")

	h = twoScenes(t, path)
	defer h.stopAll(true, true)
	if _, ok := h.loop("forest"); !ok {
		t.Fatal("forest not served because of its room")
	}
	if _, ok := h.loop(id); ok {
		t.Fatal("a corrupt room is served")
	}
	c, ok := h.corruptOf(id)
	if !ok || c.damage.Lost != int(last-at+1) {
		t.Fatalf("room corrupt %v with %+v, want %d events at stake", ok, c, last-at+1)
	}
	if st, reason := h.health("forest"); st != modules.SceneRunning || !strings.Contains(reason, "room "+id) {
		t.Fatalf("forest reports %s %q", st, reason)
	}
	if _, err := h.repair(id); err != nil {
		t.Fatal(err)
	}
	room, ok = h.loop(id)
	if !ok {
		t.Fatal("room not served after repair")
	}
	var hp int64
	_ = room.read(ctx, func(st *game.Scene) {
		for _, m := range st.Inspect().Monsters {
			if m.ID == "kobold-1" {
				hp = m.HP
			}
		}
	})
	if hp != 39 {
		t.Fatalf("kobold at %d HP after repair, want 39 (one hit before the damage)", hp)
	}
	if st, reason := h.health("forest"); st != modules.SceneRunning || reason != "" {
		t.Fatalf("forest reports %s %q after the room's repair", st, reason)
	}
}

// A damaged snapshot is bypassed with the previous one and the events
// folded into it: the scene comes back exactly, nothing is lost, and a
// fresh snapshot replaces the damaged one at once.
func TestDamagedSnapshotIsBypassed(t *testing.T) {
	path := LogPath(t.TempDir(), "world")
	h := twoScenes(t, path)
	forest, _ := h.loop("forest")
	ctx := context.Background()
	if _, err := forest.submit(ctx, game.Enter{Player: player.Data{ID: "p1", Name: "Snapshot-Marker-7f3a"}, Version: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := forest.submit(ctx, game.GMDamage{ReqID: "before-snapshot", Monster: "hogger", Amount: 100}); err != nil {
		t.Fatal(err)
	}
	if err := forest.read(ctx, func(*game.Scene) { _ = forest.snapshot() }); err != nil {
		t.Fatal(err)
	}
	if _, err := forest.submit(ctx, game.GMDamage{ReqID: "after-snapshot", Monster: "hogger", Amount: 50}); err != nil {
		t.Fatal(err)
	}
	crash(h)
	want := forest.st.Hash()
	st := forest.slot.Stats()
	geo := h.store.Options()
	half := int64(geo.SlotSize-256) / 2
	active := [2]int64{4096 + int64(st.Index)*int64(geo.SlotSize) + 256 + int64(st.ActiveHalf)*half, half}
	flip(t, path, active, "Snapshot-Marker-7f3a") // in the snapshot; the previous half keeps the Enter

	h = twoScenes(t, path)
	defer h.stopAll(true, true)
	forest, ok := h.loop("forest")
	if !ok {
		t.Fatal("forest not served")
	}
	var got [32]byte
	_ = forest.read(ctx, func(st *game.Scene) { got = st.Hash() })
	if got != want {
		t.Fatal("forest came back in another state")
	}
	if hp := hogger(t, forest); hp != 850 {
		t.Fatalf("hogger at %d HP, want 850", hp)
	}
	var m dto.Metric
	if err := h.mDamage.found.WithLabelValues("snapshot_recovered").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("snapshot_recovered counted %v times (%v)", m.GetCounter().GetValue(), err)
	}
	if d, ok := forest.slot.Damage(); ok {
		t.Fatalf("damage left after the fresh snapshot: %+v", d)
	}
}

// A scene's slot whose valid flag was cleared by damage is taken back with
// its whole log, never replaced by an empty one.
func TestSceneSlotMarkedFreeIsTakenBack(t *testing.T) {
	path := LogPath(t.TempDir(), "world")
	h := twoScenes(t, path)
	forest, _ := h.loop("forest")
	if _, err := forest.submit(context.Background(), game.GMDamage{ReqID: "r1", Monster: "hogger", Amount: 77}); err != nil {
		t.Fatal(err)
	}
	idx, _ := h.store.SlotIndex("forest")
	geo := h.store.Options()
	crash(h)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := 4096 + int64(idx)*int64(geo.SlotSize) // the state word's low byte holds the valid flag
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[0] &^ 1}, at); err != nil {
		t.Fatal(err)
	}
	f.Close()

	h = twoScenes(t, path)
	defer h.stopAll(true, true)
	forest, ok := h.loop("forest")
	if !ok {
		t.Fatal("forest not served")
	}
	if hp := hogger(t, forest); hp != 923 {
		t.Fatalf("hogger at %d HP, want 923: the log was not taken back", hp)
	}
	if got, _ := h.store.SlotIndex("forest"); got != idx {
		t.Fatalf("forest in slot %d, was %d", got, idx)
	}
}
