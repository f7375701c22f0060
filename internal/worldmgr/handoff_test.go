package worldmgr

import (
	"errors"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
)

// handoffExit returns the one exit action in acts, failing if there is
// not exactly one.
func handoffExit(t *testing.T, acts []action) action {
	t.Helper()
	var out []action
	for _, a := range acts {
		if a.Kind == actExit {
			out = append(out, a)
		}
	}
	if len(out) != 1 {
		t.Fatalf("want one exit, got %+v", acts)
	}
	return out[0]
}

// A planned handoff with worldmgr.standby off: a spare of the current
// binary is started first and the old incarnation is told nothing until the
// spare says it caught up; then it is told to exit with a standby waiting
// (no final snapshot), its exit promotes the spare (nothing spawned, no
// restart counted), and no new spare follows.
func TestHandoffGoesThroughACaughtUpSpare(t *testing.T) {
	m := boot(t)
	m.run(time.Second, "forest", "town")
	old := m.pid["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.drain()
	if len(m.acts) != 1 || m.acts[0].Kind != actSpawn || !m.acts[0].Standby || m.acts[0].Epoch != 2 {
		t.Fatalf("the handoff did not start a spare at epoch 2: %+v", m.acts)
	}
	m.expect("spawn forest")
	spare := m.spare["forest"]
	if err := m.s.handoff(m.now, "forest"); err == nil {
		t.Fatal("a second handoff of the same process was accepted while it waits for its spare")
	}
	// The spare starts and follows: the old process keeps serving.
	m.run(2*time.Second, "forest", "town")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != old || r.StandbyPID != spare {
		t.Fatalf("while the spare catches up: %+v", r)
	}
	// A ready line from anyone but the spare changes nothing.
	m.s.spareReady(m.now, "forest", 2, spare+1, true, "caught up")
	m.s.spareReady(m.now, "forest", 3, spare, true, "caught up")
	m.expect()
	m.s.spareReady(m.now, "forest", 2, spare, true, "caught up")
	m.drain()
	if ex := handoffExit(t, m.acts); !ex.Handoff || !ex.Standby {
		t.Fatalf("the exit does not say a caught-up standby waits: %+v", ex)
	}
	m.expect("exit forest")
	m.run(50*time.Millisecond, "town")
	m.expect()
	m.s.exited(m.now, "forest", old, "exited")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneStarting || r.PID != spare || r.Epoch != 2 || r.Restarts != 0 || r.StandbyPID != 0 {
		t.Fatalf("after the exit %+v", r)
	}
	m.pid["forest"] = spare
	m.hello("forest", spare, 2)
	m.expect("welcome forest")
	// worldmgr.standby is off: no spare after the promotion.
	m.run(5*time.Second, "forest", "town")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != spare || r.Epoch != 2 || r.StandbyPID != 0 {
		t.Fatalf("after the handoff %+v", r)
	}
}

// A spare that does not catch up within spareReadyTimeout is killed and the
// handoff goes on cold, saying so: the old incarnation snapshots and exits,
// then the successor is spawned at the next epoch.
func TestHandoffGoesColdWhenTheSpareIsNotReady(t *testing.T) {
	m := boot(t)
	old := m.pid["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.expect("spawn forest")
	m.run(spareReadyTimeout-20*time.Millisecond, "forest", "town")
	m.expect()
	m.run(40*time.Millisecond, "forest", "town")
	m.drain()
	if ex := handoffExit(t, m.acts); !ex.Handoff || ex.Standby {
		t.Fatalf("a cold handoff's exit: %+v", ex)
	}
	m.expect("kill forest", "exit forest")
	if s := m.s.slots["forest"]; s.discarded != m.spare["forest"] {
		t.Fatalf("the late spare was not discarded: %d", s.discarded)
	}
	var said bool
	for _, ev := range m.timeline {
		said = said || ev.Kind == "handoff" && ev.Process == "forest"
	}
	if !said {
		t.Fatalf("the cold handoff is not on the timeline: %+v", m.timeline)
	}
	m.s.exited(m.now, "forest", old, "exited")
	m.expect("spawn forest")
	if r := m.row("forest"); r.State != modules.SceneStarting || r.Epoch != 3 || r.Restarts != 0 {
		t.Fatalf("cold successor %+v", r)
	}
	// The discarded spare, had it got the lock, is refused.
	m.hello("forest", m.spare["forest"], 2)
	m.expect("exit forest")
}

// The spare dies (or cannot be started) while the handoff waits for it: the
// handoff goes on cold at once.
func TestHandoffGoesColdWhenTheSpareDies(t *testing.T) {
	m := boot(t)
	old := m.pid["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.expect("spawn forest")
	m.run(100*time.Millisecond, "forest", "town")
	m.s.exited(m.now, "forest", m.spare["forest"], "exit status 1")
	m.drain()
	if ex := handoffExit(t, m.acts); ex.Standby {
		t.Fatalf("exit with a dead standby: %+v", ex)
	}
	m.expect("exit forest")
	m.s.exited(m.now, "forest", old, "exited")
	m.expect("spawn forest")

	m = boot(t)
	if err := m.s.handoff(m.now, "town"); err != nil {
		t.Fatal(err)
	}
	// Performed by hand: the spawn fails, no pid comes back.
	rd := m.s.takeReady()
	if len(rd.Actions) != 1 || rd.Actions[0].Kind != actSpawn || !rd.Actions[0].Standby {
		t.Fatalf("handoff actions %+v", rd.Actions)
	}
	m.s.spareFailed(m.now, "town", rd.Actions[0].Epoch, errors.New("exec: no such file"))
	m.expect("exit town")
}

// The world stops while a handoff waits for its spare: the spare is killed,
// the process is told the world stops (not to hand over), and nothing is
// started after it exits.
func TestHandoffWaitEndsWhenTheWorldStops(t *testing.T) {
	m := boot(t)
	old := m.pid["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.expect("spawn forest")
	m.s.stop(m.now)
	m.drain()
	if ex := handoffExit(t, m.acts[:2]); ex.Handoff || ex.Name != "forest" {
		t.Fatalf("stop's exit %+v", ex)
	}
	m.expect("kill forest", "exit forest", "exit town")
	m.s.killDone(m.now, "forest", m.spare["forest"], nil)
	m.s.exited(m.now, "forest", old, "exited")
	m.s.exited(m.now, "town", m.pid["town"], "exited")
	m.run(spareReadyTimeout + time.Second)
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneDead || r.StandbyPID != 0 {
		t.Fatalf("forest after the stop %+v", r)
	}
}

// The old process dies while its handoff waits: a crash, and the spare,
// already started, takes over as after any crash.
func TestHandoffWaitEndsWhenTheProcessDies(t *testing.T) {
	m := boot(t)
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.expect("spawn forest")
	spare := m.spare["forest"]
	m.s.exited(m.now, "forest", m.pid["forest"], "signal: killed")
	m.expect("close forest")
	if r := m.row("forest"); r.State != modules.SceneStarting || r.PID != spare || r.Restarts != 1 {
		t.Fatalf("after the crash %+v", r)
	}
	// Its late ready line changes nothing.
	m.s.spareReady(m.now, "forest", 2, spare, true, "caught up")
	m.expect()
}

// A process that does not exit when told to hand over is killed after the
// timeout; its spare takes over as after a crash.
func TestHandoffKillsAProcessThatDoesNotExit(t *testing.T) {
	m := boot(t)
	old := m.pid["town"]
	if err := m.s.handoff(m.now, "town"); err != nil {
		t.Fatal(err)
	}
	m.expect("spawn town")
	m.s.spareReady(m.now, "town", 2, m.spare["town"], true, "caught up")
	m.expect("exit town")
	m.run(handoffTimeout+50*time.Millisecond, "forest")
	m.expect("kill town")
	m.s.killDone(m.now, "town", old, nil)
	m.run(time.Second, "forest")
	m.expect()
	if r := m.row("town"); r.State != modules.SceneStarting || r.PID != m.spare["town"] {
		t.Fatalf("after the kill %+v", r)
	}
}

func TestHandoffRefusals(t *testing.T) {
	m := newSim(t, map[string]uint64{"forest": 1, "town": 1}, false)
	if err := m.s.handoff(m.now, "forest"); err == nil {
		t.Fatal("handoff accepted while recovering")
	}
	m = boot(t)
	if err := m.s.handoff(m.now, "nowhere"); err == nil {
		t.Fatal("handoff of an unknown process accepted")
	}
}

// A spare that is ready but cannot follow the log (it replays at the
// takeover) still takes the handoff, but the old incarnation is not told a
// standby has its state: it writes its final snapshot, so the replay is
// short.
func TestHandoffToASpareThatDoesNotFollowKeepsTheSnapshot(t *testing.T) {
	m := boot(t)
	old := m.pid["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.expect("spawn forest")
	spare := m.spare["forest"]
	m.s.spareReady(m.now, "forest", 2, spare, false, "not following: will replay in full")
	m.drain()
	if ex := handoffExit(t, m.acts); !ex.Handoff || ex.Standby {
		t.Fatalf("exit %+v: the old process must snapshot for a spare without a copy", ex)
	}
	m.expect("exit forest")
	m.s.exited(m.now, "forest", old, "exited")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneStarting || r.PID != spare || r.Epoch != 2 {
		t.Fatalf("after the exit %+v", r)
	}
}
