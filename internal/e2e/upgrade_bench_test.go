package e2e

import (
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
)

// BenchmarkHandoffBlip: the same world as BenchmarkFailoverBlip (500
// players playing in the forest, a move every 100 ms each, the reply
// awaited; 100k events in the log since its snapshot, 500 more players
// prefilled), but the forest's process is replaced by a planned handoff
// (what `respawn upgrade` does to each scene process) instead of a kill.
// It reports the latency of the requests in flight from the moment the old
// process was told to exit (the handoff call answers then, once its spare
// caught up) until the successor runs, and the time from the handoff
// request to running (which includes starting the spare).
// "standby" and "cold" as in BenchmarkFailoverBlip.
func BenchmarkHandoffBlip(b *testing.B) { blipModes(b, handoffBlip) }

func handoffBlip(b *testing.B, spare []string) {
	const players = 500
	handoffs := benchKills(3)
	for b.Loop() {
		c := newCluster(b, append([]string{"--scene.snapshot-events", "100000000", "--scene.snapshot-interval", "1h"}, append(spare, benchGatewayFlags...)...)...)
		prefillForest(b, c, 500, 100_000)
		c.startWorld()
		_, tcp, _ := c.gateway("gateway")
		clients := benchClients(b, c, players, []string{tcp}, "forest")
		tok := c.operatorToken()

		m := startMovers(clients)
		m.settle(b, 10*players)
		var windows []window
		var toRunning []time.Duration
		var epochs []uint64
		for range handoffs {
			old, err := c.scene("forest")
			if err != nil {
				b.Fatal(err)
			}
			from := time.Now()
			code, body, err := c.call(http.MethodPost, "http://"+c.ports["worldmgr.admin"]+"/v1/processes/"+old.Process+"/handoff", nil, tok)
			if err != nil || code != http.StatusOK {
				b.Fatalf("handoff: %d %s %v", code, body, err)
			}
			// The call answers once the old process was told to exit (after
			// its spare caught up): the players' blip starts there.
			told := time.Now()
			poll.Until(b, 30*time.Second, func() error {
				r, err := c.scene("forest")
				if err != nil {
					return err
				}
				if r.Epoch <= old.Epoch || r.State != modules.SceneRunning {
					return fmt.Errorf("forest %s epoch %d", r.State, r.Epoch)
				}
				epochs = append(epochs, r.Epoch)
				return nil
			})
			up := time.Now()
			toRunning = append(toRunning, up.Sub(from))
			windows = append(windows, window{told, up})
			m.settle(b, 10*players)
		}
		spans, failed := m.finish()
		for i, w := range windows {
			fmt.Fprintln(os.Stderr, blipPhases(c, "forest", epochs[i], w.from, spans))
		}
		blip := inWindows(spans, windows)
		if failed > 0 {
			b.Fatalf("%d of %d requests failed", failed, len(spans))
		}
		if len(blip) == 0 {
			b.Fatal("no request was in flight during a handoff")
		}
		reportBlip(b, "handoffs", "handoff", handoffs, len(spans), blip, toRunning)
	}
}
