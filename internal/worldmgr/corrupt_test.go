package worldmgr

import (
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/modules"
)

// A scene process that reports one of its scenes corrupt keeps running (its
// other scenes serve) and is not restarted for it (a restart would find the
// same damage): the table shows that scene corrupt with the reason, until
// the process reports it running again after `respawn scene repair`.
func TestCorruptSceneIsShownAndNotRestarted(t *testing.T) {
	m := boot(t)
	reason := "record damaged at slot 0 half A offset 320 (file offset 4672): checksum mismatch; 11 acknowledged events at stake (seq 5..15); run `respawn scene repair forest`"
	m.s.heartbeat(m.now, m.conn["forest"], []ctlproto.SceneReport{
		{ID: "forest", Epoch: 1, State: modules.SceneCorrupt, Reason: reason},
		{ID: "dungeon", Epoch: 1, State: modules.SceneRunning},
	})
	m.run(5*time.Second, "forest", "town")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneCorrupt || r.Reason != reason || r.Epoch != 1 {
		t.Fatalf("forest row %+v", r)
	}
	for _, id := range []string{"dungeon", "town"} {
		if r := m.row(id); r.State != modules.SceneRunning || r.Reason != "" {
			t.Fatalf("%s row %+v", id, r)
		}
	}
	m.s.heartbeat(m.now, m.conn["forest"], []ctlproto.SceneReport{{ID: "forest", Epoch: 1, State: modules.SceneRunning}})
	if r := m.row("forest"); r.State != modules.SceneRunning || r.Reason != "" {
		t.Fatalf("forest row after repair %+v", r)
	}
	// A dead process's reports die with it.
	m.s.heartbeat(m.now, m.conn["forest"], []ctlproto.SceneReport{{ID: "forest", Epoch: 1, State: modules.SceneCorrupt, Reason: reason}})
	m.s.exited(m.now, "forest", m.pid["forest"], "killed")
	m.drain()
	if r := m.row("forest"); r.State == modules.SceneCorrupt || r.Reason != "" {
		t.Fatalf("forest row after its process died %+v", r)
	}
}
