package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

// `respawn shutdown` under `respawn up` while players play through the
// gateway: every scene saves, the gateways drain before the scenes stop
// (each request in flight is answered before its client is told to
// move), and the database then holds exactly what every client was told.
func TestShutdownDrainsGatewaysFirstNothingLost(t *testing.T) {
	c := newCluster(t)
	up := c.start("respawn", "up")
	c.waitRunning(30 * time.Second)
	tcp, ws := c.ports["gateway.listen"], "ws://"+c.ports["gateway.websocket"]+"/"
	poll.Until(t, 20*time.Second, func() error {
		var h struct{ Healthy bool }
		return getJSON("http://"+c.ports["gateway.admin"]+"/healthz", &h)
	})
	w := newPlayers(t, c, 8, [][]string{{tcp, ws}})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.play(10*time.Millisecond, stop) }()
	w.progress(5)

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
	// Each scene saves and exits on its own: one killed at the stop loses
	// what it had not saved yet.
	if strings.Contains(log, "killing scene process") {
		t.Fatalf("the world manager killed a scene process told to stop:\n%s", log)
	}
	if pids := c.livePids(""); len(pids) > 0 {
		t.Fatalf("processes left after shutdown: %v", pids)
	}
	// The players played until the end; what they sent after the gateways
	// went is never answered, and fails now.
	close(stop)
	for _, p := range w.players {
		p.c.Close()
	}
	<-done
	for _, p := range w.players {
		if st := p.c.Stats(); st.Lost != 0 || st.Disconnects != 0 || st.Duplicates != 0 {
			t.Errorf("player %s: %+v, want told to move, not lost", p.id, st)
		}
	}

	// A fresh datasvr serves from the database what each client was told.
	c.startDatasvr()
	w.checkSaved("after shutdown")
	var sent int64
	for _, p := range w.players {
		sent += p.answered.Load()
	}
	t.Logf("%d players, %d answered requests, all in the database after shutdown", len(w.players), sent)
}

// Every daemon stops cleanly on SIGTERM: exit status 0, promptly. A scene
// process stopped with SIGTERM saves its players first (the manager then
// respawns it: it was not asked to stop through the manager); a stopped
// world manager leaves the scenes serving.
func TestEveryDaemonStopsCleanlyOnSIGTERM(t *testing.T) {
	c := newCluster(t)
	ds := c.startDatasvr()
	wm := c.start("worldmgr")
	rows := c.waitRunning(20 * time.Second)
	gw, _, _ := c.gateway("gateway")

	// A scene process: SIGTERM, it exits, and the manager brings a new one.
	old := rows[0]
	if err := syscall.Kill(old.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, func() error {
		r, err := c.scene(old.ID)
		if err != nil {
			return err
		}
		if process.Alive(old.PID) {
			return fmt.Errorf("scene process %d still alive after SIGTERM", old.PID)
		}
		if r.PID == old.PID || r.State != modules.SceneRunning {
			return fmt.Errorf("scene %s: %s pid %d", r.ID, r.State, r.PID)
		}
		return nil
	})

	for _, p := range []*proc{gw, wm} {
		p.signal(syscall.SIGTERM)
		if err := p.wait(15 * time.Second); err != nil {
			t.Errorf("%s after SIGTERM: %v\n%s", p.name, err, p.output())
		}
	}
	// The manager's SIGTERM leaves the world serving.
	for _, r := range c.scenePIDs() {
		if !process.Alive(r) {
			t.Errorf("scene process %d died with the manager", r)
		}
	}
	ds.signal(syscall.SIGTERM)
	if err := ds.wait(15 * time.Second); err != nil {
		t.Errorf("datasvr after SIGTERM: %v\n%s", err, ds.output())
	}
}

// scenePIDs are the live scene processes of this cluster.
func (c *cluster) scenePIDs() []int {
	pids := c.livePids("--process")
	if len(pids) == 0 {
		c.t.Fatal("no scene process alive")
	}
	return pids
}
