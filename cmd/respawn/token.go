package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/token"
)

// tokenIssueCommand is `respawn token issue PLAYER`: a player login token
// for the gateway (docs/protocol.md).
func tokenIssueCommand(a *app) *cobra.Command {
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue PLAYER",
		Short: "Print a login token for PLAYER, signed with the cluster secret",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			if ttl <= 0 {
				return fmt.Errorf("--ttl must be positive, got %s", ttl)
			}
			sec, err := secret.Load(cfg.Secret, cfg.DataDir)
			if err != nil {
				return err
			}
			tok, err := token.IssueLogin(sec, args[0], time.Now().Add(ttl))
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]any{"player": args[0], "token": tok, "expires": time.Now().Add(ttl).UTC()})
			}
			fmt.Fprintln(a.out, tok)
			return nil
		},
	}
	issue.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	return issue
}
