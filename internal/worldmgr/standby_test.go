package worldmgr

import (
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/modules"
)

// bootStandby is boot with worldmgr.standby on: after the first tick each
// running process has a spare at the next epoch.
func bootStandby(t *testing.T) *sim {
	m := newSim(t, nil, true)
	cfg := testWorld()
	cfg.WorldMgr.Standby = true
	m.s = newSupervisor(cfg, zaptest.NewLogger(t), nil, true, m.now)
	m.run(10 * time.Millisecond)
	m.expect("spawn forest", "spawn town")
	for _, name := range []string{"forest", "town"} {
		m.hello(name, m.pid[name], 1)
	}
	m.expect("welcome forest", "welcome town")
	m.run(10*time.Millisecond, "forest", "town")
	m.expect("spawn forest", "spawn town") // the spares
	for _, name := range []string{"forest", "town"} {
		m.s.spareReady(m.now, name, 2, m.spare[name], true, "caught up")
	}
	m.expect()
	for _, name := range []string{"forest", "town"} {
		r := m.row(name)
		if m.spare[name] == 0 || r.StandbyPID != m.spare[name] || r.Epoch != 1 || r.PID != m.pid[name] {
			t.Fatalf("%s: spare %d, row %+v", name, m.spare[name], r)
		}
	}
	return m
}

// A crash with a spare waiting: nothing is spawned, the spare (epoch 2,
// persisted when it was spawned) becomes the starting incarnation and
// runs when it registers; the next spare gets epoch 3.
func TestStandbyTakesOverACrash(t *testing.T) {
	m := bootStandby(t)
	spare := m.spare["forest"]
	m.s.exited(m.now, "forest", m.pid["forest"], "signal: killed")
	m.expect("close forest")
	if r := m.row("forest"); r.State != modules.SceneStarting || r.PID != spare || r.Epoch != 2 || r.Restarts != 1 || r.StandbyPID != 0 {
		t.Fatalf("after the crash %+v", r)
	}
	m.pid["forest"] = spare
	m.hello("forest", spare, 2)
	m.expect("welcome forest")
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != spare || r.Epoch != 2 {
		t.Fatalf("after the takeover %+v", r)
	}
	// The first restart in the window has no backoff: the next spare now.
	m.run(10*time.Millisecond, "forest", "town")
	m.expect("spawn forest")
	if m.s.epochs["forest"] != 3 || m.row("forest").StandbyPID != m.spare["forest"] {
		t.Fatalf("next spare: epochs %v, row %+v", m.s.epochs, m.row("forest"))
	}
}

// The spare may take the log and register before its primary's exit
// reaches the manager: the higher epoch replaces the primary (killed
// through its handle, a no-op for a dead one); the late exit changes
// nothing.
func TestStandbyRegistersBeforeTheExitIsSeen(t *testing.T) {
	m := bootStandby(t)
	old, spare := m.pid["forest"], m.spare["forest"]
	m.hello("forest", spare, 2)
	m.expect("exit forest", "kill forest", "welcome forest")
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != spare || r.Epoch != 2 || r.StandbyPID != 0 {
		t.Fatalf("after the takeover %+v", r)
	}
	m.s.killDone(m.now, "forest", old, nil)
	m.s.exited(m.now, "forest", old, "signal: killed")
	m.pid["forest"] = spare
	m.run(10*time.Millisecond, "forest", "town")
	m.expect("spawn forest") // the next spare, not a replacement
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != spare || r.StandbyPID == 0 {
		t.Fatalf("after the late exit %+v", r)
	}
}

// A handoff with a spare: the old incarnation is told to exit; its exit
// promotes the spare (which took the log when the old one closed it);
// nothing is spawned and no restart is counted.
func TestStandbyTakesOverAHandoff(t *testing.T) {
	m := bootStandby(t)
	old, spare := m.pid["forest"], m.spare["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.drain()
	if len(m.acts) != 1 || !m.acts[0].Handoff || !m.acts[0].Standby {
		t.Fatalf("the exit does not say a standby waits (the process would snapshot under it): %+v", m.acts)
	}
	m.expect("exit forest")
	m.run(50*time.Millisecond, "town")
	m.expect() // no new spare while handing over
	m.s.exited(m.now, "forest", old, "exited")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneStarting || r.PID != spare || r.Epoch != 2 || r.Restarts != 0 {
		t.Fatalf("after the handoff %+v", r)
	}
	m.hello("forest", spare, 2)
	m.expect("welcome forest")
}

// A handoff whose spare registers before the old process's exit: the
// new incarnation is not handing over (no kill at the handoff timeout).
func TestStandbyRegistersDuringAHandoff(t *testing.T) {
	m := bootStandby(t)
	old, spare := m.pid["forest"], m.spare["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.expect("exit forest")
	m.hello("forest", spare, 2)
	m.expect("kill forest", "welcome forest")
	m.s.killDone(m.now, "forest", old, nil)
	m.s.exited(m.now, "forest", old, "exited")
	m.pid["forest"] = spare
	m.run(handoffTimeout+time.Second, "forest", "town")
	for _, a := range m.take() {
		if a == "kill forest" {
			t.Fatal("the new incarnation was killed at the old one's handoff timeout")
		}
	}
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != spare {
		t.Fatalf("after the handoff %+v", r)
	}
}

// A spare that exits while waiting is replaced after spareRetry, with a
// new epoch; the primary is not touched.
func TestStandbyThatDiesIsReplaced(t *testing.T) {
	m := bootStandby(t)
	m.s.exited(m.now, "forest", m.spare["forest"], "signal: killed")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneRunning || r.PID != m.pid["forest"] || r.StandbyPID != 0 {
		t.Fatalf("after the spare died %+v", r)
	}
	m.run(spareRetry-20*time.Millisecond, "forest", "town")
	m.expect()
	m.run(40*time.Millisecond, "forest", "town")
	m.expect("spawn forest")
	if m.s.epochs["forest"] != 3 {
		t.Fatalf("epochs %v: a dead spare's epoch is never handed out again", m.s.epochs)
	}
}

// Past the restart intensity the process fails, and its spare is killed:
// it would otherwise take over on its own. Its hello, if it got that far,
// is refused.
func TestStandbyDiscardedWhenTheProcessFails(t *testing.T) {
	m := bootStandby(t)
	for i := 0; i < 10 && m.row("forest").State != modules.SceneFailed; i++ {
		m.s.exited(m.now, "forest", m.pid["forest"], "crash")
		m.drain()
		if r := m.row("forest"); r.State == modules.SceneStarting {
			m.pid["forest"] = r.PID
			m.hello("forest", r.PID, r.Epoch)
		}
		m.run(time.Second, "forest", "town")
		m.take()
	}
	if r := m.row("forest"); r.State != modules.SceneFailed || r.StandbyPID != 0 {
		t.Fatalf("forest %+v", r)
	}
	if m.s.slots["forest"].discarded == 0 {
		t.Fatal("no spare was discarded")
	}
	discarded := m.s.slots["forest"].discarded
	m.hello("forest", discarded, m.s.epochs["forest"])
	m.expect("exit forest")
}

// Stopping the world kills the spares before telling anyone to exit.
func TestStopKillsSparesFirst(t *testing.T) {
	m := bootStandby(t)
	m.s.stop(m.now)
	m.expect("kill forest", "kill town", "exit forest", "exit town")
}

// With worldmgr.standby on, a handoff reuses the spare already there, but
// only once it says it caught up.
func TestStandbyHandoffWaitsForItsSpareToBeReady(t *testing.T) {
	m := bootStandby(t)
	m.s.exited(m.now, "forest", m.spare["forest"], "signal: killed")
	m.run(spareRetry+20*time.Millisecond, "forest", "town")
	m.expect("spawn forest")
	spare := m.spare["forest"]
	if err := m.s.handoff(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.run(time.Second, "forest", "town")
	m.expect() // no second spare, no exit
	m.s.spareReady(m.now, "forest", 3, spare, true, "caught up")
	m.drain()
	if len(m.acts) != 1 || !m.acts[0].Handoff || !m.acts[0].Standby {
		t.Fatalf("exit %+v", m.acts)
	}
	m.expect("exit forest")
}
