package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/freeport"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/scene"
	"github.com/respawn-dev/respawn/internal/secret"
)

// travelIns records, on nc, the TravelIns sent to scene to for which keep
// holds, until the test ends. The subscription is in place when it returns.
func travelIns(t *testing.T, nc *nats.Conn, to string, keep func(game.TravelIn) bool) <-chan game.TravelIn {
	t.Helper()
	got := make(chan game.TravelIn, 4)
	sub, err := nc.Subscribe(scene.EventSubject(to), func(m *nats.Msg) {
		if ev, err := game.DecodeEvent(m.Data); err == nil {
			if in, ok := ev.(game.TravelIn); ok && keep(in) {
				got <- in
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return got
}

// busConn logs in to the NATS at url as role, with the secret datasvr
// created in the cluster's data directory. Closed when the test ends.
func (c *cluster) busConn(role bus.Role, url string, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		c.t.Fatal(err)
	}
	auth, err := bus.Auth(role, sec)
	if err != nil {
		c.t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(auth, opts...)...)
	if err != nil {
		c.t.Fatalf("connect to %s as %s: %v", url, role, err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// violations collects the permission errors the server reports to one
// connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.errs = append(v.errs, err.Error())
	})
}

// waitFor waits until the server reported a violation naming subject.
func (v *violations) waitFor(t *testing.T, subject string) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, e := range v.errs {
			if strings.Contains(strings.ToLower(e), "permissions violation") && strings.Contains(e, `"`+subject+`"`) {
				return nil
			}
		}
		return fmt.Errorf("no permissions violation for %s yet (errors: %q)", subject, v.errs)
	})
}

// The embedded NATS takes no login it cannot verify, and each role can
// use only its own subjects: a scene's credentials neither answer nor
// make data server requests that are not a scene's, nor publish another
// module's writes or the data server's GM forwards; the operator role
// only reads.
func TestBusRequiresCredentialsAndEnforcesRoles(t *testing.T) {
	c := newCluster(t)
	c.startDatasvr()
	url := "nats://" + c.ports["nats.listen"]

	t.Run("anonymous", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
		if err == nil {
			nc.Close()
			t.Fatal("an anonymous connection was accepted")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("anonymous connection: %v, want an authorization violation", err)
		}
	})
	t.Run("another cluster's secret", func(t *testing.T) {
		other, err := secret.New([]byte("not-this-clusters-secret"))
		if err != nil {
			t.Fatal(err)
		}
		auth, _ := bus.Auth(bus.RoleScene, other)
		nc, err := nats.Connect(url, append(auth, nats.Timeout(5*time.Second))...)
		if err == nil {
			nc.Close()
			t.Fatal("a connection with a wrong password was accepted")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("wrong password: %v, want an authorization violation", err)
		}
	})

	// A datasvr-role listener sees what reaches the data server's
	// subjects; a listener of the operator role sees replica updates and
	// chat. Each forbidden publish is followed by an allowed one from the
	// same connection: NATS keeps one publisher's order, so the allowed
	// message arriving first-and-alone proves the forbidden one was
	// dropped, not late.
	type got struct{ subject, data string }
	listen := func(role bus.Role, subjects ...string) chan got {
		ch := make(chan got, 64)
		nc := c.busConn(role, url)
		for _, s := range subjects {
			if _, err := nc.Subscribe(s, func(m *nats.Msg) { ch <- got{m.Subject, string(m.Data)} }); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		return ch
	}
	dataSide := listen(bus.RoleDataSvr, "respawn.datasvr.>")
	readSide := listen(bus.RoleOperator, "respawn.replica.scene_table.upd", "respawn.chat.>")
	sceneSide := listen(bus.RoleScene, "respawn.scene.>")

	var sceneErrs, opErrs violations
	asScene := c.busConn(bus.RoleScene, url, sceneErrs.handler())
	asOperator := c.busConn(bus.RoleOperator, url, opErrs.handler())

	expectOnly := func(t *testing.T, ch chan got, sentinel string) {
		t.Helper()
		select {
		case g := <-ch:
			if g.data != sentinel {
				t.Fatalf("a forbidden publish got through: %s %q", g.subject, g.data)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the allowed sentinel never arrived")
		}
	}
	forbid := func(t *testing.T, nc *nats.Conn, errs *violations, subject string, ch chan got, sentinelSubject string) {
		t.Helper()
		if err := nc.Publish(subject, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		sentinel := "sentinel " + subject
		if err := nc.Publish(sentinelSubject, []byte(sentinel)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		errs.waitFor(t, subject)
		expectOnly(t, ch, sentinel)
	}

	// A message on datasvr.load without a reply subject is ignored by
	// datasvr: a harmless allowed sentinel for the scene role.
	for _, subj := range []string{
		"respawn.datasvr.admin.give", "respawn.datasvr.admin.create", "respawn.datasvr.admin.kick", "respawn.datasvr.admin.flush",
	} {
		t.Run("scene publishes "+subj, func(t *testing.T) {
			forbid(t, asScene, &sceneErrs, subj, dataSide, "respawn.datasvr.load")
		})
	}
	t.Run("scene publishes the scene table", func(t *testing.T) {
		forbid(t, asScene, &sceneErrs, "respawn.replica.scene_table.upd", readSide, "respawn.chat.world")
	})
	t.Run("scene forwards a GM give", func(t *testing.T) {
		forbid(t, asScene, &sceneErrs, "respawn.scene.forest.give", sceneSide, "respawn.scene.forest.event")
	})
	t.Run("scene answers data requests", func(t *testing.T) {
		if _, err := asScene.Subscribe("respawn.datasvr.load", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if err := asScene.Flush(); err != nil {
			t.Fatal(err)
		}
		sceneErrs.waitFor(t, "respawn.datasvr.load")
	})
	t.Run("operator changes a player", func(t *testing.T) {
		forbid(t, asOperator, &opErrs, "respawn.datasvr.admin.give", dataSide, "respawn.datasvr.admin.stats")
	})
	t.Run("operator reads", func(t *testing.T) {
		stats, err := asOperator.Request("respawn.datasvr.admin.stats", []byte("{}"), 5*time.Second)
		if err != nil {
			t.Fatalf("operator stats: %v", err)
		}
		if !strings.Contains(string(stats.Data), "saves_accepted") {
			t.Fatalf("stats reply: %s", stats.Data)
		}
		<-dataSide // the listener saw the request too
	})
}

// A TravelIn on the bus, forged or replayed by a holder of the scene
// credentials, moves and mints nothing: the receiving scene takes the
// player from the data server, and only one handed over to it.
func TestForgedTravelInMintsNothing(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	url := "nats://" + c.ports["nats.listen"]
	nc := c.busConn(bus.RoleScene, url)

	offline, online := uniqueID("trudy"), uniqueID("erin")
	c.respawn("player", "create", offline, "--name", "Trudy")
	c.respawn("player", "create", online, "--name", "Erin")
	c.respawn("gm", "enter", "--scene", "forest", "--player", online)
	c.respawn("player", "give", online, "gold", "50")

	// The real TravelIn erin's travel to town sends, recorded as the
	// scene role may: it may subscribe to every scene's subjects.
	real := travelIns(t, nc, "town", func(in game.TravelIn) bool {
		return in.Player.ID == online && in.Player.Gold < 900_000_000 // not our own forgeries
	})

	send := func(in game.TravelIn) string {
		t.Helper()
		raw, err := game.EncodeEvent(in)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		msg, err := nc.RequestWithContext(ctx, scene.EventSubject("town"), raw)
		if err != nil {
			t.Fatalf("deliver forged TravelIn: %v", err)
		}
		return string(msg.Data)
	}
	rich := func(id string) player.Data {
		return player.Data{ID: id, Name: "Rich", Level: 999, Gold: 900_000_000, Items: map[string]int64{"kings_crown": 50, "sword": 9}}
	}
	nth := uint64(1_000_000)
	forge := func(id string) game.TravelIn {
		nth++
		return game.TravelIn{TransferID: fmt.Sprintf("forest/t%d", nth), From: "forest", Player: rich(id), Version: 1 << 40}
	}
	noRichPlayerIn := func(t *testing.T, scenes ...string) {
		t.Helper()
		for _, s := range scenes {
			v, err := c.inspect(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range v.Players {
				if p.Gold >= 900_000_000 || p.Items["kings_crown"] > 0 {
					t.Fatalf("scene %s holds a minted player: %+v", s, p)
				}
			}
		}
	}

	t.Run("unknown player", func(t *testing.T) {
		if ans := send(forge(uniqueID("mallory"))); ans == "" {
			t.Fatal("a TravelIn for a player that does not exist was accepted")
		}
		noRichPlayerIn(t, "town")
	})
	t.Run("offline player", func(t *testing.T) {
		ans := send(forge(offline))
		if !strings.Contains(ans, "not the lease holder") {
			t.Fatalf("forged TravelIn of an offline player: answer %q, want a lease refusal", ans)
		}
		p, err := c.showPlayer(offline)
		if err != nil {
			t.Fatal(err)
		}
		if p.Online || p.Gold != 0 || len(p.Items) != 0 {
			t.Fatalf("offline player after a forged TravelIn: %+v", p)
		}
		noRichPlayerIn(t, "town")
	})
	t.Run("player online elsewhere", func(t *testing.T) {
		if ans := send(forge(online)); !strings.Contains(ans, "not the lease holder") {
			t.Fatalf("forged TravelIn of a player in the forest: answer %q, want a lease refusal", ans)
		}
		at, err := c.where(online, "town", "forest")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := at["forest"]; !ok || len(at) != 1 || at["forest"].Gold != 50 {
			t.Fatalf("after a forged TravelIn erin is in %v: %+v", keys(at), at)
		}
	})
	t.Run("replayed and altered after a real travel", func(t *testing.T) {
		c.respawn("gm", "request", "--scene", "forest", "--player", online, "--seq", "1", `{"op":"travel","to":"town"}`)
		var in game.TravelIn
		select {
		case in = <-real:
		case <-time.After(10 * time.Second):
			t.Fatal("erin's TravelIn to town was never seen")
		}
		poll.Until(t, 10*time.Second, func() error {
			at, err := c.where(online, "town", "forest")
			if err != nil {
				return err
			}
			if _, ok := at["town"]; !ok || len(at) != 1 {
				return fmt.Errorf("erin is in %v", keys(at))
			}
			return nil
		})
		// Replayed as it was, then with riches and a fresh transfer id.
		if ans := send(in); ans != "" {
			t.Logf("replayed TravelIn answered %q", ans)
		}
		altered := in
		altered.Player = rich(online)
		altered.TransferID = forge(online).TransferID
		send(altered)
		at, err := c.where(online, "town", "forest")
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := at["town"]; !ok || len(at) != 1 || p.Gold != 50 || len(p.Items) != 0 {
			t.Fatalf("after replays erin is in %v: %+v", keys(at), at)
		}
		// Once erin is back in the forest, the same replay cannot pull
		// her into town again.
		c.respawn("gm", "request", "--scene", "town", "--player", online, "--seq", "2", `{"op":"travel","to":"forest"}`)
		poll.Until(t, 10*time.Second, func() error {
			at, err := c.where(online, "town", "forest")
			if err != nil {
				return err
			}
			if _, ok := at["forest"]; !ok || len(at) != 1 {
				return fmt.Errorf("erin is in %v", keys(at))
			}
			return nil
		})
		altered.TransferID = forge(online).TransferID
		if ans := send(altered); !strings.Contains(ans, "not the lease holder") {
			t.Fatalf("replay after erin left town: answer %q, want a lease refusal", ans)
		}
		at, err = c.where(online, "town", "forest")
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := at["forest"]; !ok || len(at) != 1 || p.Gold != 50 || len(p.Items) != 0 {
			t.Fatalf("erin ends in %v: %+v", keys(at), at)
		}
		noRichPlayerIn(t, "town", "forest")
	})
	// The cluster's own traffic (enter, give, travel, saves, replicas)
	// stays inside each role's permissions.
	noViolations(t, c)
}

// noViolations fails if any process of c was told it broke a subject
// permission.
func noViolations(t *testing.T, c *cluster) {
	t.Helper()
	logs := map[string]string{}
	for _, p := range c.procs {
		logs[p.name] = p.output()
	}
	files, _ := filepath.Glob(filepath.Join(c.dataDir, "logs", "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		logs[filepath.Base(f)] = string(b)
	}
	if len(files) == 0 {
		t.Fatal("no scene process logs found to check")
	}
	for name, out := range logs {
		if i := strings.Index(strings.ToLower(out), "permissions violation"); i >= 0 {
			t.Errorf("%s was refused by the bus: %s", name, out[i:min(len(out), i+200)])
		}
	}
}

// A scene process whose subscriptions the bus refuses does not start: an
// external NATS configured without the scene role's right to its own
// subjects would otherwise leave a scene running that no transfer or GM
// command can reach.
func TestSceneStartFailsWhenTheBusRefusesItsSubscriptions(t *testing.T) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/nats-server"); err != nil {
			t.Skip("no nats-server binary")
		}
		bin = "/usr/sbin/nats-server"
	}
	c := newCluster(t)
	conf := c.respawn("bus", "config")
	broken := strings.Replace(conf, `, "respawn.scene.>"`, "", 1)
	if broken == conf {
		t.Fatalf("the scene role's subscription to respawn.scene.> is not in:\n%s", conf)
	}
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeport.Addr(t)
	host, port, _ := net.SplitHostPort(addr)
	ns := startProc(t, c, bin, "-c", path, "-a", host, "-p", port)
	c.procs = append(c.procs, ns)
	poll.Until(t, 10*time.Second, func() error {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err
	})
	c.extra = append(c.extra, "--nats.url", "nats://"+addr)
	sc := c.start("scene", "--process", "town", "--epoch", "1")
	if err := sc.wait(20 * time.Second); err == nil {
		t.Fatalf("the scene process started although the bus refused its subscriptions; log:\n%s", sc.output())
	}
	if out := sc.output(); !strings.Contains(out, "subscribe as scene") || !strings.Contains(strings.ToLower(out), "permissions violation") {
		t.Fatalf("the scene process failed, but not for its refused subscription; log:\n%s", out)
	}
}
