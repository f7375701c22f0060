// Command gateway is the client gateway: game clients connect to it over
// TCP or WebSocket, log in with a token, and play; it relays their requests
// to the scene processes and survives their crashes.
package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/daemon"
	"github.com/respawn-dev/respawn/internal/gateway"
)

func main() {
	var instance string
	cmd := daemon.Command("gateway", "Run a respawn client gateway", nil,
		func(ctx context.Context, cfg *config.Config, _ *config.Loader, log *zap.Logger) error {
			return gateway.Run(ctx, cfg, instance, log)
		})
	cmd.Flags().StringVar(&instance, "instance", "", "run the gateway of this name from gateway.instances (default: the one of gateway.listen)")
	daemon.AddVersion(cmd, gateway.VersionInfo)
	daemon.Main(cmd)
}
