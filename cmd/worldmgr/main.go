// Command worldmgr is the world manager: it spawns and supervises the scene
// processes and owns the scene table.
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
	"github.com/respawn-dev/respawn/internal/worldmgr"
)

func main() {
	cmd := &cobra.Command{Use: "worldmgr", Short: "Supervise scene processes and own the scene table", SilenceUsage: true, SilenceErrors: true}
	loader := config.Bind(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loader.Load()
		if err != nil {
			return err
		}
		log, err := logging.New(cfg.Log, "worldmgr", zap.Int("pid", os.Getpid()))
		if err != nil {
			return err
		}
		defer log.Sync() //nolint:errcheck // stderr sync errors are meaningless
		// SIGTERM stops the manager only; scene processes keep serving.
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return worldmgr.Run(ctx, worldmgr.Options{Config: cfg, Log: log, ChildArgs: loader.ChildArgs(cfg)})
	}
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "worldmgr:", err)
		os.Exit(1)
	}
}
