package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/scene"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// crashWhileManagerPaused kills scene's process while the world manager is
// stopped, runs damage on the dead process's log, and lets the manager go:
// it sees its child gone and respawns it onto the damaged log. Nothing can
// race the damage: the dead process cannot write, the manager cannot spawn.
func (c *cluster) crashWhileManagerPaused(mgr *proc, sceneID string, damage func(logPath string)) modules.SceneRow {
	c.t.Helper()
	old, err := c.scene(sceneID)
	if err != nil {
		c.t.Fatal(err)
	}
	mgr.signal(syscall.SIGSTOP)
	defer mgr.signal(syscall.SIGCONT)
	// SIGSTOP reaches every thread asynchronously: wait until none runs, so
	// the manager cannot reap the child and spawn the next one meanwhile.
	poll.Until(c.t, 5*time.Second, func() error { return stopped(mgr.pid()) })
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := process.WaitGone(ctx, old.PID); err != nil {
		c.t.Fatal(err)
	}
	if pids := c.livePids("--process " + old.Process); len(pids) != 0 {
		c.t.Fatalf("process %s still has live pids %v after the kill", old.Process, pids)
	}
	damage(scene.LogPath(c.shmDir, old.Process))
	return old
}

// stopped says whether every thread of pid is stopped.
func stopped(pid int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, task := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(raw, ')'); i < 0 || i+2 >= len(raw) || raw[i+2] != 'T' {
			return fmt.Errorf("thread %s of pid %d is not stopped", task.Name(), pid)
		}
	}
	return nil
}

// scrape returns the metric lines of a process's admin address that start
// with name.
func scrape(t *testing.T, addr, name string) []string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return out
}

// Garbage in an unused slot header of a scene process's log used to make
// the process crash-loop into `failed`. Now it starts, serves, and takes
// the slot back.
func TestGarbageInAnUnusedSlotHeader(t *testing.T) {
	c := newCluster(t)
	mgr := c.start("worldmgr")
	c.waitRunning(20 * time.Second)
	var before scene.LogInfo
	poll.Until(t, 5*time.Second, func() error {
		var err error
		before, err = c.logInfo("forest")
		return err
	})

	cfg := config.Default()
	old := c.crashWhileManagerPaused(mgr, "forest", func(path string) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		garbage := bytes.Repeat([]byte{0xa5, 0x5a, 0xff, 0x13, 0x77, 0x00, 0xc3, 0x81}, 32)
		garbage[0] |= 1 // marked valid, so it cannot pass for a free slot
		last := int64(cfg.Scene.ShmSlots - 1)
		if _, err := f.WriteAt(garbage, 4096+last*int64(cfg.Scene.ShmSlotSize)); err != nil {
			t.Fatal(err)
		}
	})
	var row modules.SceneRow
	poll.Until(t, 15*time.Second, func() error {
		var err error
		if row, err = c.scene("forest"); err != nil {
			return err
		}
		if row.PID == old.PID || row.State != modules.SceneRunning || row.Restarts != old.Restarts+1 {
			return fmt.Errorf("forest %s pid %d restarts %d", row.State, row.PID, row.Restarts)
		}
		return nil
	})
	if _, err := c.inspect("forest"); err != nil {
		t.Fatalf("forest does not serve: %v", err)
	}
	c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "1")
	after, err := c.logInfo("forest")
	if err != nil {
		t.Fatal(err)
	}
	if after.FreeSlots != before.FreeSlots {
		t.Errorf("%d free slots after the garbage, %d before: the slot was not reclaimed", after.FreeSlots, before.FreeSlots)
	}
	// Known kinds are exported at zero (docs/operations.md), so the line is
	// there: what matters is that it stayed at zero in the new process.
	if got := scrape(t, row.Addr, `respawn_scene_log_damage_total{kind="header"} `); len(got) != 1 || !strings.HasSuffix(got[0], " 0") {
		t.Errorf("header damage counted for a slot nobody missed: %v", got)
	}
}

// A flipped byte in the middle of a scene's log: the scene comes back
// `corrupt` with exactly the acknowledged events after the damage at
// stake, serves nothing while the other scenes serve, and `respawn scene
// repair` rebuilds it from the good prefix; the player whose later changes
// were dropped is older than the data server's copy and takes that copy.
func TestFlippedByteMidLogIsCorruptThenRepaired(t *testing.T) {
	c := newCluster(t, "--scene.snapshot-interval", "10m")
	c.startWorld()
	mgr := c.procs[len(c.procs)-1] // startWorld starts worldmgr last
	alice := uniqueID("alice")
	c.respawn("player", "create", alice, "--name", "Alice")
	c.respawn("gm", "enter", "--scene", "forest", "--player", alice)
	c.respawn("gm", "request", "--scene", "forest", "--player", alice, "--seq", "1", `{"op":"move","x":3,"y":4}`)
	for range 2 {
		c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "10")
	}
	marker := uniqueID("flip-me")
	c.respawn("gm", "request", "--scene", "forest", "--player", alice, "--seq", "2", `{"op":"chat","text":"`+marker+`"}`)
	// Acknowledged after the damage: GM damage, a give, a move.
	for range 3 {
		c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "10")
	}
	c.respawn("player", "give", alice, "gold", "250")
	c.respawn("gm", "request", "--scene", "forest", "--player", alice, "--seq", "3", `{"op":"move","x":7,"y":8}`)
	c.respawn("save-all")
	saved, err := c.showPlayer(alice)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Gold < 250 {
		t.Fatalf("datasvr holds %d gold for %s after the give", saved.Gold, alice)
	}

	var at, last uint64
	old := c.crashWhileManagerPaused(mgr, "forest", func(path string) {
		var slot [2]int64
		at, last, slot = findEvent(t, path, "forest", marker)
		flipOnce(t, path, slot, marker)
	})
	want := fmt.Sprintf("%d acknowledged events at stake (seq %d..%d)", last-at+1, at, last)
	t.Logf("flipped a byte of event %d of %d", at, last)

	var row modules.SceneRow
	poll.Until(t, 15*time.Second, func() error {
		var err error
		if row, err = c.scene("forest"); err != nil {
			return err
		}
		if row.PID == old.PID || row.State != modules.SceneCorrupt {
			return fmt.Errorf("forest %s pid %d (%s)", row.State, row.PID, row.Reason)
		}
		return nil
	})
	if !strings.Contains(row.Reason, want) {
		t.Fatalf("forest corrupt with reason %q, want it to say %q", row.Reason, want)
	}
	if table := c.respawn("scenes"); !strings.Contains(table, "corrupt") || !strings.Contains(table, want) {
		t.Fatalf("respawn scenes does not show it:\n%s", table)
	}
	if got := scrape(t, row.Addr, `respawn_scene_log_corrupt_events{scene="forest"}`); len(got) != 1 || !strings.HasSuffix(got[0], fmt.Sprint(" ", last-at+1)) {
		t.Fatalf("metric: %v", got)
	}
	info, err := c.logInfo("forest")
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := info.Corrupt["forest"]; !ok || d.Kind != shmlog.DamageRecord || d.Lost != int(last-at+1) || d.GoodSeq != at-1 {
		t.Fatalf("GET /v1/log: corrupt %+v", info.Corrupt)
	}
	// The corrupt scene refuses; the other scene serves; the process is
	// not restarted over and over.
	if out, err := c.tryRespawn("scene", "inspect", "forest"); err == nil || !strings.Contains(out, "corrupt") {
		t.Fatalf("inspect of a corrupt scene: %v %s", err, out)
	}
	if _, err := c.inspect("town"); err != nil {
		t.Fatalf("town does not serve: %v", err)
	}
	if r, _ := c.scene("forest"); r.PID != row.PID || r.Restarts != row.Restarts {
		t.Fatalf("forest restarted while corrupt: %+v", r)
	}

	out := c.respawn("scene", "repair", "forest")
	t.Logf("repair:\n%s", out)
	if !strings.Contains(out, fmt.Sprintf("dropped: %d acknowledged events, seq %d..%d", last-at+1, at, last)) {
		t.Fatalf("repair does not say what it dropped:\n%s", out)
	}
	v := c.waitClean("forest", 5*time.Second)
	if hp := monster(v, "hogger").HP; hp != 980 {
		t.Fatalf("hogger at %d HP after repair, want 980: the two hits before the damage, none after", hp)
	}
	c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "1")

	// The player: the scene's copy is from before the give; the data
	// server's is newer and must win, never be overwritten. The repair
	// makes the scene save it at its older version; the refusal makes the
	// scene reload the data server's copy, and the player stays.
	poll.Until(t, 10*time.Second, func() error {
		at, err := c.where(alice, "forest")
		if err != nil {
			return err
		}
		p, ok := at["forest"]
		if !ok {
			return fmt.Errorf("%s is not in the forest: dropped instead of reloaded", alice)
		}
		if p.Gold != saved.Gold {
			return fmt.Errorf("%s in the forest has %d gold; the data server has %d", alice, p.Gold, saved.Gold)
		}
		return nil
	})
	logged, err := os.ReadFile(filepath.Join(c.dataDir, "logs", "scene-forest.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logged, []byte("player reloaded from the data server")) || !bytes.Contains(logged, []byte(alice)) {
		t.Fatalf("the scene log does not say %s was reloaded", alice)
	}
	if now, err := c.showPlayer(alice); err != nil || now.Gold != saved.Gold {
		t.Fatalf("datasvr copy after repair: %+v %v (had %d gold)", now, err, saved.Gold)
	}
}

// findEvent replays scene's slot of the (closed) log read-only, through the
// public API, and returns the seq of the request whose op carries marker,
// the last seq, and where the slot lies in the file (offset, size).
func findEvent(t *testing.T, path, sceneID, marker string) (at, last uint64, slot [2]int64) {
	t.Helper()
	st, err := shmlog.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sl, ok := st.Get(sceneID)
	if !ok {
		t.Fatalf("no slot for %s in %s", sceneID, path)
	}
	// The documented layout: a 4096-byte header, then the slots.
	size := int64(st.Options().SlotSize)
	slot = [2]int64{4096 + int64(sl.Index())*size, size}
	if err := sl.Replay(func(r shmlog.Record) error {
		last = r.Seq
		if r.Kind != shmlog.KindEvent {
			return nil
		}
		ev, err := game.DecodeEvent(r.Payload)
		if err != nil {
			return err
		}
		if req, ok := ev.(game.Request); ok {
			if ch, ok := req.Op.(game.Chat); ok && ch.Text == marker {
				at = r.Seq
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if at == 0 || at == last {
		t.Fatalf("marker event at seq %d of %d: want one in the middle", at, last)
	}
	return at, last, slot
}

// flipOnce flips one bit of the only occurrence of marker in the slot
// (offset, size) of the file.
func flipOnce(t *testing.T, path string, slot [2]int64, marker string) {
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
		t.Fatalf("marker found %d times in the slot of %s, want once", n, filepath.Base(path))
	}
	i := int64(bytes.Index(raw, []byte(marker))) + 2
	if _, err := f.WriteAt([]byte{raw[i] ^ 0x20}, slot[0]+i); err != nil {
		t.Fatal(err)
	}
}
