// Package modules declares the cluster's replicated data: each type next to
// the module that says who owns it, who reads it and how it is pushed.
package modules

import "time"

// Scene states as the world manager reports them.
const (
	SceneStarting   = "starting"   // spawned, not yet registered or still replaying
	SceneRunning    = "running"    // registered and serving
	SceneDead       = "dead"       // died; a respawn is pending (backoff)
	SceneFailed     = "failed"     // exceeded the restart intensity; needs `respawn scene restart`
	SceneRecovering = "recovering" // manager restarted and has not heard from it yet
)

// SceneRow is one row of the scene table the world manager owns.
type SceneRow struct {
	ID       string    `json:"id"`
	Process  string    `json:"process"`
	PID      int       `json:"pid"`
	Addr     string    `json:"addr"`
	Epoch    uint64    `json:"epoch"`
	State    string    `json:"state"`
	Players  int       `json:"players"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since"`
	ReplayMS float64   `json:"replay_ms"`
}
