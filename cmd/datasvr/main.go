// Command datasvr is the data server: player data cache, journal and
// write-behind to the database, plus (by default) the embedded NATS server.
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
	"github.com/respawn-dev/respawn/internal/datasvr"
	"github.com/respawn-dev/respawn/internal/logging"
)

func main() {
	root := &cobra.Command{Use: "datasvr", Short: "Run the respawn data server", SilenceUsage: true, Args: cobra.NoArgs}
	loader := config.Bind(root.Flags())
	root.RunE = func(*cobra.Command, []string) error {
		cfg, err := loader.Load()
		if err != nil {
			return err
		}
		log, err := logging.New(cfg.Log, "datasvr", zap.Int("pid", os.Getpid()))
		if err != nil {
			return err
		}
		defer log.Sync()
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return datasvr.Run(ctx, cfg, log)
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "datasvr:", err)
		os.Exit(1)
	}
}
