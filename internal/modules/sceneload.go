package modules

import (
	"time"

	"github.com/respawn-dev/respawn/internal/replica"
)

// SceneLoad is a scene's load, keyed by scene ID; the world manager uses it
// to place scenes and the CLI shows it.
type SceneLoad struct {
	Scene        string  `json:"scene"`
	Players      int     `json:"players"`
	EventsPerSec float64 `json:"events_per_sec"`
	TickLagMS    float64 `json:"tick_lag_ms"`
}

// SceneLoads is owned by the scene processes and batched every second:
// load is a gauge, only its latest value matters.
var SceneLoads = replica.Module{
	Name:        "scene_load",
	Owner:       replica.RoleScene,
	Subscribers: []replica.Role{replica.RoleWorldMgr, replica.RoleCLI},
	Mode:        replica.Batched,
	Interval:    time.Second,
}
