// Package modules declares the cluster's replicated data: each type next to
// the module that says who owns it, who reads it and how it is pushed.
package modules

import (
	"time"

	"github.com/respawn-dev/respawn/internal/replica"
	"github.com/respawn-dev/respawn/internal/version"
)

// Scene states as the world manager reports them.
const (
	SceneStarting   = "starting"   // spawned, not yet registered or still replaying
	SceneRunning    = "running"    // registered and serving
	SceneDead       = "dead"       // died; a respawn is pending (backoff)
	SceneFailed     = "failed"     // exceeded the restart intensity; needs `respawn scene restart`
	SceneRecovering = "recovering" // manager restarted and has not heard from it yet
	SceneCorrupt    = "corrupt"    // its event log is damaged: not served until `respawn scene repair` (Reason says what is at stake)
)

// SceneRow is one row of the scene table the world manager owns.
type SceneRow struct {
	ID      string `json:"id"`
	Process string `json:"process"`
	PID     int    `json:"pid"`
	Addr    string `json:"addr"`
	// Link is the process's gateway link address (internal/scenelink).
	Link     string    `json:"link"`
	Epoch    uint64    `json:"epoch"`
	State    string    `json:"state"`
	Players  int       `json:"players"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since"`
	ReplayMS float64   `json:"replay_ms"`
	// StandbyPID is the process's warm spare waiting to take over
	// (worldmgr.standby), 0 when there is none.
	StandbyPID int `json:"standby_pid,omitempty"`
	// Reason explains a state that needs the operator (corrupt), as the
	// scene process reported it.
	Reason string `json:"reason,omitempty"`
	// Load, from the scene-load replica; filled in by the admin API only, so
	// the published table does not change every second.
	EventsPerSec float64 `json:"events_per_s,omitempty"`
	TickLagMS    float64 `json:"tick_lag_ms,omitempty"`
	// Version: the build and formats of the process serving the scene,
	// as its hello said.
	Version *version.Info `json:"version,omitempty"`
}

// SceneTable is the scene table: the world manager owns it, gateways route
// from their replica, the CLI shows it. Immediate, because a gateway must
// follow a respawned scene to its new address at once.
var SceneTable = replica.Module{
	Name:        "scene_table",
	Owner:       replica.RoleWorldMgr,
	Subscribers: []replica.Role{replica.RoleGateway, replica.RoleCLI},
	Mode:        replica.Immediate,
}
