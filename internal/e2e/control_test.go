package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

func TestSceneKill9IsRespawnedWithHigherEpoch(t *testing.T) {
	c := newCluster(t)
	c.start("worldmgr")
	before := c.waitRunning(15 * time.Second)
	old := find(t, before, "forest")

	if out := c.respawn("scene", "kill", "forest"); !strings.Contains(out, fmt.Sprintf("sent KILL to pid %d", old.PID)) {
		t.Fatalf("kill output: %s", out)
	}
	poll.Until(t, 5*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.PID == old.PID || r.State != modules.SceneRunning || r.Epoch != old.Epoch+1 {
			return fmt.Errorf("forest: pid %d epoch %d state %s (old pid %d epoch %d)", r.PID, r.Epoch, r.State, old.PID, old.Epoch)
		}
		return nil
	})
	if process.Alive(old.PID) {
		t.Fatalf("old pid %d still alive", old.PID)
	}
	town := find(t, c.waitRunning(time.Second), "town")
	if town.PID != find(t, before, "town").PID {
		t.Fatalf("town was restarted too: %+v", town)
	}
	r, _ := c.scene("forest")
	if r.Restarts != 1 {
		t.Fatalf("restarts = %d, want 1", r.Restarts)
	}
}

func TestHungSceneIsKilledAndReplaced(t *testing.T) {
	c := newCluster(t)
	c.start("worldmgr")
	old := find(t, c.waitRunning(15*time.Second), "forest")

	stopped := time.Now()
	c.respawn("scene", "kill", "forest", "--signal", "STOP")
	// Heartbeat timeout (1 s) + 1 s.
	poll.Until(t, 2*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if process.Alive(old.PID) {
			return fmt.Errorf("stopped pid %d still exists", old.PID)
		}
		if r.PID == old.PID || r.State != modules.SceneRunning {
			return fmt.Errorf("forest: pid %d state %s", r.PID, r.State)
		}
		return nil
	})
	t.Logf("hang to replaced: %s", time.Since(stopped))
}

func TestWorldmgrKill9UnderUpRebuildsTheSameTable(t *testing.T) {
	c := newCluster(t)
	up := c.start("respawn", "up")
	var before []modules.SceneRow
	poll.Until(t, 20*time.Second, func() error {
		var err error
		before, err = c.scenes()
		if err != nil {
			return err
		}
		for _, r := range before {
			if r.State != modules.SceneRunning {
				return fmt.Errorf("%s is %s", r.ID, r.State)
			}
		}
		return nil
	})
	mgrPID := daemonPID(t, c, "worldmgr")
	if err := syscall.Kill(mgrPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The supervisor restarts the manager; the new one adopts the scenes
	// from their reports.
	var after []modules.SceneRow
	poll.Until(t, 10*time.Second, func() error {
		var st struct {
			PID        int  `json:"pid"`
			Recovering bool `json:"recovering"`
		}
		if err := getJSON("http://"+c.ports["worldmgr.admin"]+"/v1/status", &st); err != nil {
			return err
		}
		if st.PID == mgrPID || st.Recovering {
			return fmt.Errorf("manager pid %d recovering %v", st.PID, st.Recovering)
		}
		var err error
		after, err = c.scenes()
		return err
	})
	if len(after) != len(before) {
		t.Fatalf("table has %d rows, had %d", len(after), len(before))
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ID != b.ID || a.PID != b.PID || a.Epoch != b.Epoch || a.State != b.State || a.Addr != b.Addr ||
			a.Process != b.Process || a.Restarts != b.Restarts || !a.Since.Equal(b.Since) {
			t.Errorf("row changed across manager restart:\n before %+v\n after  %+v", b, a)
		}
	}

	// Ctrl-C on the supervisor stops everything, scenes included, and exits 0.
	up.signal(syscall.SIGTERM)
	if err := up.wait(30 * time.Second); err != nil {
		t.Fatalf("respawn up exited with %v; log:\n%s", err, up.output())
	}
	for _, r := range after {
		if process.Alive(r.PID) {
			t.Errorf("scene %s pid %d still alive after up stopped", r.ID, r.PID)
		}
	}
	if pids := c.livePids(""); len(pids) > 0 {
		t.Errorf("processes left after up stopped: %v", pids)
	}
}

func TestWorldmgrAndSceneKilledTogether(t *testing.T) {
	c := newCluster(t)
	mgr := c.start("worldmgr")
	before := c.waitRunning(15 * time.Second)
	town, forest := find(t, before, "town"), find(t, before, "forest")

	mgr.signal(syscall.SIGKILL)
	mgr.wait(5 * time.Second)
	if err := syscall.Kill(forest.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.start("worldmgr")
	var rows []modules.SceneRow
	poll.Until(t, 10*time.Second, func() error {
		var err error
		rows, err = c.scenes()
		if err != nil {
			return err
		}
		f := find(t, rows, "forest")
		if f.State != modules.SceneRunning || f.PID == forest.PID || !process.Alive(f.PID) {
			return fmt.Errorf("forest %s pid %d", f.State, f.PID)
		}
		return nil
	})
	if got := find(t, rows, "town"); got.PID != town.PID || got.Epoch != town.Epoch || got.State != modules.SceneRunning {
		t.Fatalf("town changed: before %+v after %+v", town, got)
	}
	if got := find(t, rows, "forest"); got.Epoch <= forest.Epoch {
		t.Fatalf("forest epoch went from %d to %d", forest.Epoch, got.Epoch)
	}
	// No duplicate: one live process per scene process name.
	for _, name := range []string{"town", "forest"} {
		if pids := c.livePids("--process " + name + " "); len(pids) != 1 {
			t.Errorf("process %s: %d live processes %v, want 1", name, len(pids), pids)
		}
	}
}

func TestCrashLoopingSceneEndsFailed(t *testing.T) {
	c := newCluster(t, "--worldmgr.restart.backoff-initial", "10ms", "--worldmgr.restart.backoff-max", "40ms")
	c.env = []string{"RESPAWN_TEST_CRASH_AT_START=forest"}
	c.start("worldmgr")
	poll.Until(t, 15*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.State != modules.SceneFailed {
			return fmt.Errorf("forest is %s after %d restarts", r.State, r.Restarts)
		}
		return nil
	})
	r, _ := c.scene("forest")
	if r.Restarts != 6 {
		t.Errorf("restarts = %d, want 6 (max_restarts 5 exceeded)", r.Restarts)
	}
	if town, _ := c.scene("town"); town.State != modules.SceneRunning {
		t.Errorf("town is %s", town.State)
	}
	out := c.respawn("scenes")
	if !strings.Contains(out, "failed") {
		t.Errorf("`respawn scenes` does not show the failed scene:\n%s", out)
	}
	// `scene restart` clears it; it crash-loops again (the hook is still
	// set), which proves it was restarted.
	c.respawn("scene", "restart", "forest")
	poll.Until(t, 15*time.Second, func() error {
		again, err := c.scene("forest")
		if err != nil {
			return err
		}
		if again.Restarts <= r.Restarts {
			return fmt.Errorf("not restarted: %+v", again)
		}
		return nil
	})
}

func TestBadConfigIsRefusedNamingTheKey(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--worldmgr.heartbeat-timeout", "50ms"}, "worldmgr.heartbeat_timeout"},
		{[]string{"--scene.tick-hz", "0"}, "scene.tick_hz"},
		{[]string{"--processes", "a=town;b=town"}, "processes[1].scenes[0]"},
		{[]string{"--worldmgr.listen", "nonsense"}, "worldmgr.listen"},
	} {
		cmd := exec.Command(filepath.Join(binDir, "worldmgr"), append(c.args(), tc.args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("%v: worldmgr started with a bad config", tc.args)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: error does not name %s:\n%s", tc.args, tc.want, out)
		}
	}
}

func TestGarbageOnControlPortIsRefused(t *testing.T) {
	c := newCluster(t)
	mgr := c.start("worldmgr")
	before := c.waitRunning(15 * time.Second)
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, 1, 2, 3},
		{0, 0, 0, 4, 1, 1, '{', 'x'},
	} {
		if err := challengedThenClosed(c.ports["worldmgr.listen"], junk); err != nil {
			t.Errorf("garbage %q: %v", junk, err)
		}
	}
	after := c.waitRunning(2 * time.Second)
	for i := range before {
		if before[i].PID != after[i].PID {
			t.Errorf("scene %s restarted by garbage", before[i].ID)
		}
	}
	poll.Until(t, 2*time.Second, func() error {
		if !strings.Contains(mgr.output(), "bad first frame") {
			return fmt.Errorf("no clear error in the log")
		}
		return nil
	})
}

func daemonPID(t *testing.T, c *cluster, name string) int {
	t.Helper()
	var pid int
	poll.Until(t, 10*time.Second, func() error {
		var st map[string]struct {
			PID     int  `json:"pid"`
			Healthy bool `json:"healthy"`
		}
		out, err := c.tryRespawn("status", "--json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		if pid = st[name].PID; pid == 0 {
			return fmt.Errorf("%s not running", name)
		}
		return nil
	})
	return pid
}

func find(t testing.TB, rows []modules.SceneRow, id string) modules.SceneRow {
	t.Helper()
	for _, r := range rows {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("scene %s not in table %+v", id, rows)
	return modules.SceneRow{}
}
