// Command scene is a scene process. The world manager starts it; it is not
// meant to be started by hand.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/logging"
	"github.com/respawn-dev/respawn/internal/scene"
)

func main() {
	var opt scene.Options
	cmd := &cobra.Command{Use: "scene", Short: "Host scenes (started by worldmgr)", SilenceUsage: true, SilenceErrors: true}
	loader := config.Bind(cmd.Flags())
	cmd.Flags().StringVar(&opt.Process, "process", "", "which scene process of the world config this is")
	cmd.Flags().Uint64Var(&opt.Epoch, "epoch", 0, "incarnation number, assigned by worldmgr")
	cmd.Flags().IntVar(&opt.Restarts, "restarts", 0, "restarts so far, reported back to a restarted worldmgr")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loader.Load()
		if err != nil {
			return err
		}
		log, err := logging.New(cfg.Log, "scene", zap.String("process", opt.Process),
			zap.Uint64("epoch", opt.Epoch), zap.Int("pid", os.Getpid()))
		if err != nil {
			return err
		}
		defer log.Sync() //nolint:errcheck // stderr sync errors are meaningless
		opt.Config, opt.Log = cfg, log
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		if err := scene.Run(ctx, opt); err != nil {
			log.Error("scene process failed", zap.Error(err))
			return err
		}
		return nil
	}
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "scene:", err)
		os.Exit(1)
	}
}
