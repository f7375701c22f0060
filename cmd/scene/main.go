// Command scene is a scene process. The world manager starts it; it is not
// meant to be started by hand.
package main

import (
	"context"
	"os"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/daemon"
	"github.com/respawn-dev/respawn/internal/scene"
)

func main() {
	var opt scene.Options
	cmd := daemon.Command("scene", "Host scenes (started by worldmgr)",
		func() []zap.Field {
			return []zap.Field{zap.String("process", opt.Process), zap.Uint64("epoch", opt.Epoch)}
		},
		func(ctx context.Context, cfg *config.Config, _ *config.Loader, log *zap.Logger) error {
			opt.Config, opt.Log = cfg, log
			if os.Getenv("GOMAXPROCS") == "" {
				// Every CPU until the scenes are restored, then Procs.
				opt.Procs = scene.Procs(cfg, opt.Process)
			}
			return scene.Run(ctx, opt)
		})
	cmd.Flags().StringVar(&opt.Process, "process", "", "which scene process of the world config this is")
	cmd.Flags().Uint64Var(&opt.Epoch, "epoch", 0, "incarnation number, assigned by worldmgr")
	cmd.Flags().IntVar(&opt.Restarts, "restarts", 0, "restarts so far, reported back to a restarted worldmgr")
	cmd.Flags().BoolVar(&opt.Standby, "standby", false, "start as a hot spare: prepare, follow the event log, take over when its lock is free (started by worldmgr)")
	cmd.Flags().IntVar(&opt.ManagerPID, "manager-pid", 0, "the worldmgr that started this standby; it gives up when that process is gone")
	daemon.AddVersion(cmd, scene.VersionInfo)
	daemon.Main(cmd)
}
