// Package worldmgr is the world manager: it owns the scene table, spawns
// scene processes, watches them over long-lived TCP connections with
// heartbeats, kills and replaces dead or hung ones, and after its own crash
// rebuilds the table from what the surviving scene processes report.
//
// All state lives in one goroutine (loop); connections, child waiters,
// timers and admin requests talk to it through one channel of events.
package worldmgr

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/replica"
	"github.com/respawn-dev/respawn/internal/secret"
)

// Options configure a Manager.
type Options struct {
	Config *config.Config
	Log    *zap.Logger
	// SceneBinary is the scene executable; empty means "scene" in
	// Config.BinDir or next to this executable.
	SceneBinary string
	// ChildArgs are passed to every scene process so it loads the same
	// configuration (see config.Loader.ChildArgs).
	ChildArgs []string
}

// Manager is one world manager. Create it with New, then Start.
type Manager struct {
	opt      Options
	cfg      *config.Config
	log      *zap.Logger
	sceneBin string
	secret   *secret.Secret
	epochs   *epochStore
	// fresh: no epoch file existed, so no scene process can be out there
	// and the recovery window is skipped.
	fresh bool

	ln    net.Listener
	admin *admin.Server
	// connSlots bounds the control connections open at once.
	connSlots chan struct{}
	nextConn  atomic.Uint64
	refused   refusalLog

	events chan func()
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by the loop goroutine.
	sup         *supervisor
	conns       map[connID]*sceneConn
	handles     map[int]*handle
	stopWaiters []chan struct{}
	timeline    *timeline

	// The scene-table replica (owned), the scene-load replica (read).
	nc        *nats.Conn
	table     *replica.Writer[modules.SceneRow]
	published map[string]modules.SceneRow
	loads     *replica.Reader[modules.SceneLoad]

	mRestarts     prometheus.Counter
	mRecovery     prometheus.Histogram
	mAuthFailures prometheus.Counter
	mStalls       prometheus.Counter
	mSilence      prometheus.Gauge
	mScenes       *prometheus.GaugeVec
}

// handle is a scene process the manager may signal: it spawned it, or
// verified it against an authenticated hello.
type handle struct {
	h     *process.Handle
	name  string
	child bool
	// bin identifies the scene binary a spare was started from: a handoff
	// must not go to a spare of the build being replaced (binIdentity).
	bin string
	// unwatch stops the exit watcher of an adopted process (a child's exit
	// comes from Wait).
	unwatch context.CancelFunc
}

// MaxControlConns bounds the control connections open at once: one per
// scene process is normal, the rest is headroom for reconnects overlapping
// their old connection's close. Beyond it new connections are closed at once.
const MaxControlConns = 256

// loopTick is how often the loop feeds the supervisor the time; a tick
// that comes later says the manager itself was not running.
const loopTick = 10 * time.Millisecond

// New validates options and prepares a manager; it does not listen yet.
func New(opt Options) (*Manager, error) {
	if opt.Config == nil {
		return nil, errors.New("worldmgr: no config")
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	bin := opt.SceneBinary
	if bin == "" {
		dir := opt.Config.BinDir
		if dir == "" {
			exe, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("worldmgr: find scene binary: %w", err)
			}
			dir = filepath.Dir(exe)
		}
		bin = filepath.Join(dir, "scene")
	}
	epochs, existed, err := openEpochs(opt.Config.DataDir)
	if err != nil {
		return nil, fmt.Errorf("worldmgr: %w", err)
	}
	sec, err := secret.Load(opt.Config.Secret, opt.Config.DataDir)
	if err != nil {
		return nil, fmt.Errorf("worldmgr: %w", err)
	}
	m := &Manager{
		opt: opt, cfg: opt.Config, log: opt.Log, sceneBin: bin, secret: sec, epochs: epochs, fresh: !existed,
		connSlots: make(chan struct{}, MaxControlConns),
		events:    make(chan func(), 256),
		done:      make(chan struct{}),
		conns:     map[connID]*sceneConn{},
		handles:   map[int]*handle{},
		mAuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_worldmgr_control_auth_failures_total",
			Help: "Control connections closed because the peer did not prove it holds the cluster secret.",
		}),
		mStalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_worldmgr_stalls_total",
			Help: "Times the manager noticed it had not been running for longer than the heartbeat timeout.",
		}),
		mRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_worldmgr_scene_restarts_total", Help: "Scene processes respawned after a death.",
		}),
		mSilence: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "respawn_worldmgr_heartbeat_silence_seconds",
			Help: "Longest time a running scene process has said nothing (heartbeat or report); it is declared hung past worldmgr.heartbeat_timeout.",
		}),
		mScenes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "respawn_worldmgr_scenes",
			Help: "Scenes in the scene table by state (starting, running, dead, failed, recovering, corrupt).",
		}, []string{"state"}),
		mRecovery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "respawn_worldmgr_crash_to_running_seconds",
			Help:    "From a scene process's death being noticed to its replacement registering.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
	}
	m.refused.log = opt.Log
	return m, nil
}

// Start listens on the control and admin ports and starts the loop. The
// manager runs until ctx ends or Shutdown; scene processes are left running
// either way, so a restarted manager finds them.
func (m *Manager) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", m.cfg.WorldMgr.Listen)
	if err != nil {
		return fmt.Errorf("worldmgr: control listen %s: %w", m.cfg.WorldMgr.Listen, err)
	}
	adm, err := admin.New(m.cfg.WorldMgr.Admin, m.cfg, nil)
	if err != nil {
		ln.Close()
		return fmt.Errorf("worldmgr: %w", err)
	}
	adm.SetVersion(VersionInfo())
	adm.Registry.MustRegister(m.mRestarts, m.mRecovery, m.mAuthFailures, m.mStalls, m.mSilence, m.mScenes)
	m.ln, m.admin = ln, adm
	m.routes()
	m.ctx, m.cancel = context.WithCancel(ctx)
	if err := m.connectBus(); err != nil {
		m.cancel()
		ln.Close()
		return fmt.Errorf("worldmgr: %w", err)
	}

	m.timeline = newTimeline(TimelineLimit)
	m.sup = newSupervisor(supervisorConfig{WorldMgr: m.cfg.WorldMgr, Tick: loopTick, Processes: m.cfg.Processes},
		m.log, m.epochs.max, m.fresh, time.Now())
	window := m.cfg.WorldMgr.EffectiveRecoveryWindow()
	if m.fresh {
		window = 0
	}
	m.log.Info("world manager started",
		zap.String("control", ln.Addr().String()), zap.String("admin", adm.Addr()),
		zap.Bool("recovering", !m.fresh), zap.Duration("recovery_window", window))

	m.wg.Add(3)
	go func() { defer m.wg.Done(); m.loop() }()
	go func() { defer m.wg.Done(); m.accept() }()
	go func() {
		defer m.wg.Done()
		if err := adm.Serve(); err != nil {
			m.log.Error("admin server", zap.Error(err))
		}
	}()
	go func() {
		<-m.ctx.Done()
		m.Shutdown()
	}()
	return nil
}

// ControlAddr is the control listener's address.
func (m *Manager) ControlAddr() string { return m.ln.Addr().String() }

// AdminAddr is the admin listener's address.
func (m *Manager) AdminAddr() string { return m.admin.Addr() }

// Done is closed once the manager has shut down.
func (m *Manager) Done() <-chan struct{} { return m.done }

// Shutdown stops the manager (not the scenes); safe to call twice.
func (m *Manager) Shutdown() {
	m.once.Do(func() {
		m.cancel()
		m.ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.admin.Shutdown(ctx) // best effort: we are going away
		m.wg.Wait()
		if m.table != nil {
			_ = m.loads.Close()
			_ = m.table.Close() // best effort: readers resync from the next manager
			m.nc.Close()
		}
		close(m.done)
	})
}

// Run runs a manager until ctx ends: what cmd/worldmgr calls.
func Run(ctx context.Context, opt Options) error {
	m, err := New(opt)
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	<-m.Done()
	return nil
}

// do runs fn on the loop goroutine; false if the manager is gone.
func (m *Manager) do(fn func()) bool {
	select {
	case m.events <- fn:
		return true
	case <-m.ctx.Done():
		return false
	}
}

// call runs fn on the loop goroutine and waits for it.
func (m *Manager) call(fn func()) error {
	ran := make(chan struct{})
	if !m.do(func() { fn(); close(ran) }) {
		return errors.New("worldmgr: shutting down")
	}
	select {
	case <-ran:
		return nil
	case <-m.ctx.Done():
		return errors.New("worldmgr: shutting down")
	}
}

func (m *Manager) loop() {
	tick := time.NewTicker(loopTick)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			for _, c := range m.conns {
				c.close()
			}
			for _, hd := range m.handles {
				hd.release()
			}
			return
		case fn := <-m.events:
			fn()
		case <-tick.C:
			// The time read now, not the tick's: after a stall the tick was
			// sent late, and the supervisor must see how late.
			now := time.Now()
			m.sup.tick(now)
			m.mSilence.Set(m.sup.silence(now).Seconds())
			m.countScenes()
		}
		m.apply()
		m.publishTable()
	}
}

// countScenes sets the scenes-by-state gauge from the supervisor's rows;
// every state is set, so a state nobody is in reads 0, not absent.
func (m *Manager) countScenes() {
	n := map[string]int{}
	for _, r := range m.sup.rows() {
		n[r.State]++
	}
	for _, st := range []string{modules.SceneStarting, modules.SceneRunning, modules.SceneDead, modules.SceneFailed, modules.SceneRecovering, modules.SceneCorrupt} {
		m.mScenes.WithLabelValues(st).Set(float64(n[st]))
	}
}

// apply performs what the supervisor decided, in order, until it has
// nothing more to say (performing a spawn feeds its result back).
func (m *Manager) apply() {
	for {
		rd := m.sup.takeReady()
		if rd.empty() {
			break
		}
		var persistErr error
		if rd.Epochs != nil {
			if persistErr = m.epochs.store(rd.Epochs); persistErr != nil {
				m.log.Error("cannot persist epochs; not spawning until it works", zap.Error(persistErr))
			}
		}
		m.mRestarts.Add(float64(rd.Restarts))
		m.mStalls.Add(float64(rd.Stalls))
		for _, d := range rd.Recovered {
			m.mRecovery.Observe(d.Seconds())
		}
		for _, a := range rd.Actions {
			m.perform(a, persistErr)
		}
		m.timeline.add(rd.Timeline...)
		if rd.Stopped {
			for _, w := range m.stopWaiters {
				close(w)
			}
			m.stopWaiters = nil
		}
	}
	m.pruneHandles()
}

func (m *Manager) perform(a action, persistErr error) {
	switch a.Kind {
	case actWelcome:
		if c := m.conns[a.Conn]; c != nil {
			c.send(ctlproto.TypeWelcome, ctlproto.Welcome{
				HeartbeatInterval: m.cfg.WorldMgr.HeartbeatInterval, HeartbeatTimeout: m.cfg.WorldMgr.HeartbeatTimeout})
		}
	case actExit:
		if c := m.conns[a.Conn]; c != nil {
			c.send(ctlproto.TypeExit, ctlproto.Exit{Reason: a.Reason, Handoff: a.Handoff, Standby: a.Standby})
			delete(m.conns, a.Conn)
		}
	case actClose:
		if c := m.conns[a.Conn]; c != nil {
			c.close()
			delete(m.conns, a.Conn)
		}
	case actKill:
		m.kill(a)
	case actSpawn:
		if persistErr != nil {
			m.sup.spawnFailed(time.Now(), a.Name, a.Epoch, fmt.Errorf("epoch %d not persisted: %w", a.Epoch, persistErr))
			return
		}
		pid, err := m.startProcess(a.Name, a.Epoch, a.Restarts, a.Standby)
		if err != nil {
			m.log.Error("spawn scene process", zap.String("process", a.Name), zap.Uint64("epoch", a.Epoch), zap.Bool("standby", a.Standby), zap.Error(err))
			if a.Standby {
				m.sup.spareFailed(time.Now(), a.Name, a.Epoch, err)
			} else {
				m.sup.spawnFailed(time.Now(), a.Name, a.Epoch, err)
			}
			return
		}
		m.log.Info("spawned scene process", zap.String("process", a.Name), zap.Int("scene_pid", pid), zap.Uint64("epoch", a.Epoch), zap.Bool("standby", a.Standby))
		if a.Standby {
			m.sup.spareSpawned(a.Name, a.Epoch, pid)
		} else {
			m.sup.spawned(a.Name, a.Epoch, pid)
		}
	}
}

// kill kills a scene process through its handle. A pid without one is
// never signalled: the manager cannot tie it to a process of this cluster.
func (m *Manager) kill(a action) {
	hd := m.handles[a.PID]
	log := m.log.With(zap.String("process", a.Name), zap.Int("scene_pid", a.PID), zap.Uint64("epoch", a.Epoch))
	if hd == nil {
		err := fmt.Errorf("pid %d is not tied to a scene process of this cluster; not signalling it", a.PID)
		log.Error("refusing to kill", zap.Error(err))
		m.sup.killDone(time.Now(), a.Name, a.PID, err)
		return
	}
	log.Info("killing scene process", zap.String("reason", a.Reason))
	go func() {
		ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
		defer cancel()
		err := hd.h.Kill(ctx)
		m.do(func() { m.sup.killDone(time.Now(), a.Name, a.PID, err) })
	}()
}

// pruneHandles releases handles of processes the supervisor no longer
// refers to, and watches adopted ones it does.
func (m *Manager) pruneHandles() {
	ref := m.sup.pids()
	for pid, hd := range m.handles {
		name, ok := ref[pid]
		if !ok || name != hd.name {
			hd.release()
			delete(m.handles, pid)
			continue
		}
		if !hd.child && hd.unwatch == nil {
			ctx, cancel := context.WithCancel(m.ctx)
			hd.unwatch = cancel
			h := hd.h
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				// A released handle also ends the wait: only an exit counts.
				if h.WaitGone(ctx) == nil && ctx.Err() == nil {
					m.do(func() { m.sup.exited(time.Now(), name, pid, "exited") })
				}
			}()
		}
	}
}

func (hd *handle) release() {
	if hd.unwatch != nil {
		hd.unwatch()
	}
	hd.h.Close()
}

func (m *Manager) startProcess(name string, epoch uint64, restarts int, standby bool) (int, error) {
	logDir := filepath.Join(m.cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return 0, fmt.Errorf("log dir: %w", err)
	}
	// Scene processes log to a file, not to our pipes: they outlive us,
	// and a write to a pipe nobody reads would kill them with SIGPIPE.
	logFile, err := os.OpenFile(filepath.Join(logDir, "scene-"+name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close()
	args := append([]string{}, m.opt.ChildArgs...)
	args = append(args,
		"--process", name,
		"--epoch", strconv.FormatUint(epoch, 10),
		"--restarts", strconv.Itoa(restarts),
		"--worldmgr.listen", m.ln.Addr().String(),
	)
	if standby {
		args = append(args, "--standby", "--manager-pid", strconv.Itoa(os.Getpid()))
	}
	cmd := exec.Command(m.sceneBin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A spare says on a pipe only it holds that it follows the live log
	// and caught up: a handoff waits for that. The pipe is passed as fd 3
	// and named in the environment, which a scene binary too old to know
	// it ignores (its handoffs then go on cold after the wait).
	var ready *os.File
	if standby {
		r, w, err := os.Pipe()
		if err != nil {
			return 0, fmt.Errorf("standby ready pipe: %w", err)
		}
		defer w.Close() // the child has its copy
		ready = r
		cmd.ExtraFiles = []*os.File{w}
		cmd.Env = append(os.Environ(), ctlproto.ReadyFDEnv+"=3")
	}
	// Own session: our death, or our supervisor's signals to our process
	// group, must not reach the scenes.
	// A spare (--standby) gives up when we die, by watching its parent
	// pid: a restarted manager would not know of it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		if ready != nil {
			ready.Close()
		}
		return 0, fmt.Errorf("start %s: %w", m.sceneBin, err)
	}
	pid := cmd.Process.Pid
	if ready != nil {
		go m.watchReady(ready, name, epoch, pid)
	}
	exited := make(chan struct{})
	hd := &handle{h: process.Child(cmd.Process, exited), name: name, child: true}
	if standby {
		hd.bin = binIdentity(m.sceneBin)
	}
	m.handles[pid] = hd
	go func() {
		err := cmd.Wait()
		close(exited)
		reason := "exited"
		if err != nil {
			reason = "exited: " + err.Error()
		}
		m.do(func() { m.sup.exited(time.Now(), name, pid, reason) })
	}()
	return pid, nil
}

// maxReadyLine bounds what is read of a spare's ready pipe.
const maxReadyLine = 256

// watchReady reads a spare's one line on its ready pipe and tells the
// supervisor; the pipe ends at the spare's exit or when it closes it.
func (m *Manager) watchReady(r *os.File, name string, epoch uint64, pid int) {
	defer r.Close()
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxReadyLine), maxReadyLine).ReadString('\n')
	what, ok := strings.CutPrefix(strings.TrimSpace(line), ctlproto.ReadyPrefix)
	if err != nil || !ok {
		return // it exited or gave up before it was ready: its exit says so
	}
	what = strings.TrimSpace(what)
	follows := strings.HasPrefix(what, ctlproto.ReadyFollowing)
	m.do(func() { m.sup.spareReady(time.Now(), name, epoch, pid, follows, what) })
}

// binIdentity names the file at path as it is now (inode, size, mtime): an
// upgrade that installs a new build there changes it. "" if unreadable.
func binIdentity(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%d/%d/%d", ino, fi.Size(), fi.ModTime().UnixNano())
}

// helloFrom hands an authenticated hello to the supervisor, after tying its
// pid to a process: one we spawned, or one whose executable, start time
// and command line are what the hello says.
func (m *Manager) helloFrom(c *sceneConn, h ctlproto.Hello) {
	m.conns[c.id] = c
	m.sup.hello(time.Now(), helloEvent{Conn: c.id, Hello: h, Unverified: m.verify(h)})
}

func (m *Manager) verify(h ctlproto.Hello) string {
	if hd, ok := m.handles[h.PID]; ok {
		if hd.name != h.Process {
			return fmt.Sprintf("pid %d is scene process %s, not %s", h.PID, hd.name, h.Process)
		}
		if !hd.h.Exited() {
			return "" // spawned by us, or verified before
		}
	}
	// An upgrade replaces the binary's file under a running process, whose
	// /proc/PID/exe then ends in " (deleted)": still the scene binary.
	if filepath.Base(strings.TrimSuffix(h.Exe, " (deleted)")) != filepath.Base(m.sceneBin) {
		return fmt.Sprintf("executable %q is not the scene binary %q", h.Exe, m.sceneBin)
	}
	if !hostsProcess(h.Cmdline, h.Process) {
		return fmt.Sprintf("command line %q does not start scene process %s", h.Cmdline, h.Process)
	}
	ph, err := process.Adopt(h.PID, process.Identity{Exe: h.Exe, StartTicks: h.StartTicks, Cmdline: h.Cmdline})
	if err != nil {
		return err.Error()
	}
	if old, ok := m.handles[h.PID]; ok {
		old.release()
	}
	m.handles[h.PID] = &handle{h: ph, name: h.Process}
	return ""
}

// hostsProcess reports whether a scene command line names process name.
func hostsProcess(args []string, name string) bool {
	for i, a := range args {
		if a == "--process="+name || a == "--process" && i+1 < len(args) && args[i+1] == name {
			return true
		}
	}
	return false
}
