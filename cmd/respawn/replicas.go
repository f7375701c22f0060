package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/replica"
)

func replicaCommands(a *app) []*cobra.Command {
	return []*cobra.Command{replicasCommand(a), playersCommand(a), mapCommand(a), chatCommand(a)}
}

// readModule opens a CLI reader of module m and waits for its snapshot.
func readModule[T any](nc *nats.Conn, m replica.Module) (*replica.Reader[T], error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := replica.NewReader[T](context.Background(), nc, m, replica.RoleCLI, replica.ReaderOptions{})
	if err != nil {
		return nil, err
	}
	if err := r.WaitSynced(ctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("replica %s: %w", m.Name, err)
	}
	return r, nil
}

func replicasCommand(a *app) *cobra.Command {
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "replicas",
		Short: "Show every replicated module: owner, subscribers, mode, keys and the lag this CLI's reader sees",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			nc, err := a.natsConn(bus.RoleOperator)
			if err != nil {
				return err
			}
			defer nc.Close()
			var stats []func() replica.Stats
			for _, m := range modules.All() {
				var st func() replica.Stats
				switch m.Name {
				case modules.SceneTable.Name:
					st, err = openStats[modules.SceneRow](nc, m)
				case modules.PlayerProfiles.Name:
					st, err = openStats[modules.PlayerProfile](nc, m)
				case modules.PlayerPositions.Name:
					st, err = openStats[modules.PlayerPosition](nc, m)
				case modules.SceneLoads.Name:
					st, err = openStats[modules.SceneLoad](nc, m)
				default:
					err = fmt.Errorf("module %s has no type known to the CLI", m.Name)
				}
				if err != nil {
					return err
				}
				stats = append(stats, st)
			}
			// Lag is measured on updates, so watch for a while.
			time.Sleep(watch) // the observation window the user asked for
			var out []replica.Description
			for i, m := range modules.All() {
				out = append(out, replica.Describe(m, stats[i]()))
			}
			if a.json {
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODULE\tOWNER\tSUBSCRIBERS\tMODE\tINTERVAL\tKEYS\tLAG P99")
			for _, d := range out {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%dms\t%d\t%.2fms\n", d.Module, d.Owner, d.Subscribers, d.Mode, d.IntervalMS, d.Keys, d.LagP99MS)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().DurationVar(&watch, "watch", 2500*time.Millisecond, "how long to observe updates for the lag figures")
	return cmd
}

func openStats[T any](nc *nats.Conn, m replica.Module) (func() replica.Stats, error) {
	r, err := readModule[T](nc, m)
	if err != nil {
		return nil, err
	}
	return r.Stats, nil
}

// readAll returns a module's current entries, as a fresh reader sees them.
func readAll[T any](a *app, m replica.Module) ([]replica.Entry[T], error) {
	nc, err := a.natsConn(bus.RoleOperator)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	r, err := readModule[T](nc, m)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.All(), nil
}

func playersCommand(a *app) *cobra.Command {
	var sceneID string
	cmd := &cobra.Command{
		Use:   "players",
		Short: "List player profiles from the profile replica",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			entries, err := readAll[modules.PlayerProfile](a, modules.PlayerProfiles)
			if err != nil {
				return err
			}
			out := []modules.PlayerProfile{}
			for _, e := range entries {
				if sceneID == "" || e.Value.Scene == sceneID {
					out = append(out, e.Value)
				}
			}
			if a.json {
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PLAYER\tNAME\tLEVEL\tSCENE\tONLINE")
			for _, p := range out {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%v\n", p.ID, p.Name, p.Level, p.Scene, p.Online)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&sceneID, "scene", "", "only players in this scene")
	return cmd
}

func mapCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "map",
		Short: "World map: where every player is, from the (batched) position replica",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			entries, err := readAll[modules.PlayerPosition](a, modules.PlayerPositions)
			if err != nil {
				return err
			}
			byScene := map[string][]modules.PlayerPosition{}
			for _, e := range entries {
				byScene[e.Value.Scene] = append(byScene[e.Value.Scene], e.Value)
			}
			if a.json {
				return a.printJSON(byScene)
			}
			scenes := make([]string, 0, len(byScene))
			for s := range byScene {
				scenes = append(scenes, s)
			}
			sort.Strings(scenes)
			for _, s := range scenes {
				fmt.Fprintf(a.out, "%s (%d players)\n", s, len(byScene[s]))
				for _, p := range byScene[s] {
					fmt.Fprintf(a.out, "  %-16s (%g, %g)\n", p.ID, p.X, p.Y)
				}
			}
			return nil
		},
	}
	return cmd
}

func chatCommand(a *app) *cobra.Command {
	var from, text string
	cmd := &cobra.Command{
		Use:   "chat [--from NAME --say TEXT]",
		Short: "Follow world chat, or say something on it as a GM",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			role := bus.RoleOperator // following chat only reads
			if text != "" {
				role = bus.RoleGM
			}
			nc, err := a.natsConn(role)
			if err != nil {
				return err
			}
			defer nc.Close()
			chat, err := modules.NewChat(nc, modules.ChatOptions{})
			if err != nil {
				return err
			}
			if text != "" {
				if err := chat.Publish(modules.ChatMessage{From: from, Text: text}); err != nil {
					return err
				}
				return nc.Flush()
			}
			sub, err := chat.Subscribe(func(m modules.ChatMessage) {
				if a.json {
					_ = json.NewEncoder(a.out).Encode(m) // one message per line
					return
				}
				fmt.Fprintf(a.out, "[%s] %s: %s\n", m.Scene, m.From, m.Text)
			})
			if err != nil {
				return err
			}
			defer sub.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "GM", "sender name with --say")
	cmd.Flags().StringVar(&text, "say", "", "say this on world chat and exit")
	return cmd
}
