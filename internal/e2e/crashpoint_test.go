package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/store"
)

// request sends op for p and applies its reply to p's ledger; an error or
// a refusal the game may not give fails the test.
func (p *gamer) request(t *testing.T, op map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.sent.Add(1)
	rep, err := p.c.Request(ctx, op)
	if err != nil || !(rep.OK() || refusalOK(rep)) {
		t.Fatalf("player %s %v: %v %v", p.id, op, err, rep.Err())
	}
	p.answered.Add(1)
	p.apply(op, rep)
}

// datasvrProc is the cluster's data server process.
func (c *cluster) datasvrProc() *proc {
	c.t.Helper()
	var ds *proc
	for _, p := range c.procs {
		if p.name == "datasvr" {
			ds = p
		}
	}
	if ds == nil {
		c.t.Fatal("no datasvr started")
	}
	return ds
}

// The data server dies in its write-behind flush after the first batch of
// rows is committed to the database and before the rest (crash point
// datasvr.flush-between-rows, two players per batch). The database then
// holds some players new and some old; the journal holds all of them.
// After a restart every player is, in datasvr and in the database, exactly
// what its client was told: nothing acknowledged lost, nothing applied
// twice.
func TestCrashPointFlushBetweenRows(t *testing.T) {
	// flush_interval 1h: only the admin flush below writes to the database.
	c := newCluster(t, "--datasvr.flush-batch", "2", "--datasvr.flush-interval", "1h")
	c.env = []string{crashpoint.Env + "=" + crashpoint.FlushBetweenRows + "=1"}
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 6, [][]string{{tcp, ws}})
	stop := w.playing(20 * time.Millisecond)
	w.progress(10)
	stop()
	w.checkSaved("datasvr before the flush") // every save acknowledged, none in the database yet

	ac := dataclient.NewAdminClient(c.natsConn(), w.sec.OperatorToken())
	want := map[string]uint64{} // the version each player's flush writes
	for _, p := range w.players {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rep, err := ac.Show(ctx, p.id)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Dirty {
			t.Fatalf("player %s is not dirty before the flush (version %d)", p.id, rep.Version)
		}
		want[p.id] = rep.Version
	}
	ds := c.datasvrProc()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := ac.Flush(ctx); err == nil {
		t.Fatalf("the admin flush succeeded: the crash point did not fire")
	}
	cancel()
	_ = ds.wait(10 * time.Second)
	if !strings.Contains(ds.output(), "crashpoint: "+crashpoint.FlushBetweenRows+" reached") {
		t.Fatalf("datasvr exited, but not at the crash point; log:\n%s", ds.output())
	}

	// What the crash left in the database: some rows of the flush, not all.
	st, err := store.Open(context.Background(), "sqlite:respawn.db", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	var written []string
	for _, p := range w.players {
		r, err := st.Load(context.Background(), p.id)
		if err == nil && r.Version == want[p.id] {
			written = append(written, p.id)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if len(written) == 0 || len(written) == len(w.players) {
		t.Fatalf("%d of %d players written by the crashed flush; want some, not all", len(written), len(w.players))
	}
	t.Logf("the crashed flush wrote %d of %d players: %v", len(written), len(w.players), written)

	c.env = nil
	c.startDatasvr()
	w.check(false)
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := ac.Flush(ctx); err != nil {
		t.Fatalf("flush after the restart: %v", err)
	}
	st, err = store.Open(context.Background(), "sqlite:respawn.db", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	for _, p := range w.players {
		r, err := st.Load(ctx, p.id)
		if err != nil {
			t.Fatalf("player %s in the database: %v", p.id, err)
		}
		var d player.Data
		if err := json.Unmarshal(r.Data, &d); err != nil {
			t.Fatalf("player %s row: %v", p.id, err)
		}
		if err := p.same(d.Gold, d.Items, d.X, d.Y); err != nil {
			t.Errorf("database: %v", err)
		}
	}
}

// townPlayerAtCrashPoint starts a world whose processes stop at crash point
// point, one gateway and one player in town; it returns the cluster, the
// player and town's row before the crash.
func townPlayerAtCrashPoint(t *testing.T, point string) (*cluster, *world, modules.SceneRow) {
	t.Helper()
	c := newCluster(t)
	c.env = []string{crashpoint.Env + "=" + point + "=1"}
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 1, [][]string{{tcp, ws}})
	if p := w.players[0]; p.scene != "town" {
		t.Fatalf("player %s starts in %s", p.id, p.scene)
	}
	town, err := c.scene("town")
	if err != nil {
		t.Fatal(err)
	}
	return c, w, town
}

// Town hands a travelling player's lease over to the forest at datasvr and
// dies (crash point scene.lease-handoff) before the player is delivered:
// the lease is the forest's, the player is in no scene. Town's next
// incarnation finds the transfer unacknowledged in its log and finishes
// it (the handover again, which datasvr answers as already done, then the
// delivery); the gateway answers the travel once, and the player's gold and
// items arrive exactly once.
func TestCrashPointLeaseHandoff(t *testing.T) {
	c, w, town := townPlayerAtCrashPoint(t, crashpoint.LeaseHandoff)
	p := w.players[0]
	for i := range 3 {
		p.request(t, map[string]any{"op": "buy", "npc": "merchant", "item": "potion", "count": 1 + i})
	}
	p.request(t, map[string]any{"op": "travel", "to": "forest"})
	// The crash point fired: town runs in a new process.
	c.waitReplaced(town, 20*time.Second)
	if raw, _ := os.ReadFile(filepath.Join(c.dataDir, "logs", "scene-"+town.Process+".log")); !strings.Contains(string(raw), "crashpoint: "+crashpoint.LeaseHandoff+" reached") {
		t.Fatalf("town's process was replaced, but not at the crash point; log:\n%s", raw)
	}
	// The transfer completes: town's outbox empties, the forest has the player.
	poll.Until(t, 20*time.Second, func() error {
		v, err := c.inspect("town")
		if err != nil {
			return err
		}
		if v.PendingTransfers != 0 {
			return fmt.Errorf("town has %d transfers unacknowledged", v.PendingTransfers)
		}
		return nil
	})
	p.request(t, map[string]any{"op": "move", "x": 3, "y": 4})
	p.request(t, map[string]any{"op": "attack", "monster": "wolf-1"})
	w.check(false)
	// Held once: the forest has the player, town does not.
	where, err := c.where(p.id, "town", "forest")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := where["forest"]; !ok || len(where) != 1 {
		t.Fatalf("player %s held by %v, want the forest alone", p.id, where)
	}
}

// A machine crash with the scene logs on a disk (shm_dir not on tmpfs):
// every process dies at once and each log file is what it was at an
// earlier moment (the last msync; later pages never reached the disk),
// while the data server's journal, fsynced before each acknowledgement,
// holds the players' later saves. Per the design (docs/shmlog.md,
// "Durability") the newer of the two wins: after the restart each scene
// and the data server hold the gold and items the clients were last told,
// which the data server had acknowledged before the crash. (A player
// stands where the old log left it: a reload keeps the scene's position.)
func TestMachineCrashDiskLogBehindDatasvr(t *testing.T) {
	c := newCluster(t)
	c.shmDir = t.TempDir() // a disk, not tmpfs
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 6, [][]string{{tcp, ws}})
	play := func(n int64) {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); w.play(20*time.Millisecond, stop) }()
		w.progress(n)
		close(stop)
		<-done
	}
	play(5)
	// Saved and acknowledged: in the image below each player is clean,
	// nothing about it says the data server will hold a newer copy.
	w.checkSaved("datasvr before the image")

	// The disk as of the last msync: the logs at this instant (the scene
	// processes stopped so the copy is one instant, as the page cache was;
	// the manager first, so it does not take them for hung).
	var wm *proc
	for _, p := range c.procs {
		if p.name == "worldmgr" {
			wm = p
		}
	}
	wm.signal(syscall.SIGSTOP)
	scenes := c.scenePIDs()
	for _, pid := range scenes {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	image := t.TempDir()
	copyLogs(t, c.shmDir, image)
	for _, pid := range scenes {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	wm.signal(syscall.SIGCONT)
	play(10) // acknowledged after the image: only in memory and datasvr
	w.checkSaved("datasvr before the crash")

	// The crash: every process at once, then the disk comes back with the
	// old logs.
	for _, pid := range c.livePids("") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, p := range c.procs {
		_ = p.wait(10 * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pid := range c.livePids("") {
		if err := process.WaitGone(ctx, pid); err != nil {
			t.Fatal(err)
		}
	}
	copyLogs(t, image, c.shmDir)
	c.startWorld()
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []string{"town", "forest"} {
				raw, _ := os.ReadFile(filepath.Join(c.dataDir, "logs", "scene-"+n+".log"))
				lines := strings.Split(string(raw), "\n")
				t.Logf("scene %s log (last 40 lines):\n%s", n, strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	})
	// The scenes replayed logs from before the last acknowledged saves:
	// they must end up with the data server's newer copies.
	poll.Until(t, 30*time.Second, func() error {
		views, err := c.playersIn("town", "forest")
		if err != nil {
			return err
		}
		for _, p := range w.players {
			v, ok := views[p.id]
			if !ok {
				continue // not in the log image: it loads from datasvr at its next login
			}
			// Gold and items; the position is where the player stands in
			// the scene (game.Reload keeps it), here as of the old log.
			if err := p.same(v.Gold, v.Items, p.x, p.y); err != nil {
				return fmt.Errorf("scene after the machine crash: %w", err)
			}
		}
		return nil
	})
	// And the data server keeps them (gold and items; positions as above).
	ac := dataclient.NewAdminClient(c.natsConn(), w.sec.OperatorToken())
	for _, p := range w.players {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rep, err := ac.Show(ctx, p.id)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.same(rep.Gold, rep.Items, p.x, p.y); err != nil {
			t.Errorf("datasvr after the machine crash: %v", err)
		}
	}
}

// copyLogs copies every log file of dir from to dir to, keeping their
// holes (a log file is a sparse gigabyte).
func copyLogs(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		out, err := exec.Command("cp", "--sparse=always", filepath.Join(from, e.Name()), filepath.Join(to, e.Name())).CombinedOutput()
		if err != nil {
			t.Fatalf("copy log %s: %v: %s", e.Name(), err, out)
		}
	}
}
