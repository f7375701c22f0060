package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/scene"
)

// A travel's TravelIn that the source resends after the destination's
// process was killed (its acknowledgement died with it) is a duplicate: the
// restarted destination acknowledges it and changes nothing. It must not
// claim the player's lease again: a claim at the new epoch bumps datasvr's
// version past the player's last save, so the scene's next save, of a
// change already acknowledged to the player, is refused as old and the
// reload that follows drops that change (bot play saw 1-3 gold of a trade
// vanish from a player after a scene kill).
func TestResentTravelInAfterKillKeepsLaterChanges(t *testing.T) {
	c := newCluster(t)
	c.startWorld()
	nc := c.busConn(bus.RoleScene, "nats://"+c.ports["nats.listen"])

	id := uniqueID("rita")
	c.respawn("player", "create", id, "--name", "Rita")
	c.respawn("gm", "enter", "--scene", "forest", "--player", id)
	c.respawn("player", "give", id, "gold", "50")

	// The TravelIn the forest sends for rita's travel to town, recorded as
	// the scene role may, to be delivered again as the forest's resend.
	real := travelIns(t, nc, "town", func(in game.TravelIn) bool { return in.Player.ID == id })
	c.respawn("gm", "request", "--scene", "forest", "--player", id, "--seq", "1", `{"op":"travel","to":"town"}`)
	var in game.TravelIn
	select {
	case in = <-real:
	case <-time.After(10 * time.Second):
		t.Fatal("rita's TravelIn to town was never seen")
	}
	buy := func(seq int) {
		t.Helper()
		out := c.respawn("gm", "request", "--scene", "town", "--player", id, "--seq", fmt.Sprint(seq),
			`{"op":"buy","npc":"merchant","item":"potion","count":1}`)
		var r game.BuyResult
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.Cost != 10 {
			t.Fatalf("buy %d: %s (%v)", seq, out, err)
		}
	}
	// goldIs waits until the town and datasvr both hold gold for rita.
	goldIs := func(gold int64) {
		t.Helper()
		poll.Until(t, 15*time.Second, func() error {
			at, err := c.where(id, "town")
			if err != nil {
				return err
			}
			p, err := c.showPlayer(id)
			if err != nil {
				return err
			}
			if at["town"].Gold != gold || p.Gold != gold {
				return fmt.Errorf("rita: town gold %d, datasvr gold %d, acknowledged %d", at["town"].Gold, p.Gold, gold)
			}
			return nil
		})
	}
	// In town (the travel's retries are waited out by the buy's wait).
	poll.Until(t, 10*time.Second, func() error {
		at, err := c.where(id, "town")
		if err != nil {
			return err
		}
		if _, ok := at["town"]; !ok {
			return fmt.Errorf("rita not in town yet")
		}
		return nil
	})
	buy(2)
	goldIs(40)

	c.killScene("town")
	raw, err := game.EncodeEvent(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nc.RequestWithContext(ctx, scene.EventSubject("town"), raw); err != nil {
		t.Fatalf("deliver the resent TravelIn: %v", err)
	}
	buy(3)
	goldIs(30)
}
