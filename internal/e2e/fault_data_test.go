package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/freeport"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/store"
)

// A GM give that the owner scene cannot answer (its process is stopped) is
// reported "temporarily unavailable" with its request id; the scene applies
// the queued command once it runs again, and the operator's retry with the
// same id is answered with the original result instead of giving twice.
func TestGMGiveRetriedWithSameIDAppliedOnce(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	bob := uniqueID("bob")
	c.respawn("player", "create", bob)
	c.respawn("gm", "enter", "--scene", "town", "--player", bob)
	row, err := c.scene("town")
	if err != nil {
		t.Fatal(err)
	}
	reqID := "gm-retry-" + bob
	if err := syscall.Kill(row.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	out, err := c.tryRespawn("player", "give", bob, "gold", "100", "--request-id", reqID, "--timeout", "3s")
	_ = syscall.Kill(row.PID, syscall.SIGCONT) // the manager may have replaced it meanwhile
	if err == nil {
		t.Fatalf("give to a stopped scene succeeded: %s", out)
	}
	if !strings.Contains(out, "temporarily unavailable") || !strings.Contains(out, "--request-id "+reqID) {
		t.Fatalf("give to a stopped scene: want a temporarily unavailable answer naming the request id, got:\n%s", out)
	}
	// The retry with the same id: applied at most once, whatever the
	// stopped scene did with the queued copies.
	var retried string
	poll.Until(t, 20*time.Second, func() error {
		o, err := c.tryRespawn("player", "give", bob, "gold", "100", "--request-id", reqID, "--timeout", "5s")
		retried = o
		return err
	})
	if !strings.Contains(retried, "now has 100 gold") {
		t.Fatalf("retry: %s", retried)
	}
	poll.Until(t, 10*time.Second, func() error {
		p, err := c.showPlayer(bob)
		if err != nil {
			return err
		}
		if p.Gold != 100 {
			return fmt.Errorf("datasvr has %d gold", p.Gold)
		}
		return nil
	})
	v, err := c.inspect("town")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range v.Players {
		if p.ID == bob && p.Gold != 100 {
			t.Fatalf("town holds %s with %d gold after one give retried", bob, p.Gold)
		}
	}
	// Once more, by hand: still 100. The id with another body is refused.
	c.respawn("player", "give", bob, "gold", "100", "--request-id", reqID)
	if out, err := c.tryRespawn("player", "give", bob, "gold", "7", "--request-id", reqID); err == nil || !strings.Contains(out, "different") {
		t.Fatalf("reused id with another count: %v\n%s", err, out)
	}
	if p, err := c.showPlayer(bob); err != nil || p.Gold != 100 {
		t.Fatalf("after repeats: %+v %v", p, err)
	}
}

// tcpProxy forwards a local port to a database; down closes its listener
// (and every open connection), so clients see a closed port, as when the
// database host is unreachable. The machine's database keeps running: other
// tests use it at the same time.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, addr: freeport.Addr(t), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { p.down(); p.wg.Wait() })
	return p
}

func (p *tcpProxy) up() {
	p.t.Helper()
	var ln net.Listener
	poll.Until(p.t, 5*time.Second, func() error {
		var err error
		ln, err = net.Listen("tcp", p.addr)
		return err
	})
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

func (p *tcpProxy) pipe(c net.Conn) {
	d, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil {
		p.mu.Unlock()
		c.Close()
		d.Close()
		return
	}
	p.conns[c], p.conns[d] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(d, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, d); done <- struct{}{} }()
	<-done
	c.Close()
	d.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, d)
	p.mu.Unlock()
}

func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// proxiedDSN points dsn's host:port at addr and returns the original
// host:port.
func proxiedDSN(t *testing.T, dsn, addr string) (string, string) {
	t.Helper()
	switch {
	case strings.HasPrefix(dsn, "mysql://"):
		i, j := strings.Index(dsn, "tcp("), -1
		if i >= 0 {
			j = strings.Index(dsn[i:], ")")
		}
		if i < 0 || j < 0 {
			t.Fatalf("mysql DSN without tcp(host:port): cannot proxy it")
		}
		target := dsn[i+4 : i+j]
		return dsn[:i+4] + addr + dsn[i+j:], target
	default:
		at := strings.LastIndex(dsn, "@")
		rest := dsn[at+1:]
		end := strings.IndexAny(rest, "/?")
		if at < 0 || end < 0 {
			t.Fatalf("postgres DSN without @host:port/: cannot proxy it")
		}
		return dsn[:at+1] + addr + rest[end:], rest[:end]
	}
}

// With the database unreachable before the cluster starts, players are
// created, enter and save (datasvr serves from its journal, degraded), and
// the rows appear once the database is back; then the same mid-run.
func TestDatabaseUnreachableAtStart(t *testing.T) {
	ran := false
	for _, db := range databases(t) {
		if db.name == "sqlite" {
			continue // embedded: it cannot be unreachable
		}
		ran = true
		t.Run(db.name, func(t *testing.T) { databaseUnreachableAtStart(t, db.dsn) })
	}
	if !ran {
		t.Skip("RESPAWN_TEST_POSTGRES_DSN and RESPAWN_TEST_MYSQL_DSN unset: no external database to make unreachable")
	}
}

// worldWithDatabaseDown starts a world whose datasvr reaches dsn through a
// proxy that is down (proxy.up connects it), with a short flush interval so
// the write-through is seen quickly.
func worldWithDatabaseDown(t *testing.T, dsn string) (*cluster, *tcpProxy) {
	t.Helper()
	proxy := newTCPProxy(t, "")
	pdsn, target := proxiedDSN(t, dsn, proxy.addr)
	proxy.target = target
	c := newCluster(t, "--datasvr.database", pdsn)
	c.env = append(c.env, "RESPAWN_DATASVR_FLUSH_INTERVAL=500ms")
	c.startWorld()
	return c, proxy
}

func databaseUnreachableAtStart(t *testing.T, dsn string) {
	c, proxy := worldWithDatabaseDown(t, dsn)
	st := c.status()
	if st.PID == 0 || !strings.Contains(st.Degraded, "database unreachable since") {
		t.Fatalf("datasvr status with the database unreachable: %+v", st)
	}
	if out := c.respawn("status"); !strings.Contains(out, "degraded: database unreachable since") {
		t.Fatalf("respawn status does not say degraded:\n%s", out)
	}
	ann := uniqueID("ann")
	c.respawn("player", "create", ann)
	c.respawn("gm", "enter", "--scene", "town", "--player", ann)
	c.respawn("player", "give", ann, "gold", "300")
	c.respawn("gm", "request", "--scene", "town", "--player", ann, "--seq", "1", `{"op":"buy","npc":"merchant","item":"sword","count":1}`)
	want, err := c.showPlayer(ann)
	if err != nil {
		t.Fatal(err)
	}
	if want.Gold != 200 || want.Items["sword"] != 1 {
		t.Fatalf("while degraded: %+v", want)
	}

	direct, err := store.Open(context.Background(), dsn, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := direct.Load(context.Background(), ann); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("row for %s while the database was unreachable: %v", ann, err)
	}

	// waitRow waits until ann's row in the database passes check.
	waitRow := func(check func(store.Record, player.Data) error) {
		t.Helper()
		poll.Until(t, 30*time.Second, func() error {
			r, err := direct.Load(context.Background(), ann)
			if err != nil {
				return err
			}
			d, err := player.Decode(r.Data)
			if err != nil {
				return err
			}
			return check(r, d)
		})
	}
	// waitRecovered waits until the data server reports no outage.
	waitRecovered := func() {
		t.Helper()
		poll.Until(t, 15*time.Second, func() error {
			if st := c.status(); st.Degraded != "" {
				return errors.New(st.Degraded)
			}
			return nil
		})
	}
	proxy.up()
	waitRow(func(r store.Record, d player.Data) error {
		if r.Version < want.Version || d.Gold != 200 || d.Count("sword") != 1 {
			return fmt.Errorf("row at version %d: gold %d, swords %d", r.Version, d.Gold, d.Count("sword"))
		}
		return nil
	})
	waitRecovered()

	// Mid-run: the database goes away again. Saves go on, the outage is
	// reported, and what was saved meanwhile is written once it is back.
	proxy.down()
	c.respawn("player", "give", ann, "potion", "2")
	poll.Until(t, 15*time.Second, func() error {
		if st := c.status(); !strings.Contains(st.Degraded, "database unreachable since") {
			return fmt.Errorf("not degraded: %+v", st)
		}
		return nil
	})
	c.respawn("player", "give", ann, "potion", "1")
	proxy.up()
	waitRow(func(_ store.Record, d player.Data) error {
		if d.Count("potion") != 3 {
			return fmt.Errorf("row has %d potions", d.Count("potion"))
		}
		return nil
	})
	waitRecovered()
}

// datasvrStatus is the datasvr row of `respawn status --json`.
type datasvrStatus struct {
	PID      int    `json:"pid"`
	Healthy  bool   `json:"healthy"`
	Degraded string `json:"degraded"`
	Error    string `json:"error"`
}

func (c *cluster) status() datasvrStatus {
	c.t.Helper()
	var all map[string]datasvrStatus
	out := c.respawn("status", "--json")
	if err := jsonUnmarshal(out, &all); err != nil {
		c.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return all["datasvr"]
}

// A scene whose definition is edited between a crash and its replay is
// refused with an error naming what changed, not replayed into a history
// it never acknowledged. Only that scene stops; a repair starts it fresh
// under the new definition.
func TestConfigEditBetweenCrashAndReplayRefused(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "configs", "world.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "world.yaml")
	if err := os.WriteFile(cfgPath, src, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, "--config", cfgPath)
	c.start("worldmgr")
	c.waitRunning(15 * time.Second)
	c.respawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "10")
	row, err := c.scene("forest")
	if err != nil {
		t.Fatal(err)
	}
	// Edit Hogger's HP, then crash the forest's process: the manager
	// respawns it under the edited file.
	edited := strings.Replace(string(src), "hp: 1000", "hp: 1500", 1)
	if edited == string(src) {
		t.Fatal("configs/world.yaml has no 'hp: 1000' to edit")
	}
	if err := os.WriteFile(cfgPath, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(row.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	const want = "monsters[hogger].hp: 1000 -> 1500"
	poll.Until(t, 20*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.PID == row.PID || r.State != modules.SceneCorrupt {
			return fmt.Errorf("forest %s pid %d (%s)", r.State, r.PID, r.Reason)
		}
		if !strings.Contains(r.Reason, "scene definition changed since the snapshot") || !strings.Contains(r.Reason, want) {
			return fmt.Errorf("forest held with reason %q, want it to name %q", r.Reason, want)
		}
		return nil
	})
	raw, _ := os.ReadFile(filepath.Join(c.dataDir, "logs", "scene-"+row.Process+".log"))
	if !strings.Contains(string(raw), want) {
		t.Fatalf("the scene log does not name the change:\n%s", lastLines(string(raw), 5))
	}
	// The diverged history is never served.
	if out, err := c.tryRespawn("gm", "damage", "--scene", "forest", "--monster", "hogger", "--amount", "1", "--timeout", "1s"); err == nil {
		t.Fatalf("forest served a GM command under the edited definition: %s", out)
	}
	// The operator takes the new definition: the scene starts fresh.
	out := c.respawn("scene", "repair", "forest")
	t.Logf("repair:\n%s", out)
	v := c.waitClean("forest", 10*time.Second)
	if m := monster(v, "hogger"); m.HP != 1500 || m.MaxHP != 1500 {
		t.Fatalf("hogger after the repair: %+v, want 1500/1500 under the new definition", m)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// A scene that holds an older version of a player than the data server
// reloads it instead of dropping it. Here the newer copy is the database's:
// a player created while the database was unreachable turns out to exist
// there, the database's copy wins, and the town's next save is refused as
// older. A GM give caught in between is applied once, to the reloaded
// player, by the CLI's retry with the same request id.
func TestPlayerReloadedNotDropped(t *testing.T) {
	ran := false
	for _, db := range databases(t) {
		if db.name == "sqlite" {
			continue
		}
		ran = true
		t.Run(db.name, func(t *testing.T) { playerReloadedNotDropped(t, db.dsn) })
	}
	if !ran {
		t.Skip("RESPAWN_TEST_POSTGRES_DSN and RESPAWN_TEST_MYSQL_DSN unset: no external database to make unreachable")
	}
}

func playerReloadedNotDropped(t *testing.T, dsn string) {
	direct, err := store.Open(context.Background(), dsn, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	cid := uniqueID("cid")
	orig, err := player.Data{ID: cid, Name: "Original", Level: 5, Gold: 500, Items: map[string]int64{"shield": 1}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := direct.SaveBatch(context.Background(), []store.Record{{ID: cid, Version: 9, Data: orig}}); err != nil {
		t.Fatal(err)
	}

	c, proxy := worldWithDatabaseDown(t, dsn)
	c.respawn("player", "create", cid) // provisional: the database cannot be asked
	c.respawn("gm", "enter", "--scene", "town", "--player", cid)
	proxy.up()
	poll.Until(t, 20*time.Second, func() error {
		p, err := c.showPlayer(cid)
		if err != nil {
			return err
		}
		if p.Gold != 500 || p.Version != 10 {
			return fmt.Errorf("datasvr has version %d with %d gold", p.Version, p.Gold)
		}
		return nil
	})
	out := c.respawn("player", "give", cid, "potion", "1", "--request-id", "reload-"+cid)
	if !strings.Contains(out, "now has 1 potion") {
		t.Fatalf("give across the reload: %s", out)
	}
	v, err := c.inspect("town")
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range v.Players {
		if p.ID == cid {
			found = true
			if p.Gold != 500 || p.Items["shield"] != 1 || p.Items["potion"] != 1 {
				t.Fatalf("town holds %+v after the reload, want the database's copy plus one potion", p)
			}
		}
	}
	if !found {
		t.Fatalf("town dropped %s instead of reloading it", cid)
	}
	poll.Until(t, 10*time.Second, func() error {
		p, err := c.showPlayer(cid)
		if err != nil {
			return err
		}
		if p.Gold != 500 || p.Items["potion"] != 1 || p.Items["shield"] != 1 {
			return fmt.Errorf("datasvr has %+v", p)
		}
		return nil
	})
	row, err := c.scene("town")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(c.dataDir, "logs", "scene-"+row.Process+".log"))
	if !strings.Contains(string(raw), "player reloaded from the data server") {
		t.Fatalf("town's log does not say it reloaded the player")
	}
}
