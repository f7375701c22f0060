// Package launch is the local process supervisor behind `respawn up`: it
// starts datasvr, worldmgr and every configured gateway, restarts any that dies with the same
// restart policy the world manager applies to scenes, forwards their logs
// with a prefix, and on shutdown stops the whole world, scenes included.
package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/supervise"
)

// Daemons in start order; they stop gateways first, then in reverse.
var daemonOrder = [...]string{"datasvr", "worldmgr", "gateway"}

// Options configure a launch.
type Options struct {
	Config    *config.Config
	ChildArgs []string
	// BinDir holds the daemon binaries; missing binaries are skipped.
	BinDir string
	// Out receives the daemons' prefixed log lines and the launcher's own.
	Out io.Writer
}

// Run starts the daemons and supervises them until ctx ends, then stops
// everything and returns nil.
func Run(ctx context.Context, opt Options) error {
	l := &launcher{opt: opt, out: &lockedWriter{w: opt.Out}}
	if err := l.writePID(); err != nil {
		return err
	}
	defer os.Remove(l.pidPath())
	var daemons []*daemon
	for _, name := range daemonOrder {
		bin := filepath.Join(opt.BinDir, name)
		if _, err := os.Stat(bin); err != nil {
			l.printf("up", "%s not built (%s); skipping it", name, bin)
			continue
		}
		if name != "gateway" {
			daemons = append(daemons, &daemon{name: name, bin: bin})
			continue
		}
		// One supervised child per configured gateway.
		for _, gw := range opt.Config.Gateways() {
			d := &daemon{name: name, bin: bin}
			if len(opt.Config.Gateway.Instances) > 0 {
				d.name, d.args = "gw/"+gw.Name, []string{"--instance", gw.Name}
			}
			daemons = append(daemons, d)
		}
	}
	if len(daemons) == 0 {
		return fmt.Errorf("up: no daemon binaries in %s; run `make build`", opt.BinDir)
	}
	runCtx, stopAll := context.WithCancel(context.Background())
	defer stopAll()
	var wg sync.WaitGroup
	for _, d := range daemons {
		wg.Add(1)
		go func() { defer wg.Done(); l.supervise(runCtx, d) }()
		if d.name == "datasvr" {
			// The others connect to the NATS server datasvr embeds.
			l.waitHealthy(ctx, opt.Config.Datasvr.Admin, 10*time.Second)
		}
	}
	<-ctx.Done()
	// Gateways first: their clients are told "shutting down" while the
	// scenes still answer, so no request is left held for a scene that is
	// going away. Then the scenes save their players and stop, then the
	// manager, and datasvr last, since everyone else saves through it.
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	// All gateways drain at once: a client told to move finds no other
	// gateway to resume on (the cluster is stopping) rather than hopping
	// onto one that drains next; each waits for its requests in flight to
	// be answered first, so nothing is left held.
	l.printf("up", "stopping gateways (drain: up to %s)", opt.Config.Gateway.DrainTimeout)
	var gws sync.WaitGroup
	for _, d := range daemons {
		if d.isGateway() {
			gws.Add(1)
			go func() { defer gws.Done(); d.stop(l) }()
		}
	}
	gws.Wait()
	l.printf("up", "stopping scenes")
	l.stopScenes()
	l.printf("up", "stopping the other daemons")
	for i := len(daemons) - 1; i >= 0; i-- {
		if !daemons[i].isGateway() {
			daemons[i].stop(l)
		}
	}
	stopAll()
	wg.Wait()
	l.printf("up", "stopped")
	return nil
}

type launcher struct {
	opt      Options
	out      *lockedWriter
	mu       sync.Mutex
	stopping bool
}

type daemon struct {
	name string
	bin  string
	args []string // extra arguments (a gateway's --instance)
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// PIDPath is where `respawn up` records its pid, so `respawn shutdown` can
// find it.
func PIDPath(dataDir string) string { return filepath.Join(dataDir, "run", "up.pid") }

func (l *launcher) pidPath() string { return PIDPath(l.opt.Config.DataDir) }

func (l *launcher) writePID() error {
	if err := os.MkdirAll(filepath.Dir(l.pidPath()), 0o755); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if raw, err := os.ReadFile(l.pidPath()); err == nil {
		if pid, _ := strconv.Atoi(string(raw)); pid != os.Getpid() && process.Alive(pid) {
			return fmt.Errorf("up: already running as pid %d (%s)", pid, l.pidPath())
		}
	}
	if err := os.WriteFile(l.pidPath(), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return nil
}

func (l *launcher) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

// supervise runs d, restarting it per the restart policy until ctx ends.
func (l *launcher) supervise(ctx context.Context, d *daemon) {
	var hist supervise.History
	for {
		err := l.runOnce(d)
		if ctx.Err() != nil || l.isStopping() {
			return
		}
		dec := supervise.Next(l.opt.Config.WorldMgr.Restart, &hist, time.Now())
		if dec.Failed {
			l.printf("up", "%s keeps dying (%v); giving up on it", d.name, err)
			return
		}
		l.printf("up", "%s died (%v); restarting in %s", d.name, err, dec.Delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(dec.Delay):
		}
	}
}

func (l *launcher) runOnce(d *daemon) error {
	cmd := exec.Command(d.bin, append(append([]string(nil), l.opt.ChildArgs...), d.args...)...)
	// Own process group: a Ctrl-C at the terminal reaches only us, and we
	// stop the daemons in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("start %s: %w", d.bin, err)
	}
	done := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()
	l.printf("up", "started %s (pid %d)", d.name, cmd.Process.Pid)
	copied := make(chan struct{})
	go func() { defer close(copied); l.forward(d.name, pr) }()
	err := cmd.Wait()
	pw.Close()
	<-copied
	close(done)
	if err == nil {
		err = errors.New("exited")
	}
	return err
}

func (d *daemon) isGateway() bool { return d.name == "gateway" || strings.HasPrefix(d.name, "gw/") }

func (d *daemon) stop(l *launcher) {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM) // it may have exited already
	grace := 10 * time.Second
	if d.isGateway() {
		grace += l.opt.Config.Gateway.DrainTimeout // it drains first
	}
	select {
	case <-done:
	case <-time.After(grace):
		l.printf("up", "%s did not stop in %s; killing it", d.name, grace)
		_ = cmd.Process.Kill()
		<-done
	}
}

// stopScenes asks the world manager to stop every scene process and waits.
func (l *launcher) stopScenes() {
	cfg := l.opt.Config
	req, err := http.NewRequest(http.MethodPost, "http://"+cfg.WorldMgr.Admin+"/v1/stop", nil)
	if err != nil {
		return
	}
	tok, err := admin.OperatorToken(cfg)
	if err != nil {
		l.printf("up", "could not stop scenes through worldmgr: %v", err)
		return
	}
	req.Header.Set("Authorization", admin.Bearer(tok))
	c := http.Client{Timeout: 15 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		l.printf("up", "could not stop scenes through worldmgr: %v", err)
		return
	}
	resp.Body.Close()
}

// waitHealthy waits up to limit for addr's /healthz to answer 200. Past the
// limit it says so and goes on: the others retry their connections anyway.
func (l *launcher) waitHealthy(ctx context.Context, addr string, limit time.Duration) {
	c := http.Client{Timeout: time.Second}
	err := poll.Within(ctx, limit, func() error { return admin.Healthy(&c, addr) })
	if err != nil && ctx.Err() == nil {
		l.printf("up", "%s not healthy within %s, starting the others anyway: %v", addr, limit, err)
	}
}

func (l *launcher) forward(name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.out.line(name, sc.Text())
	}
}

func (l *launcher) printf(name, format string, args ...any) {
	l.out.line(name, fmt.Sprintf(format, args...))
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) line(prefix, s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.w, "%-8s | %s\n", prefix, s)
}
