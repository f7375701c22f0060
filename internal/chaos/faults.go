package chaos

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

// Fault is one fault as injected: the report's `faults` entries.
type Fault struct {
	Kind       string `json:"kind"`
	Target     string `json:"target"`
	PID        int    `json:"pid"`
	AtMs       int64  `json:"at_ms"`
	StallMs    int64  `json:"stall_ms,omitempty"`
	RecoveryMs int64  `json:"recovery_ms"` // -1: not recovered within the bound
	Error      string `json:"error,omitempty"`
}

// recoveryBound is how long the cluster may take to come back from one
// fault before the run reports it as not recovered.
const recoveryBound = 30 * time.Second

// inject performs one planned fault and waits until the cluster is whole
// again (every daemon healthy, every scene running), which is its
// recovery time.
func (c *cluster) inject(ctx context.Context, p Planned, t0 time.Time) Fault {
	var f Fault
	var start time.Time
	var err error
	// A target may die by itself between the pick and the signal (a crash
	// point fired): pick again rather than report a fault never injected.
	for try := 0; try < 3; try++ {
		f, start, err = c.injectOnce(ctx, p, t0)
		if err == nil || f.PID == 0 || process.Alive(f.PID) {
			break
		}
	}
	if err != nil {
		f.Error = err.Error()
		return f
	}
	rctx, cancel := context.WithTimeout(ctx, recoveryBound)
	defer cancel()
	if err := c.recovered(rctx, f); err != nil {
		f.Error = "not recovered: " + err.Error()
		return f
	}
	f.RecoveryMs = time.Since(start).Milliseconds()
	return f
}

// injectOnce picks the target of p and signals it.
func (c *cluster) injectOnce(ctx context.Context, p Planned, t0 time.Time) (Fault, time.Time, error) {
	f := Fault{Kind: p.Kind, AtMs: time.Since(t0).Milliseconds(), RecoveryMs: -1}
	start := time.Now()
	var err error
	switch p.Kind {
	case KindScene, KindHang:
		err = c.faultScene(ctx, p, &f)
	case KindWorldmgr, KindDatasvr:
		err = c.faultDaemon(ctx, p.Kind, p.Kind, syscall.SIGKILL, &f)
	case KindGateway:
		var gws []daemon
		for _, d := range c.daemons() {
			if d.kind == "gateway" {
				gws = append(gws, d)
			}
		}
		d := gws[p.Pick%uint64(len(gws))]
		err = c.faultDaemon(ctx, d.name, "gateway", syscall.SIGKILL, &f)
	case KindStall:
		name := []string{"worldmgr", "datasvr"}[p.Pick%2]
		f.StallMs = p.Stall.Milliseconds()
		err = c.faultDaemon(ctx, name, name, syscall.SIGSTOP, &f)
		if err == nil {
			select {
			case <-time.After(p.Stall):
			case <-ctx.Done():
			}
			if h, herr := c.handle(f.PID, name); herr == nil {
				err = h.Signal(syscall.SIGCONT)
				h.Close()
			} else {
				err = fmt.Errorf("SIGCONT %s pid %d: %w", name, f.PID, herr)
			}
		}
	default:
		err = fmt.Errorf("unknown fault kind %q", p.Kind)
	}
	return f, start, err
}

// faultScene kills (scene) or stops (hang) a scene process picked from the
// scene table.
func (c *cluster) faultScene(ctx context.Context, p Planned, f *Fault) error {
	rows, err := c.scenes(ctx)
	if err != nil {
		return err
	}
	// One entry per process, in a stable order, so the pick is repeatable.
	type proc struct {
		pid    int
		scenes []string
	}
	var procs []proc
	for _, r := range rows {
		if k := slices.IndexFunc(procs, func(p proc) bool { return p.pid == r.PID }); k >= 0 {
			procs[k].scenes = append(procs[k].scenes, r.ID)
			continue
		}
		procs = append(procs, proc{r.PID, []string{r.ID}})
	}
	slices.SortFunc(procs, func(a, b proc) int { return compareStrings(a.scenes[0], b.scenes[0]) })
	if len(procs) == 0 {
		return fmt.Errorf("no scene process in the table")
	}
	pr := procs[p.Pick%uint64(len(procs))]
	f.Target, f.PID = "scene/"+pr.scenes[0], pr.pid
	h, err := c.handle(pr.pid, "scene")
	if err != nil {
		return err
	}
	defer h.Close()
	sig := syscall.SIGKILL
	if p.Kind == KindHang {
		sig = syscall.SIGSTOP
	}
	return h.Signal(sig)
}

// faultDaemon signals the daemon `name` (its pid from its /healthz, tied to
// binary bin and this cluster).
func (c *cluster) faultDaemon(ctx context.Context, name, bin string, sig syscall.Signal, f *Fault) error {
	var admin string
	for _, d := range c.daemons() {
		if d.name == name {
			admin = d.admin
		}
	}
	f.Target = name
	var pid int
	err := poll.Wait(ctx, func() error {
		var ok bool
		if pid, ok = c.health(admin); pid <= 0 || !ok {
			return fmt.Errorf("%s not healthy", name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	f.PID = pid
	h, err := c.handle(pid, bin)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Signal(sig)
}

// recovered waits until the cluster is whole after f: the faulted process
// replaced (a kill, a hang) or answering again (a stall), every daemon
// healthy and every scene running on a live pid other than f's.
func (c *cluster) recovered(ctx context.Context, f Fault) error {
	return poll.Wait(ctx, func() error {
		for _, d := range c.daemons() {
			pid, ok := c.health(d.admin)
			if !ok {
				return fmt.Errorf("%s not healthy", d.name)
			}
			if d.name == f.Target && f.Kind != KindStall && pid == f.PID {
				return fmt.Errorf("%s still pid %d", d.name, pid)
			}
		}
		rows, err := c.scenes(ctx)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.State != "running" || !process.Alive(r.PID) {
				return fmt.Errorf("scene %s is %s (pid %d)", r.ID, r.State, r.PID)
			}
			if (f.Kind == KindScene || f.Kind == KindHang) && r.PID == f.PID {
				return fmt.Errorf("scene %s still on pid %d", r.ID, r.PID)
			}
		}
		return nil
	})
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
