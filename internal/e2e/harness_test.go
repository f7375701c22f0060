// Package e2e holds the integration tests: they build the real binaries,
// start them as OS processes on random ports, kill them with real signals
// and check what survives.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/freeport"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/secret"
)

// binDir holds the binaries TestMain built.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "respawn-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	var pkgs []string
	for _, name := range []string{"worldmgr", "scene", "respawn", "datasvr", "gateway", "bot"} {
		if _, err := os.Stat(filepath.Join("..", "..", "cmd", name, "main.go")); err == nil {
			pkgs = append(pkgs, "./cmd/"+name)
		}
	}
	build := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	build.Dir = filepath.Join("..", "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		return 1
	}
	binDir = dir
	code := m.Run()
	// A process a test's cleanup missed (a spare started as its manager
	// was killed) may have made its shm directory again before it gave up.
	shmDirs.Lock()
	for _, d := range shmDirs.made {
		os.RemoveAll(d)
	}
	shmDirs.Unlock()
	return code
}

// shmDirs are the clusters' directories under /dev/shm, removed again
// when the tests end.
var shmDirs struct {
	sync.Mutex
	made []string
}

// cluster is one test's private world: its own directories and ports.
type cluster struct {
	t       testing.TB
	dataDir string
	shmDir  string
	ports   map[string]string
	extra   []string
	env     []string
	procs   []*proc
}

func newCluster(t testing.TB, extraArgs ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dataDir: t.TempDir(), ports: map[string]string{}, extra: extraArgs}
	shm, err := os.MkdirTemp("/dev/shm", "respawn-test-")
	if err != nil {
		shm = filepath.Join(t.TempDir(), "shm")
	} else {
		shmDirs.Lock()
		shmDirs.made = append(shmDirs.made, shm)
		shmDirs.Unlock()
	}
	c.shmDir = shm
	for _, k := range []string{"worldmgr.listen", "worldmgr.admin", "datasvr.admin", "nats.listen", "gateway.listen", "gateway.websocket", "gateway.admin"} {
		c.ports[k] = freeport.Addr(t)
	}
	t.Cleanup(c.cleanup)
	return c
}

// args are the flags every binary of this cluster gets.
func (c *cluster) args() []string {
	args := []string{"--config", filepath.Join("..", "..", "configs", "world.yaml"), "--data-dir", c.dataDir, "--shm-dir", c.shmDir, "--log.format", "json"}
	for k, v := range c.ports {
		args = append(args, "--"+k, v)
	}
	return append(args, c.extra...)
}

// start runs a binary of this cluster with the cluster's flags.
func (c *cluster) start(name string, args ...string) *proc {
	c.t.Helper()
	p := startProc(c.t, c, name, append(c.args(), args...)...)
	c.procs = append(c.procs, p)
	return p
}

// respawn runs the CLI and returns its stdout; it fails the test on error.
func (c *cluster) respawn(args ...string) string {
	c.t.Helper()
	out, err := c.tryRespawn(args...)
	if err != nil {
		c.t.Fatalf("respawn %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *cluster) tryRespawn(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "respawn"), append(args, c.args()...)...)
	cmd.Env = append(os.Environ(), c.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		<-ctx.Done()
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}()
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// scenes reads the scene table straight from the manager's admin API.
func (c *cluster) scenes() ([]modules.SceneRow, error) {
	var rows []modules.SceneRow
	err := getJSON("http://"+c.ports["worldmgr.admin"]+"/v1/scenes", &rows)
	return rows, err
}

func (c *cluster) scene(id string) (modules.SceneRow, error) {
	rows, err := c.scenes()
	if err != nil {
		return modules.SceneRow{}, err
	}
	for _, r := range rows {
		if r.ID == id {
			return r, nil
		}
	}
	return modules.SceneRow{}, fmt.Errorf("scene %q not in table", id)
}

// waitRunning waits until every scene is running and returns the table.
func (c *cluster) waitRunning(timeout time.Duration) []modules.SceneRow {
	c.t.Helper()
	var rows []modules.SceneRow
	poll.Until(c.t, timeout, func() error {
		var err error
		if rows, err = c.scenes(); err != nil {
			return err
		}
		for _, r := range rows {
			if r.State != modules.SceneRunning || !process.Alive(r.PID) {
				return fmt.Errorf("scene %s is %s (pid %d)", r.ID, r.State, r.PID)
			}
		}
		return nil
	})
	return rows
}

// waitReplaced waits until a process other than old's serves scene old.ID
// and the scene is running again: the respawn after a kill, a hang or a
// crash point.
func (c *cluster) waitReplaced(old modules.SceneRow, timeout time.Duration) {
	c.t.Helper()
	poll.Until(c.t, timeout, func() error {
		r, err := c.scene(old.ID)
		if err != nil {
			return err
		}
		if r.PID == old.PID || r.State != modules.SceneRunning {
			return fmt.Errorf("%s: %s pid %d (was %d)", old.ID, r.State, r.PID, old.PID)
		}
		return nil
	})
}

// livePids lists the live processes whose command line mentions this
// cluster's data directory (which is unique per test) and contains match.
func (c *cluster) livePids(match string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(raw), "\x00", " ")
		if strings.Contains(cmdline, c.dataDir) && strings.Contains(cmdline, match) && process.Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cleanup kills every process of this cluster, by pid: the ones the test
// started and the scene processes the manager started.
func (c *cluster) cleanup() {
	for _, p := range c.procs {
		p.kill()
	}
	for _, pid := range c.livePids("") {
		_ = syscall.Kill(pid, syscall.SIGCONT)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, pid := range c.livePids("") {
		if err := process.WaitGone(ctx, pid); err != nil {
			c.t.Errorf("cleanup: %v", err)
		}
	}
	if strings.HasPrefix(c.shmDir, "/dev/shm/") {
		os.RemoveAll(c.shmDir)
	}
}

// proc is one process a test started.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t testing.TB, c *cluster, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(c.dataDir, fmt.Sprintf("%s-%d.log", filepath.Base(name), time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	path := name
	if !filepath.IsAbs(name) {
		path = filepath.Join(binDir, name) // one of ours
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), c.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) signal(sig syscall.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("%s (pid %d) did not exit within %s; log:\n%s", p.name, p.pid(), timeout, p.output())
		return nil
	}
}

func (p *proc) output() string {
	raw, _ := os.ReadFile(p.log)
	return string(raw)
}

func getJSON(url string, out any) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, raw)
	}
	return json.Unmarshal(raw, out)
}

// operatorToken is the token the cluster's mutating admin requests need:
// derived from the secret the daemons keep in the cluster's data directory
// (the CLI finds it the same way).
func (c *cluster) operatorToken() string {
	c.t.Helper()
	s, err := secret.Load("", c.dataDir)
	if err != nil {
		c.t.Fatal(err)
	}
	return s.OperatorToken()
}

// call sends one request to a daemon's HTTP API, with the operator token
// when token is set, and returns the status and body.
func (c *cluster) call(method, url string, body any, token string) (int, string, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, "", err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), err
}
