package scene

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/secret"
)

// linkFixture is a real scene host (log, loops, game) serving the gateway
// link; only the data server and the world manager are absent.
type linkFixture struct {
	h   *host
	p   *Process
	sec *secret.Secret
	ls  *linkServer
}

func newLinkFixture(t testing.TB) *linkFixture {
	t.Helper()
	h := testHostStopped(t, t.TempDir())
	f, cancel, done := startLink(t, h)
	t.Cleanup(func() {
		f.ls.close()
		<-done
		h.stopAll(true, true)
		cancel()
	})
	return f
}

// startLink starts h's scenes and a link server for them (as process
// forest, epoch 7) serving until done closes; the caller stops both and
// calls cancel.
func startLink(t testing.TB, h *host) (f *linkFixture, cancel context.CancelFunc, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	spec, _ := h.cfg.Process("forest")
	p := &Process{opt: Options{Config: h.cfg, Epoch: 7}, cfg: h.cfg, log: h.log, spec: spec, host: h, ctx: ctx, cancel: cancel}
	sec, err := secret.New([]byte("a test secret of enough bytes"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ls, err := newLinkServer(p, sec)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p.link = ls
	h.push = ls.push
	h.startAll()
	served := make(chan struct{})
	go func() { defer close(served); ls.serve() }()
	return &linkFixture{h: h, p: p, sec: sec, ls: ls}, cancel, served
}

func (f *linkFixture) dial(t testing.TB) *scenelink.Client {
	t.Helper()
	c, err := scenelink.Dial(t.Context(), scenelink.Options{Addr: f.ls.Addr(), Secret: f.sec, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (f *linkFixture) enter(t testing.TB, id string, gold int64) {
	t.Helper()
	l, _ := f.h.loop("forest")
	if _, err := l.submit(t.Context(), game.Enter{Player: player.Data{ID: id, Name: "N" + id, Gold: gold}, Version: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestLinkJoinRequestResend(t *testing.T) {
	f := newLinkFixture(t)
	c := f.dial(t)
	if c.Process() != "forest" || c.Epoch() != 7 {
		t.Fatalf("talking to %s epoch %d", c.Process(), c.Epoch())
	}
	ctx := t.Context()
	f.enter(t, "p1", 50)
	jr, err := c.Join(ctx, "forest", "p1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	var st game.PlayerView
	if err := json.Unmarshal(jr.State, &st); err != nil || st.ID != "p1" || st.Gold != 50 || jr.LastSeq != 0 || jr.Moved != "" {
		t.Fatalf("join: %+v %s (%v)", jr, jr.State, err)
	}
	req := scenelink.Req{Scene: "forest", Player: "p1", Session: "s1", Seq: 1, Op: []byte(`{"op":"move","x":7,"y":8}`)}
	r1, err := c.Request(ctx, req)
	if err != nil || r1.Code != "" || r1.Resent || r1.Seq != 1 || string(r1.Body) != `{"x":7,"y":8}` {
		t.Fatalf("request: %+v %v", r1, err)
	}
	again, err := c.Request(ctx, req)
	if err != nil || !again.Resent || string(again.Body) != string(r1.Body) {
		t.Fatalf("resend: %+v %v", again, err)
	}
	other := req
	other.Op = []byte(`{"op":"move","x":1,"y":1}`)
	if r, err := c.Request(ctx, other); err != nil || r.Code != game.ErrSeqReused {
		t.Fatalf("same seq, other body: %+v %v", r, err)
	}
	// A resume tells what was applied.
	if jr, err := c.Join(ctx, "forest", "p1", "s1"); err != nil || jr.LastSeq != 1 {
		t.Fatalf("resume: %+v %v", jr, err)
	}
	// Another player's session is refused, never answered with p1's reply.
	f.enter(t, "p2", 0)
	if _, err := c.Join(ctx, "forest", "p2", "s2"); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Request(ctx, scenelink.Req{Scene: "forest", Player: "p2", Session: "s1", Seq: 1, Op: req.Op}); err != nil || r.Code != game.ErrSessionReplaced || r.Resent {
		t.Fatalf("p1's session used by p2: %+v %v", r, err)
	}
	// Bad input gets clear errors, and the connection stays.
	if _, err := c.Request(ctx, scenelink.Req{Scene: "nowhere", Player: "p1", Session: "s1", Seq: 2, Op: req.Op}); !errors.Is(err, scenelink.ErrNoScene) {
		t.Fatalf("unknown scene: %v", err)
	}
	if _, err := c.Request(ctx, scenelink.Req{Scene: "forest", Player: "p1", Session: "s1", Seq: 2, Op: []byte(`{"op":`)}); !errors.Is(err, scenelink.ErrBadRequest) {
		t.Fatalf("bad op: %v", err)
	}
	if r, err := c.Request(ctx, scenelink.Req{Scene: "forest", Player: "ghost", Session: "sg", Seq: 1, Op: req.Op}); err != nil || r.Code != game.ErrNotInScene {
		t.Fatalf("absent player: %+v %v", r, err)
	}
	// A stale leave changes nothing; the current session's leave removes.
	if err := c.Leave(ctx, "forest", "p1", "old-session"); err != nil {
		t.Fatal(err)
	}
	l, _ := f.h.loop("forest")
	present := func(id string) (ok bool) {
		_ = l.read(t.Context(), func(st *game.Scene) { _, _, ok = st.Player(id) })
		return ok
	}
	if !present("p1") {
		t.Fatal("a stale leave removed the player")
	}
	if err := c.Leave(ctx, "forest", "p1", "s1"); err != nil || present("p1") {
		t.Fatalf("leave: %v, present %v", err, present("p1"))
	}
}

// Many players pipelining over the shared connections: every request is
// answered once, with its own seq, in order per player.
func TestLinkPipelinedPlayers(t *testing.T) {
	f := newLinkFixture(t)
	c := f.dial(t)
	const players, perPlayer = 40, 30
	for i := 0; i < players; i++ {
		id := fmt.Sprintf("p%02d", i)
		f.enter(t, id, 0)
		if _, err := c.Join(t.Context(), "forest", id, "s-"+id); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, players)
	for i := 0; i < players; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("p%02d", i)
			// A window of requests in flight at once, sent in seq order.
			type res struct {
				r   scenelink.Reply
				err error
			}
			out := make([]chan res, perPlayer)
			sem := make(chan struct{}, game.SessionWindow)
			for s := range out {
				out[s] = make(chan res, 1)
				sem <- struct{}{}
				c.Go(t.Context(), scenelink.Req{Scene: "forest", Player: id, Session: "s-" + id, Seq: uint64(s + 1),
					Op: []byte(fmt.Sprintf(`{"op":"move","x":%d,"y":%d}`, s%50, i))}, func(r scenelink.Reply, err error) {
					out[s] <- res{r, err}
					<-sem
				})
			}
			for s := range out {
				r := <-out[s]
				want := fmt.Sprintf(`{"x":%d,"y":%d}`, s%50, i)
				if r.err != nil || r.r.Seq != uint64(s+1) || r.r.Code != "" || string(r.r.Body) != want {
					errs <- fmt.Errorf("%s seq %d: %+v %s %v, want %s", id, s+1, r.r, r.r.Body, r.err, want)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestLinkWrongSecretRefused(t *testing.T) {
	f := newLinkFixture(t)
	wrong, _ := secret.New([]byte("another secret, also long enough"))
	_, err := scenelink.Dial(t.Context(), scenelink.Options{Addr: f.ls.Addr(), Secret: wrong})
	if !errors.Is(err, scenelink.ErrAuth) {
		t.Fatalf("dial with the wrong secret: %v, want ErrAuth", err)
	}
	// A gateway that cannot prove itself is refused by the scene, too.
	nc, r := rawHandshake(t, f, func(cn, sn []byte) []byte { return scenelink.GatewayProof(wrong, cn, sn) })
	defer nc.Close()
	typ, body, _, err := scenelink.ReadFrame(r, 1<<20, nil)
	var m scenelink.CloseMsg
	if err != nil || typ != scenelink.TClose || m.Decode(body) != nil || m.Reason != "authentication failed" {
		t.Fatalf("after a wrong proof: type %d %q %v", typ, m.Reason, err)
	}
}

// rawHandshake does the client side of the handshake by hand with proof.
func rawHandshake(t *testing.T, f *linkFixture, proof func(cn, sn []byte) []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", f.ls.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	cn, _ := scenelink.NewNonce()
	var e scenelink.Encoder
	(&scenelink.ClientHello{Version: scenelink.Version, Nonce: cn, ClientID: "raw"}).Append(&e)
	if _, err := nc.Write(e.B); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(nc)
	typ, body, _, err := scenelink.ReadFrame(r, 1<<20, nil)
	var sh scenelink.ServerHello
	if err != nil || typ != scenelink.TServerHello || sh.Decode(body) != nil {
		t.Fatalf("server hello: %d %v", typ, err)
	}
	e.B = e.B[:0]
	(&scenelink.ClientProof{MAC: proof(cn, sh.Nonce)}).Append(&e)
	if _, err := nc.Write(e.B); err != nil {
		t.Fatal(err)
	}
	return nc, r
}

func TestLinkGarbageClosesOnlyThatConnection(t *testing.T) {
	f := newLinkFixture(t)
	good := f.dial(t)
	f.enter(t, "p1", 0)
	if _, err := good.Join(t.Context(), "forest", "p1", "s1"); err != nil {
		t.Fatal(err)
	}
	for name, garbage := range map[string][]byte{
		"unknown type":   {0, 0, 0, 1, 99},
		"oversize frame": {0x7f, 0xff, 0xff, 0xff, scenelink.TRequest},
		"truncated body": {0, 0, 0, 3, scenelink.TRequest, 0x80, 0x80},
		"empty frame":    {0, 0, 0, 0},
	} {
		nc, r := rawHandshake(t, f, func(cn, sn []byte) []byte { return scenelink.GatewayProof(f.sec, cn, sn) })
		typ, _, _, err := scenelink.ReadFrame(r, 1<<20, nil)
		if err != nil || typ != scenelink.TWelcome {
			t.Fatalf("%s: welcome: %d %v", name, typ, err)
		}
		if _, err := nc.Write(garbage); err != nil {
			t.Fatal(err)
		}
		// The scene says why and closes.
		var closed bool
		for !closed {
			typ, body, _, err := scenelink.ReadFrame(r, 1<<20, nil)
			if err != nil {
				closed = true
				break
			}
			if typ == scenelink.TClose {
				var m scenelink.CloseMsg
				_ = m.Decode(body)
				t.Logf("%s: closed: %s", name, m.Reason)
			}
		}
		nc.Close()
		// The other gateway's connection is untouched.
		if r, err := good.Request(t.Context(), scenelink.Req{Scene: "forest", Player: "p1", Session: "s1", Seq: uint64(len(name)), Op: []byte(`{"op":"chat","text":"still here"}`)}); err != nil || (r.Code != "" && r.Code != game.ErrSeqTooOld) {
			t.Fatalf("%s: the good connection: %+v %v", name, r, err)
		}
	}
}

func TestLinkPushes(t *testing.T) {
	f := newLinkFixture(t)
	c := f.dial(t)
	f.enter(t, "p1", 0)
	f.enter(t, "p2", 0)
	for _, p := range []string{"p1", "p2"} {
		if _, err := c.Join(t.Context(), "forest", p, "s-"+p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Request(t.Context(), scenelink.Req{Scene: "forest", Player: "p1", Session: "s-p1", Seq: 1, Op: []byte(`{"op":"chat","text":"hello"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Request(t.Context(), scenelink.Req{Scene: "forest", Player: "p2", Session: "s-p2", Seq: 1,
		Op: []byte(`{"op":"trade_offer","to":"p1","want":[{"item":"gold","count":1}]}`)}); err != nil {
		t.Fatal(err)
	}
	// A move: its reply and its position push (both written by hand,
	// jsonfast.go) read as the JSON they always were.
	rep, err := c.Request(t.Context(), scenelink.Req{Scene: "forest", Player: "p1", Session: "s-p1", Seq: 2, Op: []byte(`{"op":"move","x":7,"y":9}`)})
	if err != nil {
		t.Fatal(err)
	}
	if string(rep.Body) != `{"x":7,"y":9}` {
		t.Fatalf("move reply body %s", rep.Body)
	}
	want := map[string]bool{"chat": false, "notify": false, "position": false}
	deadline := time.After(5 * time.Second)
	for !want["chat"] || !want["notify"] || !want["position"] {
		select {
		case p := <-c.Pushes():
			switch p.Kind {
			case "position":
				if p.Scene != "forest" || p.Player != "" || string(p.Body) != `{"kind":"player","id":"p1","x":7,"y":9}` {
					t.Fatalf("position push: %+v %s", p, p.Body)
				}
				want["position"] = true
			case "chat":
				if p.Scene != "forest" || p.Player != "" || string(p.Body) != `{"from":"p1","name":"Np1","text":"hello"}` {
					t.Fatalf("chat push: %+v %s", p, p.Body)
				}
				want["chat"] = true
			case "notify":
				if p.Player != "p1" {
					t.Fatalf("notify push for %q, want p1", p.Player)
				}
				want["notify"] = true
			}
		case <-deadline:
			t.Fatalf("pushes missing: %v", want)
		}
	}
}

// When the scene process goes, waiting calls fail with ErrUnavailable and
// Done closes.
func TestLinkLostConnection(t *testing.T) {
	f := newLinkFixture(t)
	c := f.dial(t)
	f.ls.close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the scene closed every connection")
	}
	if _, err := c.Request(t.Context(), scenelink.Req{Scene: "forest", Player: "p1", Session: "s1", Seq: 1, Op: []byte(`{"op":"chat","text":"x"}`)}); !errors.Is(err, scenelink.ErrUnavailable) {
		t.Fatalf("after the loss: %v", err)
	}
	if !errors.Is(c.Err(), scenelink.ErrUnavailable) {
		t.Fatalf("Err: %v", c.Err())
	}
}

// BenchmarkLinkRoundTrip: closed-loop round trips through the link into a
// real scene loop (logged to the shared-memory log, applied, answered),
// clients on the same cores: each player sends a move as soon as its
// previous one is answered.
func BenchmarkLinkRoundTrip(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("players=%d", n), func(b *testing.B) { benchLink(b, n) })
	}
}

func benchLink(b *testing.B, players int) {
	f := newLinkFixture(b)
	c := f.dial(b)
	for i := 0; i < players; i++ {
		id := fmt.Sprintf("p%04d", i)
		f.enter(b, id, 0)
		if _, err := c.Join(b.Context(), "forest", id, "s-"+id); err != nil {
			b.Fatal(err)
		}
	}
	ops := make([][]byte, 50)
	for i := range ops {
		ops[i] = []byte(fmt.Sprintf(`{"op":"move","x":%d,"y":7}`, i))
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/players + 1
	for i := 0; i < players; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("p%04d", i)
			for s := 1; s <= per; s++ {
				r, err := c.Request(b.Context(), scenelink.Req{Scene: "forest", Player: id, Session: "s-" + id, Seq: uint64(s), Op: ops[s%len(ops)]})
				if err != nil || r.Code != "" {
					b.Errorf("%s seq %d: %+v %v", id, s, r, err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	b.ReportMetric(float64(per*players)/b.Elapsed().Seconds(), "roundtrips/s")
}

// Losing one connection of a client ends the others too, so no player's
// requests move to another connection out of order.
func TestLinkOneConnectionLostEndsTheClient(t *testing.T) {
	f := newLinkFixture(t)
	c := f.dial(t)
	f.ls.mu.Lock()
	var one *linkConn
	for lc := range f.ls.conns {
		one = lc
		break
	}
	n := len(f.ls.conns)
	f.ls.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d connections, want the default 2", n)
	}
	one.shut("test: drop one")
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after one of two connections was lost")
	}
	poll.Until(t, 5*time.Second, func() error {
		f.ls.mu.Lock()
		defer f.ls.mu.Unlock()
		if len(f.ls.conns) != 0 {
			return fmt.Errorf("%d connections left at the scene", len(f.ls.conns))
		}
		return nil
	})
}

// A request that moved the player (a dungeon entry, a travel) and whose
// reply was lost is resent, as the gateway does, to where the player went:
// the destination answers it with the source's reply, Resent, and again
// after the process dies and its scenes come back from the log alone.
func TestLinkTravelResendAtDestination(t *testing.T) {
	dir := t.TempDir()
	h := testHostStopped(t, dir)
	f, cancel, served := startLink(t, h)
	defer cancel()
	ctx, ls := f.p.ctx, f.ls
	c := f.dial(t)

	f.enter(t, "p1", 50)
	if _, err := c.Join(ctx, "forest", "p1", "s1"); err != nil {
		t.Fatal(err)
	}
	req := scenelink.Req{Scene: "forest", Player: "p1", Session: "s1", Seq: 1, Op: []byte(`{"op":"dungeon"}`)}
	orig, err := c.Request(ctx, req)
	if err != nil || orig.Code != "" || orig.Resent {
		t.Fatalf("enter the dungeon: %+v %v", orig, err)
	}
	var dr game.DungeonResult
	if err := json.Unmarshal(orig.Body, &dr); err != nil || dr.RoomID == "" {
		t.Fatalf("dungeon reply %s: %v", orig.Body, err)
	}
	// The gateway's failover path: join the source, learn where the
	// player went, join there and resend the unanswered seq.
	var jr scenelink.JoinResult
	poll.Until(t, 5*time.Second, func() error {
		jr, err = c.Join(ctx, "forest", "p1", "s1")
		if err != nil || jr.Moved != dr.RoomID {
			return fmt.Errorf("join at the source: %+v %v", jr, err)
		}
		return nil
	})
	room := req
	room.Scene = dr.RoomID
	poll.Until(t, 5*time.Second, func() error {
		jr, err = c.Join(ctx, dr.RoomID, "p1", "s1")
		if err != nil || jr.Moved != "" || jr.LastSeq != 1 {
			return fmt.Errorf("join at the room: %+v %v", jr, err)
		}
		return nil
	})
	again, err := c.Request(ctx, room)
	if err != nil || again.Code != "" || !again.Resent || string(again.Body) != string(orig.Body) {
		t.Fatalf("resend at the room: %+v %v, want %s", again, err, orig.Body)
	}

	// Kill: no snapshot, the log alone carries both scenes.
	ls.close()
	<-served
	for _, l := range h.sortedLoops() {
		l.stop()
	}
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	h2 := reopenForest(t, h, dir)
	h2.startAll()
	defer h2.stopAll(true, true)
	l, ok := h2.loop(dr.RoomID)
	if !ok {
		t.Fatalf("room %s not restored", dr.RoomID)
	}
	effs, err := l.submit(t.Context(), game.Request{Session: "s1", Player: "p1", Seq: 1, Op: game.EnterDungeon{}})
	if err != nil || len(effs) != 1 {
		t.Fatalf("resend after the restart: %v %v", effs, err)
	}
	r, ok := effs[0].(game.Reply)
	if !ok || !r.Resent || r.Body != game.Result(dr) {
		t.Fatalf("resend after the restart: %+v, want %+v", effs[0], dr)
	}
}

// submitThen's function sees the state the event left, in the same turn of
// the loop (a join reads the player's view so), and does not run for an
// event that was refused.
func TestSubmitThen(t *testing.T) {
	f := newLinkFixture(t)
	l, _ := f.h.loop("forest")
	var gold int64
	var seen bool
	effs, err := l.submitThen(t.Context(), game.Enter{Player: player.Data{ID: "p1", Name: "N", Gold: 70}, Version: 1}, func(st *game.Scene, effs []game.Effect) {
		var pv game.PlayerView
		pv, seen = st.PlayerView("p1")
		gold = pv.Gold
	})
	if err != nil || !seen || gold != 70 {
		t.Fatalf("then saw the player %v with %d gold (effects %v, %v)", seen, gold, effs, err)
	}
	ran := false
	huge := strings.Repeat("x", 1<<17) // over the log's string limit: refused, not applied
	if _, err := l.submitThen(t.Context(), game.Attach{Player: "p1", Session: huge}, func(*game.Scene, []game.Effect) { ran = true }); err == nil || ran {
		t.Fatalf("an unloggable event: err %v, then ran %v", err, ran)
	}
}
