package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/worldmgr"
)

// Issue 11: a world manager stopped for 3 s killed and respawned every
// healthy scene when it resumed. Stopped for 3 s, then for 10 s, then
// with every scene process (a paused machine), it must leave every
// scene's pid and epoch as they were.
func TestWorldmgrStallKillsNoOne(t *testing.T) {
	c := newCluster(t)
	mgr := c.start("worldmgr")
	before := c.waitRunning(15 * time.Second)
	for _, stall := range []time.Duration{3 * time.Second, 10 * time.Second} {
		mgr.signal(syscall.SIGSTOP)
		// The fault itself: the manager does not run for this long.
		time.Sleep(stall)
		mgr.signal(syscall.SIGCONT)
		// Past the grace period (2 × heartbeat timeout) and a heartbeat
		// timeout more: anyone the manager was going to kill is dead by then.
		holdFor(t, 3500*time.Millisecond, func() error {
			after, err := c.scenes()
			if err != nil {
				return err
			}
			if err := sameTable(before, after); err != nil {
				return fmt.Errorf("after a %s stall: %w", stall, err)
			}
			for _, r := range after {
				if !process.Alive(r.PID) {
					return fmt.Errorf("after a %s stall scene %s pid %d is dead", stall, r.ID, r.PID)
				}
			}
			return nil
		})
	}
	// The whole machine paused (a VM freeze): every process stops, and
	// they resume one after another, the manager first.
	for _, r := range before {
		if err := syscall.Kill(r.PID, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	mgr.signal(syscall.SIGSTOP)
	time.Sleep(3 * time.Second) // the fault
	mgr.signal(syscall.SIGCONT)
	for _, r := range before {
		if err := syscall.Kill(r.PID, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	holdFor(t, 3500*time.Millisecond, func() error {
		after, err := c.scenes()
		if err != nil {
			return err
		}
		if err := sameTable(before, after); err != nil {
			return fmt.Errorf("after a machine pause: %w", err)
		}
		return nil
	})
	out := mgr.output()
	if n := strings.Count(out, "suspecting itself"); n < 3 {
		t.Errorf("the manager noticed %d of 3 stalls:\n%s", n, out)
	}
	// The scenes reconnected and were adopted as they were.
	if !strings.Contains(out, "scene process registered") {
		t.Errorf("no scene re-registered")
	}
	if strings.Contains(out, "killing scene process") {
		t.Errorf("the manager killed a scene:\n%s", out)
	}
}

// A hung scene (SIGSTOP) is still found and replaced quickly while the
// manager is healthy: heartbeat timeout (1 s) plus the respawn, under
// 1.5 s (plus raceSlack under -race).
//
// The clock starts before the SIGSTOP (the hang cannot start earlier) and
// stops at the manager's own timeline events (the death it declared, the
// replacement registered): how late a loaded machine lets the test poll
// does not count, how late it lets the manager act does.
func TestStoppedSceneReplacedWithin1500ms(t *testing.T) {
	c := newCluster(t)
	c.start("worldmgr")
	old := find(t, c.waitRunning(15*time.Second), "forest")
	hung := time.Now()
	if err := syscall.Kill(old.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// SIGSTOP reaches the threads asynchronously: make sure the hang is
	// real (no thread runs) before waiting on the manager.
	poll.Until(t, 5*time.Second, func() error { return stopped(old.PID) })
	var died, recovered worldmgr.TimelineEvent
	poll.Until(t, 5*time.Second, func() error {
		var evs []worldmgr.TimelineEvent
		if err := getJSON("http://"+c.ports["worldmgr.admin"]+"/v1/timeline", &evs); err != nil {
			return err
		}
		died, recovered = worldmgr.TimelineEvent{}, worldmgr.TimelineEvent{}
		for _, ev := range evs {
			switch {
			case ev.Process != "forest":
			case ev.Kind == "died" && ev.PID == old.PID:
				died = ev
			case ev.Kind == "recovered" && ev.PID != old.PID && !died.At.IsZero():
				recovered = ev
			}
		}
		if recovered.At.IsZero() {
			return fmt.Errorf("forest: died %+v, no replacement registered yet", died)
		}
		return nil
	})
	// The manager replaces a process only once it is dead; check anyway.
	poll.Until(t, 5*time.Second, func() error {
		if process.Alive(old.PID) {
			return fmt.Errorf("hung pid %d still alive", old.PID)
		}
		return nil
	})
	if r := find(t, c.waitRunning(5*time.Second), "forest"); r.PID != recovered.PID {
		t.Fatalf("forest runs as pid %d, the replacement registered as %d", r.PID, recovered.PID)
	}
	// hung has a monotonic reading and At none: Sub compares wall clocks.
	killed, replaced := died.At.Sub(hung), recovered.At.Sub(hung)
	t.Logf("hang to declared dead: %s, to replaced and running: %s (death to running %.1f ms)", killed, replaced, recovered.DurationMS)
	bound := 1500*time.Millisecond + raceSlack
	if killed > bound {
		t.Errorf("hung scene declared dead after %s, want under %s", killed, bound)
	}
	if replaced > bound {
		t.Errorf("hung scene replaced after %s, want under %s", replaced, bound)
	}
}

// After a manager restart the scene processes are not its children: it
// adopted them by checking their identity, and must still notice their
// death at once (pidfd) and kill them when they hang (through the pidfd).
func TestAdoptedScenesAreWatchedAndKillable(t *testing.T) {
	c := newCluster(t)
	mgr := c.start("worldmgr")
	before := c.waitRunning(15 * time.Second)
	mgr.signal(syscall.SIGKILL)
	mgr.wait(5 * time.Second)
	c.start("worldmgr")
	poll.Until(t, 10*time.Second, func() error {
		var st struct{ Recovering bool }
		if err := getJSON("http://"+c.ports["worldmgr.admin"]+"/v1/status", &st); err != nil {
			return err
		}
		if st.Recovering {
			return fmt.Errorf("recovering")
		}
		after, err := c.scenes()
		if err != nil {
			return err
		}
		return sameTable(before, after)
	})
	town, forest := find(t, before, "town"), find(t, before, "forest")

	// Death of an adopted process: noticed from its pidfd, replaced.
	if err := syscall.Kill(town.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	poll.Until(t, 5*time.Second, func() error {
		r, err := c.scene("town")
		if err != nil {
			return err
		}
		if r.PID == town.PID || r.State != modules.SceneRunning || r.Epoch != town.Epoch+1 {
			return fmt.Errorf("town: pid %d epoch %d state %s", r.PID, r.Epoch, r.State)
		}
		return nil
	})
	t.Logf("adopted town: killed to replaced in %s", time.Since(killed))

	// Hang of an adopted process: killed through its handle, replaced.
	if err := syscall.Kill(forest.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	poll.Until(t, 5*time.Second, func() error {
		if process.Alive(forest.PID) {
			return fmt.Errorf("hung adopted pid %d still alive", forest.PID)
		}
		r, err := c.scene("forest")
		if err != nil {
			return err
		}
		if r.PID == forest.PID || r.State != modules.SceneRunning {
			return fmt.Errorf("forest: pid %d state %s", r.PID, r.State)
		}
		return nil
	})
	t.Logf("adopted forest: hang to replaced in %s", time.Since(stopped))
}
