package worldmgr

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/modules"
)

// claimant is a fake scene process: a real process to own the pid (the
// manager kills losers by pid) and a control connection.
type claimant struct {
	cmd  *exec.Cmd
	conn *ctlproto.Conn
	done chan struct{}
}

func newClaimant(t *testing.T, m *Manager, epoch uint64) *claimant {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &claimant{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-c.done })
	nc, err := net.Dial("tcp", m.ControlAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c.conn = ctlproto.NewConn(nc)
	hello := ctlproto.Hello{Process: "forest", PID: cmd.Process.Pid, Addr: "127.0.0.1:1", Epoch: epoch, Started: time.Now(),
		Scenes: []ctlproto.SceneReport{{ID: "forest", Epoch: epoch, State: modules.SceneRunning}}}
	if err := c.conn.Send(ctlproto.TypeHello, hello, time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// next returns the first frame from the manager that is not a heartbeat.
func (c *claimant) next(t *testing.T) ctlproto.Type {
	t.Helper()
	for {
		f, err := c.conn.Receive(3 * time.Second)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if f.Type != ctlproto.TypeHeartbeat {
			return f.Type
		}
	}
}

// Two processes claim one scene: the higher epoch stays, the other is told
// to exit (and, if it was the owner, killed by pid). Epochs only grow.
func TestHigherEpochWinsAClaim(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.WorldMgr.Listen, cfg.WorldMgr.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.NATS.Listen = "127.0.0.1:1" // no bus: the table replica just waits
	cfg.WorldMgr.RecoveryWindow = time.Minute
	// An existing epoch file: the manager starts in recovery and spawns
	// nothing while the test plays scene processes.
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "worldmgr"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "worldmgr", "epochs.json"), []byte(`{"forest":2,"town":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Config: &cfg, Log: zaptest.NewLogger(t), SceneBinary: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()

	a := newClaimant(t, m, 3)
	if got := a.next(t); got != ctlproto.TypeWelcome {
		t.Fatalf("first claimant got %s", got)
	}
	b := newClaimant(t, m, 5)
	if got := b.next(t); got != ctlproto.TypeWelcome {
		t.Fatalf("higher epoch got %s", got)
	}
	if got := a.next(t); got != ctlproto.TypeExit {
		t.Fatalf("replaced owner got %s, want exit", got)
	}
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the replaced owner's pid was not killed")
	}
	c := newClaimant(t, m, 4)
	if got := c.next(t); got != ctlproto.TypeExit {
		t.Fatalf("stale claimant got %s, want exit", got)
	}
	var row modules.SceneRow
	if err := m.call(func() {
		for _, r := range m.tableRows() {
			if r.ID == "forest" {
				row = r
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if row.PID != b.cmd.Process.Pid || row.Epoch != 5 || row.State != modules.SceneRunning {
		t.Fatalf("forest row: %+v", row)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, "worldmgr", "epochs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var epochs map[string]uint64
	if err := json.Unmarshal(raw, &epochs); err != nil || epochs["forest"] != 5 {
		t.Fatalf("epochs file %s (%v): forest should be 5", raw, err)
	}
}
