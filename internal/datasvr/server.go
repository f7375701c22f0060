// Package datasvr is the data server: the authoritative cache of player
// data between the scenes and the database (seed 003's "data server" and
// "database proxy" merged into one process).
//
// Scenes load a player (taking an ownership lease: scene id + epoch), save
// it often, and release it or hand it over to another scene, all by NATS
// request-reply (proto.go). A save is acknowledged only once it is in the
// journal on disk (package journal, group commit with fsync); the newest
// copy of every player is kept in memory; every flush_interval all dirty
// players are written to the database in batched transactions, each player
// once however many saves arrived, and the journal segments the database
// now covers are deleted. On start the journal is replayed and flushed
// before anyone is answered, so a kill -9 loses nothing acknowledged.
//
// The scene side is Client (client.go) with its non-blocking save queue;
// the GM side is AdminClient.
package datasvr

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/journal"
	"github.com/respawn-dev/respawn/internal/logging"
	"github.com/respawn-dev/respawn/internal/scenedef"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/store"
	"github.com/respawn-dev/respawn/internal/testhook"
	"github.com/respawn-dev/respawn/internal/validate"
)

// OpenStoreFunc opens the database; store.Open in production.
type OpenStoreFunc func(ctx context.Context, dsn, dataDir string) (store.Store, error)

// Option changes how a Server is built (tests).
type Option func(*Server)

// WithOpenStore replaces store.Open, e.g. with an in-memory fake.
func WithOpenStore(f OpenStoreFunc) Option { return func(s *Server) { s.openStore = f } }

// WithJournalSync replaces the journal's fsync (fault injection in tests).
func WithJournalSync(f func(*os.File) error) Option { return func(s *Server) { s.journalSync = f } }

// counters are the server's cumulative metrics; Prometheus reads them
// through CounterFuncs so the stats request and /metrics agree.
type counters struct {
	savesAccepted, savesRejected, savesFailed atomic.Uint64
	loads, evictions, journalErrors           atomic.Uint64
	flushes, dbErrors, createConflicts        atomic.Uint64
	gmRepeats, gmConflicts, checkpointErrors  atomic.Uint64
}

// Server is one data server.
type Server struct {
	cfg         *config.Config
	log         *zap.Logger
	openStore   OpenStoreFunc
	journalSync func(*os.File) error
	started     time.Time
	// catalog is the world's items: GM gives of anything else are refused.
	catalog *validate.Catalog
	// opToken is the operator token GM changes must carry.
	opToken string
	// breakFencing: test hook RESPAWN_TEST_BREAK=fencing (package testhook).
	breakFencing bool
	// crash is the armed crash points (package crashpoint); nil: none.
	crash *crashpoint.Points

	secret  *secret.Secret // NATS passwords of every role
	ns      *server.Server // nil with an external NATS
	nc      *nats.Conn
	adm     *admin.Server
	dbh     dbHealth // the database handle and whether it answers
	journal *journal.Journal
	gmids   *gmTable // what each operator request id did
	subs    []*nats.Subscription

	// bg lives until Shutdown; background work and journal appends use it.
	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines
	reqs   sync.WaitGroup // request handlers
	sem    chan struct{}  // bounds concurrent request handlers

	mu       sync.Mutex
	players  map[string]*entry
	dirty    map[string]*entry
	lru      *list.List // evictable players, least recently used first
	lruBytes int64
	inflight map[uint64]int // journal NextSeq at start of each in-flight commit
	// provisional: players created without the database, not yet checked
	// against it (degrade.go). Never evicted: they are dirty.
	provisional map[string]bool

	flushReq chan chan error
	wake     chan struct{} // flush now (the database came back)
	flushDur prometheus.Histogram
	m        counters
	ready    chan struct{}
	readyErr atomic.Value     // string: why not ready yet
	rejects  *logging.Limiter // "save refused" and friends, per op, code and scene
	// replayedGM: operator requests found in the journal at start.
	replayedGM []gmRecord
	startOnce  sync.Once
	stopOnce   sync.Once
	stopped    chan struct{}
}

// New validates cfg and returns a server that Start will run.
func New(cfg *config.Config, log *zap.Logger, opts ...Option) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("datasvr: no config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("datasvr: %w", err)
	}
	if log == nil {
		log = zap.NewNop()
	}
	catalog, err := scenedef.Catalog(cfg.Scenes)
	if err != nil {
		return nil, fmt.Errorf("datasvr: %w", err)
	}
	s := &Server{
		catalog:     catalog,
		cfg:         cfg,
		log:         log,
		openStore:   store.Open,
		players:     make(map[string]*entry),
		dirty:       make(map[string]*entry),
		lru:         list.New(),
		inflight:    make(map[uint64]int),
		provisional: make(map[string]bool),
		sem:         make(chan struct{}, 4096),
		flushReq:    make(chan chan error),
		wake:        make(chan struct{}, 1),
		rejects:     logging.NewLimiter(time.Second, 0),
		ready:       make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	s.readyErr.Store("starting")
	for _, o := range opts {
		o(s)
	}
	s.bg, s.cancel = context.WithCancel(context.Background())
	breaks, err := testhook.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("datasvr: %w", err)
	}
	if s.breakFencing = breaks.Has(testhook.Fencing); s.breakFencing {
		log.Warn("TEST HOOK: saves from a stale epoch are accepted", zap.String("env", testhook.Env))
	}
	crash, err := crashpoint.FromEnv()
	if err != nil {
		return nil, fmt.Errorf("datasvr: %w", err)
	}
	s.crash = crash
	if crash != nil {
		log.Warn("TEST HOOK: crash points armed", zap.Strings("points", crash.Armed()), zap.String("env", crashpoint.Env))
		sync := s.journalSync
		if sync == nil {
			sync = (*os.File).Sync
		}
		s.journalSync = func(f *os.File) error {
			crash.Hit(crashpoint.JournalBeforeFsync) // written, not durable
			err := sync(f)
			crash.Hit(crashpoint.JournalAfterFsync) // durable, not acknowledged
			return err
		}
	}
	return s, nil
}

// Ready is closed once the journal is replayed into the database and
// requests are being answered.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// NATSURL is the URL clients use to reach this server's NATS.
func (s *Server) NATSURL() string {
	if s.ns != nil {
		return s.ns.ClientURL()
	}
	return s.cfg.NATS.ClientURL()
}

// AdminAddr is the admin HTTP address actually listened on.
func (s *Server) AdminAddr() string {
	if s.adm == nil {
		return ""
	}
	return s.adm.Addr()
}

// Run starts the server, serves until ctx ends, and shuts down.
func Run(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(shutCtx)
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.Shutdown(shutCtx)
}

// Start brings the server up and returns once it answers requests:
// admin port (unhealthy until ready), NATS, database, journal replay, a
// flush of everything replayed, then the request subscriptions. ctx bounds
// the start only.
func (s *Server) Start(ctx context.Context) error {
	err := errors.New("datasvr: Start called twice")
	s.startOnce.Do(func() { err = s.start(ctx) })
	return err
}

func (s *Server) start(ctx context.Context) error {
	s.started = time.Now()
	cfg := s.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("datasvr: data dir: %w", err)
	}
	tok, err := admin.OperatorToken(cfg)
	if err != nil {
		return fmt.Errorf("datasvr: %w", err)
	}
	s.opToken = tok
	sec, err := secret.Load(cfg.Secret, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("datasvr: %w", err)
	}
	s.secret = sec
	adm, err := admin.New(cfg.Datasvr.Admin, cfg, s.health)
	if err != nil {
		return fmt.Errorf("datasvr: %w", err)
	}
	adm.SetVersion(VersionInfo())
	s.adm = adm
	adm.SetNote(s.degraded)
	s.registerMetrics(adm.Registry)
	s.wg.Go(func() {
		if err := adm.Serve(); err != nil {
			s.log.Error("admin server stopped", zap.Error(err))
		}
	})
	if err := s.startNATS(); err != nil {
		return err
	}

	// The journal needs no database: replay it first, so a start without
	// the database still serves every player the journal knows.
	s.readyErr.Store("replaying journal")
	if err := s.replay(); err != nil {
		return err
	}
	gm, err := openGMTable(filepath.Join(cfg.DataDir, "gm-requests.jsonl"), s.log.Named("gm"))
	if err != nil {
		return fmt.Errorf("datasvr: %w", err)
	}
	s.gmids = gm
	s.replayGM()

	s.readyErr.Store("opening database")
	if err := s.openDB(ctx); err != nil {
		// Degraded, not stopped: serve from cache and journal, keep trying.
		s.wg.Go(s.reopen)
	} else {
		// Everything replayed goes to the database before anyone is
		// answered, so the journal can start again from a clean
		// checkpoint. If that fails, the flusher keeps trying.
		s.readyErr.Store("flushing replayed journal to the database")
		if err := s.flush(ctx, true, nil); err != nil {
			s.log.Error("flush of replayed journal failed; serving degraded, the flusher retries", zap.Error(err))
		}
	}

	if err := s.subscribe(); err != nil {
		return err
	}
	s.wg.Go(s.flusher)
	s.readyErr.Store("")
	close(s.ready)
	s.log.Info("datasvr ready", zap.String("nats", s.NATSURL()), zap.String("admin", adm.Addr()),
		zap.String("data_dir", cfg.DataDir), zap.Duration("flush_interval", cfg.Datasvr.FlushInterval),
		zap.Duration("startup", time.Since(s.started)))
	return nil
}

func (s *Server) health() error {
	if msg, _ := s.readyErr.Load().(string); msg != "" {
		return errors.New("datasvr not ready: " + msg)
	}
	return nil
}

func (s *Server) startNATS() error {
	cfg := s.cfg
	auth, err := bus.Auth(bus.RoleDataSvr, s.secret)
	if err != nil {
		return fmt.Errorf("datasvr: %w", err)
	}
	opts := append(auth,
		nats.Name("datasvr"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { s.log.Info("nats reconnected", zap.String("url", nc.ConnectedUrl())) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { s.log.Warn("nats error", zap.Error(err)) }),
	)
	if cfg.NATS.URL != "" {
		nc, err := nats.Connect(cfg.NATS.URL, append(opts, nats.RetryOnFailedConnect(true))...)
		if err != nil {
			return fmt.Errorf("datasvr: connect nats %s: %w", cfg.NATS.URL, err)
		}
		s.nc = nc
		return nil
	}
	host, port, err := splitHostPort(cfg.NATS.Listen)
	if err != nil {
		return fmt.Errorf("datasvr: nats.listen: %w", err)
	}
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
	}
	users, err := natsUsers(s.secret)
	if err != nil {
		return fmt.Errorf("datasvr: nats users: %w", err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "respawn-datasvr",
		// Every connection logs in as one of the cluster's roles, with
		// that role's subject permissions (package bus).
		Users:      users,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		NoSigs:     true, // signals belong to this process, not to the embedded server
		NoLog:      true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return fmt.Errorf("datasvr: embedded nats: %w", err)
	}
	s.ns = ns
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("datasvr: embedded nats did not start listening on %s", cfg.NATS.Listen)
	}
	nc, err := nats.Connect(ns.ClientURL(), append(opts, nats.InProcessServer(ns))...)
	if err != nil {
		return fmt.Errorf("datasvr: connect embedded nats: %w", err)
	}
	s.nc = nc
	s.log.Info("embedded nats listening", zap.String("url", ns.ClientURL()), zap.String("store_dir", filepath.Join(cfg.DataDir, "nats")))
	return nil
}

// replay rebuilds the cache and dirty set from the journal.
func (s *Server) replay() error {
	j, err := journal.Open(journal.Options{
		Dir:         filepath.Join(s.cfg.DataDir, "journal"),
		MaxBytes:    s.cfg.Datasvr.JournalMaxBytes,
		GroupCommit: s.cfg.Datasvr.GroupCommit,
		Log:         s.log.Named("journal"),
		Sync:        s.journalSync,
	})
	if err != nil {
		return fmt.Errorf("datasvr: %w", err)
	}
	s.journal = j
	n := 0
	err = j.Replay(func(seq uint64, payload []byte) error {
		var r journalRecord
		if err := jsonUnmarshal(payload, &r); err != nil {
			return fmt.Errorf("record %d: %w", seq, err)
		}
		s.mu.Lock()
		e := s.players[r.Player]
		if e == nil {
			e = &entry{id: r.Player}
			s.players[r.Player] = e
		}
		r.Data = cloneBytes(r.Data)
		s.apply(e, &r, seq, time.Time{})
		if r.GM != nil {
			s.replayedGM = append(s.replayedGM, *r.GM)
		}
		s.mu.Unlock()
		n++
		return nil
	})
	if err != nil {
		return fmt.Errorf("datasvr: replay journal: %w", err)
	}
	s.mu.Lock()
	dirty := len(s.dirty)
	s.mu.Unlock()
	s.log.Info("journal replayed", zap.Int("records", n), zap.Int("players", dirty), zap.Int64("bytes", j.Stats().Bytes))
	return nil
}

// Shutdown stops answering, flushes to the database, and stops everything
// it started. Safe to call more than once and from several goroutines;
// every call returns once the server is stopped (or ctx ends).
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	first := false
	s.stopOnce.Do(func() {
		first = true
		err = s.shutdown(ctx)
		close(s.stopped)
	})
	if !first {
		select {
		case <-s.stopped:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (s *Server) shutdown(ctx context.Context) error {
	var errs []error
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	reqsDone := make(chan struct{})
	go func() { s.reqs.Wait(); close(reqsDone) }()
	select {
	case <-reqsDone:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("datasvr: requests still running at shutdown: %w", ctx.Err()))
	}
	// Stop the flusher, then flush once more so a clean stop leaves the
	// database complete and the journal empty.
	s.cancel()
	if s.db() != nil && s.journal != nil && s.isReady() {
		if err := s.flush(ctx, true, nil); err != nil {
			s.log.Warn("final flush failed; the journal still holds everything", zap.Error(err))
		}
	}
	if s.adm != nil {
		if err := s.adm.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	if s.journal != nil {
		if err := s.journal.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.gmids != nil {
		if err := s.gmids.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if st := s.db(); st != nil {
		if err := st.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	s.log.Info("datasvr stopped")
	return errors.Join(errs...)
}

func (s *Server) isReady() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

func (s *Server) registerMetrics(reg *prometheus.Registry) {
	const ns = "respawn_datasvr"
	cf := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, f)
	}
	gf := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help}, f)
	}
	u := func(a *atomic.Uint64) func() float64 { return func() float64 { return float64(a.Load()) } }
	s.flushDur = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "flush_duration_seconds", Help: "Time to write one flush's dirty players to the database.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	js := func(f func(journal.Stats) float64) func() float64 {
		return func() float64 {
			if s.journal == nil {
				return 0
			}
			return f(s.journal.Stats())
		}
	}
	ss := func(f func(store.Stats) float64) func() float64 {
		return func() float64 {
			if st := s.storeOrNil(); st != nil {
				return f(st.Stats())
			}
			return 0
		}
	}
	reg.MustRegister(
		s.flushDur,
		cf("saves_accepted_total", "Saves acknowledged (durable in the journal).", u(&s.m.savesAccepted)),
		cf("saves_rejected_total", "Saves refused by fencing: stale epoch, old version, not owner.", u(&s.m.savesRejected)),
		cf("saves_failed_total", "Saves not made durable (journal full, disk error); the client retries.", u(&s.m.savesFailed)),
		cf("loads_total", "Player loads (lease takes).", u(&s.m.loads)),
		cf("evictions_total", "Offline players evicted from the cache.", u(&s.m.evictions)),
		cf("flushes_total", "Successful write-behind flushes.", u(&s.m.flushes)),
		cf("db_errors_total", "Database errors (flush retries, failed loads).", u(&s.m.dbErrors)),
		cf("journal_errors_total", "Journal appends that failed.", u(&s.m.journalErrors)),
		cf("checkpoint_errors_total", "Journal checkpoints (segment deletes, directory syncs) that failed; retried at the next flush.", u(&s.m.checkpointErrors)),
		cf("create_conflicts_total", "Players created while the database was down that already existed there (the database's copy won).", u(&s.m.createConflicts)),
		cf("gm_repeats_total", "Operator requests answered from the request table instead of applied again.", u(&s.m.gmRepeats)),
		cf("gm_conflicts_total", "Operator request ids reused with a different body (refused).", u(&s.m.gmConflicts)),
		gf("degraded", "1 while the database is unreachable (serving from cache and journal).", func() float64 {
			if s.degraded() != "" {
				return 1
			}
			return 0
		}),
		gf("database_down_seconds", "How long the database has been unreachable (0 while it answers).", s.downSeconds),
		gf("journal_bytes", "Bytes in journal segments not yet covered by the database.", js(func(j journal.Stats) float64 { return float64(j.Bytes) })),
		cf("journal_fsyncs_total", "Journal fsyncs (one per group commit).", js(func(j journal.Stats) float64 { return float64(j.Fsyncs) })),
		cf("journal_records_total", "Journal records made durable.", js(func(j journal.Stats) float64 { return float64(j.Appends) })),
		gf("dirty_players", "Players changed since the last flush.", func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.dirty)) }),
		gf("cached_players", "Players in memory.", func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.players)) }),
		cf("db_rows_total", "Rows written to the database.", ss(func(st store.Stats) float64 { return float64(st.Rows) })),
		cf("db_statements_total", "SQL statements executed.", ss(func(st store.Stats) float64 { return float64(st.Statements) })),
	)
}

func (s *Server) storeOrNil() store.Store {
	if !s.isReady() {
		return nil
	}
	return s.db()
}

func (s *Server) stats() StatsReply {
	s.mu.Lock()
	rep := StatsReply{CachedPlayers: len(s.players), DirtyPlayers: len(s.dirty), CacheBytes: s.lruBytes}
	for _, e := range s.players {
		if e.owner.Scene != "" && e.owner.Epoch > 0 {
			rep.OnlinePlayers++
		}
	}
	s.mu.Unlock()
	rep.SavesAccepted = s.m.savesAccepted.Load()
	rep.SavesRejected = s.m.savesRejected.Load()
	rep.SavesFailed = s.m.savesFailed.Load()
	rep.Loads = s.m.loads.Load()
	rep.Flushes = s.m.flushes.Load()
	rep.DBErrors = s.m.dbErrors.Load()
	js := s.journal.Stats()
	rep.JournalBytes, rep.JournalFsyncs, rep.JournalRecords = js.Bytes, js.Fsyncs, js.Appends
	if db := s.db(); db != nil {
		st := db.Stats()
		rep.DBRows, rep.DBStatements, rep.DBBatches = st.Rows, st.Statements, st.Batches
	}
	rep.Degraded = s.degraded()
	rep.Started = s.started.UnixNano()
	rep.UptimeSeconds = time.Since(s.started).Seconds()
	return rep
}
