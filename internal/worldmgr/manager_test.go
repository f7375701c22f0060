package worldmgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/secret"
)

// TestHelperSceneProcess is not a test: run with RESPAWN_HELPER=1 it is a
// stand-in scene process (this test binary, so its executable is the
// manager's "scene binary") that waits to be killed.
func TestHelperSceneProcess(t *testing.T) {
	if os.Getenv("RESPAWN_HELPER") != "1" {
		t.Skip("helper process")
	}
	time.Sleep(time.Minute)
}

// startManager runs a manager in recovery (an epoch file exists, the window
// is long), so it spawns nothing while the test plays scene processes. Its
// scene binary is this test binary.
func startManager(t *testing.T) (*Manager, *secret.Secret) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.WorldMgr.Listen, cfg.WorldMgr.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.NATS.Listen = "127.0.0.1:1" // no bus: the table replica just waits
	cfg.WorldMgr.RecoveryWindow = time.Minute
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "worldmgr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "worldmgr", "epochs.json"), []byte(`{"forest":2,"town":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Config: &cfg, Log: zaptest.NewLogger(t), SceneBinary: exe})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Shutdown)
	sec, err := secret.Load("", cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	return m, sec
}

// claimant is a stand-in scene process and its control connection.
type claimant struct {
	cmd  *exec.Cmd
	conn *ctlproto.Conn
	ss   ctlproto.Session
	done chan struct{}
	err  error // the handshake's
}

func helperProcess(t *testing.T, args ...string) (*exec.Cmd, chan struct{}) {
	t.Helper()
	exe, _ := os.Executable()
	cmd := exec.Command(exe, append([]string{"-test.run=^TestHelperSceneProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "RESPAWN_HELPER=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return cmd, done
}

// claim connects and sends a hello signed with sec, for pid (0: a fresh
// helper process's) at epoch.
func claim(t *testing.T, m *Manager, sec *secret.Secret, pid int, epoch uint64) *claimant {
	t.Helper()
	c := &claimant{}
	if pid == 0 {
		c.cmd, c.done = helperProcess(t, "--process", "forest")
		pid = c.cmd.Process.Pid
	}
	nc, err := net.Dial("tcp", m.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c.conn = ctlproto.NewConn(nc)
	f, err := c.conn.Receive(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nm, err := ctlproto.DecodeChallenge(f)
	if err != nil {
		t.Fatal(err)
	}
	h := ctlproto.Hello{Process: "forest", PID: pid, Addr: "127.0.0.1:1", Epoch: epoch, Started: time.Now(),
		Scenes: []ctlproto.SceneReport{{ID: "forest", Epoch: epoch, State: modules.SceneRunning}}}
	if id, err := process.ReadIdentity(pid); err == nil {
		h.Exe, h.StartTicks, h.Cmdline = id.Exe, id.StartTicks, id.Cmdline
	}
	ns, err := c.conn.SendHello(sec, nm, h, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.ss = ctlproto.Session{Secret: sec, Scene: ns, Manager: nm}
	return c
}

// next returns the first frame from the manager that is not a heartbeat,
// checked against the session, or the error that ended the connection.
func (c *claimant) next(t *testing.T) (ctlproto.Type, string, error) {
	t.Helper()
	for {
		f, err := c.conn.Receive(3 * time.Second)
		if err != nil {
			return 0, "", err
		}
		switch f.Type {
		case ctlproto.TypeHeartbeat:
			continue
		case ctlproto.TypeExit:
			var e ctlproto.Exit
			if err := ctlproto.OpenSigned(c.ss, f, &e); err != nil {
				t.Fatal(err)
			}
			return f.Type, e.Reason, nil
		default:
			var w ctlproto.Welcome
			if err := ctlproto.OpenSigned(c.ss, f, &w); err != nil {
				t.Fatal(err)
			}
			return f.Type, "", nil
		}
	}
}

func (c *claimant) expect(t *testing.T, want ctlproto.Type, reason string) {
	t.Helper()
	got, why, err := c.next(t)
	if err != nil || got != want || !strings.Contains(why, reason) {
		t.Fatalf("got %s %q (%v), want %s %q", got, why, err, want, reason)
	}
}

func forestRow(t *testing.T, m *Manager) modules.SceneRow {
	t.Helper()
	var row modules.SceneRow
	if err := m.call(func() {
		for _, r := range m.sup.rows() {
			if r.ID == "forest" {
				row = r
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return row
}

// Two processes claim one scene: the higher epoch stays, the other is told
// to exit (and, if it was the owner, killed through its verified handle).
// Epochs only grow, by one at most.
func TestHigherEpochWinsAClaim(t *testing.T) {
	m, sec := startManager(t)
	a := claim(t, m, sec, 0, 3)
	a.expect(t, ctlproto.TypeWelcome, "")
	// The same process reconnecting at the same epoch is adopted, not
	// refused as stale ("epoch 3 owner_epoch 3").
	a2 := claim(t, m, sec, a.cmd.Process.Pid, 3)
	a2.expect(t, ctlproto.TypeWelcome, "")
	b := claim(t, m, sec, 0, 4)
	b.expect(t, ctlproto.TypeWelcome, "")
	a2.expect(t, ctlproto.TypeExit, "replaced you")
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the replaced owner's pid was not killed")
	}
	claim(t, m, sec, 0, 3).expect(t, ctlproto.TypeExit, "stale")
	claim(t, m, sec, 0, 9).expect(t, ctlproto.TypeExit, "ahead of the highest epoch")
	if row := forestRow(t, m); row.PID != b.cmd.Process.Pid || row.Epoch != 4 || row.State != modules.SceneRunning {
		t.Fatalf("forest row: %+v", row)
	}
	// Nothing is kept for the losers: one connection and one handle, the
	// owner's.
	poll.Until(t, 5*time.Second, func() error {
		var conns, handles int
		if err := m.call(func() { conns, handles = len(m.conns), len(m.handles) }); err != nil {
			return poll.Stop(err)
		}
		if conns != 1 || handles != 1 {
			return fmt.Errorf("manager holds %d connections and %d handles, want 1 and 1", conns, handles)
		}
		return nil
	})
	// The owner's connection drops: it is forgotten, the process is not
	// (it gets a grace period to reconnect).
	b.conn.Close()
	poll.Until(t, 5*time.Second, func() error {
		var conns int
		if err := m.call(func() { conns = len(m.conns) }); err != nil {
			return poll.Stop(err)
		}
		if conns != 0 {
			return fmt.Errorf("a closed connection is still held (%d connections)", conns)
		}
		return nil
	})
	if row := forestRow(t, m); row.PID != b.cmd.Process.Pid || row.State != modules.SceneRunning {
		t.Fatalf("a closed connection alone made forest %+v", row)
	}
	raw, err := os.ReadFile(filepath.Join(m.cfg.DataDir, "worldmgr", "epochs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var epochs map[string]uint64
	if err := json.Unmarshal(raw, &epochs); err != nil || epochs["forest"] != 4 {
		t.Fatalf("epochs file %s (%v): forest should be 4", raw, err)
	}
}

// Issue 10: a hello naming any pid got that pid killed later. Without the
// secret nothing counts; with it, a pid that is not the process described
// is refused and never signalled.
func TestForgedHelloChangesNothing(t *testing.T) {
	m, sec := startManager(t)
	victim, victimDone := helperProcess(t, "--process", "forest")
	other, err := secret.New([]byte("not the cluster's secret at all"))
	if err != nil {
		t.Fatal(err)
	}
	before := forestRow(t, m)

	// No secret: closed without a word.
	c := claim(t, m, other, victim.Process.Pid, 3)
	if typ, _, err := c.next(t); err == nil {
		t.Fatalf("unauthenticated hello answered with %s", typ)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("want a close, got %v", err)
	}
	resp, err := http.Get("http://" + m.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "respawn_worldmgr_control_auth_failures_total 1\n") {
		t.Fatalf("auth failures not counted:\n%s", metrics)
	}

	// Signed, but the pid is a `sleep` that is no scene process.
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	sleepDone := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(sleepDone) }()
	t.Cleanup(func() { _ = sleeper.Process.Kill(); <-sleepDone })
	claim(t, m, sec, sleeper.Process.Pid, 3).expect(t, ctlproto.TypeExit, "cannot be verified")

	// Signed, an epoch of 2^64-1: refused before anything looks at it.
	c = claim(t, m, sec, victim.Process.Pid, 1<<64-1)
	if _, _, err := c.next(t); err == nil {
		t.Fatal("epoch 2^64-1 answered")
	}

	if after := forestRow(t, m); after != before {
		t.Fatalf("table changed:\n before %+v\n after  %+v", before, after)
	}
	for name, done := range map[string]chan struct{}{"victim": victimDone, "sleep": sleepDone} {
		select {
		case <-done:
			t.Fatalf("%s was killed", name)
		default:
		}
	}
	var epochs map[string]uint64
	raw, _ := os.ReadFile(filepath.Join(m.cfg.DataDir, "worldmgr", "epochs.json"))
	if err := json.Unmarshal(raw, &epochs); err != nil || epochs["forest"] != 2 {
		t.Fatalf("epochs file %s (%v): forest should still be 2", raw, err)
	}
}
