// Package worldmgr is the world manager: it owns the scene table, spawns
// scene processes, watches them over long-lived TCP connections with
// heartbeats, kills and replaces dead or hung ones, and after its own crash
// rebuilds the table from what the surviving scene processes report.
//
// All state lives in one goroutine (loop); connections, child waiters,
// timers and admin requests talk to it through one channel of events.
package worldmgr

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
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
	"github.com/respawn-dev/respawn/internal/supervise"
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
	epochs   *epochStore
	// fresh: no epoch file existed, so no scene process can be out there
	// and the recovery window is skipped.
	fresh bool

	ln    net.Listener
	admin *admin.Server

	events chan func()
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by the loop goroutine.
	procs       map[string]*proc
	recovering  bool
	stopping    bool
	stopWaiters []chan struct{}

	// The scene-table replica (owned), the scene-load replica (read).
	nc        *nats.Conn
	table     *replica.Writer[modules.SceneRow]
	published map[string]modules.SceneRow
	loads     *replica.Reader[modules.SceneLoad]

	mRestarts prometheus.Counter
	mRecovery prometheus.Histogram
}

// proc is one scene process slot of the world: the scenes it hosts and the
// incarnation currently serving them.
type proc struct {
	name   string
	scenes []string

	state    string
	epoch    uint64
	pid      int
	addr     string
	since    time.Time
	replayMS float64
	players  map[string]int
	// reported is each scene's last report, for the states only the scene
	// process knows (corrupt) and their reasons.
	reported map[string]ctlproto.SceneReport
	hist     supervise.History

	conn      *sceneConn
	spawnedAt time.Time
	diedAt    time.Time
	// respawnAt is when the next incarnation may start; zero: none pending.
	respawnAt time.Time
	// dyingPID is a previous incarnation we are making sure is gone before
	// the next one starts (it holds the event log's lock).
	dyingPID int
}

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
	m := &Manager{
		opt: opt, cfg: opt.Config, log: opt.Log, sceneBin: bin, epochs: epochs, fresh: !existed,
		events: make(chan func(), 256),
		done:   make(chan struct{}),
		procs:  map[string]*proc{},
		mRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "respawn_worldmgr_scene_restarts_total", Help: "Scene processes respawned after a death.",
		}),
		mRecovery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "respawn_worldmgr_crash_to_running_seconds",
			Help:    "From a scene process's death being noticed to its replacement registering.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
	}
	for _, p := range opt.Config.Processes {
		m.procs[p.Name] = &proc{name: p.Name, scenes: p.Scenes, state: modules.SceneRecovering, players: map[string]int{}}
	}
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
	adm.Registry.MustRegister(m.mRestarts, m.mRecovery)
	m.ln, m.admin = ln, adm
	m.routes()
	m.ctx, m.cancel = context.WithCancel(ctx)
	if err := m.connectBus(); err != nil {
		m.cancel()
		ln.Close()
		return fmt.Errorf("worldmgr: %w", err)
	}

	m.recovering = !m.fresh
	window := m.cfg.WorldMgr.EffectiveRecoveryWindow()
	if m.fresh {
		window = 0
	}
	m.log.Info("world manager started",
		zap.String("control", ln.Addr().String()), zap.String("admin", adm.Addr()),
		zap.Bool("recovering", m.recovering), zap.Duration("recovery_window", window))

	m.wg.Add(3)
	go func() { defer m.wg.Done(); m.loop(window) }()
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

func (m *Manager) loop(window time.Duration) {
	recoveryEnd := time.After(window)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			for _, p := range m.procs {
				if p.conn != nil {
					p.conn.close()
				}
			}
			return
		case fn := <-m.events:
			fn()
		case <-recoveryEnd:
			m.endRecovery()
		case now := <-tick.C:
			m.checkTimers(now)
		}
		m.publishTable()
	}
}

// endRecovery: every process that reported during the window is adopted;
// the others are dead and get respawned.
func (m *Manager) endRecovery() {
	if !m.recovering {
		m.startMissing()
		return
	}
	m.recovering = false
	var missing []string
	for _, name := range m.names() {
		if p := m.procs[name]; p.state == modules.SceneRecovering {
			missing = append(missing, name)
		}
	}
	m.log.Info("recovery window over", zap.Strings("missing", missing))
	m.startMissing()
}

func (m *Manager) startMissing() {
	for _, name := range m.names() {
		p := m.procs[name]
		if p.state == modules.SceneRecovering {
			if p.epoch == 0 && m.epochs.max[name] == 0 {
				m.spawn(p) // never started: a first start, not a restart
				continue
			}
			m.died(p, "not reported after manager restart", time.Now())
		}
	}
}

func (m *Manager) names() []string {
	names := make([]string, 0, len(m.procs))
	for n := range m.procs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (m *Manager) checkTimers(now time.Time) {
	for _, name := range m.names() {
		p := m.procs[name]
		switch {
		case p.state == modules.SceneStarting && now.Sub(p.spawnedAt) > m.cfg.WorldMgr.StartTimeout:
			m.died(p, fmt.Sprintf("did not register within worldmgr.start_timeout (%s)", m.cfg.WorldMgr.StartTimeout), now)
		case p.state == modules.SceneDead:
			m.maybeRespawn(p, now)
		}
	}
}

// died handles the death of p's current incarnation, however noticed:
// process exit, closed connection, heartbeat timeout, start timeout.
func (m *Manager) died(p *proc, reason string, now time.Time) {
	if p.state == modules.SceneDead || p.state == modules.SceneFailed {
		return
	}
	log := m.log.With(zap.String("process", p.name), zap.Int("scene_pid", p.pid), zap.Uint64("epoch", p.epoch))
	if p.conn != nil {
		p.conn.close()
		p.conn = nil
	}
	if p.pid != 0 && process.Alive(p.pid) {
		// A silent or disconnected process must never come back and
		// write: kill it by pid before anything replaces it.
		pid := p.pid
		p.dyingPID = pid
		finish := process.KillAndWait
		if m.stopping {
			finish = process.WaitGone // it was told to exit: let it save and go
		}
		go func() {
			ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
			defer cancel()
			err := finish(ctx, pid)
			m.do(func() {
				if err != nil {
					log.Error("could not kill dead scene process", zap.Error(err))
				}
				if p.dyingPID == pid {
					p.dyingPID = 0
					m.maybeRespawn(p, time.Now())
				}
				if m.stopping {
					m.notifyStopped()
				}
			})
		}()
	}
	p.diedAt = now
	p.players = map[string]int{}
	p.reported = nil
	if m.stopping {
		p.state = modules.SceneDead
		log.Info("scene process stopped", zap.String("reason", reason))
		m.notifyStopped()
		return
	}
	d := supervise.Next(m.cfg.WorldMgr.Restart, &p.hist, now)
	if d.Failed {
		p.state = modules.SceneFailed
		p.since = now
		log.Error("scene process failed: restart intensity exceeded; not restarting until `respawn scene restart`",
			zap.String("reason", reason), zap.Int("max_restarts", m.cfg.WorldMgr.Restart.MaxRestarts),
			zap.Duration("window", m.cfg.WorldMgr.Restart.Window))
		return
	}
	p.state = modules.SceneDead
	p.since = now
	p.respawnAt = now.Add(d.Delay)
	log.Warn("scene process died", zap.String("reason", reason), zap.Duration("respawn_in", d.Delay))
	m.maybeRespawn(p, now)
}

func (m *Manager) maybeRespawn(p *proc, now time.Time) {
	if p.state != modules.SceneDead || m.stopping || m.recovering || p.dyingPID != 0 ||
		p.respawnAt.IsZero() || now.Before(p.respawnAt) {
		return
	}
	m.mRestarts.Inc()
	m.spawn(p)
}

// spawn starts a new incarnation of p with a higher epoch than any before.
func (m *Manager) spawn(p *proc) {
	p.respawnAt = time.Time{}
	now := time.Now()
	epoch, err := m.epochs.next(p.name)
	if err != nil {
		m.log.Error("cannot persist epoch; not spawning", zap.String("process", p.name), zap.Error(err))
		p.state = modules.SceneDead
		p.respawnAt = now.Add(time.Second)
		return
	}
	pid, err := m.startProcess(p, epoch)
	p.epoch, p.pid, p.addr, p.spawnedAt, p.since = epoch, pid, "", now, now
	p.state = modules.SceneStarting
	if err != nil {
		m.log.Error("spawn scene process", zap.String("process", p.name), zap.Uint64("epoch", epoch), zap.Error(err))
		m.died(p, "spawn failed", now)
		return
	}
	m.log.Info("spawned scene process", zap.String("process", p.name), zap.Int("scene_pid", pid), zap.Uint64("epoch", epoch))
}

func (m *Manager) startProcess(p *proc, epoch uint64) (int, error) {
	logDir := filepath.Join(m.cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return 0, fmt.Errorf("log dir: %w", err)
	}
	// Scene processes log to a file, not to our pipes: they outlive us,
	// and a write to a pipe nobody reads would kill them with SIGPIPE.
	logFile, err := os.OpenFile(filepath.Join(logDir, "scene-"+p.name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close()
	args := append([]string{}, m.opt.ChildArgs...)
	args = append(args,
		"--process", p.name,
		"--epoch", strconv.FormatUint(epoch, 10),
		"--restarts", strconv.Itoa(p.hist.Total()),
		"--worldmgr.listen", m.ln.Addr().String(),
	)
	cmd := exec.Command(m.sceneBin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own session: our death, or our supervisor's signals to our process
	// group, must not reach the scenes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", m.sceneBin, err)
	}
	pid := cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		m.do(func() { m.exited(p, pid, err) })
	}()
	return pid, nil
}

// exited: a child we spawned is gone (and reaped).
func (m *Manager) exited(p *proc, pid int, err error) {
	if p.dyingPID == pid {
		p.dyingPID = 0
	}
	if p.pid != pid {
		m.maybeRespawn(p, time.Now())
		return
	}
	reason := "exited"
	if err != nil {
		reason = "exited: " + err.Error()
	}
	m.died(p, reason, time.Now())
}

// hello registers a scene process; it decides between competing claims.
func (m *Manager) hello(c *sceneConn, h ctlproto.Hello) {
	p, ok := m.procs[h.Process]
	log := m.log.With(zap.String("process", h.Process), zap.Int("scene_pid", h.PID), zap.Uint64("epoch", h.Epoch))
	if !ok {
		log.Warn("unknown scene process registered; telling it to exit")
		c.exit("process " + h.Process + " is not in the world config")
		return
	}
	if m.stopping {
		c.exit("world is stopping")
		return
	}
	if err := m.epochs.observe(p.name, h.Epoch); err != nil {
		log.Error("persist reported epoch", zap.Error(err))
	}
	if p.conn != nil && p.conn != c || p.state == modules.SceneStarting && p.pid != h.PID {
		// Two processes claim one scene: the higher epoch stays.
		if h.Epoch <= p.epoch {
			log.Warn("stale claim: a higher epoch owns these scenes; telling it to exit", zap.Uint64("owner_epoch", p.epoch))
			c.exit(fmt.Sprintf("epoch %d is stale: epoch %d owns process %s", h.Epoch, p.epoch, p.name))
			return
		}
		log.Warn("newer claim replaces the current owner", zap.Int("old_pid", p.pid), zap.Uint64("old_epoch", p.epoch))
		if p.conn != nil {
			p.conn.exit(fmt.Sprintf("epoch %d replaced you", h.Epoch))
		}
		if old := p.pid; old != 0 && old != h.PID {
			go func() {
				ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
				defer cancel()
				_ = process.KillAndWait(ctx, old) // it was told to exit; this makes sure
			}()
		}
	} else if (p.state == modules.SceneDead || p.state == modules.SceneFailed) && h.Epoch <= p.epoch {
		log.Warn("a process we declared dead reconnected; telling it to exit")
		c.exit("declared dead")
		return
	}
	wasStarting := p.state == modules.SceneStarting && p.pid == h.PID
	p.conn = c
	c.process = p.name
	p.pid, p.epoch, p.addr, p.replayMS = h.PID, h.Epoch, h.Addr, h.ReplayMS
	p.state = modules.SceneRunning
	p.since = h.Started
	if h.Restarts > p.hist.Total() {
		p.hist.SetTotal(h.Restarts)
	}
	m.report(p, h.Scenes)
	if err := c.welcome(m.cfg.WorldMgr); err != nil {
		log.Warn("welcome", zap.Error(err))
	}
	if wasStarting && !p.diedAt.IsZero() {
		d := time.Since(p.diedAt)
		m.mRecovery.Observe(d.Seconds())
		log.Info("scene process running again", zap.Duration("crash_to_running", d), zap.Float64("replay_ms", h.ReplayMS))
	} else {
		log.Info("scene process registered", zap.String("addr", h.Addr))
	}
}

func (m *Manager) report(p *proc, scenes []ctlproto.SceneReport) {
	for _, s := range scenes {
		p.players[s.ID] = s.Players
		if p.reported == nil {
			p.reported = map[string]ctlproto.SceneReport{}
		}
		p.reported[s.ID] = s
	}
}

func (m *Manager) heartbeat(c *sceneConn, hb ctlproto.Heartbeat) {
	if p, ok := m.procs[c.process]; ok && p.conn == c {
		m.report(p, hb.Scenes)
	}
}

func (m *Manager) connClosed(c *sceneConn, reason string) {
	p, ok := m.procs[c.process]
	if !ok || p.conn != c {
		return
	}
	p.conn = nil
	m.died(p, reason, time.Now())
}

// tableRows returns the scene table, one row per scene, sorted by id.
func (m *Manager) tableRows() []modules.SceneRow {
	var rows []modules.SceneRow
	for _, p := range m.procs {
		for _, id := range p.scenes {
			row := modules.SceneRow{
				ID: id, Process: p.name, PID: p.pid, Addr: p.addr, Epoch: p.epoch, State: p.state,
				Players: p.players[id], Restarts: p.hist.Total(), Since: p.since, ReplayMS: p.replayMS,
			}
			if rep, ok := p.reported[id]; ok && p.state == modules.SceneRunning {
				// The process serves, but this scene of it may not.
				if rep.State == modules.SceneCorrupt {
					row.State = rep.State
				}
				row.Reason = rep.Reason
			}
			rows = append(rows, row)
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	return rows
}

func (m *Manager) notifyStopped() {
	for _, p := range m.procs {
		if p.state == modules.SceneRunning || p.state == modules.SceneStarting || p.dyingPID != 0 {
			return
		}
	}
	for _, w := range m.stopWaiters {
		close(w)
	}
	m.stopWaiters = nil
}
