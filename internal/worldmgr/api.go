package worldmgr

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/process"
)

// The admin API. Every handler does its work on the loop goroutine via call.
func (m *Manager) routes() {
	m.admin.Handle("GET /v1/status", m.apiStatus)
	m.admin.Handle("GET /v1/scenes", m.apiScenes)
	m.admin.Handle("POST /v1/scenes/{id}/kill", m.apiKill)
	m.admin.Handle("POST /v1/scenes/{id}/restart", m.apiRestart)
	m.admin.Handle("POST /v1/stop", m.apiStop)
	m.admin.Handle("GET /v1/timeline", m.apiTimeline)
	m.mountConsole()
	m.admin.Handle("POST /v1/processes/{name}/handoff", m.apiHandoff)
}

// apiHandoff starts a planned replacement of one scene process (`respawn
// upgrade`): it answers once the old incarnation was told to exit, after
// its spare caught up (at most spareReadyTimeout, then cold), or once the
// handoff ended otherwise (the process died meanwhile, the world stops);
// the caller polls /v1/scenes for the successor's epoch running.
func (m *Manager) apiHandoff(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// A spare started from the build an upgrade is replacing would take the
	// handoff over with the old code: it is killed first (and waited for,
	// or it would take the log as the old process lets go of it), and the
	// handoff starts a spare of the new build and goes to it once it caught
	// up.
	var stale int
	if cerr := m.call(func() {
		p, ok := m.sup.slots[name]
		if !ok || p.sparePID == 0 {
			return
		}
		if hd := m.handles[p.sparePID]; hd != nil && hd.bin != binIdentity(m.sceneBin) {
			stale = p.sparePID
			m.sup.discardSpare(p, "the scene binary changed since the standby started")
			m.apply()
		}
	}); cerr != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, cerr)
		return
	}
	if stale != 0 {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		err := process.WaitGone(ctx, stale)
		cancel()
		if err != nil {
			admin.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("standby of an older build (pid %d) not gone: %w", stale, err))
			return
		}
		m.log.Info("killed a standby of the build being replaced before the handoff", zap.String("process", name), zap.Int("standby_pid", stale))
	}
	var err error
	status := http.StatusOK
	var epoch uint64
	if cerr := m.call(func() {
		if err = m.sup.handoff(time.Now(), name); err != nil {
			status = http.StatusConflict
			if _, ok := m.sup.slots[name]; !ok {
				status = http.StatusNotFound
			}
			return
		}
		epoch = m.sup.slots[name].epoch
		m.apply()
	}); cerr != nil {
		status, err = http.StatusServiceUnavailable, cerr
	}
	if err != nil {
		admin.WriteError(w, status, err)
		return
	}
	m.log.Info("operator started a handoff", zap.String("process", name), zap.Uint64("epoch", epoch))
	// The wait for the spare, polled on the loop: it ends by itself within
	// spareReadyTimeout (the supervisor goes on cold then).
	ctx, cancel := context.WithTimeout(r.Context(), spareReadyTimeout+time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		waiting := false
		if cerr := m.call(func() {
			p := m.sup.slots[name]
			waiting = !p.handoffWait.IsZero()
		}); cerr != nil {
			admin.WriteError(w, http.StatusServiceUnavailable, cerr)
			return
		}
		if !waiting {
			break
		}
		select {
		case <-ctx.Done():
			admin.WriteError(w, http.StatusGatewayTimeout, fmt.Errorf("handoff of %s still waits for its standby: %w", name, ctx.Err()))
			return
		case <-tick.C:
		}
	}
	admin.WriteJSON(w, status, map[string]any{"process": name, "epoch": epoch})
}

// Status is GET /v1/status.
type Status struct {
	PID        int  `json:"pid"`
	Recovering bool `json:"recovering"`
	Stopping   bool `json:"stopping"`
}

func (m *Manager) apiStatus(w http.ResponseWriter, _ *http.Request) {
	var st Status
	if err := m.call(func() { st = Status{PID: os.Getpid(), Recovering: m.sup.recovering, Stopping: m.sup.stopping} }); err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, st)
}

func (m *Manager) apiScenes(w http.ResponseWriter, _ *http.Request) {
	var rows []modules.SceneRow
	if err := m.call(func() { rows = m.sup.rows() }); err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	for i, r := range rows {
		if l, ok := m.loads.Get(r.ID); ok && r.State == modules.SceneRunning {
			rows[i].EventsPerSec, rows[i].TickLagMS = l.EventsPerSec, l.TickLagMS
		}
	}
	admin.WriteJSON(w, http.StatusOK, rows)
}

// KillResult is the answer to POST /v1/scenes/{id}/kill.
type KillResult struct {
	Scene   string `json:"scene"`
	Process string `json:"process"`
	PID     int    `json:"pid"`
	Epoch   uint64 `json:"epoch"`
	Signal  string `json:"signal"`
}

func (m *Manager) apiKill(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	sigName := r.URL.Query().Get("signal")
	if sigName == "" {
		sigName = "KILL"
	}
	sig, err := process.ParseSignal(sigName)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	var res KillResult
	var status int
	if err := m.call(func() {
		p := m.sup.slotOf(id)
		if p == nil {
			status, err = http.StatusNotFound, fmt.Errorf("unknown scene %q", id)
			return
		}
		hd := m.handles[p.pid]
		if p.pid == 0 || hd == nil || hd.h.Exited() {
			status, err = http.StatusConflict, fmt.Errorf("scene %q has no live process this manager can signal (state %s)", id, p.state)
			return
		}
		res = KillResult{Scene: id, Process: p.name, PID: p.pid, Epoch: p.epoch, Signal: strings.ToUpper(strings.TrimPrefix(strings.ToUpper(sigName), "SIG"))}
		if err = hd.h.Signal(sig); err != nil {
			status = http.StatusInternalServerError
			return
		}
		m.timeline.add(TimelineEvent{At: time.Now(), Process: p.name, Kind: "operator", PID: p.pid, Epoch: p.epoch, Reason: "SIG" + res.Signal + " from the admin API"})
	}); err != nil && status == 0 {
		status = http.StatusServiceUnavailable
	}
	if err != nil {
		admin.WriteError(w, status, err)
		return
	}
	m.log.Sugar().Infow("operator signalled scene process", "scene", id, "scene_pid", res.PID, "signal", res.Signal)
	admin.WriteJSON(w, http.StatusOK, res)
}

// apiRestart clears a failed scene's restart history and starts it; a
// running one is killed and replaced at once.
func (m *Manager) apiRestart(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var err error
	status := http.StatusOK
	var row modules.SceneRow
	if cerr := m.call(func() {
		p := m.sup.slotOf(id)
		if p == nil {
			status, err = http.StatusNotFound, fmt.Errorf("unknown scene %q", id)
			return
		}
		if err = m.sup.restart(time.Now(), p.name); err != nil {
			status = http.StatusConflict
			return
		}
		m.timeline.add(TimelineEvent{At: time.Now(), Process: p.name, Kind: "operator", PID: p.pid, Epoch: p.epoch, Reason: "restart from the admin API"})
		m.apply()
		for _, rr := range m.sup.rows() {
			if rr.ID == id {
				row = rr
			}
		}
	}); cerr != nil {
		status, err = http.StatusServiceUnavailable, cerr
	}
	if err != nil {
		admin.WriteError(w, status, err)
		return
	}
	admin.WriteJSON(w, status, row)
}

// apiStop stops every scene process and waits until they are gone: what
// `respawn up` does on Ctrl-C. A plain SIGTERM to the manager does not do
// this, so restarting the manager never stops the world.
func (m *Manager) apiStop(w http.ResponseWriter, r *http.Request) {
	done := make(chan struct{})
	if err := m.call(func() {
		m.stopWaiters = append(m.stopWaiters, done)
		m.sup.stop(time.Now())
		m.apply()
	}); err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	select {
	case <-done:
		admin.WriteJSON(w, http.StatusOK, map[string]bool{"stopped": true})
	case <-ctx.Done():
		// Graceful exit took too long: kill what is left by pid.
		_ = m.call(func() {
			for _, hd := range m.handles {
				_ = hd.h.Signal(syscall.SIGKILL) // through the handle: only our own processes
			}
		})
		admin.WriteJSON(w, http.StatusOK, map[string]bool{"stopped": true, "killed": true})
	}
}
