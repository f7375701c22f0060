// Package chaos is `bot chaos`: it has bots play the reference game through
// the gateways of a real cluster while it kills and stops the cluster's
// processes on a seeded schedule, then checks every promise respawn makes
// (docs/chaos.md): no disconnects, no lost acknowledgement, no duplicated
// gold or item, no stuck session, no world going back in time, and each
// player's history linearizable against the pure game model (porcupine).
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/secret"
)

// Options configure a run.
type Options struct {
	Bots     int
	Duration time.Duration // of faults and play
	Every    time.Duration // one fault per interval
	Kinds    []string
	Seed     uint64
	Rate     float64 // requests/s per bot
	Pipeline int     // requests in flight per bot
	Settle   time.Duration
	// RequestTimeout bounds one request; one without an answer by then is
	// unanswered (default 30 s: longer than the gateway's hold).
	RequestTimeout time.Duration
	// Attach uses the running cluster Config describes; otherwise Run
	// starts its own with `respawn up` from BinDir, under WorkDir.
	Attach  bool
	BinDir  string
	WorkDir string
	// Env is added to the started cluster's environment (test hooks).
	Env []string
	// CrashPoints arms every named crash point (package crashpoint) in the
	// started cluster, each at a seeded count, so processes also die at the
	// worst moments of their write paths.
	CrashPoints bool
	// ClusterLog receives `respawn up`'s output.
	ClusterLog io.Writer
	// Progress receives a line per phase and per fault.
	Progress io.Writer
}

// Limits on what a command line can ask for.
const (
	MaxBots     = 20000
	MaxPipeline = 16 // the gateway's window
)

func (o *Options) validate() error {
	switch {
	case o.Bots < 1 || o.Bots > MaxBots:
		return fmt.Errorf("--bots %d: want 1..%d", o.Bots, MaxBots)
	case o.Duration <= 0:
		return fmt.Errorf("--duration %s: want > 0", o.Duration)
	case o.Every <= 0:
		return fmt.Errorf("--every %s: want > 0", o.Every)
	case o.Rate <= 0 || o.Rate > 1000:
		return fmt.Errorf("--rate %g: want (0, 1000] requests/s per bot", o.Rate)
	case o.Pipeline < 1 || o.Pipeline > MaxPipeline:
		return fmt.Errorf("--pipeline %d: want 1..%d", o.Pipeline, MaxPipeline)
	case o.RequestTimeout <= 0:
		return fmt.Errorf("--request-timeout %s: want > 0", o.RequestTimeout)
	case o.Settle <= 0:
		return fmt.Errorf("--settle %s: want > 0", o.Settle)
	case len(o.Kinds) == 0:
		return errors.New("--faults: no fault kind")
	}
	return nil
}

// Report is the run's result; `--json` prints it.
type Report struct {
	Seed       uint64      `json:"seed"`
	Bots       int         `json:"bots"`
	DurationMs int64       `json:"duration_ms"`
	Requests   Requests    `json:"requests"`
	Clients    Clients     `json:"clients"`
	Faults     []Fault     `json:"faults"`
	Checks     []Check     `json:"checks"`
	Violations []Violation `json:"violations"`
	Unchecked  int         `json:"unchecked_players"` // players with an unanswered attack: ledger and history not checked
	// CrashPoints is what --crash-points armed (RESPAWN_TEST_CRASH) and
	// CrashesAt how often each point fired, from the cluster's logs.
	CrashPoints string         `json:"crash_points,omitempty"`
	CrashesAt   map[string]int `json:"crashes_at,omitempty"`
}

// Requests counts what the bots sent and saw.
type Requests struct {
	Sent     uint64  `json:"sent"`
	Answered uint64  `json:"answered"`
	Refused  uint64  `json:"refused"` // the game said no (not enough gold, monster dead)
	Unknown  uint64  `json:"unknown"` // no answer: may have happened
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
}

// Clients sums the client library's counters over the bots.
type Clients struct {
	Resumes     uint64 `json:"resumes"`
	Relogins    uint64 `json:"relogins"`
	Disconnects uint64 `json:"disconnects"`
	Lost        uint64 `json:"lost_connections"` // ended without a CLOSE: a gateway died
	Resends     uint64 `json:"resends"`
	Duplicates  uint64 `json:"duplicate_replies"`
}

// Check is one check and how much it looked at.
type Check struct {
	Name       string `json:"check"`
	Checked    int    `json:"checked"`
	Violations int    `json:"violations"`
	Note       string `json:"note,omitempty"`
}

// Violation is one broken promise.
type Violation struct {
	Check    string `json:"check"`
	Player   string `json:"player,omitempty"`
	Scene    string `json:"scene,omitempty"`
	Requests int    `json:"requests,omitempty"` // requests of this player seen
	Expected string `json:"expected"`
	Found    string `json:"found"`
	Detail   string `json:"detail,omitempty"`
}

// Failed reports whether the run found a violation.
func (r *Report) Failed() bool { return len(r.Violations) > 0 }

// Run performs a chaos run against the cluster cfg describes (Attach) or a
// cluster of its own built from cfg.
func Run(ctx context.Context, cfg *config.Config, o Options, log *zap.Logger) (*Report, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "chaos: "+format+"\n", args...) }
	if o.ClusterLog == nil {
		o.ClusterLog = io.Discard
	}

	var cl *cluster
	var err error
	armed := ""
	if o.CrashPoints {
		if o.Attach {
			return nil, errors.New("--crash-points arms a cluster this run starts; not with --attach")
		}
		armed = armCrashPoints(o.Seed)
		o.Env = append(o.Env, crashpoint.Env+"="+armed)
		// A flush of a few dozen players must span several database
		// transactions for datasvr.flush-between-rows to be passed.
		c := *cfg
		c.Datasvr.FlushBatch = min(c.Datasvr.FlushBatch, crashFlushBatch)
		cfg = &c
		say("crash points armed: %s", armed)
	}
	if o.Attach {
		cl, err = attachCluster(ctx, cfg, log)
	} else {
		if o.WorkDir == "" {
			if o.WorkDir, err = os.MkdirTemp("", "respawn-chaos-"); err != nil {
				return nil, err
			}
		}
		// The ports are reserved with freeport, so no other test or chaos
		// run takes one before the daemon binds it; software outside that
		// scheme still can, so a cluster that does not come up gets one
		// more try on fresh ports and a fresh directory.
		for attempt := 1; attempt <= 2; attempt++ {
			var path string
			var release func() error
			if path, release, err = ownConfig(cfg, o.WorkDir); err != nil {
				return nil, err
			}
			say("starting a cluster (respawn up --config %s)", path)
			cl, err = startCluster(ctx, path, o.BinDir, o.Env, o.ClusterLog, log)
			if err == nil {
				cl.release = release
			} else if rerr := release(); rerr != nil {
				log.Warn("release the failed cluster's ports", zap.Error(rerr))
			}
			if err == nil || ctx.Err() != nil {
				break
			}
			say("the cluster did not come up: %v", err)
			// A fresh data directory: the failed one may hold a half-started
			// cluster's state.
			if rerr := os.RemoveAll(filepath.Join(o.WorkDir, "data")); rerr != nil {
				return nil, rerr
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	defer cl.stop()
	cfg = cl.cfg

	sec, err := secret.Load(cfg.Secret, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	opTok, err := admin.OperatorToken(cfg)
	if err != nil {
		return nil, err
	}
	// The GM role: the bots' players are created and given gold as an
	// operator would.
	nc, err := bus.Connect(cfg.NATS.ClientURL(), "bot-chaos", bus.RoleGM, sec, log)
	if err != nil {
		return nil, fmt.Errorf("connect to nats at %s: %w", cfg.NATS.ClientURL(), err)
	}
	defer nc.Close()
	ac := dataclient.NewAdminClient(nc, opTok)

	var gateways []string
	for _, g := range cfg.Gateways() {
		gateways = append(gateways, g.Listen)
	}
	s := &swarm{cfg: cfg, play: playables(cfg), rate: o.Rate, pipeline: o.Pipeline, reqTimeout: o.RequestTimeout, sec: sec}
	prefix := fmt.Sprintf("chaos%d-%x", o.Seed, time.Now().UnixNano()&0xffffff)
	s.bots = make([]*bot, o.Bots)
	defer func() {
		for _, b := range s.bots {
			if b != nil {
				b.c.Close()
			}
		}
	}()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	err = parallel(sctx, o.Bots, 32, func(i int) error {
		b, err := s.login(sctx, ac, sec, gateways, prefix, o.Seed, i)
		s.bots[i] = b
		return err
	})
	scancel()
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	say("%d bots logged in through %d gateways; %s of play, a fault every %s", o.Bots, len(gateways), o.Duration, o.Every)

	rep := &Report{Seed: o.Seed, Bots: o.Bots, Faults: []Fault{}, Violations: []Violation{}, CrashPoints: armed}
	if armed != "" {
		defer func() { rep.CrashesAt = crashesIn(o.WorkDir) }()
	}
	w := newWorldWatch(cl)
	wctx, wcancel := context.WithCancel(ctx)
	var wwg sync.WaitGroup
	wwg.Go(func() { w.run(wctx) })

	s.t0 = time.Now()
	stop := make(chan struct{})
	var bwg sync.WaitGroup
	for _, b := range s.bots {
		bwg.Go(func() { s.run(stop, b) })
	}
	plan := Schedule(o.Seed, o.Kinds, o.Duration, o.Every)
	for _, p := range plan {
		select {
		case <-time.After(time.Until(s.t0.Add(p.At))):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		f := cl.inject(ctx, p, s.t0)
		rep.Faults = append(rep.Faults, f)
		say("%6dms %-8s %-16s pid %-7d recovered in %dms %s", f.AtMs, f.Kind, f.Target, f.PID, f.RecoveryMs, f.Error)
	}
	select {
	case <-time.After(time.Until(s.t0.Add(o.Duration))):
	case <-ctx.Done():
	}
	close(stop)
	bwg.Wait()
	rep.DurationMs = time.Since(s.t0).Milliseconds()
	say("play stopped after %s; settling for at most %s", time.Since(s.t0).Round(time.Millisecond), o.Settle)

	// Settle: the cluster whole again.
	setctx, setcancel := context.WithTimeout(ctx, o.Settle)
	if err := cl.waitHealthy(setctx); err != nil {
		rep.Violations = append(rep.Violations, Violation{Check: "recovery", Expected: "every daemon healthy and every scene running after the faults",
			Found: err.Error()})
	}
	setcancel()
	wcancel()
	wwg.Wait()

	checkAll(ctx, rep, cl, ac, s, w, say)
	rep.Requests = Requests{Sent: s.sent.Load(), Answered: s.answered.Load(), Refused: s.refused.Load(), Unknown: s.unknown.Load()}
	rep.Requests.P50Ms, rep.Requests.P99Ms, rep.Requests.MaxMs = s.lat.summary()
	return rep, nil
}

// parallel runs fn(0..n-1) on at most width goroutines; the first error
// wins.
func parallel(ctx context.Context, n, width int, fn func(int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, width)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func newFlagSet() *pflag.FlagSet { return pflag.NewFlagSet("chaos", pflag.ContinueOnError) }

// operatorToken derives the operator token once the cluster's secret exists
// (a started cluster creates it; loading it first would race that).
func operatorToken(cfg *config.Config) (string, error) {
	if cfg.Secret == "" && cfg.Admin.Token == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, secret.FileName)); err != nil {
			return "", fmt.Errorf("no cluster secret yet: %w", err)
		}
	}
	return admin.OperatorToken(cfg)
}
