package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/secret"
)

// A player attacks Hogger through the gateway link, the forest process is
// killed with SIGKILL while requests are in flight, and the unanswered ones
// are resent to the new process: every request is answered, none applied
// twice (Hogger has lost exactly the damage the replies report), a resend
// of an answered one gets its original reply.
func TestLinkResendAfterSceneKill(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	alice := uniqueID("alice")
	c.respawn("player", "create", alice, "--name", "Alice")
	row, err := c.scene("forest")
	if err != nil {
		t.Fatal(err)
	}
	if row.Link == "" {
		t.Fatalf("the scene table has no link address: %+v", row)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dial := func(addr string) *scenelink.Client {
		cl, err := scenelink.Dial(ctx, scenelink.Options{Addr: addr, Secret: sec})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	cl := dial(row.Link)
	const session = "gw-session-1"
	jr, err := cl.Join(ctx, "forest", alice, session)
	if err != nil || jr.Moved != "" || jr.LastSeq != 0 {
		t.Fatalf("join: %+v %v", jr, err)
	}
	v, err := c.inspect("forest")
	if err != nil {
		t.Fatal(err)
	}
	hp0 := monsterHP(v, "hogger")
	attack := []byte(`{"op":"attack","monster":"hogger"}`)
	req := func(seq uint64) scenelink.Req {
		return scenelink.Req{Scene: "forest", Player: alice, Session: session, Seq: seq, Op: attack}
	}
	replies := map[uint64]scenelink.Reply{}
	for seq := uint64(1); seq <= 5; seq++ {
		r, err := cl.Request(ctx, req(seq))
		if err != nil || r.Code != "" || r.Resent {
			t.Fatalf("seq %d: %+v %v", seq, r, err)
		}
		replies[seq] = r
	}

	// A stream of attacks, a window in flight at a time; kill -9 in the
	// middle of it.
	type answer struct {
		seq uint64
		r   scenelink.Reply
		err error
	}
	const first, last = 6, 45
	answers := make(chan answer, last)
	go func() {
		window := make(chan struct{}, game.SessionWindow)
		for seq := uint64(first); seq <= last; seq++ {
			window <- struct{}{}
			cl.Go(ctx, req(seq), func(r scenelink.Reply, err error) {
				answers <- answer{seq, r, err}
				<-window
			})
		}
	}()
	lost := 0
	var lastAnswered uint64
	for i := first; i <= last; i++ {
		a := <-answers
		if i == first+8 {
			if err := syscall.Kill(row.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		switch {
		case a.err == nil && a.r.Code == "":
			replies[a.seq] = a.r
			lastAnswered = max(lastAnswered, a.seq)
		case errors.Is(a.err, scenelink.ErrUnavailable):
			lost++
		default:
			t.Fatalf("seq %d during the kill: %+v %v", a.seq, a.r, a.err)
		}
	}
	select {
	case <-cl.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the link did not notice the kill")
	}
	t.Logf("%d of %d requests answered before the kill", last-first+1-lost, last-first+1)

	// Follow the table to the new incarnation and resend what is missing.
	var next modules.SceneRow
	poll.Until(t, 20*time.Second, func() error {
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.PID == row.PID || r.State != modules.SceneRunning || r.Link == "" || r.Epoch <= row.Epoch {
			return fmt.Errorf("forest: %s pid %d epoch %d link %q", r.State, r.PID, r.Epoch, r.Link)
		}
		next = r
		return nil
	})
	cl2 := dial(next.Link)
	if cl2.Epoch() != next.Epoch {
		t.Fatalf("new link speaks for epoch %d, table says %d", cl2.Epoch(), next.Epoch)
	}
	jr, err = cl2.Join(ctx, "forest", alice, session)
	if err != nil || jr.Moved != "" {
		t.Fatalf("resume after the kill: %+v %v", jr, err)
	}
	for seq := range replies {
		if seq > jr.LastSeq {
			t.Fatalf("seq %d was answered but the scene's last applied is %d", seq, jr.LastSeq)
		}
	}
	// An answered one, resent to the new process, gets the very same reply.
	again, err := cl2.Request(ctx, req(lastAnswered))
	if err != nil || !again.Resent || string(again.Body) != string(replies[lastAnswered].Body) {
		t.Fatalf("resend of seq %d, answered before the kill: %+v %v, first %s", lastAnswered, again, err, replies[lastAnswered].Body)
	}

	resent := 0
	for seq := uint64(first); seq <= last; seq++ {
		if _, ok := replies[seq]; ok {
			continue
		}
		r, err := cl2.Request(ctx, req(seq))
		if err != nil || r.Code != "" {
			t.Fatalf("resend of seq %d: %+v %v", seq, r, err)
		}
		if r.Resent != (seq <= jr.LastSeq) {
			t.Fatalf("seq %d: resent=%v, but the last applied is %d", seq, r.Resent, jr.LastSeq)
		}
		if r.Resent {
			resent++
		}
		replies[seq] = r
	}
	t.Logf("resent %d: %d applied before the kill (stored replies), %d applied now", lost, resent, lost-resent)
	// Exactly once: Hogger lost exactly what the replies say.
	var dealt int64
	for seq := uint64(1); seq <= last; seq++ {
		r, ok := replies[seq]
		if !ok {
			t.Fatalf("seq %d never answered", seq)
		}
		var ar game.AttackResult
		if err := json.Unmarshal(r.Body, &ar); err != nil || ar.Monster != "hogger" {
			t.Fatalf("seq %d: %s (%v)", seq, r.Body, err)
		}
		dealt += ar.Damage
	}
	v, err = c.inspect("forest")
	if err != nil {
		t.Fatal(err)
	}
	if hp := monsterHP(v, "hogger"); hp != hp0-dealt {
		t.Fatalf("hogger at %d HP, started at %d, replies report %d damage: some attack applied %s", hp, hp0, dealt, map[bool]string{true: "twice", false: "without a reply"}[hp < hp0-dealt])
	}
}

func monsterHP(v game.View, id string) int64 {
	for _, m := range v.Monsters {
		if m.ID == id {
			return m.HP
		}
	}
	return -1
}

// Join brings a player in from the data server, and names the scene the
// data server says they are in (or were last in) instead of taking them;
// leave saves them, releases the lease, and a stale leave does nothing.
func TestLinkJoinFollowsTheDataServer(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	bob := uniqueID("bob")
	c.respawn("player", "create", bob, "--name", "Bob")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	link := func(scene string) *scenelink.Client {
		row, err := c.scene(scene)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := scenelink.Dial(ctx, scenelink.Options{Addr: row.Link, Secret: sec})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	forest, town := link("forest"), link("town")
	if jr, err := forest.Join(ctx, "forest", bob, "s1"); err != nil || jr.Moved != "" {
		t.Fatalf("join forest: %+v %v", jr, err)
	}
	// Held by the forest: town says so and takes nothing.
	if jr, err := town.Join(ctx, "town", bob, "s2"); err != nil || jr.Moved != "forest" {
		t.Fatalf("join town while in the forest: %+v %v", jr, err)
	}
	if at, err := c.where(bob, "town", "forest"); err != nil || len(at) != 1 || at["forest"].ID != bob {
		t.Fatalf("bob is in %v (%v)", keys(at), err)
	}
	// A stale leave does nothing; the current session's leave saves and
	// releases.
	if err := forest.Leave(ctx, "forest", bob, "old"); err != nil {
		t.Fatal(err)
	}
	if at, _ := c.where(bob, "forest"); len(at) != 1 {
		t.Fatal("a stale leave removed bob")
	}
	if err := forest.Leave(ctx, "forest", bob, "s1"); err != nil {
		t.Fatal(err)
	}
	show, err := c.showPlayer(bob)
	if err != nil || show.Owner != nil {
		t.Fatalf("after leave: %+v %v", show, err)
	}
	// He was last in the forest: town sends the gateway there.
	if jr, err := town.Join(ctx, "town", bob, "s3"); err != nil || jr.Moved != "forest" {
		t.Fatalf("join town after leaving the forest: %+v %v", jr, err)
	}
	if at, _ := c.where(bob, "town", "forest"); len(at) != 0 {
		t.Fatalf("bob is in %v after a refused join", keys(at))
	}
	jr, err := forest.Join(ctx, "forest", bob, "s3")
	if err != nil || jr.Moved != "" || jr.LastSeq != 0 {
		t.Fatalf("join forest again: %+v %v", jr, err)
	}
	// A new session starts at 1; the old one is dead.
	r, err := forest.Request(ctx, scenelink.Req{Scene: "forest", Player: bob, Session: "s1", Seq: 9, Op: []byte(`{"op":"move","x":3,"y":3}`)})
	if err != nil || r.Code != game.ErrSessionReplaced {
		t.Fatalf("old session: %+v %v", r, err)
	}
	r, err = forest.Request(ctx, scenelink.Req{Scene: "forest", Player: bob, Session: "s3", Seq: 1, Op: []byte(`{"op":"move","x":3,"y":3}`)})
	if err != nil || r.Code != "" || string(r.Body) != `{"x":3,"y":3}` {
		t.Fatalf("new session: %+v %v", r, err)
	}
}
