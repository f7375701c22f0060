// Command worldmgr is the world manager: it spawns and supervises the scene
// processes and owns the scene table. SIGTERM stops the manager only; the
// scene processes keep serving and the next manager adopts them.
package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/daemon"
	"github.com/respawn-dev/respawn/internal/worldmgr"
)

func main() {
	cmd := daemon.Command("worldmgr", "Supervise scene processes and own the scene table", nil,
		func(ctx context.Context, cfg *config.Config, loader *config.Loader, log *zap.Logger) error {
			return worldmgr.Run(ctx, worldmgr.Options{Config: cfg, Log: log, ChildArgs: loader.ChildArgs(cfg)})
		})
	daemon.AddVersion(cmd, worldmgr.VersionInfo)
	daemon.Main(cmd)
}
