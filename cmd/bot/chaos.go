package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/chaos"
	"github.com/respawn-dev/respawn/internal/config"
)

func chaosCommand() *cobra.Command {
	var (
		o       chaos.Options
		faults  string
		asJSON  bool
		workDir string
		loader  *config.Loader
	)
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Play through the gateways while killing and stopping the cluster's processes; check nothing was lost",
		Long: `Starts a cluster of the real binaries with respawn up (or, with --attach, uses
the running cluster the config describes), has --bots bots play the reference
game through its gateways, and every --every injects one fault from a schedule
seeded by --seed (the same seed gives the same schedule): kill -9 of a scene
process, worldmgr, datasvr or a gateway; SIGSTOP of a scene process until it
is replaced (hang); SIGSTOP then SIGCONT of worldmgr or datasvr for 1-5 s
(stall). Only pids tied to this cluster (its binaries, its data directory)
are signalled. Then it lets the cluster settle and checks: disconnects, stuck
sessions, acknowledged effects in the scenes and the data server, each
scene's conservation ledger, the world's ticks, and each player's history
against the pure game model (porcupine). docs/chaos.md explains each check.
Exits non-zero on any violation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kinds, err := chaos.ParseKinds(faults)
			if err != nil {
				return err
			}
			o.Kinds = kinds
			cfg, err := loader.Load()
			if err != nil {
				return err
			}
			if !o.Attach {
				o.BinDir = cfg.BinDir
				if o.BinDir == "" {
					exe, err := os.Executable()
					if err != nil {
						return err
					}
					o.BinDir = filepath.Dir(exe) // the daemons are built next to bot
				}
				o.WorkDir = workDir
				if o.WorkDir == "" {
					if o.WorkDir, err = os.MkdirTemp("", "respawn-chaos-"); err != nil {
						return err
					}
				}
				if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
					return err
				}
				logf, err := os.Create(filepath.Join(o.WorkDir, "cluster.log"))
				if err != nil {
					return err
				}
				defer logf.Close()
				o.ClusterLog = logf
				fmt.Fprintf(cmd.ErrOrStderr(), "chaos: cluster under %s (its log: cluster.log)\n", o.WorkDir)
			}
			o.Progress = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			rep, err := chaos.Run(ctx, cfg, o, zap.NewNop())
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printChaos(cmd.OutOrStdout(), rep)
			}
			if rep.Failed() {
				return fmt.Errorf("chaos: %d violations", len(rep.Violations))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Bots, "bots", 50, "bots playing")
	f.DurationVar(&o.Duration, "duration", 60*time.Second, "how long the bots play and faults are injected")
	f.DurationVar(&o.Every, "every", 5*time.Second, "one fault per interval")
	f.StringVar(&faults, "faults", "scene,worldmgr,datasvr,gateway,hang,stall", "fault kinds to inject")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the fault schedule and the bots' choices")
	f.Float64Var(&o.Rate, "rate", 5, "requests/s per bot")
	f.IntVar(&o.Pipeline, "pipeline", 2, "requests in flight per bot")
	f.DurationVar(&o.RequestTimeout, "request-timeout", 30*time.Second, "a request with no answer by then is a violation (unanswered)")
	f.DurationVar(&o.Settle, "settle", 30*time.Second, "after the faults, how long the cluster may take to be whole again")
	f.BoolVar(&o.CrashPoints, "crash-points", false, "also arm every named crash point (RESPAWN_TEST_CRASH) in the started cluster, at seeded counts")
	f.BoolVar(&o.Attach, "attach", false, "use the running cluster the config describes instead of starting one")
	f.StringVar(&workDir, "work-dir", "", "where a started cluster keeps its data and config (default: a new temporary directory)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	loader = config.Bind(f)
	return cmd
}

func printChaos(w io.Writer, r *chaos.Report) {
	fmt.Fprintf(w, "bots %d, seed %d, %.1f s\n", r.Bots, r.Seed, float64(r.DurationMs)/1000)
	q := r.Requests
	fmt.Fprintf(w, "requests: %d sent, %d answered (%d refused by the game), %d unknown; p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		q.Sent, q.Answered, q.Refused, q.Unknown, q.P50Ms, q.P99Ms, q.MaxMs)
	c := r.Clients
	fmt.Fprintf(w, "clients: %d resumes, %d relogins, %d disconnects, %d lost connections, %d resends\n\n",
		c.Resumes, c.Relogins, c.Disconnects, c.Lost, c.Resends)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tFAULT\tTARGET\tPID\tRECOVERY\tERROR")
	for _, f := range r.Faults {
		rec := fmt.Sprintf("%d ms", f.RecoveryMs)
		if f.RecoveryMs < 0 {
			rec = "NOT RECOVERED"
		}
		kind := f.Kind
		if f.StallMs > 0 {
			kind = fmt.Sprintf("%s %dms", f.Kind, f.StallMs)
		}
		fmt.Fprintf(tw, "%.1fs\t%s\t%s\t%d\t%s\t%s\n", float64(f.AtMs)/1000, kind, f.Target, f.PID, rec, f.Error)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tCHECKED\tVIOLATIONS\tNOTE")
	for _, ch := range r.Checks {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", ch.Name, ch.Checked, ch.Violations, ch.Note)
	}
	tw.Flush()
	if r.CrashPoints != "" {
		fmt.Fprintf(w, "crash points armed: %s; fired: %v\n", r.CrashPoints, r.CrashesAt)
	}
	if r.Unchecked > 0 {
		fmt.Fprintf(w, "%d players not checked (an attack of theirs went unanswered: its loot is unknown)\n", r.Unchecked)
	}
	for i, v := range r.Violations {
		if i == 50 {
			fmt.Fprintf(w, "... %d more (--json lists all)\n", len(r.Violations)-50)
			break
		}
		who := v.Player
		if who == "" {
			who = v.Scene
		}
		fmt.Fprintf(w, "VIOLATION %s %s: expected %s, found %s %s\n", v.Check, who, v.Expected, v.Found, v.Detail)
	}
	if len(r.Violations) == 0 {
		fmt.Fprintln(w, "no violations")
	}
}
