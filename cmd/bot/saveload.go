package main

import (
	"cmp"
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

	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/player"
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
}

type saveLoadOpts struct {
	players  int
	interval time.Duration
	duration time.Duration
	scenes   int
	prefix   string
	natsURL  string
	asJSON   bool
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
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	return cmd
}

type saveLoadExtra struct {
	accepted, unacked, rows, statements, fsyncs uint64
	maxMs                                       float64
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
	if o.players < 1 || o.scenes < 1 || o.interval <= 0 || o.duration <= 0 {
		return res, extra, errors.New("save-load: --players, --scenes, --save-interval and --duration must be positive")
	}
	nc, err := nats.Connect(o.natsURL, nats.Name("bot-save-load"), nats.MaxReconnects(-1))
	if err != nil {
		return res, extra, fmt.Errorf("connect %s: %w", o.natsURL, err)
	}
	defer nc.Close()
	adm := dataclient.NewAdminClient(nc, "") // show, stats and flush need no operator token

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
	if err := forEach(ctx, players, 64, func(p *botPlayer) error {
		l, err := p.client.LoadOrCreate(ctx, p.id, p.id)
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
	if _, err := adm.Flush(ctx); err != nil {
		return res, extra, err
	}
	before, err := adm.Stats(ctx)
	if err != nil {
		return res, extra, err
	}

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

	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, c := range clients {
		if err := c.Flush(fctx); err != nil {
			fmt.Fprintln(os.Stderr, "bot: waiting for acknowledgements:", err)
			break
		}
	}
	if _, err := adm.Flush(fctx); err != nil {
		return res, extra, err
	}
	after, err := adm.Stats(fctx)
	if err != nil {
		return res, extra, err
	}

	// Lost: an acknowledged version datasvr does not have.
	var lost, unacked atomic.Uint64
	if err := forEach(fctx, players, 64, func(p *botPlayer) error {
		show, err := adm.Show(fctx, p.id)
		if err != nil {
			return err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if show.Version < p.acked {
			lost.Add(1)
			fmt.Fprintf(os.Stderr, "bot: LOST player %s: acknowledged version %d, datasvr has %d\n", p.id, p.acked, show.Version)
		}
		unacked.Add(uint64(len(p.enqueued)))
		return nil
	}); err != nil {
		return res, extra, fmt.Errorf("verify: %w", err)
	}
	if msg, ok := firstError.Load().(string); ok {
		fmt.Fprintln(os.Stderr, "bot: first rejection:", msg)
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
	rows := after.DBRows - before.DBRows
	stmts := after.DBStatements - before.DBStatements
	res = saveLoadResult{
		SavesPerS:        float64(accepted.Load()) / secs,
		AckP50Ms:         pct(0.50),
		AckP99Ms:         pct(0.99),
		DBRowsPerS:       float64(rows) / secs,
		DBStatementsPerS: float64(stmts) / secs,
		Rejected:         rejected.Load(),
		Lost:             lost.Load(),
	}
	if rows > 0 {
		res.SavesPerRow = float64(accepted.Load()) / float64(rows)
	}
	extra = saveLoadExtra{accepted: accepted.Load(), unacked: unacked.Load(), rows: rows, statements: stmts,
		fsyncs: after.JournalFsyncs - before.JournalFsyncs, maxMs: pct(1)}
	return res, extra, nil
}

// forEach runs fn for every player, n at a time, and returns the first error.
func forEach(ctx context.Context, players []*botPlayer, n int, fn func(*botPlayer) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, n)
	for _, p := range players {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(p); err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return cmp.Or(first, ctx.Err())
}
