package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/launch"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/version"
)

func clusterCommands(a *app) []*cobra.Command {
	return []*cobra.Command{upCommand(a), statusCommand(a), upgradeCommand(a), scenesCommand(a), sceneCommand(a), configCommand(a), shutdownCommand(a), tokenCommand(a)}
}

// tokenCommand prints the operator token, for curl and scripts.
func tokenCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print the operator token the admin APIs want (admin.token, or derived from the cluster secret)",
		Long: "Prints the bearer token that requests changing state need (Authorization: Bearer TOKEN):\n" +
			"admin.token (RESPAWN_ADMIN_TOKEN) when set, else the one derived from the cluster secret in\n" +
			"the data directory. Anyone who reads it can operate the cluster: treat it as a password.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			tok, err := operatorToken(cfg)
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(map[string]string{"token": tok})
			}
			_, err = fmt.Fprintln(a.out, tok)
			return err
		},
	}
	cmd.AddCommand(tokenIssueCommand(a))
	return cmd
}

func upCommand(a *app) *cobra.Command {
	return withConfigHelp(&cobra.Command{
		Use:   "up",
		Short: "Start datasvr, worldmgr and gateway, restart them if they die; Ctrl-C stops everything",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			binDir := cfg.BinDir
			if binDir == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				binDir = filepath.Dir(exe)
			}
			args := a.loader.ChildArgs(cfg)
			if f := cmd.Flags().Lookup("log.format"); (f == nil || !f.Changed) && os.Getenv("RESPAWN_LOG_FORMAT") == "" && isTerminal(os.Stdout) {
				args = append(args, "--log.format", "console")
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return launch.Run(ctx, launch.Options{Config: cfg, ChildArgs: args, BinDir: binDir, Out: a.out})
		},
	})
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// DaemonStatus is one daemon in `respawn status --json`.
type DaemonStatus struct {
	Running bool   `json:"running"`
	PID     int    `json:"pid,omitempty"`
	Healthy bool   `json:"healthy"`
	Admin   string `json:"admin"`
	Error   string `json:"error,omitempty"`
	// Degraded: serving, but something it depends on is not (datasvr:
	// "degraded: database unreachable since …").
	Degraded string `json:"degraded,omitempty"`
	// Version: the build and protocol/format versions it reports.
	Version *version.Info `json:"version,omitempty"`
}

// daemonStatus asks one daemon's /healthz. An unhealthy daemon answers 503
// with the same body: it is running, and its pid and reason are shown.
func (a *app) daemonStatus(addr string) DaemonStatus {
	st := DaemonStatus{Admin: addr}
	var h struct {
		Healthy  bool          `json:"healthy"`
		PID      int           `json:"pid"`
		Error    string        `json:"error"`
		Degraded string        `json:"degraded"`
		Version  *version.Info `json:"version"`
	}
	code, raw, err := a.adminGetRaw(addr, "/healthz")
	if err == nil && code != 200 && code != 503 {
		err = fmt.Errorf("GET %s/healthz: status %d", addr, code)
	}
	if err == nil {
		if jerr := json.Unmarshal(raw, &h); jerr != nil {
			err = fmt.Errorf("GET %s/healthz: bad answer: %w", addr, jerr)
		}
	}
	if err != nil {
		st.Error = "not reachable: " + err.Error()
		return st
	}
	st.Running, st.PID, st.Healthy, st.Error, st.Degraded, st.Version = true, h.PID, h.Healthy, h.Error, h.Degraded, h.Version
	return st
}

func statusCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show which daemons run and whether they are healthy",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			out := map[string]DaemonStatus{}
			names := []string{"datasvr", "worldmgr"}
			addrs := map[string]string{"worldmgr": cfg.WorldMgr.Admin, "datasvr": cfg.Datasvr.Admin}
			for _, gw := range cfg.Gateways() {
				name := "gateway"
				if len(cfg.Gateway.Instances) > 0 {
					name = "gateway/" + gw.Name
				}
				names = append(names, name)
				addrs[name] = gw.Admin
			}
			for name, addr := range addrs {
				out[name] = a.daemonStatus(addr)
			}
			// Scene processes, as the manager's table knows them: one entry
			// per process, so version skew across them shows.
			if rows, err := a.scenes(); err == nil {
				for _, r := range rows {
					name := "scene/" + r.Process
					if _, seen := out[name]; seen {
						continue
					}
					names = append(names, name)
					st := DaemonStatus{Running: r.PID != 0, PID: r.PID, Healthy: r.State == modules.SceneRunning, Admin: r.Addr, Version: r.Version}
					if !st.Healthy {
						st.Error = r.State
					}
					out[name] = st
				}
			}
			if a.json {
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DAEMON\tPID\tHEALTHY\tVERSION\tADMIN\tNOTE")
			for _, name := range names {
				st := out[name]
				pid := "-"
				if st.Running {
					pid = fmt.Sprint(st.PID)
				}
				note := st.Error
				if st.Degraded != "" {
					note = strings.TrimSpace(st.Degraded + " " + note)
				}
				ver := "-"
				if st.Version != nil {
					ver = st.Version.Build
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", name, pid, st.Healthy, ver, st.Admin, note)
			}
			return tw.Flush()
		},
	}
	return cmd
}

func (a *app) scenes() ([]modules.SceneRow, error) {
	cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	var rows []modules.SceneRow
	if err := a.adminCall("GET", cfg.WorldMgr.Admin, "/v1/scenes", nil, &rows); err != nil {
		return nil, fmt.Errorf("scene table from worldmgr: %w", err)
	}
	return rows, nil
}

func (a *app) sceneRow(id string) (modules.SceneRow, error) {
	rows, err := a.scenes()
	if err != nil {
		return modules.SceneRow{}, err
	}
	i := slices.IndexFunc(rows, func(r modules.SceneRow) bool { return r.ID == id })
	if i < 0 {
		return modules.SceneRow{}, fmt.Errorf("unknown scene %q", id)
	}
	return rows[i], nil
}

func scenesCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scenes",
		Short: "Show the scene table",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			rows, err := a.scenes()
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(rows)
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SCENE\tPROCESS\tSTATE\tPID\tEPOCH\tPLAYERS\tEVENTS/S\tRESTARTS\tSINCE\tADDR\tREASON")
			for _, r := range rows {
				since := "-"
				if !r.Since.IsZero() {
					since = time.Since(r.Since).Round(time.Second).String()
				}
				reason := r.Reason
				if reason == "" {
					reason = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.0f\t%d\t%s\t%s\t%s\n", r.ID, r.Process, r.State, r.PID, r.Epoch, r.Players, r.EventsPerSec, r.Restarts, since, r.Addr, reason)
			}
			return tw.Flush()
		},
	}
	return cmd
}

func sceneCommand(a *app) *cobra.Command {
	scene := &cobra.Command{Use: "scene", Short: "Act on one scene"}
	var signal string
	kill := &cobra.Command{
		Use:   "kill ID",
		Short: "Send a signal to the process hosting scene ID (default KILL)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var res struct {
				Scene, Process, Signal string
				PID                    int
				Epoch                  uint64
			}
			path := "/v1/scenes/" + url.PathEscape(args[0]) + "/kill?signal=" + url.QueryEscape(signal)
			if err := a.adminCall("POST", cfg.WorldMgr.Admin, path, nil, &res); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.out, "sent %s to pid %d (process %s, epoch %d) hosting scene %s\n", res.Signal, res.PID, res.Process, res.Epoch, res.Scene)
			return nil
		},
	}
	kill.Flags().StringVar(&signal, "signal", "KILL", "KILL, STOP, CONT or TERM")
	restart := &cobra.Command{
		Use:   "restart ID",
		Short: "Restart scene ID's process; also clears a failed scene",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			var row modules.SceneRow
			if err := a.adminCall("POST", cfg.WorldMgr.Admin, "/v1/scenes/"+url.PathEscape(args[0])+"/restart", nil, &row); err != nil {
				return err
			}
			if a.json {
				return a.printJSON(row)
			}
			fmt.Fprintf(a.out, "scene %s: %s (process %s)\n", row.ID, row.State, row.Process)
			return nil
		},
	}
	scene.AddCommand(kill, restart, sceneInspectCommand(a), sceneRepairCommand(a))
	return scene
}

func configCommand(a *app) *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Configuration tools"}
	c.AddCommand(withConfigHelp(&cobra.Command{
		Use:   "validate",
		Short: "Load the configuration exactly as a daemon would and report problems",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			src := cfg.Source
			if src == "" {
				src = "built-in defaults"
			}
			if a.json {
				return a.printJSON(map[string]any{"ok": true, "source": src, "scene_processes": len(cfg.Processes)})
			}
			fmt.Fprintf(a.out, "config OK (%s): %d scene processes\n", src, len(cfg.Processes))
			return nil
		},
	}))
	return c
}

func shutdownCommand(a *app) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "shutdown",
		Short: "Graceful stop: every scene saves, datasvr flushes, then the cluster stops",
		Long: "Saves every player and flushes datasvr to the database (as save-all), then stops\n" +
			"`respawn up` if it runs: gateways first, then scenes (they save again), worldmgr, datasvr.\n" +
			"Otherwise it stops the scene processes through the world manager; under systemd or\n" +
			"supervisor, stop the gateways before and the other daemons after with those tools.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.config()
			if err != nil {
				return err
			}
			saved, err := a.saveAll(timeout)
			if err != nil {
				if saved != nil {
					_ = a.printSaveAll(saved)
				}
				return fmt.Errorf("shutdown stopped before anything was stopped: %w", err)
			}
			if !a.json {
				if err := a.printSaveAll(saved); err != nil {
					return err
				}
			}
			type stopped struct {
				Saved   *SaveAllReport `json:"saved"`
				Stopped string         `json:"stopped"`
				UpPID   int            `json:"up_pid,omitempty"`
			}
			raw, _ := os.ReadFile(launch.PIDPath(cfg.DataDir)) // absent: not under `respawn up`
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(raw))); pid > 0 && process.Alive(pid) {
				// `respawn up` stops the scenes, then the daemons, in order.
				if err := process.Signal(pid, syscall.SIGTERM); err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := process.WaitGone(ctx, pid); err != nil {
					return fmt.Errorf("respawn up (pid %d) did not stop: %w", pid, err)
				}
				if a.json {
					return a.printJSON(stopped{Saved: saved, Stopped: "cluster", UpPID: pid})
				}
				fmt.Fprintf(a.out, "cluster stopped (respawn up pid %d)\n", pid)
				return nil
			}
			if err := a.adminCall("POST", cfg.WorldMgr.Admin, "/v1/stop", nil, nil); err != nil {
				return fmt.Errorf("stop scenes: %w", err)
			}
			if a.json {
				return a.printJSON(stopped{Saved: saved, Stopped: "scenes"})
			}
			fmt.Fprintln(a.out, "scenes stopped; `respawn up` is not running, so stop worldmgr and datasvr with their supervisor")
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for each scene to save")
	return cmd
}
