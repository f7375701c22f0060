package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/respawn-dev/respawn/internal/config"
)

// app is what every subcommand shares: the config (loaded once, on first
// use, from the same flags and environment the daemons use) and the output.
type app struct {
	out    io.Writer
	loader *config.Loader
	// json is --json: commands that print data print it as JSON.
	json bool

	once sync.Once
	cfg  *config.Config
	err  error

	// attempt bounds one admin API call (default 30 s); a command that
	// retries sets it shorter so several attempts fit in its timeout.
	attempt time.Duration
}

func (a *app) callTimeout() time.Duration {
	if a.attempt > 0 {
		return a.attempt
	}
	return 30 * time.Second
}

func newApp(out io.Writer) *app { return &app{out: out} }

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "respawn",
		Short:         "Run and operate a respawn game-server cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	a.loader = config.Bind(root.PersistentFlags())
	root.PersistentFlags().BoolVar(&a.json, "json", false, "print JSON instead of text")
	// Every command accepts the configuration overrides (the tests and
	// scripts pass one set of cluster flags to all of them), but only the
	// commands that run something from a configuration list them.
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !isGlobalFlag(f.Name) {
			f.Hidden = true
		} else if u := globalUsage(f.Name); u != "" {
			if i := strings.Index(f.Usage, "(env "); i >= 0 {
				u += " " + f.Usage[i:]
			}
			f.Usage = u
		}
	})
	for _, add := range []func(*app) []*cobra.Command{
		clusterCommands,
		gmCommands,
		replicaCommands,
		playerCommands,
		busCommands,
	} {
		root.AddCommand(add(a)...)
	}
	return root
}

// isGlobalFlag says which persistent flags every subcommand's --help shows:
// where the configuration is, where the cluster secret is, and which admin
// APIs to talk to.
func isGlobalFlag(name string) bool {
	switch name {
	case "config", "json", "data-dir", "worldmgr.admin", "datasvr.admin", "gateway.admin":
		return true
	}
	return false
}

// globalUsage says what a global flag is for in the CLI, ahead of the
// generic "override KEY (env VAR)".
func globalUsage(name string) string {
	switch name {
	case "data-dir":
		return "the cluster's data directory: the secret and operator token come from here"
	case "worldmgr.admin":
		return "world manager admin API address"
	case "datasvr.admin":
		return "data server admin API address"
	case "gateway.admin":
		return "gateway admin API address"
	}
	return ""
}

// withConfigHelp makes cmd's --help list the configuration overrides that
// are hidden elsewhere: cmd runs something from a configuration.
func withConfigHelp(cmd *cobra.Command) *cobra.Command {
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		var shown []*pflag.Flag
		c.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden {
				f.Hidden = false
				shown = append(shown, f)
			}
		})
		defer func() {
			for _, f := range shown {
				f.Hidden = true
			}
		}()
		c.Root().HelpFunc()(c, args)
	})
	return cmd
}

// config returns the loaded configuration.
func (a *app) config() (*config.Config, error) {
	a.once.Do(func() { a.cfg, a.err = a.loader.Load() })
	return a.cfg, a.err
}

// printJSON writes v indented, for --json output.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}
