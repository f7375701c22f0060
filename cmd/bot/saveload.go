package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/secret"
)

// saveLoadResult is what `save-load --json` prints, exactly these keys.
type saveLoadResult struct {
	SavesPerS        float64 `json:"saves_per_s"`
	AckP50Ms         float64 `json:"ack_p50_ms"`
	AckP99Ms         float64 `json:"ack_p99_ms"`
	DBRowsPerS       float64 `json:"db_rows_per_s"`
	DBStatementsPerS float64 `json:"db_statements_per_s"`
	SavesPerRow      float64 `json:"saves_per_row"`
	Rejected         uint64  `json:"rejected"`
	Lost             uint64  `json:"lost"`
	// DatasvrRestarts: datasvr restarted during the run; its counters are
	// summed over its incarnations (what a dead one did after the last
	// sample is not counted, so rates are lower bounds then).
	DatasvrRestarts int `json:"datasvr_restarts"`
	// Unverified: players whose final version could not be checked
	// (datasvr unreachable when the grace period ended).
	Unverified uint64 `json:"unverified"`
}

type saveLoadOpts struct {
	players  int
	interval time.Duration
	duration time.Duration
	scenes   int
	prefix   string
	natsURL  string
	dataDir  string
	asJSON   bool
	grace    time.Duration
}

func saveLoadCommand() *cobra.Command {
	var o saveLoadOpts
	cmd := &cobra.Command{
		Use:   "save-load",
		Short: "Drive datasvr as scenes would: N players each saving every interval",
		Long: `Simulates N online players spread over --scenes scenes, each saved every
--save-interval through the scenes' real dataclient.Client save queue, for --duration.
It reports acknowledged saves/s, ack latency (enqueue to acknowledgement), the
database rows and statements per second datasvr caused (from its stats, including
the final flush), saves per row written, rejected saves, and lost saves:
acknowledged versions that datasvr no longer has when the run ends.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			res, extra, err := runSaveLoad(ctx, o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.asJSON {
				return printJSON(out, res)
			}
			fmt.Fprintf(out, "players            %d in %d scenes, a save every %s, for %s\n", o.players, o.scenes, o.interval, o.duration)
			fmt.Fprintf(out, "saves accepted     %d (%.0f/s), rejected %d, never acknowledged %d\n", extra.accepted, res.SavesPerS, res.Rejected, extra.unacked)
			fmt.Fprintf(out, "ack latency        p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", res.AckP50Ms, res.AckP99Ms, extra.maxMs)
			fmt.Fprintf(out, "database           %d rows (%.0f/s), %d statements (%.0f/s)\n", extra.rows, res.DBRowsPerS, extra.statements, res.DBStatementsPerS)
			fmt.Fprintf(out, "saves per row      %.1f\n", res.SavesPerRow)
			fmt.Fprintf(out, "journal fsyncs     %d (%.1f saves per fsync)\n", extra.fsyncs, float64(extra.accepted)/max(float64(extra.fsyncs), 1))
			fmt.Fprintf(out, "lost               %d\n", res.Lost)
			if res.DatasvrRestarts > 0 || res.Unverified > 0 {
				fmt.Fprintf(out, "datasvr restarts   %d, players not verified %d\n", res.DatasvrRestarts, res.Unverified)
			}
			for _, n := range extra.notes {
				fmt.Fprintf(out, "note               %s\n", n)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.players, "players", 4000, "simulated online players")
	f.DurationVar(&o.interval, "save-interval", time.Second, "how often each player is saved")
	f.DurationVar(&o.duration, "duration", 20*time.Second, "how long to save")
	f.IntVar(&o.scenes, "scenes", 8, "simulated scenes (one dataclient.Client each)")
	f.StringVar(&o.prefix, "prefix", "bot", "player id prefix")
	f.StringVar(&o.natsURL, "nats", "nats://127.0.0.1:7422", "NATS URL of the cluster")
	f.StringVar(&o.dataDir, "data-dir", "./data", "the cluster's data directory, whose secret file gives the NATS passwords (or set RESPAWN_SECRET)")
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	f.DurationVar(&o.grace, "grace", 15*time.Second, "after --duration, how long to wait for acknowledgements and the check before reporting what is known")
	return cmd
}

type saveLoadExtra struct {
	accepted, unacked, rows, statements, fsyncs uint64
	maxMs                                       float64
	notes                                       []string
}

// statsSum adds datasvr's cumulative counters over its restarts: each
// incarnation's counters start at zero, so a sample from a new one closes
// the previous one's span instead of being subtracted from it (which
// underflowed: 1.2e18 statements/s).
type statsSum struct {
	mu         sync.Mutex
	base, last dataclient.StatsReply
	done       dataclient.StatsReply // summed spans of earlier incarnations
	restarts   int
}

func newStatsSum(first dataclient.StatsReply) *statsSum {
	return &statsSum{base: first, last: first}
}

func (s *statsSum) sample(st dataclient.StatsReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	restarted := st.Started != s.last.Started || st.DBRows < s.last.DBRows || st.SavesAccepted < s.last.SavesAccepted
	if restarted {
		s.done = addStats(s.done, subStats(s.last, s.base))
		s.base = dataclient.StatsReply{Started: st.Started}
		s.restarts++
	}
	s.last = st
}

func (s *statsSum) total() (dataclient.StatsReply, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return addStats(s.done, subStats(s.last, s.base)), s.restarts
}

func subStats(a, b dataclient.StatsReply) dataclient.StatsReply {
	return dataclient.StatsReply{DBRows: a.DBRows - b.DBRows, DBStatements: a.DBStatements - b.DBStatements,
		JournalFsyncs: a.JournalFsyncs - b.JournalFsyncs}
}

func addStats(a, b dataclient.StatsReply) dataclient.StatsReply {
	return dataclient.StatsReply{DBRows: a.DBRows + b.DBRows, DBStatements: a.DBStatements + b.DBStatements,
		JournalFsyncs: a.JournalFsyncs + b.JournalFsyncs}
}

// limitedLog prints the first few of a repeated message and counts the rest.
type limitedLog struct {
	mu     sync.Mutex
	shown  int
	hidden int
}

const shownLines = 10

func (l *limitedLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown >= shownLines {
		l.hidden++
		return
	}
	l.shown++
	fmt.Fprintf(os.Stderr, format, args...)
}

func (l *limitedLog) flush(what string) {
	if l.hidden > 0 {
		fmt.Fprintf(os.Stderr, "bot: ... and %d more %s\n", l.hidden, what)
	}
}

// botPlayer is one simulated player's bookkeeping.
type botPlayer struct {
	id     string
	client *dataclient.Client
	data   player.Data

	mu       sync.Mutex
	next     uint64               // next version to save
	enqueued map[uint64]time.Time // versions not yet acknowledged
	acked    uint64               // highest acknowledged version
}

func runSaveLoad(ctx context.Context, o saveLoadOpts) (saveLoadResult, saveLoadExtra, error) {
	var res saveLoadResult
	var extra saveLoadExtra
	if o.players < 1 || o.scenes < 1 || o.interval <= 0 || o.duration <= 0 || o.grace <= 0 {
		return res, extra, errors.New("save-load: --players, --scenes, --save-interval, --duration and --grace must be positive")
	}
	sec, err := secret.Load(os.Getenv("RESPAWN_SECRET"), o.dataDir)
	if err != nil {
		return res, extra, err
	}
	// The bot plays the scenes (loads and saves) and the GM (create,
	// stats, flush): two roles, two connections.
	connect := func(role bus.Role) (*nats.Conn, error) {
		auth, err := bus.Auth(role, sec)
		if err != nil {
			return nil, err
		}
		nc, err := nats.Connect(o.natsURL, append(auth, nats.Name("bot-save-load "+string(role)), nats.MaxReconnects(-1))...)
		if err != nil {
			return nil, fmt.Errorf("connect %s as %s: %w", o.natsURL, role, err)
		}
		return nc, nil
	}
	nc, err := connect(bus.RoleScene)
	if err != nil {
		return res, extra, err
	}
	defer nc.Close()
	gm, err := connect(bus.RoleGM)
	if err != nil {
		return res, extra, err
	}
	defer gm.Close()
	adm := dataclient.NewAdminClient(gm, "") // show, stats and flush need no operator token

	var (
		latMu      sync.Mutex
		latencies  []time.Duration
		accepted   atomic.Uint64
		rejected   atomic.Uint64
		firstError atomic.Value
	)
	players := make([]*botPlayer, o.players)
	byID := make(map[string]*botPlayer, o.players)
	onResult := func(id string, version uint64, err error) {
		now := time.Now()
		p := byID[id]
		p.mu.Lock()
		t0, ok := p.enqueued[version]
		for v := range p.enqueued {
			if v <= version {
				delete(p.enqueued, v) // older ones were superseded by this one
			}
		}
		if err == nil && version > p.acked {
			p.acked = version
		}
		p.mu.Unlock()
		if err != nil {
			rejected.Add(1)
			firstError.CompareAndSwap(nil, err.Error())
			return
		}
		accepted.Add(1)
		if ok {
			latMu.Lock()
			latencies = append(latencies, now.Sub(t0))
			latMu.Unlock()
		}
	}

	// A new epoch per run: it takes over leases a previous run left behind.
	epoch := uint64(time.Now().UnixNano())
	clients := make([]*dataclient.Client, o.scenes)
	for i := range clients {
		clients[i] = dataclient.NewClient(nc, fmt.Sprintf("%s-scene-%d", o.prefix, i), epoch, zap.NewNop(),
			dataclient.WithOnResult(onResult), dataclient.WithSenders(128), dataclient.WithQueueLimit(o.players))
		defer clients[i].Close()
	}
	for i := range players {
		p := &botPlayer{id: fmt.Sprintf("%s-%d", o.prefix, i), client: clients[i%o.scenes], enqueued: map[uint64]time.Time{}}
		players[i] = p
		byID[p.id] = p
	}

	// Setup (not measured): every player loaded, i.e. online in its scene.
	// Bounded, so a datasvr that is down ends the run with an error.
	sctx, scancel := context.WithTimeout(ctx, 4*o.grace)
	defer scancel()
	if err := parallel(sctx, players, 64, func(p *botPlayer) error {
		l, err := p.client.LoadOrCreate(sctx, p.id, p.id)
		if err != nil {
			return err
		}
		p.data, p.next = l.Data, l.Version+1
		if p.data.Items == nil {
			p.data.Items = map[string]int64{}
		}
		// Some weight, like a real inventory.
		for k := range 8 {
			p.data.Items[fmt.Sprintf("item-%02d", k)] = int64(k + 1)
		}
		return nil
	}); err != nil {
		return res, extra, fmt.Errorf("load players: %w", err)
	}
	if _, err := adm.Flush(sctx); err != nil {
		return res, extra, err
	}
	before, err := adm.Stats(sctx)
	if err != nil {
		return res, extra, err
	}
	sum := newStatsSum(before)
	// Sample datasvr's counters through the run, so a restart is seen and
	// summed rather than subtracted.
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
				qctx, cancel := context.WithTimeout(sampleCtx, time.Second)
				if st, err := adm.Stats(qctx); err == nil {
					sum.sample(st)
				}
				cancel()
			}
		}
	})

	// Saves are spread evenly: save k (counting from 0 across all players)
	// is due at k * interval / players.
	start := time.Now()
	ticker := time.NewTicker(time.Millisecond)
	due := func(now time.Time) int {
		return int(float64(now.Sub(start)) / float64(o.interval) * float64(o.players))
	}
	sent, queueFull := 0, 0
	end := start.Add(o.duration)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-ticker.C:
			if now.After(end) {
				now = end
			}
			for k := due(now); sent < k; sent++ {
				p := players[sent%o.players]
				p.mu.Lock()
				v := p.next
				p.next++
				p.data.X = int(v)
				p.data.Gold = int64(v)
				p.enqueued[v] = time.Now()
				d := p.data
				p.mu.Unlock()
				if err := p.client.Enqueue(p.id, v, d); err != nil {
					queueFull++
				}
			}
			if !now.Before(end) {
				break loop
			}
		}
	}
	ticker.Stop()
	elapsed := time.Since(start)

	// The check phase is bounded by --grace: whatever datasvr does, the run
	// ends with a result, and says what it could not check.
	fctx, cancel := context.WithTimeout(context.Background(), o.grace)
	defer cancel()
	for _, c := range clients {
		if err := c.Flush(fctx); err != nil {
			extra.notes = append(extra.notes, "not every save was acknowledged within --grace: "+err.Error())
			break
		}
	}
	if _, err := adm.Flush(fctx); err != nil {
		extra.notes = append(extra.notes, "final datasvr flush failed (database figures miss it): "+err.Error())
	}
	stopSampling()
	sampler.Wait()
	if after, err := adm.Stats(fctx); err == nil {
		sum.sample(after)
	} else {
		extra.notes = append(extra.notes, "final stats unavailable; figures are from the last sample: "+err.Error())
	}
	total, restarts := sum.total()

	// Lost: an acknowledged version datasvr does not have.
	var lost, unacked, verified atomic.Uint64
	var lostLog limitedLog
	_ = parallel(fctx, players, 64, func(p *botPlayer) error {
		show, err := adm.Show(fctx, p.id)
		p.mu.Lock()
		defer p.mu.Unlock()
		unacked.Add(uint64(len(p.enqueued)))
		if err != nil {
			return nil // counted as unverified below
		}
		verified.Add(1)
		if show.Version < p.acked {
			lost.Add(1)
			lostLog.printf("bot: LOST player %s: acknowledged version %d, datasvr has %d\n", p.id, p.acked, show.Version)
		}
		return nil
	})
	lostLog.flush("lost players")
	unverified := uint64(len(players)) - verified.Load()
	if unverified > 0 {
		extra.notes = append(extra.notes, fmt.Sprintf("%d players could not be checked within --grace (datasvr unreachable?)", unverified))
	}
	if msg, ok := firstError.Load().(string); ok {
		fmt.Fprintf(os.Stderr, "bot: %d saves rejected; the first: %s\n", rejected.Load(), msg)
	}
	if queueFull > 0 {
		fmt.Fprintf(os.Stderr, "bot: %d saves could not be queued (queue full)\n", queueFull)
	}

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[min(int(q*float64(len(latencies))), len(latencies)-1)]) / 1e6
	}
	secs := elapsed.Seconds()
	rows, stmts := total.DBRows, total.DBStatements
	res = saveLoadResult{
		SavesPerS:        float64(accepted.Load()) / secs,
		AckP50Ms:         pct(0.50),
		AckP99Ms:         pct(0.99),
		DBRowsPerS:       float64(rows) / secs,
		DBStatementsPerS: float64(stmts) / secs,
		Rejected:         rejected.Load(),
		Lost:             lost.Load(),
		DatasvrRestarts:  restarts,
		Unverified:       unverified,
	}
	if rows > 0 {
		res.SavesPerRow = float64(accepted.Load()) / float64(rows)
	}
	extra.accepted, extra.unacked, extra.rows, extra.statements = accepted.Load(), unacked.Load(), rows, stmts
	extra.fsyncs, extra.maxMs = total.JournalFsyncs, pct(1)
	return res, extra, nil
}
