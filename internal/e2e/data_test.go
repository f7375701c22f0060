package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

// playerShow is the part of `respawn player show --json` the tests read.
type playerShow struct {
	ID      string           `json:"id"`
	Version uint64           `json:"version"`
	Gold    int64            `json:"gold"`
	Items   map[string]int64 `json:"items"`
	Owner   *struct {
		Scene string `json:"scene"`
		Epoch uint64 `json:"epoch"`
	} `json:"owner"`
	Online bool `json:"online"`
}

func (c *cluster) showPlayer(id string) (playerShow, error) {
	var p playerShow
	out, err := c.tryRespawn("player", "show", id, "--json")
	if err != nil {
		return p, fmt.Errorf("%v: %s", err, out)
	}
	return p, json.Unmarshal([]byte(out), &p)
}

// startDatasvr starts the data server and waits until it is healthy.
func (c *cluster) startDatasvr() *proc {
	c.t.Helper()
	ds := c.start("datasvr")
	poll.Until(c.t, 20*time.Second, func() error {
		var h struct{ Healthy bool }
		return getJSON("http://"+c.ports["datasvr.admin"]+"/healthz", &h)
	})
	return ds
}

// startWorld starts datasvr and worldmgr and waits for every scene.
func (c *cluster) startWorld() {
	c.t.Helper()
	c.startDatasvr()
	c.start("worldmgr")
	c.waitRunning(20 * time.Second)
}

// playersIn is every player the scenes hold, by id.
func (c *cluster) playersIn(scenes ...string) (map[string]game.PlayerView, error) {
	out := map[string]game.PlayerView{}
	for _, s := range scenes {
		v, err := c.inspect(s)
		if err != nil {
			return nil, err
		}
		for _, p := range v.Players {
			out[p.ID] = p
		}
	}
	return out, nil
}

// where reports which scenes hold player id, and the copy in each.
func (c *cluster) where(id string, scenes ...string) (map[string]game.PlayerView, error) {
	out := map[string]game.PlayerView{}
	for _, s := range scenes {
		in, err := c.playersIn(s)
		if err != nil {
			return nil, err
		}
		if p, ok := in[id]; ok {
			out[s] = p
		}
	}
	return out, nil
}

// A player travels from town to the forest while one of the two scene
// processes is killed with SIGKILL right after the travel was accepted.
// Afterwards the player is in exactly one scene, with exactly the items
// they had, and datasvr agrees.
func TestTravelWhileASceneIsKilled(t *testing.T) {
	for _, db := range databases(t) {
		for _, victim := range []string{"town", "forest"} {
			t.Run(db.name+"/kill "+victim, func(t *testing.T) {
				travelWhileKilled(t, db.dsn, victim)
			})
		}
	}
}

func travelWhileKilled(t *testing.T, dsn, victim string) {
	c := newCluster(t, "--datasvr.database", dsn)
	c.startWorld()
	alice := uniqueID("alice")
	c.respawn("player", "create", alice, "--name", "Alice")
	c.respawn("gm", "enter", "--scene", "town", "--player", alice)
	c.respawn("player", "give", alice, "gold", "500")
	c.respawn("gm", "request", "--scene", "town", "--player", alice, "--seq", "1", `{"op":"buy","npc":"merchant","item":"sword","count":1}`)
	before, err := c.showPlayer(alice)
	if err != nil {
		t.Fatal(err)
	}
	if before.Gold != 400 || before.Items["sword"] != 1 {
		t.Fatalf("before travel: %+v", before)
	}
	row, err := c.scene(victim)
	if err != nil {
		t.Fatal(err)
	}
	c.respawn("gm", "request", "--scene", "town", "--player", alice, "--seq", "2", `{"op":"travel","to":"forest"}`)
	if err := syscall.Kill(row.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.waitReplaced(row, 10*time.Second)
	// The transfer completes: the player ends in the forest, once.
	var at map[string]game.PlayerView
	poll.Until(t, 15*time.Second, func() error {
		var err error
		if at, err = c.where(alice, "town", "forest"); err != nil {
			return err
		}
		if _, ok := at["forest"]; !ok || len(at) != 1 {
			return fmt.Errorf("alice is in %v", keys(at))
		}
		for _, s := range []string{"town", "forest"} {
			v, err := c.inspect(s)
			if err != nil {
				return err
			}
			if v.PendingTransfers != 0 {
				return fmt.Errorf("%s has %d pending transfers", s, v.PendingTransfers)
			}
		}
		return nil
	})
	p := at["forest"]
	if p.Gold != 400 || p.Items["sword"] != 1 || len(p.Items) != 1 {
		t.Fatalf("alice arrived with gold %d items %v, left with 400 gold and one sword", p.Gold, p.Items)
	}
	c.respawn("save-all")
	after, err := c.showPlayer(alice)
	if err != nil {
		t.Fatal(err)
	}
	if after.Gold != 400 || after.Items["sword"] != 1 || after.Owner == nil || after.Owner.Scene != "forest" {
		t.Fatalf("datasvr after travel: %+v", after)
	}
}

// Acknowledged changes survive a kill -9 of the data server, and scenes
// carry on saving through its restart.
func TestDatasvrKill9KeepsAcknowledgedSaves(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	c.respawn("player", "create", "bob", "--name", "Bob")
	c.respawn("player", "create", "carol", "--name", "Carol")
	c.respawn("gm", "enter", "--scene", "town", "--player", "bob")
	c.respawn("player", "give", "bob", "gold", "70")    // online: applied by the scene, durable when acked
	c.respawn("player", "give", "carol", "potion", "3") // offline: applied by datasvr
	ds := c.procs[0]
	if ds.name != "datasvr" {
		t.Fatalf("first process is %s", ds.name)
	}
	ds.signal(syscall.SIGKILL)
	if err := ds.wait(5 * time.Second); err == nil {
		t.Fatal("datasvr exited cleanly after SIGKILL?")
	}
	if process.Alive(ds.pid()) {
		t.Fatal("datasvr still alive")
	}
	c.start("datasvr")
	poll.Until(t, 20*time.Second, func() error {
		bob, err := c.showPlayer("bob")
		if err != nil {
			return err
		}
		carol, err := c.showPlayer("carol")
		if err != nil {
			return err
		}
		if bob.Gold != 70 || carol.Items["potion"] != 3 {
			return fmt.Errorf("bob %+v carol %+v", bob, carol)
		}
		return nil
	})
	// The scene keeps working with the new datasvr once its bus
	// connection is back ("no responders" until then: nothing applied,
	// safe to retry).
	var out string
	poll.Until(t, 10*time.Second, func() error {
		var err error
		out, err = c.tryRespawn("player", "give", "bob", "gold", "5")
		if err != nil && !strings.Contains(out, "no responders") {
			t.Fatalf("give after datasvr restart: %v: %s", err, out)
		}
		return err
	})
	if !strings.Contains(out, "75") {
		t.Fatalf("give after datasvr restart: %s", out)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// `respawn shutdown` saves every player, flushes to the database and stops
// the whole cluster started by `respawn up`.
func TestGracefulShutdown(t *testing.T) {
	c := newCluster(t)
	up := c.start("respawn", "up")
	poll.Until(t, 20*time.Second, func() error {
		rows, err := c.scenes()
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.State != modules.SceneRunning {
				return fmt.Errorf("%s is %s", r.ID, r.State)
			}
		}
		return nil
	})
	c.respawn("player", "create", "dave", "--name", "Dave")
	c.respawn("gm", "enter", "--scene", "town", "--player", "dave")
	c.respawn("player", "give", "dave", "gold", "30")
	c.respawn("gm", "request", "--scene", "town", "--player", "dave", "--seq", "1", `{"op":"buy","npc":"merchant","item":"potion","count":2}`)
	rows, _ := c.scenes()
	out := c.respawn("shutdown")
	if !strings.Contains(out, "cluster stopped") {
		t.Fatalf("shutdown said:\n%s", out)
	}
	if err := up.wait(30 * time.Second); err != nil {
		t.Fatalf("respawn up exited with %v", err)
	}
	for _, r := range rows {
		if process.Alive(r.PID) {
			t.Errorf("scene %s pid %d still alive", r.ID, r.PID)
		}
	}
	if pids := c.livePids(""); len(pids) > 0 {
		t.Fatalf("processes left: %v", pids)
	}
	// Everything is in the database: a fresh datasvr serves it.
	c.start("datasvr")
	poll.Until(t, 20*time.Second, func() error {
		p, err := c.showPlayer("dave")
		if err != nil {
			return err
		}
		if p.Gold != 10 || p.Items["potion"] != 2 {
			return fmt.Errorf("dave after shutdown: %+v", p)
		}
		return nil
	})
}

type database struct{ name, dsn string }

// databases are the backends the data tests run against: SQLite always,
// PostgreSQL and MariaDB when their test DSNs are set (.ci/run sets them).
func databases(t *testing.T) []database {
	dbs := []database{{"sqlite", "sqlite:respawn.db"}}
	for _, b := range []struct{ name, env string }{{"postgres", "RESPAWN_TEST_POSTGRES_DSN"}, {"mysql", "RESPAWN_TEST_MYSQL_DSN"}} {
		if dsn := os.Getenv(b.env); dsn != "" {
			dbs = append(dbs, database{b.name, dsn})
		} else {
			t.Logf("%s not set: skipping the %s backend", b.env, b.name)
		}
	}
	return dbs
}

// uniqueID makes a player id no earlier run used, for databases shared
// between runs.
func uniqueID(prefix string) string {
	return fmt.Sprintf("%s-%x", prefix, time.Now().UnixNano())
}
