package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/scene"
)

// waitClean waits until scene id runs with no reason held against it (as
// after a repair) and returns what it holds.
func (c *cluster) waitClean(id string, timeout time.Duration) game.View {
	c.t.Helper()
	poll.Until(c.t, timeout, func() error {
		r, err := c.scene(id)
		if err != nil {
			return err
		}
		if r.State != modules.SceneRunning || r.Reason != "" {
			return fmt.Errorf("%s %s (%s)", id, r.State, r.Reason)
		}
		return nil
	})
	v, err := c.inspect(id)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

func (c *cluster) inspect(id string) (game.View, error) {
	var v game.View
	out, err := c.tryRespawn("scene", "inspect", id, "--json")
	if err != nil {
		return v, fmt.Errorf("%v: %s", err, out)
	}
	return v, json.Unmarshal([]byte(out), &v)
}

func monster(v game.View, id string) game.MonsterView {
	for _, m := range v.Monsters {
		if m.ID == id {
			return m
		}
	}
	return game.MonsterView{}
}

func npc(v game.View, id string) game.NPCView {
	for _, n := range v.NPCs {
		if n.ID == id {
			return n
		}
	}
	return game.NPCView{}
}

// Seed 003's complaint, as a test: Hogger left at 1 HP must still be at
// 1 HP after the scene process is killed, the escort NPC must not jump
// back, and time must go on rather than restart.
func TestHoggerStaysAt1HPAcrossKill9(t *testing.T) {
	c := newCluster(t)
	c.start("worldmgr")
	c.waitRunning(15 * time.Second)

	var res game.MonsterResult
	out := c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "999", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.HP != 1 || res.MaxHP != 1000 {
		t.Fatalf("after 999 damage Hogger has %d/%d HP", res.HP, res.MaxHP)
	}
	// The GM command is the newest of forest's recent events.
	if out := c.respawn("scene", "inspect", "forest"); !strings.Contains(out, "gm_damage") || !strings.Contains(out, "hogger at 1/1000") {
		t.Fatalf("scene inspect does not list the GM damage among the recent events:\n%s", out)
	}
	// Let the escort walk a few steps so "where it was" is not the start.
	var before game.View
	poll.Until(t, 10*time.Second, func() error {
		var err error
		if before, err = c.inspect("forest"); err != nil {
			return err
		}
		if npc(before, "farmer").PathIndex < 2 {
			return fmt.Errorf("farmer at step %d", npc(before, "farmer").PathIndex)
		}
		return nil
	})
	old := find(t, c.waitRunning(time.Second), "forest")
	c.respawn("scene", "kill", "forest")
	c.waitReplaced(old, 5*time.Second)
	after, err := c.inspect("forest")
	if err != nil {
		t.Fatal(err)
	}
	if h := monster(after, "hogger"); h.HP != 1 {
		t.Errorf("Hogger came back with %d HP, want 1", h.HP)
	}
	if after.Tick < before.Tick {
		t.Errorf("tick went from %d back to %d", before.Tick, after.Tick)
	}
	// The escort takes one step every 10 ticks along a looping path of 6
	// points: it must be where it was plus the steps of the ticks since.
	fb, fa := npc(before, "farmer"), npc(after, "farmer")
	if want := (fb.PathIndex + int(after.Tick/10-before.Tick/10)) % 6; fa.PathIndex != want {
		t.Errorf("escort went from step %d (tick %d) to step %d (tick %d), want step %d", fb.PathIndex, before.Tick, fa.PathIndex, after.Tick, want)
	}
	if after.Epoch != old.Epoch+1 {
		t.Errorf("epoch %d, want %d", after.Epoch, old.Epoch+1)
	}
	r, _ := c.scene("forest")
	t.Logf("replayed to tick %d in %.2f ms (Hogger %d HP, farmer step %d)", after.Tick, r.ReplayMS, monster(after, "hogger").HP, fa.PathIndex)

	// And the last hit after the crash kills him.
	out = c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "1", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Killed {
		t.Fatalf("last hit: %s", out)
	}
}

// The log is locked while its process lives: a second opener is refused.
func TestLiveLogCannotBeOpenedTwice(t *testing.T) {
	c := newCluster(t)
	c.start("worldmgr")
	c.waitRunning(15 * time.Second)
	out, err := c.tryRespawn("replay-check", filepath.Join(c.shmDir, "forest.log"))
	if err == nil || !strings.Contains(out, "locked") {
		t.Fatalf("replay-check of a live log: err %v, output:\n%s", err, out)
	}
}

func (c *cluster) logInfo(sceneID string) (scene.LogInfo, error) {
	var info scene.LogInfo
	r, err := c.scene(sceneID)
	if err != nil {
		return info, err
	}
	return info, getJSON("http://"+r.Addr+"/v1/log", &info)
}

func (c *cluster) inspectRoom(sceneID, room string) (game.View, error) {
	var v game.View
	out, err := c.tryRespawn("scene", "inspect", sceneID, "--room", room, "--json")
	if err != nil {
		return v, fmt.Errorf("%v: %s", err, out)
	}
	return v, json.Unmarshal([]byte(out), &v)
}

// A dungeon room lives in its own log slot: it survives a kill -9 of its
// scene process with its boss's HP, and when the boss dies the room ends,
// its slot is freed, and the next room takes the same slot.
func TestDungeonRoomSurvivesKill9AndFreesItsSlot(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	c.respawn("player", "create", "jo", "--name", "Jo")
	c.respawn("gm", "enter", "--scene", "forest", "--player", "jo")
	initial, err := c.logInfo("forest")
	if err != nil {
		t.Fatal(err)
	}

	var dr game.DungeonResult
	out := c.respawn("gm", "request", "--scene", "forest", "--player", "jo", "--seq", "1", `{"op":"dungeon"}`)
	if err := json.Unmarshal([]byte(out), &dr); err != nil || dr.RoomID == "" {
		t.Fatalf("enter dungeon: %v %s", err, out)
	}
	var slot int
	poll.Until(t, 10*time.Second, func() error {
		info, err := c.logInfo("forest")
		if err != nil {
			return err
		}
		var ok bool
		if slot, ok = info.Slots[dr.RoomID]; !ok || info.FreeSlots != initial.FreeSlots-1 {
			return fmt.Errorf("log: %+v", info)
		}
		v, err := c.inspectRoom("forest", dr.RoomID)
		if err != nil {
			return err
		}
		if len(v.Players) != 1 {
			return fmt.Errorf("room has %d players", len(v.Players))
		}
		return nil
	})
	out = c.respawn("gm", "damage", "--scene", "forest", "--room", dr.RoomID, "--monster", "kobold-king", "--amount", "100", "--json")
	var king game.MonsterResult
	if err := json.Unmarshal([]byte(out), &king); err != nil || king.Killed {
		t.Fatalf("damage king: %v %s", err, out)
	}

	old := find(t, c.waitRunning(time.Second), "forest")
	c.respawn("scene", "kill", "forest")
	poll.Until(t, 10*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil || r.PID == old.PID || r.State != modules.SceneRunning {
			return fmt.Errorf("forest %+v %v", r, err)
		}
		v, err := c.inspectRoom("forest", dr.RoomID)
		if err != nil {
			return err
		}
		if m := monster(v, "kobold-king"); m.HP != king.HP || len(v.Players) != 1 {
			return fmt.Errorf("room after respawn: king %d HP (was %d), %d players", m.HP, king.HP, len(v.Players))
		}
		return nil
	})
	if info, _ := c.logInfo("forest"); info.Slots[dr.RoomID] != slot {
		t.Fatalf("room moved from slot %d: %+v", slot, info)
	}

	c.respawn("gm", "damage", "--scene", "forest", "--room", dr.RoomID, "--monster", "kobold-king", "--amount", "100000")
	poll.Until(t, 15*time.Second, func() error {
		info, err := c.logInfo("forest")
		if err != nil {
			return err
		}
		if _, ok := info.Slots[dr.RoomID]; ok || info.FreeSlots != initial.FreeSlots {
			return fmt.Errorf("room slot not freed: %+v", info)
		}
		v, err := c.inspect("forest")
		if err != nil {
			return err
		}
		// GM damage kills without loot: Jo comes back as she went.
		if len(v.Players) != 1 || v.Players[0].ID != "jo" || len(v.Rooms) != 0 {
			return fmt.Errorf("forest after the room: players %+v rooms %v", v.Players, v.Rooms)
		}
		return nil
	})

	var dr2 game.DungeonResult
	out = c.respawn("gm", "request", "--scene", "forest", "--player", "jo", "--seq", "2", `{"op":"dungeon"}`)
	if err := json.Unmarshal([]byte(out), &dr2); err != nil || dr2.RoomID == dr.RoomID {
		t.Fatalf("second dungeon: %v %s", err, out)
	}
	poll.Until(t, 10*time.Second, func() error {
		info, err := c.logInfo("forest")
		if err != nil {
			return err
		}
		got, ok := info.Slots[dr2.RoomID]
		if !ok {
			return fmt.Errorf("second room has no slot yet: %+v", info)
		}
		if got != slot {
			t.Fatalf("second room took slot %d, the freed one was %d", got, slot)
		}
		return nil
	})
}
