package modules

import (
	"time"

	"github.com/respawn-dev/respawn/internal/replica"
)

// PlayerPosition is a player's position in its scene, keyed by player ID.
type PlayerPosition struct {
	ID    string  `json:"id"`
	Scene string  `json:"scene"`
	X     float64 `json:"x"`
	Y     float64 `json:"y"`
}

// PlayerPositions is owned by the scene processes and read by the CLI only
// (players in the same scene see each other through the scene itself).
// Positions change at movement rate (~10 Hz per player); batching every 2 s
// (seed 002) sends one update per moving player per interval instead.
var PlayerPositions = replica.Module{
	Name:        "player_position",
	Owner:       replica.RoleScene,
	Subscribers: []replica.Role{replica.RoleCLI},
	Mode:        replica.Batched,
	Interval:    2 * time.Second,
}
