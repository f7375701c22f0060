package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/client"
	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/freeport"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/token"
)

// gateway starts a gateway binary with its own ports (the first one uses
// the cluster's gateway ports) and waits until it routes.
func (c *cluster) gateway(id string) (*proc, string, string) {
	c.t.Helper()
	listen, ws, adm := c.ports["gateway.listen"], c.ports["gateway.websocket"], c.ports["gateway.admin"]
	if id != "gateway" {
		listen, ws, adm = freeport.Addr(c.t), freeport.Addr(c.t), freeport.Addr(c.t)
	}
	p := c.start("gateway", "--gateway.id", id, "--gateway.listen", listen, "--gateway.websocket", ws, "--gateway.admin", adm)
	c.t.Cleanup(func() {
		if c.t.Failed() {
			lines := strings.Split(p.output(), "\n")
			c.t.Logf("gateway %s log (last 60 lines):\n%s", id, strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	poll.Until(c.t, 20*time.Second, func() error {
		var h struct{ Healthy bool }
		return getJSON("http://"+adm+"/healthz", &h)
	})
	return p, listen, "ws://" + ws + "/"
}

// natsConn is the GM's connection to the cluster's bus (the tests create,
// show and give through datasvr).
func (c *cluster) natsConn() *nats.Conn {
	c.t.Helper()
	return c.busConn(bus.RoleGM, "nats://"+c.ports["nats.listen"], nats.Timeout(5*time.Second))
}

// player is one test client and the ledger of what the server
// acknowledged to it.
type gamer struct {
	id    string
	c     *client.Client
	scene string
	gold  int64
	items map[string]int64
	x, y  int

	sent, answered atomic.Int64
	maxLatency     atomic.Int64 // ns
	errs           int
	errors         []string
}

var spawns = map[string][2]int{"town": {10, 10}, "forest": {2, 2}}

func (p *gamer) apply(op map[string]any, rep client.Reply) {
	if !rep.OK() {
		return
	}
	switch op["op"] {
	case "move":
		var r game.MoveResult
		_ = json.Unmarshal(rep.Body, &r)
		p.x, p.y = r.X, r.Y
	case "buy":
		var r game.BuyResult
		_ = json.Unmarshal(rep.Body, &r)
		p.gold, p.items[r.Item] = r.Gold, r.Have
	case "attack":
		var r game.AttackResult
		_ = json.Unmarshal(rep.Body, &r)
		for _, l := range r.Loot {
			if l.Item == "gold" {
				p.gold += l.Count
			} else {
				p.items[l.Item] += l.Count
			}
		}
		if r.Died {
			p.x, p.y = spawns[p.scene][0], spawns[p.scene][1]
		}
	case "travel":
		p.scene = op["to"].(string)
		p.x, p.y = spawns[p.scene][0], spawns[p.scene][1]
	}
}

// nextOp is the play mix: moves everywhere, buys in town, attacks on the
// wolves in the forest.
func (p *gamer) nextOp(r *rand.Rand) map[string]any {
	switch n := r.IntN(10); {
	case n < 5:
		return map[string]any{"op": "move", "x": 1 + r.IntN(30), "y": 1 + r.IntN(30)}
	case p.scene == "town":
		return map[string]any{"op": "buy", "npc": "merchant", "item": "potion", "count": 1 + r.IntN(3)}
	default:
		return map[string]any{"op": "attack", "monster": fmt.Sprintf("wolf-%d", 1+r.IntN(3))}
	}
}

// acceptable game refusals: the game said no, as it may to any player.
func refusalOK(rep client.Reply) bool {
	return rep.Code == gwproto.CodeGameError && (rep.Reason == game.ErrMonsterDead || rep.Reason == game.ErrNotEnough)
}

type world struct {
	t       *testing.T
	c       *cluster
	sec     *secret.Secret
	players []*gamer
}

// newPlayers creates n players with gold, logs them in through gateways
// (every fourth over WebSocket) and sends half of them to the forest.
func newPlayers(t *testing.T, c *cluster, n int, gateways [][]string) *world {
	t.Helper()
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	ac := dataclient.NewAdminClient(c.natsConn(), sec.OperatorToken())
	w := &world{t: t, c: c, sec: sec}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	prefix := uniqueID("p")
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("%s-%03d", prefix, i)
			if err := ac.Create(ctx, id, id); err != nil {
				errc <- err
				return
			}
			if _, err := ac.Give(ctx, id+"-gold", id, "gold", 100000); err != nil {
				errc <- err
				return
			}
			tok, err := token.IssueLogin(sec, id, time.Now().Add(time.Hour))
			if err != nil {
				errc <- err
				return
			}
			addrs := append([]string(nil), gateways[i%len(gateways)]...)
			if i%4 == 3 {
				addrs[0], addrs[1] = addrs[1], addrs[0] // WebSocket first
			}
			cl, err := client.Dial(ctx, client.Options{Gateways: addrs, Token: tok, Name: id})
			if err != nil {
				errc <- fmt.Errorf("player %s: %w", id, err)
				return
			}
			s := cl.Session()
			var st game.PlayerView
			if err := json.Unmarshal(s.State, &st); err != nil {
				errc <- fmt.Errorf("player %s: session state %s: %w", id, s.State, err)
				return
			}
			p := &gamer{id: id, c: cl, scene: s.Scene, gold: st.Gold, items: map[string]int64{}, x: st.X, y: st.Y}
			for k, v := range st.Items {
				p.items[k] = v
			}
			if i%2 == 1 {
				op := map[string]any{"op": "travel", "to": "forest"}
				rep, err := cl.Request(ctx, op)
				if err != nil || !rep.OK() {
					errc <- fmt.Errorf("player %s travel: %v %v", id, err, rep.Err())
					return
				}
				p.apply(op, rep)
			}
			mu.Lock()
			w.players = append(w.players, p)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	sort.Slice(w.players, func(i, j int) bool { return w.players[i].id < w.players[j].id })
	t.Cleanup(func() {
		for _, p := range w.players {
			p.c.Close()
		}
	})
	return w
}

// play runs every player's loop (one request every pace, the reply
// awaited: a closed loop) until stop is closed.
func (w *world) play(pace time.Duration, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for i, p := range w.players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 7))
			t := time.NewTicker(pace)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				op := p.nextOp(r)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				p.sent.Add(1)
				start := time.Now()
				rep, err := p.c.Request(ctx, op)
				cancel()
				if d := int64(time.Since(start)); d > p.maxLatency.Load() {
					p.maxLatency.Store(d)
				}
				switch {
				case err != nil:
					p.errs++
					p.errors = append(p.errors, fmt.Sprintf("%v: %v", op, err))
				case rep.OK() || refusalOK(rep):
					p.answered.Add(1)
					p.apply(op, rep)
				default:
					p.answered.Add(1)
					p.errs++
					p.errors = append(p.errors, fmt.Sprintf("%v: %v", op, rep.Err()))
				}
			}
		}()
	}
	wg.Wait()
}

// playing runs play in the background until the returned stop is called;
// stop returns once every player's loop has ended.
func (w *world) playing(pace time.Duration) (stop func()) {
	stopc := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.play(pace, stopc) }()
	return func() { close(stopc); <-done }
}

// progress waits until every player has had n more requests answered:
// play goes on for a while, measured in requests rather than time.
func (w *world) progress(n int64) {
	w.t.Helper()
	base := make([]int64, len(w.players))
	for i, p := range w.players {
		base[i] = p.answered.Load()
	}
	poll.Until(w.t, 30*time.Second, func() error {
		for i, p := range w.players {
			if got := p.answered.Load() - base[i]; got < n {
				return fmt.Errorf("player %s: %d of %d more requests answered", p.id, got, n)
			}
		}
		return nil
	})
}

// check asserts what every player saw: no errors, no server disconnects,
// no duplicate replies, and a ledger equal to the scene's and datasvr's.
func (w *world) check(wantLost bool) {
	t := w.t
	t.Helper()
	var sent, resumes, relogins, lost int
	var maxLat time.Duration
	for _, p := range w.players {
		st := p.c.Stats()
		maxLat = max(maxLat, time.Duration(p.maxLatency.Load()))
		sent += int(p.sent.Load())
		resumes += int(st.Resumes)
		relogins += int(st.Relogins)
		lost += int(st.Lost)
		if p.errs > 0 {
			t.Errorf("player %s: %d errors, first: %s", p.id, p.errs, p.errors[0])
		}
		if p.answered.Load() != p.sent.Load() {
			t.Errorf("player %s: %d sent, %d answered", p.id, p.sent.Load(), p.answered.Load())
		}
		if st.Disconnects != 0 || st.Duplicates != 0 || st.Relogins != 0 {
			t.Errorf("player %s: stats %+v", p.id, st)
		}
		if !wantLost && st.Lost != 0 {
			t.Errorf("player %s lost its connection %d times", p.id, st.Lost)
		}
	}
	t.Logf("%d players, %d requests, %d resumes, %d lost connections, %d relogins, slowest reply %s", len(w.players), sent, resumes, lost, relogins, maxLat.Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	// The scenes hold what each client was told.
	poll.Until(t, 20*time.Second, func() error {
		views, err := w.c.playersIn("town", "forest")
		if err != nil {
			return err
		}
		for _, p := range w.players {
			v, ok := views[p.id]
			if !ok {
				return fmt.Errorf("player %s is in no scene", p.id)
			}
			if err := p.same(v.Gold, v.Items, v.X, v.Y); err != nil {
				return fmt.Errorf("scene: %w", err)
			}
		}
		return nil
	})
	// And the data server holds the same, once the saves land.
	w.checkSaved("datasvr")
}

// checkSaved waits until the data server holds what each client was told;
// what names the check in errors.
func (w *world) checkSaved(what string) {
	t := w.t
	t.Helper()
	ac := dataclient.NewAdminClient(w.c.natsConn(), w.sec.OperatorToken())
	poll.Until(t, 30*time.Second, func() error {
		for _, p := range w.players {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			rep, err := ac.Show(ctx, p.id)
			cancel()
			if err != nil {
				return err
			}
			var d struct{ X, Y int }
			_ = json.Unmarshal(rep.Data, &d)
			if err := p.same(rep.Gold, rep.Items, d.X, d.Y); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		return nil
	})
}

func (p *gamer) same(gold int64, items map[string]int64, x, y int) error {
	if gold != p.gold || x != p.x || y != p.y {
		return fmt.Errorf("player %s: gold %d at (%d,%d), the client was told gold %d at (%d,%d)", p.id, gold, x, y, p.gold, p.x, p.y)
	}
	for k, v := range p.items {
		if items[k] != v {
			return fmt.Errorf("player %s: %d %s, the client was told %d", p.id, items[k], k, v)
		}
	}
	for k, v := range items {
		if p.items[k] != v {
			return fmt.Errorf("player %s: %d %s, the client was told %d", p.id, v, k, p.items[k])
		}
	}
	return nil
}

// killScene kills scene's process with SIGKILL and waits until a new
// process serves it.
func (c *cluster) killScene(scene string) {
	c.t.Helper()
	old, err := c.scene(scene)
	if err != nil {
		c.t.Fatal(err)
	}
	c.respawn("scene", "kill", scene)
	c.waitReplaced(old, 20*time.Second)
}

// 100 players play through one gateway while both scene processes are
// killed with SIGKILL, one after the other: nobody is disconnected, no
// request fails, every reply comes once, and the scenes and the data
// server hold exactly what each player was told.
func TestGatewayPlayersSurviveSceneKill9(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 100, [][]string{{tcp, ws}})
	stop := w.playing(50 * time.Millisecond)
	w.progress(5)
	c.killScene("forest")
	w.progress(3)
	c.killScene("town")
	w.progress(5)
	stop()
	w.check(false)
	noViolations(t, c) // the gateway's and scenes' traffic is within their bus roles
}

// The world manager and then the data server are killed with SIGKILL
// (and restarted) while 100 players play: they notice nothing.
func TestGatewayPlayersSurviveWorldmgrAndDatasvrKill9(t *testing.T) {
	c := newCluster(t)
	c.startDatasvr()
	wm := c.start("worldmgr")
	c.waitRunning(20 * time.Second)
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 100, [][]string{{tcp, ws}})
	stop := w.playing(50 * time.Millisecond)
	w.progress(5)
	wm.signal(syscall.SIGKILL)
	_ = wm.wait(5 * time.Second)
	w.progress(5) // without a world manager
	c.start("worldmgr")
	c.waitRunning(20 * time.Second)
	var ds *proc
	for _, p := range c.procs {
		if p.name == "datasvr" {
			ds = p
		}
	}
	ds.signal(syscall.SIGKILL)
	_ = ds.wait(5 * time.Second)
	w.progress(5) // without a data server (and NATS)
	c.startDatasvr()
	w.progress(5)
	stop()
	w.check(false)
}

// Two gateways; one is killed with SIGKILL while its players play: every
// one of them resumes on the other without logging in again, and nothing
// is lost or applied twice.
func TestGatewayKill9PlayersResumeElsewhere(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	gw1, tcp1, ws1 := c.gateway("gw1")
	_, tcp2, ws2 := c.gateway("gw2")
	// Everyone starts on gw1 (gw2 second in their list).
	w := newPlayers(t, c, 60, [][]string{{tcp1, ws1, tcp2, ws2}})
	for _, p := range w.players {
		if g := p.c.Gateway(); g != tcp1 && g != ws1 {
			t.Fatalf("player %s on %s", p.id, g)
		}
	}
	stop := w.playing(50 * time.Millisecond)
	w.progress(5)
	killed := time.Now()
	gw1.signal(syscall.SIGKILL)
	_ = gw1.wait(5 * time.Second)
	poll.Until(t, 20*time.Second, func() error {
		for _, p := range w.players {
			if p.c.Stats().Resumes == 0 {
				return fmt.Errorf("player %s has not resumed", p.id)
			}
		}
		return nil
	})
	t.Logf("every player resumed %s after the kill", time.Since(killed).Round(time.Millisecond))
	w.progress(5) // on gw2
	stop()
	for _, p := range w.players {
		if g := p.c.Gateway(); g != tcp2 && g != ws2 {
			t.Errorf("player %s is on %s after gw1 died", p.id, g)
		}
	}
	w.check(true)
}

// A flood of requests over the rate limit is refused (rate_limited) and,
// past the flood limit, closes that client alone; a client that does not
// read is cut alone (slow_consumer); other players keep playing.
func TestGatewayFloodAndWindow(t *testing.T) {
	// A token every 200 ms: 20 refusals in a row take a few milliseconds.
	c := newCluster(t, "--gateway.rate", "5", "--gateway.burst", "5", "--gateway.flood-limit", "20")
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 2, [][]string{{tcp, ws}})
	sec := w.sec
	tok, _ := token.IssueLogin(sec, w.players[0].id+"x", time.Now().Add(time.Hour))
	nc, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var b []byte
	b, _ = gwproto.AppendMsg(b, gwproto.TypeHello, 0, 0, gwproto.Hello{Version: 1})
	b, _ = gwproto.AppendMsg(b, gwproto.TypeLogin, 0, 0, gwproto.Login{Token: tok})
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	r := gwproto.NewReader(nc, 1<<20)
	for {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == gwproto.TypeSession {
			break
		}
	}
	// 200 requests at once: the burst passes, the rest are refused, and
	// past the flood limit the gateway closes this client.
	b = b[:0]
	for i := 1; i <= 200; i++ {
		b = gwproto.AppendFrame(b, gwproto.Frame{Type: gwproto.TypeRequest, ID: uint64(i), Body: []byte(`{"op":"move","x":3,"y":3}`)})
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	codes := map[gwproto.Code]int{}
	var closeCode gwproto.Code
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := r.Next()
		if err != nil {
			break
		}
		if f.Type == gwproto.TypeReply {
			codes[f.Code]++
		}
		if f.Type == gwproto.TypeClose {
			closeCode = f.Code
			break
		}
	}
	if closeCode != gwproto.CodeFlood || codes[gwproto.CodeRateLimited] < 20 {
		t.Fatalf("flood: replies %v, close %s", codes, closeCode)
	}
	// The other players did not notice.
	for _, p := range w.players {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rep, err := p.c.Request(ctx, map[string]any{"op": "move", "x": 4, "y": 4})
		cancel()
		if err != nil || !rep.OK() {
			t.Fatalf("player %s after the flood: %v %v", p.id, err, rep.Err())
		}
	}
}

// A second login of the same player replaces the first connection: the
// old one is told why and closed, the new one plays.
func TestGatewaySecondLoginReplacesFirst(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 1, [][]string{{tcp, ws}})
	p := w.players[0]
	tok := strings.TrimSpace(c.respawn("token", "issue", p.id, "--ttl", "10m"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	second, err := client.Dial(ctx, client.Options{Gateways: []string{ws}, Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	select {
	case <-p.c.Done():
	case <-ctx.Done():
		t.Fatal("the first connection was not closed")
	}
	if !errors.Is(p.c.Err(), client.ErrReplaced) {
		t.Fatalf("first client ended with %v", p.c.Err())
	}
	rep, err := second.Request(ctx, map[string]any{"op": "move", "x": 5, "y": 6})
	if err != nil || !rep.OK() {
		t.Fatalf("second client: %v %v", err, rep.Err())
	}
	if !strings.Contains(string(rep.Body), `"x":5`) {
		t.Fatalf("reply %s", rep.Body)
	}
}

// LOGOUT takes the player out of the scene at once; a client that just
// disappears keeps its player in the scene for the session TTL, then the
// player is saved and taken out too.
func TestGatewayLogoutAndSessionTTL(t *testing.T) {
	c := newCluster(t, "--gateway.session-ttl", "1s")
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 2, [][]string{{tcp, ws}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range w.players {
		rep, err := p.c.Request(ctx, map[string]any{"op": "move", "x": 7, "y": 8})
		if err != nil || !rep.OK() {
			t.Fatalf("player %s: %v %v", p.id, err, rep.Err())
		}
	}
	leaver, dropper := w.players[0], w.players[1]
	start := time.Now()
	if err := leaver.c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	gone := func(id string) error {
		in, err := c.where(id, "town", "forest")
		if err != nil {
			return err
		}
		if len(in) > 0 {
			return fmt.Errorf("player %s still in %v", id, keys(in))
		}
		p, err := c.showPlayer(id)
		if err != nil {
			return err
		}
		if p.Online {
			return fmt.Errorf("player %s still online in datasvr", id)
		}
		return nil
	}
	poll.Until(t, 10*time.Second, func() error { return gone(leaver.id) })
	t.Logf("logout: out of the scene after %s", time.Since(start).Round(time.Millisecond))
	dropper.c.Close()
	start = time.Now()
	if in, _ := c.where(dropper.id, "town", "forest"); len(in) != 1 {
		t.Fatalf("a dropped player left at once: %v", keys(in))
	}
	poll.Until(t, 15*time.Second, func() error { return gone(dropper.id) })
	if d := time.Since(start); d < time.Second {
		t.Fatalf("dropped player left after %s, before the 1s session TTL", d)
	}
	t.Logf("drop: out of the scene after %s (TTL 1s + 2s grace)", time.Since(start).Round(time.Millisecond))
	// What they hold was saved.
	for _, p := range w.players {
		sp, err := c.showPlayer(p.id)
		if err != nil {
			t.Fatal(err)
		}
		if sp.Gold != p.gold {
			t.Errorf("player %s: datasvr has %d gold, want %d", p.id, sp.Gold, p.gold)
		}
	}
}

// Pushes: a chat line reaches everyone in the scene, a move reaches the
// players near the mover in the next positions batch, and not the ones
// far away.
func TestGatewayPushes(t *testing.T) {
	c := newCluster(t, "--gateway.view-radius", "5")
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 3, [][]string{{tcp, ws}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// All three in town (players 0 and 2; player 1 went to the forest):
	// bring player 1 back.
	mover, near := w.players[0], w.players[2]
	other := w.players[1]
	if rep, err := other.c.Request(ctx, map[string]any{"op": "travel", "to": "town"}); err != nil || !rep.OK() {
		t.Fatalf("travel back: %v %v", err, rep.Err())
	}
	far := other
	for _, m := range []struct {
		p    *gamer
		x, y int
	}{{near, 20, 20}, {far, 1, 1}, {mover, 22, 22}} {
		poll.Until(t, 10*time.Second, func() error {
			rep, err := m.p.c.Request(ctx, map[string]any{"op": "move", "x": m.x, "y": m.y})
			if err != nil {
				return err
			}
			return rep.Err() // a travelling player may not have arrived yet
		})
	}
	saw := func(p *gamer, within time.Duration, want func(client.Push) bool) error {
		deadline := time.After(within)
		for {
			select {
			case ps := <-p.c.Pushes():
				if want(ps) {
					return nil
				}
			case <-deadline:
				return fmt.Errorf("player %s did not get the push", p.id)
			}
		}
	}
	moved := func(ps client.Push) bool {
		if ps.Kind != "positions" {
			return false
		}
		var b gwproto.Positions
		_ = json.Unmarshal(ps.Data, &b)
		for _, pl := range b.Players {
			if pl.ID == mover.id && pl.X == 22 && pl.Y == 22 {
				return true
			}
		}
		return false
	}
	if err := saw(near, 5*time.Second, moved); err != nil {
		t.Fatal(err)
	}
	// Batches go out every 100 ms: a second is ten of them.
	if err := saw(far, time.Second, moved); err == nil {
		t.Fatalf("player %s at (1,1) saw a move at (22,22) with view radius 5", far.id)
	}
	if rep, err := mover.c.Request(ctx, map[string]any{"op": "chat", "text": "hello town"}); err != nil || !rep.OK() {
		t.Fatalf("chat: %v %v", err, rep.Err())
	}
	for _, p := range []*gamer{near, far} {
		if err := saw(p, 5*time.Second, func(ps client.Push) bool {
			return ps.Kind == "chat" && ps.Scene == "town" && strings.Contains(string(ps.Data), "hello town")
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// A scene process that does not come back within the hold time: its
// requests are answered `unavailable` (retryable) and the client stays
// connected; once the scene is back the same client plays on.
func TestGatewayHoldExpiresWithRetryableError(t *testing.T) {
	c := newCluster(t, "--gateway.hold-timeout", "300ms")
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 1, [][]string{{tcp, ws}})
	p := w.players[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok := strings.TrimSpace(c.respawn("token", "issue", p.id))
	p.c.Close()
	cl, err := client.Dial(ctx, client.Options{Gateways: []string{tcp}, Token: tok, NoRetry: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	scene := cl.Session().Scene
	row, err := c.scene(scene)
	if err != nil {
		t.Fatal(err)
	}
	// Stopped, not killed: the manager replaces it after its heartbeat
	// timeout (1 s), longer than the 300 ms hold.
	c.respawn("scene", "kill", scene, "--signal", "STOP")
	poll.Until(t, 5*time.Second, func() error {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", row.PID))
		if err != nil {
			return err
		}
		// The state follows the command name in parentheses.
		if f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:])); len(f) == 0 || f[0] != "T" {
			return fmt.Errorf("scene process %d not stopped yet", row.PID)
		}
		return nil
	})
	rep, err := cl.Request(ctx, map[string]any{"op": "move", "x": 2, "y": 3})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Code != gwproto.CodeUnavailable || !rep.Code.Retryable() {
		t.Fatalf("during the outage: %s %s, want unavailable", rep.Code, rep.Error)
	}
	atLeast(t, c.ports["gateway.admin"], "respawn_gateway_hold_timeouts_total", 1)
	c.waitReplaced(row, 20*time.Second)
	poll.Until(t, 10*time.Second, func() error {
		rep, err := cl.Request(ctx, map[string]any{"op": "move", "x": 4, "y": 5})
		if err != nil {
			return err
		}
		return rep.Err()
	})
	if st := cl.Stats(); st.Disconnects != 0 || st.Lost != 0 {
		t.Fatalf("the client was disconnected: %+v", st)
	}
}

// twoGatewayConfig writes configs/world.yaml with two gateway instances,
// gw1 and gw2, on free ports into c's data directory, and returns their
// listen, websocket and admin addresses and the file's path.
func twoGatewayConfig(t *testing.T, c *cluster) ([2][3]string, string) {
	t.Helper()
	gw := [2][3]string{}
	for i := range gw {
		gw[i] = [3]string{freeport.Addr(t), freeport.Addr(t), freeport.Addr(t)}
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "configs", "world.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfgText := strings.Replace(string(raw), "  instances: []\n", fmt.Sprintf("  instances:\n"+
		"    - {name: gw1, listen: %q, websocket: %q, admin: %q}\n"+
		"    - {name: gw2, listen: %q, websocket: %q, admin: %q}\n",
		gw[0][0], gw[0][1], gw[0][2], gw[1][0], gw[1][1], gw[1][2]), 1)
	if cfgText == string(raw) {
		t.Fatal("configs/world.yaml has no `instances: []` line to replace")
	}
	path := filepath.Join(c.dataDir, "world.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	return gw, path
}

// upWithTwoGateways runs `respawn up` on c with gw1 and gw2
// (twoGatewayConfig) and waits until both gateways and every scene run. It
// returns the gateways' addresses, the `respawn up` process and gw1's pid.
func upWithTwoGateways(t *testing.T, c *cluster) ([2][3]string, *proc, int) {
	t.Helper()
	gw, path := twoGatewayConfig(t, c)
	c.extra = append(c.extra, "--config", path)
	up := c.start("respawn", "up")
	pid1 := daemonPID(t, c, "gateway/gw1")
	daemonPID(t, c, "gateway/gw2")
	c.waitRunning(30 * time.Second)
	return gw, up, pid1
}

// Two gateways listed in the config: `respawn up` starts both, `respawn
// status` shows both, and a gateway killed with SIGKILL is restarted; a
// client plays through either.
func TestGatewayInstancesUnderUp(t *testing.T) {
	c := newCluster(t)
	gw, _, pid1 := upWithTwoGateways(t, c)
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 15*time.Second, func() error {
		if pid := daemonPID(t, c, "gateway/gw1"); pid == pid1 {
			return fmt.Errorf("gw1 still pid %d", pid)
		}
		return nil
	})
	w := newPlayers(t, c, 2, [][]string{{gw[0][0], "ws://" + gw[0][1] + "/"}, {gw[1][0], "ws://" + gw[1][1] + "/"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range w.players {
		if rep, err := p.c.Request(ctx, map[string]any{"op": "move", "x": 3, "y": 3}); err != nil || !rep.OK() {
			t.Fatalf("player %s on %s: %v %v", p.id, p.c.Gateway(), err, rep.Err())
		}
	}
}

// Every kind of bad input against the real gateway closes that one
// connection with its code, while a player on the same gateway keeps
// playing without noticing.
func TestGatewayBadInputClosesOnlyThatClient(t *testing.T) {
	c := newCluster(t, "--gateway.login-timeout", "500ms")
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 1, [][]string{{tcp, ws}})
	stop := w.playing(20 * time.Millisecond)
	hello, _ := gwproto.AppendMsg(nil, gwproto.TypeHello, 0, 0, gwproto.Hello{Version: 1})
	login := func(tok string) []byte {
		b, _ := gwproto.AppendMsg(append([]byte(nil), hello...), gwproto.TypeLogin, 0, 0, gwproto.Login{Token: tok})
		return b
	}
	other, _ := secret.New([]byte("not the cluster secret, 32 bytes"))
	forged, _ := token.IssueLogin(other, w.players[0].id, time.Now().Add(time.Hour))
	expired, _ := token.IssueLogin(w.sec, w.players[0].id, time.Now().Add(-time.Second))
	oversize := gwproto.AppendFrame(nil, gwproto.Frame{Type: gwproto.TypeHello, Body: make([]byte, 70000)})
	for _, bc := range []struct {
		name string
		send []byte
		half bool
		want gwproto.Code
	}{
		{"garbage", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello to a game port"), false, gwproto.CodeFrameTooLarge},
		{"oversize", oversize, false, gwproto.CodeFrameTooLarge},
		{"truncated", hello[:10], true, gwproto.CodeBadFrame},
		{"unknown type", append(append([]byte(nil), hello...), gwproto.AppendFrame(nil, gwproto.Frame{Type: 200})...), false, gwproto.CodeUnknownType},
		{"forged token", login(forged), false, gwproto.CodeBadToken},
		{"expired token", login(expired), false, gwproto.CodeTokenExpired},
		{"malformed token", login("v1.x"), false, gwproto.CodeBadToken},
		{"silent client", nil, false, gwproto.CodeHandshakeTimeout},
	} {
		nc, err := net.Dial("tcp", tcp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(bc.send); err != nil {
			t.Fatal(err)
		}
		if bc.half {
			_ = nc.(*net.TCPConn).CloseWrite()
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := gwproto.NewReader(nc, 1<<20)
		var got gwproto.Code = 9999
		for {
			f, err := r.Next()
			if err != nil {
				break
			}
			if f.Type == gwproto.TypeClose {
				got = f.Code
				break
			}
		}
		nc.Close()
		if got != bc.want {
			t.Errorf("%s: CLOSE %s, want %s", bc.name, got, bc.want)
		}
	}
	w.progress(3)
	stop()
	w.check(false)
}

// A dungeon room is routed like a scene: the player enters it, fights in
// it, and keeps fighting in it across a kill -9 of the process hosting it.
func TestGatewayDungeonRoomAcrossKill9(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 2, [][]string{{tcp, ws}})
	p := w.players[1] // in the forest
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := p.c.Request(ctx, map[string]any{"op": "dungeon"})
	if err != nil || !rep.OK() {
		t.Fatalf("dungeon: %v %v", err, rep.Err())
	}
	var d game.DungeonResult
	if err := json.Unmarshal(rep.Body, &d); err != nil || !strings.HasPrefix(d.RoomID, "forest/") {
		t.Fatalf("dungeon reply %s", rep.Body)
	}
	attack := func() {
		t.Helper()
		var seen []string
		poll.Until(t, 10*time.Second, func() error {
			rep, err := p.c.Request(ctx, map[string]any{"op": "attack", "monster": "kobold-1"})
			if err != nil {
				return err
			}
			if rep.Reason == game.ErrMonsterDead {
				return nil // the room's kobold is dead: we are in the room
			}
			if err := rep.Err(); err != nil {
				if len(seen) < 5 {
					seen = append(seen, err.Error())
				}
				return fmt.Errorf("%w (first errors: %q)", err, seen)
			}
			return nil
		})
	}
	attack()
	c.killScene("forest")
	attack()
	var v game.View
	out := c.respawn("scene", "inspect", "forest", "--room", d.RoomID, "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	found := false
	for _, pv := range v.Players {
		found = found || pv.ID == p.id
	}
	if !found {
		t.Fatalf("player %s not in room %s after the kill", p.id, d.RoomID)
	}
	if st := p.c.Stats(); st.Disconnects+st.Lost+st.Relogins != 0 {
		t.Fatalf("client stats %+v", st)
	}
}

// A travel is applied in town and town's process dies (crash point
// scene.travel-applied: after the log, before the reply and the transfer
// leave) before the gateway hears the reply. After the failover the
// gateway follows the player to the forest and resends the travel there:
// the client gets the travel's own reply, once, and no error.
func TestGatewayTravelAcrossSourceKill9(t *testing.T) {
	c, w, town := townPlayerAtCrashPoint(t, crashpoint.SceneTravelApplied)
	p := w.players[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	op := map[string]any{"op": "travel", "to": "forest"}
	rep, err := p.c.Request(ctx, op)
	if err != nil || !rep.OK() {
		t.Fatalf("travel across the kill: %v %v", err, rep.Err())
	}
	var tr game.TravelResult
	if err := json.Unmarshal(rep.Body, &tr); err != nil || tr.To != "forest" || !strings.HasPrefix(tr.TransferID, "town/") {
		t.Fatalf("travel reply %s (%v)", rep.Body, err)
	}
	p.sent.Add(1)
	p.answered.Add(1)
	p.apply(op, rep)
	// The crash point fired: town runs in a new process.
	c.waitReplaced(town, 20*time.Second)
	// The player plays on in the forest.
	mv := map[string]any{"op": "move", "x": 3, "y": 4}
	rep, err = p.c.Request(ctx, mv)
	if err != nil || !rep.OK() {
		t.Fatalf("move in the forest: %v %v", err, rep.Err())
	}
	p.sent.Add(1)
	p.answered.Add(1)
	p.apply(mv, rep)
	w.check(false)
}

// A logout while the data server is stalled for longer than a scene waits
// for a leave's final save: the first Leave times out with the player out
// of the scene and the save unanswered; the gateway's retry finds the
// leave kept by the scene and finishes it once datasvr answers again. The
// player ends saved and offline. (Before, the retry found the player gone
// and answered "nothing to do": the lease was never given back and the
// player stayed online at datasvr; a 10-minute chaos run showed 56.)
func TestLogoutAcrossADatasvrStallFinishes(t *testing.T) {
	c := newCluster(t)
	ds := c.startDatasvr()
	c.start("worldmgr")
	c.waitRunning(20 * time.Second)
	_, tcp, _ := c.gateway("gateway")
	w := newPlayers(t, c, 1, [][]string{{tcp}})
	p := w.players[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := p.c.Request(ctx, map[string]any{"op": "move", "x": 9, "y": 4})
	if err != nil || !rep.OK() {
		t.Fatalf("move: %v %v", err, rep.Err())
	}
	ds.signal(syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			ds.signal(syscall.SIGCONT)
		}
	}()
	if err := p.c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	// Past the scene's own wait for the save (10 s): its first Leave has
	// given up, and the gateway retries.
	poll.Until(t, 20*time.Second, func() error {
		in, err := c.where(p.id, "town", "forest")
		if err != nil {
			return err
		}
		if len(in) > 0 {
			return fmt.Errorf("player %s still in %v", p.id, keys(in))
		}
		return nil
	})
	// The stall lasts until the scene's own wait for the final save (10 s)
	// has given up and kept the leave for the gateway's retry.
	scenes := filepath.Join(c.dataDir, "logs")
	poll.Until(t, 30*time.Second, func() error {
		for _, name := range []string{"scene-town.log", "scene-forest.log"} {
			raw, _ := os.ReadFile(filepath.Join(scenes, name))
			for _, line := range strings.Split(string(raw), "\n") {
				if strings.Contains(line, "kept for the gateway's retry") && strings.Contains(line, p.id) {
					return nil
				}
			}
		}
		return fmt.Errorf("no scene has kept player %s's unfinished leave yet", p.id)
	})
	ds.signal(syscall.SIGCONT)
	stopped = false
	poll.Until(t, 20*time.Second, func() error {
		sp, err := c.showPlayer(p.id)
		if err != nil {
			return err
		}
		if sp.Online {
			return fmt.Errorf("player %s still online in datasvr", p.id)
		}
		if sp.Gold != p.gold {
			return fmt.Errorf("player %s: datasvr has %d gold, want %d", p.id, sp.Gold, p.gold)
		}
		return nil
	})
}
