// Package daemon is the command-line skeleton every respawn daemon shares:
// cobra, the config flags, a zap logger, and a context cancelled by SIGINT
// or SIGTERM. Each main is then a few lines.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/logging"
	"github.com/respawn-dev/respawn/internal/version"
)

// RunFunc runs a daemon until ctx ends. loader gives access to the flags
// (e.g. to pass them on to children).
type RunFunc func(ctx context.Context, cfg *config.Config, loader *config.Loader, log *zap.Logger) error

// Command builds the daemon's command. fields are added to every log line
// (the pid always is); they are evaluated after flags are parsed.
func Command(name, short string, fields func() []zap.Field, run RunFunc) *cobra.Command {
	cmd := &cobra.Command{Use: name, Short: short, Args: cobra.NoArgs, SilenceUsage: true, SilenceErrors: true}
	loader := config.Bind(cmd.Flags())
	cmd.RunE = func(*cobra.Command, []string) error {
		cfg, err := loader.Load()
		if err != nil {
			return err
		}
		fs := []zap.Field{zap.Int("pid", os.Getpid())}
		if fields != nil {
			fs = append(fields(), fs...)
		}
		log, err := logging.New(cfg.Log, name, fs...)
		if err != nil {
			return err
		}
		defer log.Sync() //nolint:errcheck // syncing stderr fails harmlessly on some terminals
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		if err := run(ctx, cfg, loader, log); err != nil {
			log.Error(name+" failed", zap.Error(err))
			return err
		}
		return nil
	}
	return cmd
}

// AddVersion adds `NAME version`: the binary's build and formats as JSON,
// which `respawn upgrade` reads from a new binary before installing it.
func AddVersion(cmd *cobra.Command, info func() version.Info) {
	cmd.AddCommand(&cobra.Command{
		Use: "version", Short: "Print this binary's build version and protocol/format versions as JSON", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			enc := json.NewEncoder(c.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(info())
		},
	})
}

// Main executes cmd and exits non-zero with the error on stderr.
func Main(cmd *cobra.Command) {
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd.Name(), err)
		os.Exit(1)
	}
}
