package worldmgr

import (
	"net/http"
	"time"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/console"
	"github.com/respawn-dev/respawn/internal/modules"
)

// TimelineLimit bounds the timeline the console shows: the newest events
// are kept, the oldest dropped. A restart storm cannot grow it.
const TimelineLimit = 200

// TimelineEvent is one fault or recovery the supervisor saw: GET
// /v1/timeline, newest last.
type TimelineEvent struct {
	At      time.Time `json:"at"`
	Process string    `json:"process"`
	// Kind: died, failed (restart intensity exceeded), recovered (a
	// replacement registered; DurationMS is death to running), stall (the
	// manager itself was not running for DurationMS), operator (a kill or
	// restart asked through the admin API), handoff (a planned handoff that
	// went on cold: no standby was ready).
	Kind       string  `json:"kind"`
	PID        int     `json:"pid,omitempty"`
	Epoch      uint64  `json:"epoch,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	DurationMS float64 `json:"duration_ms,omitempty"`
}

// timeline is a fixed ring of events; owned by the loop goroutine.
type timeline struct {
	ev    []TimelineEvent
	next  int
	total int
}

func newTimeline(n int) *timeline { return &timeline{ev: make([]TimelineEvent, n)} }

func (t *timeline) add(evs ...TimelineEvent) {
	for _, e := range evs {
		t.ev[t.next] = e
		t.next = (t.next + 1) % len(t.ev)
		t.total++
	}
}

// list returns the kept events, oldest first.
func (t *timeline) list() []TimelineEvent {
	n := min(t.total, len(t.ev))
	out := make([]TimelineEvent, 0, n)
	start := (t.next - n + len(t.ev)) % len(t.ev)
	for i := range n {
		out = append(out, t.ev[(start+i)%len(t.ev)])
	}
	return out
}

func (m *Manager) apiTimeline(w http.ResponseWriter, _ *http.Request) {
	var evs []TimelineEvent
	if err := m.call(func() { evs = m.timeline.list() }); err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, evs)
}

// mountConsole serves the web console on the admin port: the operator
// already reaches it for the CLI, it holds the scene table, and it is the
// one daemon whose death the console must not share with the scenes.
func (m *Manager) mountConsole() {
	console.Mount(m.admin, console.Sources{
		Scenes: func() ([]modules.SceneRow, error) {
			var rows []modules.SceneRow
			err := m.call(func() { rows = m.sup.rows() })
			return rows, err
		},
		Replicas: func() []console.Replica {
			if m.loads == nil {
				return nil
			}
			st := m.loads.Stats()
			return []console.Replica{{Reader: "worldmgr", Module: st.Module, Synced: st.Synced, Keys: st.Keys, Resyncs: st.Resyncs,
				LagP99MS: st.LagP99.Seconds() * 1000, LagMaxMS: st.LagMax.Seconds() * 1000}}
		},
		Datasvr:  m.cfg.Datasvr.Admin,
		Gateways: m.cfg.Gateways(),
	})
}
