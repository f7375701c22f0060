package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/dataclient"
)

// `respawn shutdown` under `respawn up` after players played through the
// gateway: every scene saves, the gateways stop before the scenes, and the
// database then holds exactly what every client was told.
func TestShutdownDrainsGatewaysFirstNothingLost(t *testing.T) {
	c := newCluster(t)
	up := c.start("respawn", "up")
	c.waitRunning(30 * time.Second)
	tcp, ws := c.ports["gateway.listen"], "ws://"+c.ports["gateway.websocket"]+"/"
	waitFor(t, 20*time.Second, func() error {
		var h struct{ Healthy bool }
		return getJSON("http://"+c.ports["gateway.admin"]+"/healthz", &h)
	})
	w := newPlayers(t, c, 8, [][]string{{tcp, ws}})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.play(10*time.Millisecond, stop) }()
	w.progress(5)
	close(stop)
	<-done

	out := c.respawn("shutdown", "--json")
	var rep struct {
		Saved struct {
			Scenes []struct {
				Scene string
				Error string
			}
		}
		Stopped string
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("shutdown --json printed %q: %v", out, err)
	}
	if rep.Stopped != "cluster" || len(rep.Saved.Scenes) == 0 {
		t.Fatalf("shutdown: %s", out)
	}
	for _, s := range rep.Saved.Scenes {
		if s.Error != "" {
			t.Errorf("scene %s did not save: %s", s.Scene, s.Error)
		}
	}
	if err := up.wait(60 * time.Second); err != nil {
		t.Fatalf("respawn up exited with %v", err)
	}
	log := up.output()
	g, s, o := strings.Index(log, "stopping gateways"), strings.Index(log, "stopping scenes"), strings.Index(log, "stopping the other daemons")
	if g < 0 || !(g < s && s < o) {
		t.Fatalf("respawn up did not stop gateways, then scenes, then the rest:\n%s", log)
	}
	if pids := c.livePids(""); len(pids) > 0 {
		t.Fatalf("processes left after shutdown: %v", pids)
	}

	// A fresh datasvr serves from the database what each client was told.
	c.start("datasvr")
	waitFor(t, 20*time.Second, func() error {
		var h struct{ Healthy bool }
		return getJSON("http://"+c.ports["datasvr.admin"]+"/healthz", &h)
	})
	ac := dataclient.NewAdminClient(c.natsConn(), w.sec.OperatorToken())
	waitFor(t, 30*time.Second, func() error {
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
				return fmt.Errorf("after shutdown: %w", err)
			}
		}
		return nil
	})
	var sent int64
	for _, p := range w.players {
		sent += p.answered.Load()
	}
	t.Logf("%d players, %d answered requests, all in the database after shutdown", len(w.players), sent)
}
