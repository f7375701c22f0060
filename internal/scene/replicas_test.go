package scene

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/replica"
)

// While a republish is out, updates are held and then published after it,
// in the order they were made; past the bound a loop waits for the
// republish rather than publish ahead of it.
func TestUpdatesHeldWhileRepublishing(t *testing.T) {
	r := &replicas{log: zaptest.NewLogger(t)}
	var mu sync.Mutex
	var out []string
	pub := func(s string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			out = append(out, s)
			return nil
		}
	}
	r.put(pub("before")) // nothing to hold for: out at once
	r.mu.Lock()
	r.holding, r.flushed = true, make(chan struct{})
	r.mu.Unlock()
	for i := range 3 {
		r.put(pub(fmt.Sprint("held", i)))
	}
	mu.Lock()
	if fmt.Sprint(out) != "[before]" {
		t.Fatalf("published while the republish is out: %v", out)
	}
	mu.Unlock()
	pub("reset")()
	r.release()
	r.put(pub("after"))
	mu.Lock()
	if fmt.Sprint(out) != "[before reset held0 held1 held2 after]" {
		t.Fatalf("order %v", out)
	}
	mu.Unlock()

	// Over the bound: the update waits for the republish.
	out = nil
	r.mu.Lock()
	r.holding, r.flushed = true, make(chan struct{})
	for range maxHeld {
		r.held = append(r.held, func() {})
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.put(pub("waited")); close(done) }()
	select {
	case <-done:
		t.Fatal("an update over the bound was published during the republish")
	case <-time.After(50 * time.Millisecond):
	}
	r.release()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting update was not published after the republish")
	}
	if fmt.Sprint(out) != "[waited]" {
		t.Fatalf("after the bound: %v", out)
	}
}

// Moves are not put in the (batched) position replica one by one: the
// loop keeps each player's latest position and puts it once a second,
// before a roster change (so a leaving player's last position goes before
// anything about their departure), and when it stops.
func TestPositionsPutOncePerFlush(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r, err := newReplicas(t.Context(), nc, "p1", 1, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	def := game.DefaultScenes()[0]
	l := &loop{id: def.ID, st: game.New(def)}
	for _, id := range []string{"a", "b"} {
		enter := game.Enter{Player: player.Data{ID: id, Name: "N" + id, Scene: def.ID}, Version: 1}
		r.afterStep(l, enter, l.st.Apply(enter))
	}
	puts := func() uint64 { return r.positions.Stats().Puts }
	seq := map[string]uint64{}
	move := func(id string, x, y int) {
		t.Helper()
		seq[id]++
		ev := game.Request{Session: "s" + id, Player: id, Seq: seq[id], Op: game.Move{X: x, Y: y}}
		effs := l.st.Apply(ev)
		if !slices.ContainsFunc(effs, func(e game.Effect) bool { _, ok := e.(game.PositionChanged); return ok }) {
			t.Fatalf("move %s to (%d,%d): no position change in %+v", id, x, y, effs)
		}
		r.afterStep(l, ev, effs)
	}
	move("a", 1, 1)
	move("a", 2, 2)
	move("b", 3, 3)
	if n := puts(); n != 0 {
		t.Fatalf("%d positions put before a flush, want 0", n)
	}
	r.flushPositions(l)
	if n := puts(); n != 2 {
		t.Fatalf("%d positions put by the flush, want 2 (one per player who moved)", n)
	}
	r.flushPositions(l)
	if n := puts(); n != 2 {
		t.Fatalf("a flush with nobody moved put %d positions", n-2)
	}
	// A roster change (here b leaves) puts the positions first.
	move("a", 4, 4)
	leave := game.Leave{Player: "b"}
	r.afterStep(l, leave, l.st.Apply(leave))
	if n := puts(); n != 3 {
		t.Fatalf("%d positions put after a roster change, want 3", n)
	}
	rd, err := replica.NewReader[modules.PlayerPosition](t.Context(), nc, modules.PlayerPositions, replica.RoleCLI, replica.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	if err := r.positions.Flush(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error {
		a, _ := rd.Get("a")
		b, _ := rd.Get("b")
		if a.X != 4 || a.Y != 4 || b.X != 3 || b.Y != 3 {
			return fmt.Errorf("positions read a %+v, b %+v; want a at (4,4), b at (3,3)", a, b)
		}
		return nil
	})
}
