package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

// A gateway stopped with SIGTERM while players play through it (TCP and
// WebSocket) drains: each client is told to move to the other gateway
// (move_to: its TCP address, or its WebSocket URL for WebSocket clients)
// once its request in flight is answered, and resumes there without a
// new login and without counting a lost connection; nothing fails, is
// lost or is applied twice, and the gateway exits within its drain
// timeout.
func TestGatewayDrainMovesPlayersWithoutLoss(t *testing.T) {
	const drainTimeout = 10 * time.Second // gateway.drain_timeout in configs/world.yaml
	c := newCluster(t)
	gw, up, pid := upWithTwoGateways(t, c)
	tcp1, ws1, tcp2, ws2 := gw[0][0], "ws://"+gw[0][1]+"/", gw[1][0], "ws://"+gw[1][1]+"/"
	// Everyone starts on gw1; every fourth player lists WebSocket first.
	w := newPlayers(t, c, 40, [][]string{{tcp1, ws1, tcp2, ws2}})
	ws := 0
	for _, p := range w.players {
		switch g := p.c.Gateway(); g {
		case ws1:
			ws++
		case tcp1:
		default:
			t.Fatalf("player %s on %s, want gw1", p.id, g)
		}
	}
	if ws == 0 {
		t.Fatal("no WebSocket player")
	}
	// A short pace keeps requests in flight when the drain starts.
	stop := w.playing(20 * time.Millisecond)
	w.progress(5)
	began := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, drainTimeout+5*time.Second, func() error {
		if process.Alive(pid) {
			return fmt.Errorf("gw1 (pid %d) still running", pid)
		}
		return nil
	})
	exited := time.Since(began)
	poll.Until(t, 20*time.Second, func() error {
		for _, p := range w.players {
			if p.c.Stats().Resumes == 0 {
				return fmt.Errorf("player %s has not resumed", p.id)
			}
		}
		return nil
	})
	w.progress(5) // on gw2
	stop()
	for _, p := range w.players {
		st := p.c.Stats()
		if st.Lost != 0 || st.Relogins != 0 || st.Disconnects != 0 {
			t.Errorf("player %s: %+v, want a move without a lost connection or a new login", p.id, st)
		}
	}
	moved := map[string]int{}
	for _, p := range w.players {
		moved[p.c.Gateway()]++
	}
	// TCP clients follow move_to to gw2's TCP address, WebSocket clients
	// its WebSocket URL: none stays on its own transport's next entry.
	if moved[tcp2] != len(w.players)-ws || moved[ws2] != ws {
		t.Errorf("after the drain players are on %v, want %d on %s and %d on %s", moved, len(w.players)-ws, tcp2, ws, ws2)
	}
	log := up.output()
	drained := ""
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "gw/gw1") && strings.Contains(line, `"drained"`) {
			drained = line
		}
	}
	t.Logf("gw1 exited %s after SIGTERM (drain timeout %s); %s", exited.Round(time.Millisecond), drainTimeout, drained)
	if drained == "" {
		t.Errorf("gw1 logged no drain result:\n%s", log)
	}
	if exited > drainTimeout {
		t.Errorf("gw1 took %s to exit, more than its drain timeout %s", exited, drainTimeout)
	}
	w.check(false)
}
