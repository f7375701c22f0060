// Command datasvr is the data server: player data cache, journal and
// write-behind to the database, plus (by default) the embedded NATS server.
package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/daemon"
	"github.com/respawn-dev/respawn/internal/datasvr"
)

func main() {
	cmd := daemon.Command("datasvr", "Run the respawn data server", nil,
		func(ctx context.Context, cfg *config.Config, _ *config.Loader, log *zap.Logger) error {
			return datasvr.Run(ctx, cfg, log)
		})
	daemon.AddVersion(cmd, datasvr.VersionInfo)
	daemon.Main(cmd)
}
