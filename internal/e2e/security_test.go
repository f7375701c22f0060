package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/poll"
)

// openFDs counts the open descriptors of pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// goroutines reads go_goroutines from a daemon's /metrics.
func (c *cluster) goroutines(adminAddr string) (int, error) {
	code, body, err := c.call("GET", "http://"+adminAddr+"/metrics", nil, "")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("/metrics has no go_goroutines")
}

// 1000 keep-alive connections that made one request and went quiet are
// closed by the idle timeout, and the daemon is back to the descriptors
// and goroutines it had before.
func TestIdleHTTPConnectionsAreClosed(t *testing.T) {
	c := newCluster(t, "--admin.idle-timeout", "2s")
	ds := c.start("datasvr")
	addr := c.ports["datasvr.admin"]
	poll.Until(t, 20*time.Second, func() error {
		var h struct{ Healthy bool }
		return getJSON("http://"+addr+"/healthz", &h)
	})
	// Let start-up goroutines settle: two equal readings in a row.
	var baseG int
	poll.Until(t, 10*time.Second, func() error {
		a, err := c.goroutines(addr)
		if err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
		b, err := c.goroutines(addr)
		if err != nil || a != b {
			return fmt.Errorf("goroutines moving: %d then %d (%v)", a, b, err)
		}
		baseG = b
		return nil
	})
	baseFDs := openFDs(t, ds.pid())

	const n = 1000
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 50; w++ {
		wg.Go(func() {
			for i := w; i < n; i += 50 {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = conn
				fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("opening connections: %v", err)
	}
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	peak := openFDs(t, ds.pid())
	t.Logf("datasvr: %d fds and %d goroutines before, %d fds with %d idle connections", baseFDs, baseG, peak, n)
	if peak < baseFDs+n/2 {
		t.Fatalf("only %d fds with %d connections open (%d before): the test did not hold them", peak, n, baseFDs)
	}

	// The server closes every one of them: each client reads EOF.
	deadline := time.Now().Add(20 * time.Second)
	for i, conn := range conns {
		_ = conn.SetReadDeadline(deadline)
		if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("connection %d: %v, want EOF from the server's idle timeout", i, err)
		}
	}
	poll.Until(t, 10*time.Second, func() error {
		fds := openFDs(t, ds.pid())
		g, err := c.goroutines(addr)
		if err != nil {
			return err
		}
		if fds > baseFDs+2 || g > baseG+3 {
			return fmt.Errorf("%d fds (%d before), %d goroutines (%d before)", fds, baseFDs, g, baseG)
		}
		return nil
	})
}

// Every request that changes state needs the operator token, on each
// daemon: worldmgr's kill, a scene's GM command, datasvr's GM give (over
// NATS). Reading stays open on loopback.
func TestMutatingRequestsNeedTheOperatorToken(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	tok := c.operatorToken()
	forest, err := c.scene("forest")
	if err != nil {
		t.Fatal(err)
	}
	mgr := "http://" + c.ports["worldmgr.admin"]
	sceneURL := "http://" + forest.Addr + "/v1/scenes/forest"
	hit := map[string]any{"req_id": "no-token-1", "monster": "hogger", "amount": 7}

	for _, tc := range []struct {
		name, method, url string
		body              any
		token             string
		want              int
	}{
		{"worldmgr kill, no token", "POST", mgr + "/v1/scenes/forest/kill", nil, "", http.StatusUnauthorized},
		{"worldmgr kill, wrong token", "POST", mgr + "/v1/scenes/forest/kill", nil, "not-the-token", http.StatusUnauthorized},
		{"worldmgr stop, no token", "POST", mgr + "/v1/stop", nil, "", http.StatusUnauthorized},
		{"worldmgr pprof, no token", "GET", mgr + "/debug/pprof/cmdline", nil, "", http.StatusUnauthorized},
		{"scene gm damage, no token", "POST", sceneURL + "/gm/damage", hit, "", http.StatusUnauthorized},
		{"scene enter, no token", "POST", sceneURL + "/enter", map[string]string{"player": "nobody"}, "", http.StatusUnauthorized},
		{"datasvr pprof, no token", "GET", "http://" + c.ports["datasvr.admin"] + "/debug/pprof/cmdline", nil, "", http.StatusUnauthorized},
		{"worldmgr scenes, reading", "GET", mgr + "/v1/scenes", nil, "", http.StatusOK},
		{"scene inspect, reading", "GET", sceneURL + "/inspect", nil, "", http.StatusOK},
		{"datasvr metrics, reading", "GET", "http://" + c.ports["datasvr.admin"] + "/metrics", nil, "", http.StatusOK},
	} {
		code, body, err := c.call(tc.method, tc.url, tc.body, tc.token)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
		if code == http.StatusUnauthorized && !strings.Contains(body, "operator token") {
			t.Errorf("%s: refusal does not say why: %s", tc.name, body)
		}
	}
	// Nothing changed: the same forest process, Hogger untouched.
	if after, err := c.scene("forest"); err != nil || after.PID != forest.PID || after.Epoch != forest.Epoch {
		t.Fatalf("forest after refused kill: %+v %v (was pid %d epoch %d)", after, err, forest.PID, forest.Epoch)
	}
	v, err := c.inspect("forest")
	if err != nil {
		t.Fatal(err)
	}
	if m := monster(v, "hogger"); m.HP != m.MaxHP {
		t.Fatalf("hogger at %d/%d after a refused GM damage", m.HP, m.MaxHP)
	}

	// datasvr's GM changes travel over NATS: without the token, refused
	// (even for a holder of the GM's bus credentials).
	nc := c.busConn(bus.RoleGM, "nats://"+c.ports["nats.listen"])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	anon := dataclient.NewAdminClient(nc, "")
	if err := anon.Create(ctx, "tokenless", ""); !errors.Is(err, dataclient.ErrForbidden) {
		t.Fatalf("create without the token: %v, want ErrForbidden", err)
	}
	if _, err := dataclient.NewAdminClient(nc, "wrong").Give(ctx, "", "tokenless", "gold", 5); !errors.Is(err, dataclient.ErrForbidden) {
		t.Fatalf("give with a wrong token: %v, want ErrForbidden", err)
	}
	if _, err := anon.Show(ctx, "tokenless"); !errors.Is(err, dataclient.ErrNotFound) {
		t.Fatalf("show (open) of a player never created: %v, want ErrNotFound", err)
	}

	// With the token the same requests work: the token is the one they want.
	if code, body, err := c.call("POST", sceneURL+"/gm/damage", hit, tok); err != nil || code != http.StatusOK {
		t.Fatalf("gm damage with the token: %d %s %v", code, body, err)
	}
	if err := dataclient.NewAdminClient(nc, tok).Create(ctx, "tokenful", ""); err != nil {
		t.Fatalf("create with the token: %v", err)
	}
}

// Bad player ids, items, counts and overflows are refused with a clear
// error and change nothing: offline by datasvr, online by the scene, and
// by the CLI before it sends anything.
func TestBadInputIsRefusedOfflineAndOnline(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	tok := c.operatorToken()
	nc := c.busConn(bus.RoleGM, "nats://"+c.ports["nats.listen"])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm := dataclient.NewAdminClient(nc, tok)

	long := strings.Repeat("x", 5000)
	badIDs := map[string]string{"newline": "eve\nadmin", "path": "../../etc/passwd", "5000 chars": long, "empty": "", "space": "a b", "dot": "a.b"}
	for name, id := range badIDs {
		err := adm.Create(ctx, id, "")
		if !errors.Is(err, dataclient.ErrBadRequest) || !strings.Contains(err.Error(), "player id") {
			t.Errorf("datasvr create %s: %v, want a bad request naming the player id", name, err)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("datasvr create %s: a %d-byte error", name, len(err.Error()))
		}
	}
	if err := adm.Create(ctx, "ok", "Line\nBreak"); !errors.Is(err, dataclient.ErrBadRequest) {
		t.Errorf("create with a newline in the name: %v", err)
	}

	type give struct {
		item  string
		count int64
		want  string
	}
	badGives := []give{
		{"../../etc/passwd", 1, "item"},
		{long, 1, "item"},
		{"dragon_egg", 1, "not in the game's catalog"},
		{"gold\n", 1, "item"},
		{"gold", math.MaxInt64, "count"},
		{"gold", 9_200_000_000_000_000_000 / 1000, "count"},
		{"gold", math.MinInt64, "count"},
		{"potion", 0, "count"},
		{"potion", -1, "cannot take"},
	}

	// Offline: datasvr changes the stored player itself.
	off := "offline-1"
	if err := adm.Create(ctx, off, ""); err != nil {
		t.Fatal(err)
	}
	before, err := adm.Show(ctx, off)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range badGives {
		_, err := adm.Give(ctx, "", off, g.item, g.count)
		if !errors.Is(err, dataclient.ErrBadRequest) || !strings.Contains(err.Error(), g.want) {
			t.Errorf("offline give %.20q %d: %v, want a bad request about %q", g.item, g.count, err, g.want)
		}
	}
	if after, err := adm.Show(ctx, off); err != nil || after.Version != before.Version || after.Gold != 0 || len(after.Items) != 0 {
		t.Fatalf("offline player changed by refused gives: %+v %v", after, err)
	}

	// The CLI refuses the same before it sends anything.
	for _, args := range [][]string{
		{"player", "give", off, "gold", "9200000000000000000"},
		{"player", "give", off, "../../etc/passwd", "1"},
		{"player", "give", "eve\nadmin", "gold", "1"},
		{"player", "take", off, "gold", "9223372036854775807"},
		{"player", "create", "../../etc/passwd"},
	} {
		out, err := c.tryRespawn(args...)
		if err == nil || !strings.Contains(out, "invalid input") {
			t.Errorf("respawn %q: %v %s, want refused as invalid input", args, err, out)
		}
	}

	// Online: the player is in town; datasvr forwards gives to the scene.
	on := "online-1"
	c.respawn("player", "create", on)
	c.respawn("gm", "enter", "--scene", "town", "--player", on)
	for _, g := range badGives {
		_, err := adm.Give(ctx, "", on, g.item, g.count)
		if err == nil || !strings.Contains(err.Error(), g.want) {
			t.Errorf("online give %.20q %d: %v, want refused about %q", g.item, g.count, err, g.want)
		}
	}
	// The scene applies the same rules to a give that reaches it directly.
	// Only datasvr's bus role may publish a scene's give subject, so the
	// test sends with those credentials.
	asDatasvr := c.busConn(bus.RoleDataSvr, "nats://"+c.ports["nats.listen"])
	for i, g := range badGives[:8] {
		raw, _ := json.Marshal(dataclient.GiveRequest{ReqID: fmt.Sprintf("bad-%d", i), Player: on, Item: g.item, Count: g.count})
		msg, err := asDatasvr.RequestWithContext(ctx, dataclient.SceneGiveSubject("town"), raw)
		if err != nil {
			t.Fatal(err)
		}
		var rep dataclient.GiveReply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Error == "" || !strings.Contains(rep.Error, "invalid input") {
			t.Errorf("scene give %.20q %d: %+v, want refused as invalid input", g.item, g.count, rep)
		}
	}
	town, err := c.scene("town")
	if err != nil {
		t.Fatal(err)
	}
	townURL := "http://" + town.Addr + "/v1/scenes/town"
	for name, id := range badIDs {
		code, body, err := c.call("POST", townURL+"/enter", map[string]string{"player": id}, tok)
		if err != nil || code != http.StatusBadRequest || !strings.Contains(body, "player id") {
			t.Errorf("scene enter %s: %d %.200s %v", name, code, body, err)
		}
		code, body, err = c.call("POST", townURL+"/request", map[string]any{"session": "s", "player": id, "seq": 1, "op": map[string]any{"op": "move", "x": 1, "y": 1}}, tok)
		if err == nil && id != "" && !strings.Contains(body, "player id") {
			t.Errorf("scene request as %s: %.200s, want the player id named", name, body)
		}
		if err != nil || code != http.StatusBadRequest {
			t.Errorf("scene request as %s: %d %.200s %v", name, code, body, err)
		}
	}
	v, err := c.inspect("town")
	if err != nil {
		t.Fatal(err)
	}
	var pv game.PlayerView
	for _, p := range v.Players {
		if p.ID == on {
			pv = p
		}
	}
	if pv.ID != on || pv.Gold != 0 || len(pv.Items) != 0 || len(v.Players) != 1 {
		t.Fatalf("town after refused input: player %+v, %d players", pv, len(v.Players))
	}
	// And a good give still works online.
	if rep, err := adm.Give(ctx, "", on, "gold", 5); err != nil || rep.Count != 5 {
		t.Fatalf("good online give: %+v %v", rep, err)
	}
}
