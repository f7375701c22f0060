package modules

import "github.com/respawn-dev/respawn/internal/replica"

// PlayerProfile is what other processes need to know about a player: the
// gateway shows names and routes by scene, the CLI lists players. Keyed by
// player ID.
type PlayerProfile struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Level  int    `json:"level"`
	Scene  string `json:"scene"`
	Online bool   `json:"online"`
}

// PlayerProfiles is owned by the scene processes: each writes the profiles
// of the players it hosts (writer Instance = the scene process name), and
// a player who changes scene is written by the new scene with a newer
// version. Immediate: profile changes are rare and visible to players.
var PlayerProfiles = replica.Module{
	Name:        "player_profile",
	Owner:       replica.RoleScene,
	Subscribers: []replica.Role{replica.RoleGateway, replica.RoleCLI},
	Mode:        replica.Immediate,
}
