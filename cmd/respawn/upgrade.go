package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/version"
)

// UpgradeStep is one process replaced by `respawn upgrade` (--json).
type UpgradeStep struct {
	Process  string  `json:"process"` // datasvr, worldmgr, scene/NAME, gateway[/NAME]
	OldBuild string  `json:"old_build,omitempty"`
	NewBuild string  `json:"new_build,omitempty"`
	OldPID   int     `json:"old_pid,omitempty"`
	NewPID   int     `json:"new_pid,omitempty"`
	Epoch    uint64  `json:"epoch,omitempty"` // a scene process's new epoch
	Seconds  float64 `json:"seconds"`         // from the replacement starting to it serving
	Error    string  `json:"error,omitempty"`
}

// UpgradeReport is `respawn upgrade --json`.
type UpgradeReport struct {
	OK      bool          `json:"ok"`
	Steps   []UpgradeStep `json:"steps"`
	Seconds float64       `json:"seconds"`
	Error   string        `json:"error,omitempty"`
}

// upgradeTimeout bounds how long one process may take to serve again.
const upgradeTimeout = 60 * time.Second

// upgradeOrder: the data server first (everything else reconnects to it),
// then the manager (scenes keep serving while it is gone), then the scene
// processes, then the gateways (whose clients move to another gateway).
var upgradeKinds = []string{"datasvr", "worldmgr", "scene", "gateway"}

func upgradeCommand(a *app) *cobra.Command {
	bins := map[string]*string{}
	var oneAtATime bool
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Replace the running processes with new binaries, one at a time, with players online",
		Long: "Installs each given binary in the binary directory (the one it replaces is kept as NAME.prev)\n" +
			"and replaces the running processes one at a time, each only after the previous one serves\n" +
			"again: datasvr and worldmgr are restarted in place (respawn up restarts them), each scene\n" +
			"process hands over to a caught-up spare of the new build at the next epoch (the new scene\n" +
			"binary must read the running one's snapshot and event formats, checked before anything is\n" +
			"installed), gateways drain (clients are told to move to another gateway and resume there).\n" +
			"It stops at the first process that does not come back healthy; `respawn upgrade rollback`\n" +
			"puts back what was replaced.",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			want := map[string]string{}
			for kind, p := range bins {
				if *p != "" {
					want[kind] = *p
				}
			}
			if len(want) == 0 {
				return errors.New("nothing to upgrade: give at least one of --scene-binary, --gateway-binary, --datasvr-binary, --worldmgr-binary")
			}
			return a.runUpgrade(want)
		},
	}
	for _, kind := range upgradeKinds {
		bins[kind] = new(string)
		cmd.Flags().StringVar(bins[kind], kind+"-binary", "", "new "+kind+" binary")
	}
	cmd.Flags().BoolVar(&oneAtATime, "one-at-a-time", true, "replace one process at a time, each after the previous serves again (the only mode)")
	cmd.AddCommand(&cobra.Command{
		Use:   "rollback",
		Short: "Put back the binaries the last upgrade replaced (NAME.prev) and replace the processes again",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			dir, err := a.binDir()
			if err != nil {
				return err
			}
			want := map[string]string{}
			for _, kind := range upgradeKinds {
				if p := filepath.Join(dir, kind+".prev"); fileExists(p) {
					want[kind] = p
				}
			}
			if len(want) == 0 {
				return fmt.Errorf("nothing to roll back: no *.prev binary in %s", dir)
			}
			return a.runUpgrade(want)
		},
	})
	return cmd
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// binDir is where `respawn up` and worldmgr start binaries from.
func (a *app) binDir() (string, error) {
	cfg, err := a.config()
	if err != nil {
		return "", err
	}
	if cfg.BinDir != "" {
		return cfg.BinDir, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Dir(exe), nil
}

func (a *app) runUpgrade(want map[string]string) error {
	rep := a.upgrade(context.Background(), want)
	if a.json {
		if err := a.printJSON(rep); err != nil {
			return err
		}
	} else {
		for _, s := range rep.Steps {
			line := fmt.Sprintf("%-20s %s -> %s  pid %d -> %d  %.2fs", s.Process, s.OldBuild, s.NewBuild, s.OldPID, s.NewPID, s.Seconds)
			if s.Error != "" {
				line += "  FAILED: " + s.Error
			}
			fmt.Fprintln(a.out, line)
		}
		fmt.Fprintf(a.out, "upgrade %s in %.2fs\n", map[bool]string{true: "done", false: "STOPPED"}[rep.OK], rep.Seconds)
	}
	if !rep.OK {
		return errors.New("upgrade stopped: " + rep.Error)
	}
	return nil
}

// upgrade replaces, in upgradeKinds order, every process of each kind in
// want, and stops at the first failure.
func (a *app) upgrade(ctx context.Context, want map[string]string) UpgradeReport {
	began := time.Now()
	rep := UpgradeReport{}
	fail := func(err error) UpgradeReport {
		rep.Error, rep.Seconds = err.Error(), time.Since(began).Seconds()
		return rep
	}
	cfg, err := a.config()
	if err != nil {
		return fail(err)
	}
	dir, err := a.binDir()
	if err != nil {
		return fail(err)
	}
	infos := map[string]version.Info{}
	for kind, bin := range want {
		info, err := binaryVersion(ctx, bin)
		if err != nil {
			return fail(fmt.Errorf("%s binary %s: %w", kind, bin, err))
		}
		infos[kind] = info
	}
	for _, kind := range upgradeKinds {
		bin, ok := want[kind]
		if !ok {
			continue
		}
		var err error
		switch kind {
		case "scene":
			err = a.upgradeScenes(ctx, &rep, dir, bin, infos[kind])
		case "gateway":
			if err = install(dir, kind, bin); err != nil {
				break
			}
			for _, gw := range cfg.Gateways() {
				name := "gateway"
				if len(cfg.Gateway.Instances) > 0 {
					name = "gateway/" + gw.Name
				}
				if err = a.restartDaemon(ctx, &rep, name, "gateway", gw.Admin, infos[kind]); err != nil {
					break
				}
			}
		default:
			if err = install(dir, kind, bin); err == nil {
				addr := map[string]string{"datasvr": cfg.Datasvr.Admin, "worldmgr": cfg.WorldMgr.Admin}[kind]
				err = a.restartDaemon(ctx, &rep, kind, kind, addr, infos[kind])
			}
		}
		if err != nil {
			return fail(err)
		}
	}
	rep.OK, rep.Seconds = true, time.Since(began).Seconds()
	return rep
}

// binaryVersion runs `BIN version`.
func binaryVersion(ctx context.Context, bin string) (version.Info, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return version.Info{}, fmt.Errorf("`%s version`: %w", bin, err)
	}
	var info version.Info
	if err := json.Unmarshal(out, &info); err != nil {
		return version.Info{}, fmt.Errorf("`%s version` printed no version: %w", bin, err)
	}
	return info, info.Validate()
}

// install copies bin over DIR/NAME through a rename (a running process
// keeps its old file), keeping the replaced one as NAME.prev.
func install(dir, name, bin string) error {
	dst := filepath.Join(dir, name)
	src, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if src == dst {
		return nil
	}
	tmp := dst + ".new"
	if err := copyFile(src, tmp); err != nil {
		return fmt.Errorf("install %s: %w", name, err)
	}
	if fileExists(dst) {
		if err := copyFile(dst, dst+".prev"); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("keep %s as %s.prev: %w", name, name, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install %s: %w", name, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// restartDaemon restarts a daemon `respawn up` supervises: SIGTERM to the
// pid its /healthz reports (after checking that pid runs the binary named
// bin), then waits for a new pid reporting want's build healthy (for a
// gateway, after its drain: `respawn up` starts the new one only once the
// old one has exited).
func (a *app) restartDaemon(ctx context.Context, rep *UpgradeReport, name, bin, addr string, want version.Info) error {
	step := UpgradeStep{Process: name, NewBuild: want.Build}
	began := time.Now()
	done := func(err error) error {
		step.Seconds = time.Since(began).Seconds()
		if err != nil {
			step.Error = err.Error()
		}
		rep.Steps = append(rep.Steps, step)
		return err
	}
	st := a.daemonStatus(addr)
	if !st.Running || st.PID <= 0 {
		return done(fmt.Errorf("%s at %s is not running: %s", name, addr, st.Error))
	}
	step.OldPID = st.PID
	if st.Version != nil {
		step.OldBuild = st.Version.Build
	}
	id, err := process.ReadIdentity(st.PID)
	if err != nil {
		return done(fmt.Errorf("%s pid %d: %w (upgrade runs on the machine of `respawn up`)", name, st.PID, err))
	}
	if filepath.Base(strings.TrimSuffix(id.Exe, " (deleted)")) != bin {
		return done(fmt.Errorf("%s pid %d runs %s, not %s: not signalling it", name, st.PID, id.Exe, bin))
	}
	if err := process.Signal(st.PID, syscall.SIGTERM); err != nil {
		return done(fmt.Errorf("%s pid %d: SIGTERM: %w", name, st.PID, err))
	}
	limit := upgradeTimeout
	if bin == "gateway" {
		// The old gateway drains (its clients move) before it exits and
		// `respawn up` starts the new one: that wait is part of the step.
		if cfg, err := a.config(); err == nil {
			limit += cfg.Gateway.DrainTimeout
		}
	}
	err = waitServing(ctx, limit, func() error {
		now := a.daemonStatus(addr)
		switch {
		case !now.Running || now.PID == st.PID:
			return fmt.Errorf("%s not restarted yet (%s)", name, now.Error)
		case !now.Healthy:
			return fmt.Errorf("%s pid %d not healthy: %s", name, now.PID, now.Error)
		case now.Version == nil || now.Version.Build != want.Build:
			return fmt.Errorf("%s pid %d runs build %v, want %s", name, now.PID, now.Version, want.Build)
		}
		step.NewPID = now.PID
		return nil
	})
	return done(err)
}

// upgradeScenes hands every scene process over to the new binary, one at
// a time. The new binary must read what each running process writes: that
// is checked for all of them before it is installed, so a refused upgrade
// leaves every scene process serving on the old binary, and a crash
// respawns the old binary too.
func (a *app) upgradeScenes(ctx context.Context, rep *UpgradeReport, dir, bin string, want version.Info) error {
	cfg, err := a.config()
	if err != nil {
		return err
	}
	// A manager restarted a moment ago (it may have just been upgraded)
	// collects reports for its recovery window and refuses handoffs.
	if err := waitServing(ctx, upgradeTimeout, func() error {
		var st struct{ Recovering bool }
		if err := a.adminCall("GET", cfg.WorldMgr.Admin, "/v1/status", nil, &st); err != nil {
			return err
		}
		if st.Recovering {
			return errors.New("worldmgr is recovering its table")
		}
		return nil
	}); err != nil {
		return err
	}
	rows, err := a.scenes()
	if err != nil {
		return err
	}
	byProc := map[string][]modules.SceneRow{}
	var names []string
	for _, r := range rows {
		if _, ok := byProc[r.Process]; !ok {
			names = append(names, r.Process)
		}
		byProc[r.Process] = append(byProc[r.Process], r)
	}
	slices.Sort(names)
	for _, name := range names {
		r := byProc[name][0]
		if r.State != modules.SceneRunning || r.Version == nil {
			err := fmt.Errorf("scene process %s is %s: upgrade it after it serves again", name, r.State)
			rep.Steps = append(rep.Steps, UpgradeStep{Process: "scene/" + name, OldPID: r.PID, NewBuild: want.Build, Error: err.Error()})
			return err
		}
		if err := want.CanReplay(*r.Version); err != nil {
			err = fmt.Errorf("scene process %s: %w; it keeps serving on build %s", name, err, r.Version.Build)
			rep.Steps = append(rep.Steps, UpgradeStep{Process: "scene/" + name, OldPID: r.PID, OldBuild: r.Version.Build, NewBuild: want.Build, Error: err.Error()})
			return err
		}
	}
	if err := install(dir, "scene", bin); err != nil {
		return err
	}
	for _, name := range names {
		old := byProc[name][0]
		step := UpgradeStep{Process: "scene/" + name, OldPID: old.PID, OldBuild: old.Version.Build, NewBuild: want.Build}
		began := time.Now()
		err := a.adminCall("POST", cfg.WorldMgr.Admin, "/v1/processes/"+name+"/handoff", nil, nil)
		if err == nil {
			err = waitServing(ctx, upgradeTimeout, func() error {
				rows, err := a.scenes()
				if err != nil {
					return err
				}
				for _, r := range rows {
					if r.Process != name {
						continue
					}
					if r.Epoch <= old.Epoch || r.State != modules.SceneRunning || r.Version == nil || r.Version.Build != want.Build {
						return fmt.Errorf("scene %s: epoch %d %s", r.ID, r.Epoch, r.State)
					}
					step.NewPID, step.Epoch = r.PID, r.Epoch
				}
				return nil
			})
		}
		step.Seconds = time.Since(began).Seconds()
		if err != nil {
			step.Error = err.Error()
			rep.Steps = append(rep.Steps, step)
			return fmt.Errorf("scene process %s: %w", name, err)
		}
		rep.Steps = append(rep.Steps, step)
	}
	return nil
}

// waitServing calls f until it returns nil or limit passes (its last error).
func waitServing(ctx context.Context, limit time.Duration, f func() error) error {
	if err := poll.Within(ctx, limit, f); err != nil {
		return fmt.Errorf("not serving within %s: %w", limit, err)
	}
	return nil
}
