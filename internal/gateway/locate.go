package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/respawn-dev/respawn/internal/dataclient"
)

// locator asks the data server where a player is: the scene holding their
// lease, else the scene they were last saved in, else the default scene.
// A token for a player the data server does not know creates the
// character (the token is the cluster's word that the player exists).
type locator struct{ g *Gateway }

func (l *locator) locate(ctx context.Context, player string) (string, error) {
	ac := dataclient.NewAdminClient(l.g.opt.NATS, l.g.opt.OperatorToken)
	rep, err := ac.Show(ctx, player)
	if errors.Is(err, dataclient.ErrNotFound) {
		if err := ac.Create(ctx, player, player); err != nil && !errors.Is(err, dataclient.ErrExists) {
			return "", fmt.Errorf("create player %s: %w", player, err)
		}
		return l.g.opt.DefaultScene, nil
	}
	if err != nil {
		return "", fmt.Errorf("locate player %s: %w", player, err)
	}
	if rep.Owner != nil && rep.Owner.Scene != "" {
		return rep.Owner.Scene, nil
	}
	var d struct {
		Scene string `json:"scene"`
	}
	if len(rep.Data) > 0 && json.Unmarshal(rep.Data, &d) == nil && d.Scene != "" {
		// A dungeon room does not outlive its players for long: an offline
		// player comes back in the room's scene.
		return baseScene(d.Scene), nil
	}
	return l.g.opt.DefaultScene, nil
}
