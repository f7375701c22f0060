package worldmgr

import (
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
)

// A planned handoff (upgrade): the old incarnation is told to exit, its
// successor starts only after it is gone (it holds the log's lock), at the
// next epoch and at once, and no restart is counted.
func TestHandoffStartsSuccessorAfterExit(t *testing.T) {
	m := boot(t)
	m.run(time.Second, "forest", "town")
	old := m.pid["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.drain()
	if len(m.acts) != 1 || !m.acts[0].Handoff {
		t.Fatalf("the exit does not say handoff (the process would wait for its saves): %+v", m.acts)
	}
	m.expect("exit forest")
	if err := m.s.handoff(m.now, "forest"); err == nil {
		t.Fatal("a second handoff of the same process was accepted")
	}
	// The old process flushes and exits; nothing is spawned before that,
	// also not after the grace a lost connection would get.
	m.run(3*time.Second, "town")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != old {
		t.Fatalf("while handing over: %+v", r)
	}
	m.s.exited(m.now, "forest", old, "exited")
	m.expect("spawn forest")
	r := m.row("forest")
	if r.Epoch != 2 || r.State != modules.SceneStarting || r.Restarts != 0 {
		t.Fatalf("successor row %+v", r)
	}
	m.hello("forest", m.pid["forest"], 2)
	m.expect("welcome forest")
	if r := m.row("forest"); r.State != modules.SceneRunning || r.Epoch != 2 || r.Restarts != 0 {
		t.Fatalf("after handoff %+v", r)
	}
}

// A process that does not exit when told to hand over is killed after the
// timeout and replaced as after a crash.
func TestHandoffKillsAProcessThatDoesNotExit(t *testing.T) {
	m := boot(t)
	old := m.pid["town"]
	if err := m.s.handoff(m.now, "town"); err != nil {
		t.Fatal(err)
	}
	m.expect("exit town")
	m.run(handoffTimeout+50*time.Millisecond, "forest")
	m.expect("kill town")
	m.s.killDone(m.now, "town", old, nil)
	m.run(time.Second, "forest")
	m.expect("spawn town")
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
