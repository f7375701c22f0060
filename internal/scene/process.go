// Package scene is a scene process: it hosts the scenes the world manager
// assigned it, each a deterministic state machine driven by one goroutine,
// keeps every event in a shared-memory log before applying it, and after a
// crash rebuilds every scene by replaying that log before it reports
// itself running.
package scene

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/nats-io/nats.go"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/scenedef"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/testhook"
	"github.com/respawn-dev/respawn/internal/validate"
)

// CrashEnv names scene processes that must exit at start: a test hook for
// crash loops (RESPAWN_TEST_CRASH_AT_START=forest,town).
const CrashEnv = "RESPAWN_TEST_CRASH_AT_START"

// Options configure a scene process.
type Options struct {
	Config   *config.Config
	Log      *zap.Logger
	Process  string // which process of the world config this is
	Epoch    uint64
	Restarts int
	// Standby: start as a warm spare. Everything that does not touch the
	// scenes (config, secret, listeners, the bus connection) is done, then
	// the process waits for the event log's lock; when its primary exits
	// (a crash, a kill, a handoff) the kernel releases the lock and this
	// process replays and registers at once, with the epoch it was given.
	Standby bool
	// ManagerPID is the manager that started a standby: it gives up when
	// its parent is no longer that process (0: its parent at the wait).
	ManagerPID int
	// Procs is the GOMAXPROCS to serve with (Procs(cfg, process)); 0 leaves
	// it alone. Until startBurst after it serves the process runs on every
	// CPU: the replay and the listeners' and bus's set-up run side by side,
	// and then the held requests beside the republish and the saves, not in
	// turns on one thread, which is time a crash costs players.
	Procs int
}

// Process is a running scene process.
type Process struct {
	opt  Options
	cfg  *config.Config
	log  *zap.Logger
	spec config.Process
	// catalog is the world's items: GM gives of anything else are refused.
	catalog *validate.Catalog
	start   time.Time
	replay  time.Duration

	admin  *admin.Server
	host   *host
	secret *secret.Secret
	nc     *nats.Conn
	link   *linkServer
	pool   *workPool // bus messages' work (bus.go)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	// handoff: the manager asked for a planned replacement; shut down
	// without waiting for queued saves (the successor resends them).
	handoff atomic.Bool
	// toStandby: the handoff goes to a hot standby following the log: no
	// final snapshot (ctlproto.Exit.Standby).
	toStandby atomic.Bool
	done      chan struct{}
}

// New checks the options; Start does the work.
func New(opt Options) (*Process, error) {
	if opt.Config == nil {
		return nil, errors.New("scene: no config")
	}
	spec, ok := opt.Config.Process(opt.Process)
	if !ok {
		return nil, fmt.Errorf("scene: process %q is not in the world config", opt.Process)
	}
	if opt.Epoch == 0 {
		return nil, fmt.Errorf("scene: process %q: epoch must be at least 1", opt.Process)
	}
	if opt.Log == nil {
		opt.Log = zap.NewNop()
	}
	catalog, err := scenedef.Catalog(opt.Config.Scenes)
	if err != nil {
		return nil, fmt.Errorf("scene: %w", err)
	}
	return &Process{opt: opt, cfg: opt.Config, log: opt.Log, spec: spec, catalog: catalog, start: time.Now(), done: make(chan struct{})}, nil
}

// Start replays the log, starts serving, then registers with the manager.
func (p *Process) Start(ctx context.Context) error {
	if slices.Contains(splitList(os.Getenv(CrashEnv)), p.spec.Name) {
		return fmt.Errorf("scene process %s: crashing at start because %s says so", p.spec.Name, CrashEnv)
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	fail := func(err error) error {
		if p.nc != nil {
			p.nc.Close()
		}
		if p.admin != nil {
			_ = p.admin.Shutdown(context.Background()) // nothing served yet
		}
		if p.link != nil {
			p.link.close()
		}
		if p.host != nil {
			p.host.stopAll(true, true)
		}
		p.cancel()
		return fmt.Errorf("scene process %s: %w", p.spec.Name, err)
	}
	// The cluster secret proves to the manager that we belong here.
	sec, err := secret.Load(p.cfg.Secret, p.cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	p.secret = sec
	// Replay comes before anything else: nobody may see a scene that is
	// not yet where it was.
	p.host = newHost(p.cfg, p.log, p.opt.Epoch)
	breaks, err := testhook.FromEnv()
	if err != nil {
		return fail(err)
	}
	if p.host.crash, err = crashpoint.FromEnv(); err != nil {
		return fail(err)
	}
	if armed := p.host.crash.Armed(); len(armed) > 0 {
		p.log.Warn("TEST HOOK: crash points armed", zap.Strings("points", armed), zap.String("env", crashpoint.Env))
	}
	if breaks.Has(testhook.Dedupe) {
		p.log.Warn("TEST HOOK: the duplicate check is off; resent requests are applied again", zap.String("env", testhook.Env))
		p.host.breakDedupe = true
	}
	// A cold start opens and replays its log while the listeners and the
	// bus connection come up: neither touches the scenes, and nothing is
	// served or subscribed until both are done. Under load the connect
	// waits on other processes (the NATS server's handshake) that the
	// replay need not wait behind. A standby has them ready first, then
	// waits for the log.
	var cold chan restoration
	if !p.opt.Standby {
		cold = make(chan restoration, 1)
		go func() { cold <- p.openAndRestore(time.Now()) }()
	}
	failPrepare := func(err error) error {
		if cold != nil {
			<-cold // fail stops what the restore built: not while it builds
		}
		return fail(err)
	}
	adm, err := admin.New(p.cfg.Scene.Host+":0", p.cfg, nil)
	if err != nil {
		return failPrepare(err)
	}
	adm.SetVersion(VersionInfo())
	adm.Registry.MustRegister(p.host.collectors()...)
	p.admin = adm
	if p.link, err = newLinkServer(p, p.secret); err != nil {
		return failPrepare(err)
	}
	adm.Registry.MustRegister(p.link.collectors()...)
	p.host.push = p.link.push
	p.routes()
	if err := p.dialBus(); err != nil {
		return failPrepare(err)
	}
	prepare := time.Since(p.start)
	var r restoration
	if cold != nil {
		r = <-cold
	} else {
		p.log.Info("standing by: waiting for the event log's lock", zap.Duration("prepare", prepare))
		if err := p.standBy(); err != nil {
			return fail(err)
		}
		// The incarnation starts serving now: its start and replay are
		// counted from the takeover, not from the wait.
		p.start = time.Now()
		p.log.Info("standby taking over: the event log is ours")
		r = p.restore(p.start, processCPU(), p.start)
	}
	if r.err != nil {
		return fail(r.err)
	}
	p.host.follow = nil // taken over or not, the copies are done with
	p.replay = r.restored.Sub(r.began)
	ready := time.Now() // both done
	if err := p.setupBus(); err != nil {
		return fail(err)
	}
	bused := time.Now()
	p.host.startAll()
	started := time.Now()
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.link.serve() }()
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.flushLog() }()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := adm.Serve(); err != nil {
			p.log.Error("admin server", zap.Error(err))
		}
	}()

	ctl := &control{
		cfg:    p.cfg.WorldMgr,
		log:    p.log,
		secret: p.secret,
		hello:  p.hello,
		report: p.report,
		exit: func(e ctlproto.Exit) {
			if e.Handoff {
				p.handoff.Store(true)
				p.toStandby.Store(e.Standby)
			}
			go p.Shutdown()
		},
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); ctl.run(p.ctx) }()
	// The phases of a start, for the failover breakdown (docs/BENCHMARKS.md):
	// the listeners and NATS (prepare, from main), the log's open and its
	// replay (beside prepare on a cold start), the subscriptions.
	p.log.Info("scene process serving", zap.String("addr", adm.Addr()), zap.String("link", p.link.Addr()), zap.Strings("scenes", p.spec.Scenes),
		zap.Duration("replay", p.replay), zap.Time("main_at", p.start),
		zap.Bool("standby", p.opt.Standby), zap.Duration("prepare", prepare),
		zap.Duration("open", r.opened.Sub(r.began)), zap.Duration("restore", r.restored.Sub(r.opened)),
		zap.Duration("subscribe", bused.Sub(ready)), zap.Duration("start_loops", started.Sub(bused)),
		// CPU time, all threads (a cold start's prepare runs beside its
		// restore): on a loaded machine the wall-clock phases above mostly
		// measure the wait for a core.
		zap.Duration("cpu", processCPU()), zap.Duration("restore_cpu", r.restoredCPU-r.beganCPU))
	if p.opt.Procs > 0 {
		// The first moments of serving are a burst too: the players'
		// held requests, the replicas republished, a save for every
		// player whose version the data server must confirm. Then the
		// steady state, on Procs threads.
		time.AfterFunc(startBurst, func() { runtime.GOMAXPROCS(p.opt.Procs) })
	}
	go func() {
		<-p.ctx.Done()
		p.Shutdown()
	}()
	return nil
}

// Addr is the process's service address.
func (p *Process) Addr() string { return p.admin.Addr() }

// LinkAddr is the address gateways connect to (internal/scenelink).
func (p *Process) LinkAddr() string { return p.link.Addr() }

// Done is closed after Shutdown finished.
func (p *Process) Done() <-chan struct{} { return p.done }

// Shutdown stops serving and closes the log; safe to call twice.
func (p *Process) Shutdown() {
	p.once.Do(func() {
		began := time.Now()
		p.cancel()
		if p.handoff.Load() {
			// A handoff waits for no save: the gateways are told at once
			// and the log goes to the successor before anything else, since
			// every millisecond until then is the players' pause.
			p.link.close()
			p.host.release(!p.toStandby.Load())
			p.log.Info("handed the event log over", zap.Duration("took", time.Since(began)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = p.admin.Shutdown(ctx) // best effort on the way out
		p.link.close()
		p.wg.Wait()
		// The loops stop only after their queued saves are acknowledged,
		// which needs the bus: close it last.
		p.host.stopAll(!p.handoff.Load(), !p.toStandby.Load())
		p.log.Info("scene process stopped", zap.Bool("handoff", p.handoff.Load()), zap.Duration("took", time.Since(began)))
		if p.nc != nil {
			p.nc.Close()
		}
		close(p.done)
	})
}

func (p *Process) hello() ctlproto.Hello {
	h := ctlproto.Hello{
		Process: p.spec.Name, PID: os.Getpid(), Addr: p.Addr(), LinkAddr: p.LinkAddr(), Epoch: p.opt.Epoch,
		Restarts: p.opt.Restarts, Started: p.start, ReplayMS: float64(p.replay.Microseconds()) / 1000,
		Scenes: p.report(), Version: VersionInfo(),
	}
	// Who we are, so a manager that did not spawn us can tie our pid to
	// us before it would ever signal it.
	if id, err := process.ReadIdentity(h.PID); err == nil {
		h.Exe, h.StartTicks, h.Cmdline = id.Exe, id.StartTicks, id.Cmdline
	} else {
		p.log.Warn("cannot read own identity; a restarted manager will not adopt this process", zap.Error(err))
	}
	return h
}

func (p *Process) report() []ctlproto.SceneReport {
	out := make([]ctlproto.SceneReport, 0, len(p.spec.Scenes))
	for _, id := range p.spec.Scenes {
		r := ctlproto.SceneReport{ID: id, Epoch: p.opt.Epoch}
		r.State, r.Reason = p.host.health(id)
		if l, ok := p.host.loop(id); ok {
			r.Players = int(l.players.Load())
		}
		out = append(out, r)
	}
	return out
}

// flushLog msyncs the log on a timer: a machine crash loses at most one
// interval; a process crash loses nothing (the page cache survives it).
func (p *Process) flushLog() {
	t := time.NewTicker(p.cfg.Scene.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			if err := p.host.store.Flush(); err != nil {
				p.log.Error("flush event log", zap.Error(err))
			}
		}
	}
}

// Run runs a scene process until ctx ends or the manager says exit.
func Run(ctx context.Context, opt Options) error {
	p, err := New(opt)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	<-p.Done()
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// startBurst is how long a starting scene process keeps every CPU once it
// serves, before it drops to Options.Procs.
const startBurst = time.Second

// Procs is the GOMAXPROCS a scene process should run with: scene.procs, or
// when that is 0 one per scene the process hosts, at most the CPUs. A
// scene's work is its loop, one goroutine; more threads than loops only
// add wake-ups (a ready goroutine wakes an idle thread, which then finds
// little to do and parks again), which cost more than the work they move.
func Procs(cfg *config.Config, process string) int {
	if cfg.Scene.Procs > 0 {
		return cfg.Scene.Procs
	}
	spec, ok := cfg.Process(process)
	if !ok || len(spec.Scenes) == 0 {
		return runtime.NumCPU()
	}
	return min(len(spec.Scenes), runtime.NumCPU())
}

// restoration is how a start's open and replay of the log went.
type restoration struct {
	began, opened, restored time.Time
	beganCPU, restoredCPU   time.Duration
	err                     error
}

// openAndRestore opens the log (a cold start: it waits briefly for a dead
// predecessor's lock) and rebuilds every scene from it.
func (p *Process) openAndRestore(began time.Time) restoration {
	beganCPU := processCPU()
	if err := p.host.open(p.ctx, LogPath(p.cfg.ShmDir, p.spec.Name), false); err != nil {
		return restoration{err: err}
	}
	return p.restore(began, beganCPU, time.Now())
}

// restore rebuilds every scene from the open log.
func (p *Process) restore(began time.Time, beganCPU time.Duration, opened time.Time) restoration {
	r := restoration{began: began, opened: opened, beganCPU: beganCPU}
	r.err = p.host.restore(p.spec.Scenes)
	r.restored, r.restoredCPU = time.Now(), processCPU()
	return r
}

// processCPU is the CPU time this process used so far, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
