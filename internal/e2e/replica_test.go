package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/freeport"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/replica"
)

// Readers started before a crash follow the cluster through it: a scene
// killed with SIGKILL republishes its players under its new epoch, the
// scene table shows the replacement, and after the NATS server (embedded
// in datasvr) is killed and restarted the same readers converge again.
func TestReplicasFollowCrashes(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	c.respawn("player", "create", "erin", "--name", "Erin")
	c.respawn("gm", "enter", "--scene", "forest", "--player", "erin")

	nc := c.busConn(bus.RoleOperator, "nats://"+c.ports["nats.listen"], nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	table, err := replica.NewReader[modules.SceneRow](ctx, nc, modules.SceneTable, replica.RoleCLI, replica.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	profiles, err := replica.NewReader[modules.PlayerProfile](ctx, nc, modules.PlayerProfiles, replica.RoleCLI, replica.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer profiles.Close()
	positions, err := replica.NewReader[modules.PlayerPosition](ctx, nc, modules.PlayerPositions, replica.RoleCLI, replica.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer positions.Close()

	old := find(t, c.waitRunning(time.Second), "forest")
	poll.Until(t, 5*time.Second, func() error {
		e, ok := profiles.Entry("erin")
		if !ok || !e.Value.Online || e.Value.Scene != "forest" || e.Epoch != old.Epoch {
			return fmt.Errorf("erin's profile: %+v %v", e, ok)
		}
		return nil
	})

	// Kill the forest: the table follows at once, the profile is
	// republished by the new incarnation.
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var fresh modules.SceneRow
	poll.Until(t, 5*time.Second, func() error {
		r, ok := table.Get("forest")
		if !ok || r.PID == old.PID || r.State != modules.SceneRunning {
			return fmt.Errorf("table replica: %+v", r)
		}
		fresh = r
		return nil
	})
	recovered := time.Now()
	poll.Until(t, 2*time.Second, func() error {
		e, ok := profiles.Entry("erin")
		if !ok || e.Epoch != fresh.Epoch || !e.Value.Online {
			return fmt.Errorf("erin's profile still from epoch %d: %+v", e.Epoch, e.Value)
		}
		return nil
	})
	if d := time.Since(recovered); d > time.Second+raceSlack {
		t.Errorf("profile republished %s after the table showed the new process, want under %s", d, time.Second+raceSlack)
	}

	// Kill datasvr, and with it the embedded NATS server; restart it.
	ds := c.procs[0]
	ds.signal(syscall.SIGKILL)
	ds.wait(5 * time.Second)
	c.start("datasvr")
	// A move after the restart reaches the position reader (batched, 2 s).
	poll.Until(t, 15*time.Second, func() error {
		_, err := c.tryRespawn("gm", "request", "--scene", "forest", "--player", "erin", "--seq", "1", `{"op":"move","x":7,"y":9}`)
		return err
	})
	poll.Until(t, 10*time.Second, func() error {
		p, ok := positions.Get("erin")
		if !ok || p.X != 7 || p.Y != 9 {
			return fmt.Errorf("erin's position: %+v", p)
		}
		return nil
	})
	// And the table replica follows a respawn after the bus restart.
	c.respawn("scene", "kill", "town")
	townBefore := find(t, c.waitRunning(5*time.Second), "town")
	poll.Until(t, 10*time.Second, func() error {
		r, ok := table.Get("town")
		if !ok || r.PID != townBefore.PID || r.Epoch != townBefore.Epoch {
			return fmt.Errorf("table replica has town %+v, manager has pid %d epoch %d", r, townBefore.PID, townBefore.Epoch)
		}
		return nil
	})
	if st := table.Stats(); st.Resyncs == 0 {
		t.Errorf("the table reader never resynchronised: %+v", st)
	}
}

// `respawn replicas --json` and `respawn players --json` read the cluster's
// modules as a CLI subscriber.
func TestReplicasCLI(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	c.respawn("player", "create", "finn", "--name", "Finn")
	c.respawn("gm", "enter", "--scene", "town", "--player", "finn")

	var mods []replica.Description
	out := c.respawn("replicas", "--json", "--watch", "300ms")
	if err := json.Unmarshal([]byte(out), &mods); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	byName := map[string]replica.Description{}
	for _, m := range mods {
		byName[m.Module] = m
	}
	want := map[string]struct {
		owner, mode string
		interval    int64
	}{
		"scene_table":     {"worldmgr", "immediate", 0},
		"player_profile":  {"scene", "immediate", 0},
		"player_position": {"scene", "batched", 2000},
		"scene_load":      {"scene", "batched", 1000},
	}
	for name, w := range want {
		m, ok := byName[name]
		if !ok {
			t.Errorf("module %s missing from %s", name, out)
			continue
		}
		if string(m.Owner) != w.owner || m.Mode != w.mode || m.IntervalMS != w.interval {
			t.Errorf("module %s: %+v", name, m)
		}
	}
	if byName["scene_table"].Keys != 2 {
		t.Errorf("scene table replica has %d keys, want 2", byName["scene_table"].Keys)
	}
	poll.Until(t, 5*time.Second, func() error {
		var players []modules.PlayerProfile
		out, err := c.tryRespawn("players", "--scene", "town", "--json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &players); err != nil {
			return err
		}
		if len(players) != 1 || players[0].ID != "finn" || !players[0].Online {
			return fmt.Errorf("players in town: %+v", players)
		}
		return nil
	})
}

// The same convergence with an external NATS server (nats.url): the
// server is killed with SIGKILL and restarted on the same port while the
// cluster and the readers stay up. Runs when RESPAWN_TEST_NATS_URL says
// this machine has NATS; the test starts its own nats-server binary so it
// can kill it, configured with `respawn bus config`.
func TestExternalNATSRestart(t *testing.T) {
	if os.Getenv("RESPAWN_TEST_NATS_URL") == "" {
		t.Skip("RESPAWN_TEST_NATS_URL not set")
	}
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	c := newCluster(t)
	addr := freeport.Addr(t)
	host, port, _ := net.SplitHostPort(addr)
	storeDir := t.TempDir()
	// The users and permissions the embedded server would enforce, as
	// docs/operations.md tells an operator to configure them.
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(c.respawn("bus", "config")), 0o600); err != nil {
		t.Fatal(err)
	}
	startNATS := func() *proc {
		p := startProc(t, c, bin, "-c", conf, "-a", host, "-p", port, "-js", "-sd", storeDir)
		c.procs = append(c.procs, p)
		poll.Until(t, 10*time.Second, func() error {
			conn, err := net.Dial("tcp", addr)
			if err == nil {
				conn.Close()
			}
			return err
		})
		return p
	}
	srv := startNATS()
	c.extra = append(c.extra, "--nats.url", "nats://"+addr)
	c.startWorld()
	gina := uniqueID("gina")
	c.respawn("player", "create", gina, "--name", "Gina")
	c.respawn("gm", "enter", "--scene", "forest", "--player", gina)

	nc := c.busConn(bus.RoleOperator, "nats://"+addr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	table, err := replica.NewReader[modules.SceneRow](t.Context(), nc, modules.SceneTable, replica.RoleCLI, replica.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer table.Close()
	positions, err := replica.NewReader[modules.PlayerPosition](t.Context(), nc, modules.PlayerPositions, replica.RoleCLI, replica.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer positions.Close()
	poll.Until(t, 5*time.Second, func() error {
		if _, ok := table.Get("forest"); !ok {
			return fmt.Errorf("no forest in the table replica")
		}
		return nil
	})

	srv.signal(syscall.SIGKILL)
	srv.wait(5 * time.Second)
	startNATS()

	poll.Until(t, 15*time.Second, func() error {
		_, err := c.tryRespawn("gm", "request", "--scene", "forest", "--player", gina, "--seq", "1", `{"op":"move","x":4,"y":5}`)
		return err
	})
	poll.Until(t, 10*time.Second, func() error {
		p, ok := positions.Get(gina)
		if !ok || p.X != 4 || p.Y != 5 {
			return fmt.Errorf("position replica: %+v", p)
		}
		return nil
	})
	c.respawn("scene", "kill", "town")
	town := find(t, c.waitRunning(5*time.Second), "town")
	poll.Until(t, 10*time.Second, func() error {
		r, ok := table.Get("town")
		if !ok || r.PID != town.PID {
			return fmt.Errorf("table replica has town pid %d, manager %d", r.PID, town.PID)
		}
		return nil
	})
	// And datasvr serves through the restarted server.
	poll.Until(t, 10*time.Second, func() error {
		_, err := c.showPlayer(gina)
		return err
	})
}

// World chat: what a player says in one scene reaches every subscriber
// through NATS, in order per sender.
func TestWorldChat(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	c.respawn("player", "create", "hana", "--name", "Hana")
	c.respawn("player", "create", "ivan", "--name", "Ivan")
	c.respawn("gm", "enter", "--scene", "forest", "--player", "hana")
	c.respawn("gm", "enter", "--scene", "town", "--player", "ivan")

	nc := c.busConn(bus.RoleOperator, "nats://"+c.ports["nats.listen"])
	chat, err := modules.NewChat(nc, modules.ChatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan modules.ChatMessage, 100)
	sub, err := chat.Subscribe(func(m modules.ChatMessage) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := 1; i <= n; i++ {
		for _, p := range []struct{ id, scene string }{{"hana", "forest"}, {"ivan", "town"}} {
			c.respawn("gm", "request", "--scene", p.scene, "--player", p.id, "--seq", fmt.Sprint(i),
				fmt.Sprintf(`{"op":"chat","text":"%s %d"}`, p.id, i))
		}
	}
	next := map[string]int{"hana": 1, "ivan": 1}
	deadline := time.After(10 * time.Second)
	for received := 0; received < 2*n; received++ {
		select {
		case m := <-got:
			want := fmt.Sprintf("%s %d", m.From, next[m.From])
			if m.Text != want {
				t.Fatalf("from %s: got %q, want %q (order per sender)", m.From, m.Text, want)
			}
			if wantScene := map[string]string{"hana": "forest", "ivan": "town"}[m.From]; m.Scene != wantScene {
				t.Fatalf("%s's line came from scene %q", m.From, m.Scene)
			}
			next[m.From]++
		case <-deadline:
			t.Fatalf("received %d of %d chat lines", received, 2*n)
		}
	}
}
