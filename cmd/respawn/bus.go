package main

import (
	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/secret"
)

// busCommands are about the cluster's NATS.
func busCommands(a *app) []*cobra.Command {
	b := &cobra.Command{Use: "bus", Short: "The cluster's NATS: users and permissions"}
	b.AddCommand(&cobra.Command{
		Use:   "config",
		Short: "Print the authorization block an external NATS server needs (contains passwords)",
		Long: `Prints the nats-server configuration of the cluster's users: one per role
(datasvr, worldmgr, scene, gateway, operator, gm), with passwords derived from the
cluster secret and the subject permissions the embedded server enforces. Include
it in the external server's config (nats-server -c FILE) and set nats.url. Like
respawn up, it creates the cluster secret under the data directory when there is
none yet, so the NATS server can be configured before the cluster's first start.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			sec, err := secret.Load(cfg.Secret, cfg.DataDir)
			if err != nil {
				return err
			}
			return bus.WriteServerConfig(a.out, sec)
		},
	})
	return []*cobra.Command{b}
}
