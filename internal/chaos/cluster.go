package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/freeport"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
)

// cluster is the cluster under test: the one this run started with
// `respawn up`, or the one it attached to.
type cluster struct {
	cfg   *config.Config
	opTok string
	log   *zap.Logger
	http  http.Client

	up     *exec.Cmd // nil when attached
	upDone chan struct{}
	// release gives back the ports ownConfig reserved; nil when attached.
	release func() error
}

// gatewayNames are the instances a started cluster runs: two, so a killed
// gateway's clients have another to resume on.
var gatewayNames = []string{"gw1", "gw2"}

// chaosMaxRestarts is the restart intensity of a started cluster
// (worldmgr.restart.max_restarts, also used by respawn up).
const chaosMaxRestarts = 1000

// ownConfig turns cfg into the configuration of a private cluster under
// dir: its own data and shm directories, loopback ports reserved with
// freeport (no other test or chaos run gets them while they are held), two
// gateways. It writes it to dir/chaos.yaml and returns the path and the
// function that gives the ports back (call it once the cluster is stopped,
// or on error paths; it is safe to call more than once).
func ownConfig(cfg *config.Config, dir string) (path string, release func() error, err error) {
	var held []*freeport.Port
	release = func() error {
		var errs []error
		for _, p := range held {
			errs = append(errs, p.Release())
		}
		held = nil
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, release())
		}
	}()
	free := func() (string, error) {
		p, err := freeport.Reserve()
		if err != nil {
			return "", fmt.Errorf("pick a free port: %w", err)
		}
		held = append(held, p)
		return p.Addr, nil
	}
	c := *cfg
	c.DataDir = filepath.Join(dir, "data")
	shm, err := os.MkdirTemp("/dev/shm", "respawn-chaos-")
	if err != nil {
		shm = filepath.Join(dir, "shm") // no /dev/shm: a plain directory works, slower
	}
	c.ShmDir = shm
	c.Secret = ""
	c.NATS.URL = ""
	addrs := []*string{&c.NATS.Listen, &c.WorldMgr.Listen, &c.WorldMgr.Admin, &c.Datasvr.Admin,
		&c.Gateway.Listen, &c.Gateway.WebSocket, &c.Gateway.Admin}
	for _, a := range addrs {
		if *a, err = free(); err != nil {
			return "", nil, err
		}
	}
	// Faults come faster than any crash loop the restart policy guards
	// against: the policy must not give up on a process chaos killed.
	c.WorldMgr.Restart.MaxRestarts = max(c.WorldMgr.Restart.MaxRestarts, chaosMaxRestarts)
	c.Gateway.Instances = nil
	for _, name := range gatewayNames {
		in := config.GatewayInstance{Name: name}
		for _, a := range []*string{&in.Listen, &in.WebSocket, &in.Admin} {
			if *a, err = free(); err != nil {
				return "", nil, err
			}
		}
		c.Gateway.Instances = append(c.Gateway.Instances, in)
	}
	raw, err := yaml.Marshal(&c)
	if err != nil {
		return "", nil, fmt.Errorf("chaos config: %w", err)
	}
	path = filepath.Join(dir, "chaos.yaml")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return "", nil, fmt.Errorf("chaos config: %w", err)
	}
	return path, release, nil
}

// startCluster runs `respawn up` (from binDir) on the config at path and
// waits until every daemon is healthy and every scene runs.
func startCluster(ctx context.Context, path, binDir string, env []string, out io.Writer, log *zap.Logger) (*cluster, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(binDir, "respawn"), "up", "--config", path, "--bin-dir", binDir, "--log.format", "json")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a Ctrl-C to the bot reaches respawn up only
	// through our shutdown, which stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start respawn up: %w", err)
	}
	c := &cluster{cfg: cfg, log: log, up: cmd, upDone: make(chan struct{}), http: http.Client{Timeout: 3 * time.Second}}
	go func() {
		_ = cmd.Wait()
		close(c.upDone)
	}()
	if err := c.finish(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// attachCluster uses a running cluster described by cfg.
func attachCluster(ctx context.Context, cfg *config.Config, log *zap.Logger) (*cluster, error) {
	c := &cluster{cfg: cfg, log: log, http: http.Client{Timeout: 3 * time.Second}}
	return c, c.finish(ctx)
}

func (c *cluster) finish(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// The operator token derives from the secret, which `respawn up`
	// creates on its first start.
	err := poll.Wait(wctx, func() error {
		tok, err := operatorToken(c.cfg)
		c.opTok = tok
		return err
	})
	if err != nil {
		return err
	}
	return c.waitHealthy(wctx)
}

// waitHealthy waits until every daemon answers healthy and every scene
// of the table is running on a live pid.
func (c *cluster) waitHealthy(ctx context.Context) error {
	return poll.Wait(ctx, func() error {
		if c.up != nil {
			select {
			case <-c.upDone:
				return poll.Stop(fmt.Errorf("respawn up exited: %v", c.up.ProcessState))
			default:
			}
		}
		for _, d := range c.daemons() {
			if pid, ok := c.health(d.admin); !ok {
				return fmt.Errorf("%s (%s) not healthy (pid %d)", d.name, d.admin, pid)
			}
		}
		rows, err := c.scenes(ctx)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return errors.New("empty scene table")
		}
		for _, r := range rows {
			if r.State != modules.SceneRunning || !process.Alive(r.PID) {
				return fmt.Errorf("scene %s is %s (pid %d)", r.ID, r.State, r.PID)
			}
		}
		return nil
	})
}

// stop ends a cluster this run started: SIGTERM to respawn up (it stops its
// daemons), then the scene processes, which outlive their manager by
// design, by the pids tied to this cluster.
func (c *cluster) stop() {
	if c.up == nil {
		return
	}
	var scenePids []int
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rows, err := c.scenes(ctx); err == nil {
		for _, r := range rows {
			scenePids = append(scenePids, r.PID)
		}
	}
	_ = c.up.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.upDone:
	case <-time.After(15 * time.Second):
		_ = c.up.Process.Kill()
		<-c.upDone
	}
	// Whatever of ours still runs (scenes; a daemon respawned as up died):
	// every pid whose identity ties it to this cluster's data directory.
	for _, pid := range append(scenePids, c.ourPids()...) {
		if h, err := c.handle(pid, ""); err == nil {
			_ = h.Signal(syscall.SIGCONT)
			_ = h.Kill(ctx)
			h.Close()
		}
	}
	if strings.HasPrefix(c.cfg.ShmDir, "/dev/shm/respawn-chaos-") {
		os.RemoveAll(c.cfg.ShmDir)
	}
	// The ports last: every process that bound one is gone now.
	if c.release != nil {
		if err := c.release(); err != nil {
			c.log.Warn("release the cluster's ports", zap.Error(err))
		}
		c.release = nil
	}
}

// ourPids lists live processes running one of the cluster's binaries with
// this cluster's data directory on their command line.
func (c *cluster) ourPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := c.identity(pid, ""); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

type daemon struct{ name, kind, admin string }

// daemons lists datasvr, worldmgr and every gateway with its admin address,
// as `respawn status` does.
func (c *cluster) daemons() []daemon {
	ds := []daemon{{"datasvr", "datasvr", c.cfg.Datasvr.Admin}, {"worldmgr", "worldmgr", c.cfg.WorldMgr.Admin}}
	for _, g := range c.cfg.Gateways() {
		name := "gateway"
		if len(c.cfg.Gateway.Instances) > 0 {
			name = "gateway/" + g.Name
		}
		ds = append(ds, daemon{name, "gateway", g.Admin})
	}
	return ds
}

// health asks a daemon's /healthz (what `respawn status --json` shows):
// its pid, and whether it is healthy.
func (c *cluster) health(addr string) (int, bool) {
	resp, err := c.http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var h struct {
		Healthy bool `json:"healthy"`
		PID     int  `json:"pid"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(raw, &h); err != nil {
		return 0, false
	}
	return h.PID, h.Healthy && resp.StatusCode == http.StatusOK
}

// scenes is the world manager's scene table.
func (c *cluster) scenes(ctx context.Context) ([]modules.SceneRow, error) {
	var rows []modules.SceneRow
	err := c.getJSON(ctx, "http://"+c.cfg.WorldMgr.Admin+"/v1/scenes", &rows)
	return rows, err
}

func (c *cluster) getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if c.opTok != "" {
		req.Header.Set("Authorization", "Bearer "+c.opTok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, raw)
	}
	return json.Unmarshal(raw, out)
}

// identity reads pid's identity and checks it is this cluster's: one of
// the cluster's binaries (bin when set), with the cluster's data directory
// on its command line. Only such pids are ever signalled.
func (c *cluster) identity(pid int, bin string) (process.Identity, error) {
	id, err := process.ReadIdentity(pid)
	if err != nil {
		return id, err
	}
	base := filepath.Base(id.Exe)
	if bin != "" && base != bin {
		return id, fmt.Errorf("pid %d runs %s, not %s", pid, id.Exe, bin)
	}
	if !slices.Contains([]string{"datasvr", "worldmgr", "gateway", "scene"}, base) {
		return id, fmt.Errorf("pid %d runs %s, not a respawn daemon", pid, id.Exe)
	}
	for i, a := range id.Cmdline {
		if (a == "--data-dir" && i+1 < len(id.Cmdline) && id.Cmdline[i+1] == c.cfg.DataDir) || a == "--data-dir="+c.cfg.DataDir {
			return id, nil
		}
	}
	return id, fmt.Errorf("pid %d (%s) is not of the cluster with data directory %s", pid, base, c.cfg.DataDir)
}

// handle ties pid to a process of this cluster running bin, through a pidfd.
func (c *cluster) handle(pid int, bin string) (*process.Handle, error) {
	id, err := c.identity(pid, bin)
	if err != nil {
		return nil, err
	}
	return process.Adopt(pid, id)
}

func loadConfig(path string) (*config.Config, error) {
	fs := newFlagSet()
	l := config.Bind(fs)
	if err := fs.Parse([]string{"--config", path}); err != nil {
		return nil, err
	}
	return l.Load()
}

// crashFlushBatch is datasvr.flush_batch in a cluster started with
// --crash-points.
const crashFlushBatch = 1

// armCrashPoints is the RESPAWN_TEST_CRASH value of --crash-points: every
// point at a seeded count, chosen so that each fires within seconds to tens
// of seconds of an incarnation's start under a few dozen bots (counts are
// per incarnation: a process dies at every Nth pass).
func armCrashPoints(seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 0x6372617368)) // "crash"
	between := func(lo, hi int) int { return lo + r.IntN(hi-lo+1) }
	return strings.Join([]string{
		fmt.Sprintf("%s=%d", crashpoint.ShmlogBeforeCommit, between(800, 2000)),
		fmt.Sprintf("%s=%d", crashpoint.SnapshotWrite, between(2, 3)),
		fmt.Sprintf("%s=%d", crashpoint.JournalBeforeFsync, between(150, 400)),
		fmt.Sprintf("%s=%d", crashpoint.JournalAfterFsync, between(150, 400)),
		fmt.Sprintf("%s=%d", crashpoint.GatewayResend, between(1, 3)),
		fmt.Sprintf("%s=%d", crashpoint.GatewayBeforeReply, between(300, 800)),
		fmt.Sprintf("%s=%d", crashpoint.FlushBetweenRows, between(2, 6)),
		fmt.Sprintf("%s=%d", crashpoint.LeaseHandoff, between(2, 6)),
	}, ",")
}

// crashesIn counts the "crashpoint: NAME reached" lines the cluster's
// processes wrote under dir (respawn up's output and the scenes' logs).
func crashesIn(dir string) map[string]int {
	out := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(dir, "data", "logs", "*.log"))
	files = append(files, filepath.Join(dir, "cluster.log"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			_, rest, ok := strings.Cut(line, "crashpoint: ")
			if !ok {
				continue
			}
			if name, _, ok := strings.Cut(rest, " reached"); ok {
				out[name]++
			}
		}
	}
	return out
}
