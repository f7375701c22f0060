package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

// sceneLog is the scene process log the manager writes for proc.
func (c *cluster) sceneLog(proc string) string {
	raw, _ := os.ReadFile(filepath.Join(c.dataDir, "logs", "scene-"+proc+".log"))
	return string(raw)
}

// waitStandby waits until scene id's process has a warm spare (other than
// not) and returns its row.
func (c *cluster) waitStandby(id string, not int) modules.SceneRow {
	c.t.Helper()
	var row modules.SceneRow
	poll.Until(c.t, 15*time.Second, func() error {
		var err error
		if row, err = c.scene(id); err != nil {
			return err
		}
		if row.State != modules.SceneRunning || row.StandbyPID == 0 || row.StandbyPID == not || !process.Alive(row.StandbyPID) {
			return fmt.Errorf("%s %s, standby pid %d", id, row.State, row.StandbyPID)
		}
		return nil
	})
	return row
}

// worldmgr.standby: the forest's hot spare takes over a kill -9 of its
// primary (the same pid, now running the next epoch, from the copy it
// followed, with Hogger's HP), a new spare follows and takes a planned
// handoff over the same way, and a spare dies with the manager while
// the primary it stood by keeps serving.
func TestStandbyTakesOverAKill9(t *testing.T) {
	c := newCluster(t, "--worldmgr.standby", "true")
	mgr := c.start("worldmgr")
	c.waitRunning(15 * time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(c.sceneLog("forest"), "\n")
			t.Logf("forest log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	old := c.waitStandby("forest", 0)
	spare := old.StandbyPID

	var res game.MonsterResult
	out := c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "999", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.HP != 1 {
		t.Fatalf("damage: %v %s", err, out)
	}
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.PID != spare || r.State != modules.SceneRunning {
			return fmt.Errorf("forest %s pid %d epoch %d, want the spare %d running", r.State, r.PID, r.Epoch, spare)
		}
		if r.Epoch != old.Epoch+1 {
			return fmt.Errorf("the spare runs epoch %d, want %d", r.Epoch, old.Epoch+1)
		}
		return nil
	})
	after, err := c.inspect("forest")
	if err != nil {
		t.Fatal(err)
	}
	if h := monster(after, "hogger"); h.HP != 1 {
		t.Fatalf("Hogger came back with %d HP, want 1", h.HP)
	}
	if lg := c.sceneLog("forest"); !strings.Contains(lg, "standby taking over") || !strings.Contains(lg, "scene taken over from the standby's copy") {
		t.Fatal("the scene log does not show the takeover from the followed copy")
	}
	next := c.waitStandby("forest", spare)
	if next.PID != spare {
		t.Fatalf("forest pid %d after the new spare, want %d", next.PID, spare)
	}

	// A planned handoff goes to the new spare, which takes its followed
	// copy over too (the old process skips its final snapshot for it).
	code, body, err := c.call(http.MethodPost, "http://"+c.ports["worldmgr.admin"]+"/v1/processes/forest/handoff", nil, c.operatorToken())
	if err != nil || code != http.StatusOK {
		t.Fatalf("handoff: %d %s %v", code, body, err)
	}
	poll.Until(t, 10*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.PID != next.StandbyPID || r.State != modules.SceneRunning || r.Epoch != next.Epoch+1 {
			return fmt.Errorf("forest %s pid %d epoch %d, want the spare %d running epoch %d", r.State, r.PID, r.Epoch, next.StandbyPID, next.Epoch+1)
		}
		return nil
	})
	if n := strings.Count(c.sceneLog("forest"), "scene taken over from the standby's copy"); n != 2 {
		t.Fatalf("%d takeovers from a followed copy, want 2 (the kill and the handoff)", n)
	}
	if after, err = c.inspect("forest"); err != nil || monster(after, "hogger").HP != 1 {
		t.Fatalf("after the handoff Hogger has %d HP (%v), want 1", monster(after, "hogger").HP, err)
	}
	spare = next.StandbyPID
	next = c.waitStandby("forest", spare)

	// The manager dies: its spares go with it (they would wait unknown to
	// a restarted manager), the primaries keep serving.
	mgr.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := process.WaitGone(ctx, next.StandbyPID); err != nil {
		t.Fatalf("the spare outlived its manager: %v", err)
	}
	if !process.Alive(spare) {
		t.Fatal("the primary (a promoted spare) died with the manager")
	}
}

// An upgrade installs a new scene binary and hands over: the spare,
// started from the old build, must not take the handoff (it would run the
// old code); it is killed first and the successor is of the new build.
func TestStandbyOfAnOldBuildIsNotHandedOver(t *testing.T) {
	c := newCluster(t, "--worldmgr.standby", "true")
	bin := filepath.Join(c.dataDir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	copyBin(t, filepath.Join(binDir, "scene"), filepath.Join(bin, "scene"))
	c.extra = append(c.extra, "--bin-dir", bin)
	c.start("worldmgr")
	c.waitRunning(15 * time.Second)
	old := c.waitStandby("forest", 0)

	// "Install" a new build: a new file renamed over the old one.
	copyBin(t, filepath.Join(binDir, "scene"), filepath.Join(bin, "scene.new"))
	if err := os.Rename(filepath.Join(bin, "scene.new"), filepath.Join(bin, "scene")); err != nil {
		t.Fatal(err)
	}
	code, body, err := c.call(http.MethodPost, "http://"+c.ports["worldmgr.admin"]+"/v1/processes/forest/handoff", nil, c.operatorToken())
	if err != nil || code != http.StatusOK {
		t.Fatalf("handoff: %d %s %v", code, body, err)
	}
	if process.Alive(old.StandbyPID) {
		t.Fatalf("the old build's standby (pid %d) still lives after the handoff was accepted", old.StandbyPID)
	}
	poll.Until(t, 15*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.State != modules.SceneRunning || r.PID == old.PID || r.Epoch <= old.Epoch {
			return fmt.Errorf("forest %s pid %d epoch %d", r.State, r.PID, r.Epoch)
		}
		if r.PID == old.StandbyPID {
			return fmt.Errorf("the old build's standby took the handoff")
		}
		return nil
	})
	// It went to a spare of the new build that had caught up, not cold.
	now, err := c.scene("forest")
	if err != nil {
		t.Fatal(err)
	}
	var ready, took bool
	for _, l := range readLogLines(filepath.Join(c.dataDir, "logs", "scene-forest.log")) {
		if l.Epoch == now.Epoch {
			ready = ready || strings.HasPrefix(l.Msg, "standby ready: following")
			took = took || l.Msg == "standby taking over: the event log is ours"
		}
	}
	if !ready || !took {
		t.Fatalf("epoch %d: spare ready %v, took over as a standby %v: the handoff did not go through a caught-up spare of the new build", now.Epoch, ready, took)
	}
	c.waitStandby("forest", old.StandbyPID)
}
