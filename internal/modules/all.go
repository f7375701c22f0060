package modules

import (
	"slices"

	"github.com/respawn-dev/respawn/internal/replica"
)

// All returns every replicated module of the cluster: the single place that
// answers "who syncs to whom" (`respawn replicas` prints it). A fresh slice
// each call, so callers cannot change the declarations.
func All() []replica.Module {
	all := []replica.Module{SceneTable, PlayerProfiles, PlayerPositions, SceneLoads}
	for i := range all {
		all[i].Subscribers = slices.Clone(all[i].Subscribers)
	}
	return all
}
