package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/chaos"
	"github.com/respawn-dev/respawn/internal/client"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/secret"
)

// playResult is what `play --json` prints: exactly these keys (issue 9).
type playResult struct {
	Bots        int     `json:"bots"`
	Sent        uint64  `json:"sent"`
	Answered    uint64  `json:"answered"`
	Errors      uint64  `json:"errors"`
	Disconnects uint64  `json:"disconnects"`
	Resumes     uint64  `json:"resumes"`
	Relogins    uint64  `json:"relogins"`
	Duplicates  uint64  `json:"duplicates"`
	Lost        uint64  `json:"lost"`
	RPS         float64 `json:"rps"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
}

// allOps is the reference game's play mix, with weights: attack hits a boss
// (Hogger), loot hunts the small monsters (kills drop loot), trade offers
// or accepts a trade with another bot in the same scene.
var allOps = []struct {
	name   string
	weight int
}{
	{"move", 40}, {"attack", 10}, {"loot", 15}, {"buy", 10}, {"trade", 8}, {"travel", 5}, {"chat", 2},
}

type playOpts struct {
	n            int
	rate         float64
	duration     time.Duration
	gateways     []string
	ops          []string
	asJSON       bool
	prefix       string
	gold         int64
	setupTimeout time.Duration
	grace        time.Duration
	logout       bool
	seed         uint64
	progress     time.Duration
}

func playCommand() *cobra.Command {
	var o playOpts
	var loader *config.Loader
	cmd := &cobra.Command{
		Use:   "play",
		Short: "N bots log in through the gateways and play the reference game, then check what the server kept",
		Long: `N bots log in with tokens made from the cluster secret (players are created
first when missing, with --gold), and play: move, attack (the boss), loot (small
monsters, whose kills drop loot), buy, trade (with another bot in the same
scene), travel and chat, each at --rate requests/s (0: a closed loop, the next
request as soon as the previous one is answered). Each bot keeps a ledger of
what the server acknowledged (gold, items, position, scene); at the end it is
compared with what the scenes (their inspect API) and the data server hold.

  sent, answered   requests sent once by the bots, and answered (resends by
                   the client library after a failover are not counted again)
  errors           requests that failed or were refused for a reason other
                   than the game saying no (monster_dead, not_enough, ...)
  disconnects      connections closed by the server side (not gateway deaths)
  resumes          sessions resumed after a lost connection
  relogins         sessions that had to log in again
  duplicates       replies seen twice, plus ledger fields the server holds
                   more of than was acknowledged (an effect applied twice)
  lost             ledger fields (gold, an item, position, scene) where the
                   scene or the data server holds less, or something else,
                   than was acknowledged

It exits non-zero when lost, duplicates or disconnects is not zero.
The cluster is found from the same config, flags and environment as the
daemons (--config, --data-dir, ...); --gateway overrides the gateways.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loader.Load()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			res, err := runPlay(ctx, cfg, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.asJSON {
				if err := printJSON(out, res); err != nil {
					return err
				}
			} else {
				printPlay(out, res)
			}
			if res.Lost != 0 || res.Duplicates != 0 || res.Disconnects != 0 {
				return fmt.Errorf("lost %d, duplicates %d, disconnects %d", res.Lost, res.Duplicates, res.Disconnects)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.n, "bots", "n", 100, "bots (players) to run")
	f.Float64Var(&o.rate, "rate", 10, "requests per second per bot; 0: closed loop")
	f.DurationVar(&o.duration, "duration", 30*time.Second, "how long to play")
	f.StringSliceVar(&o.gateways, "gateway", nil, "gateway addresses, host:port or ws://host:port/ (default: every gateway of the config)")
	f.StringSliceVar(&o.ops, "ops", nil, "restrict the mix to these ops: move,attack,loot,buy,trade,travel,chat (default: all)")
	f.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	f.StringVar(&o.prefix, "prefix", "bot", "player id prefix (ids are PREFIX-0001, ...)")
	f.Int64Var(&o.gold, "gold", 10000, "gold given to a player the bot creates")
	f.DurationVar(&o.setupTimeout, "setup-timeout", 2*time.Minute, "bound on creating and logging in every bot")
	f.DurationVar(&o.grace, "grace", 30*time.Second, "after --duration, how long to wait for the last replies and for the scenes and the data server to match")
	f.BoolVar(&o.logout, "logout", true, "log every bot out at the end (saved and taken out of the world)")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the bots' choices")
	f.DurationVar(&o.progress, "progress", time.Second, "print a progress line to stderr this often while playing (0: never)")
	loader = config.Bind(f)
	return cmd
}

func printPlay(w io.Writer, r playResult) {
	fmt.Fprintf(w, "bots         %d\n", r.Bots)
	fmt.Fprintf(w, "requests     %d sent, %d answered (%.0f/s), %d errors\n", r.Sent, r.Answered, r.RPS, r.Errors)
	fmt.Fprintf(w, "latency      p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", r.P50Ms, r.P99Ms, r.MaxMs)
	fmt.Fprintf(w, "connections  %d disconnects, %d resumes, %d relogins\n", r.Disconnects, r.Resumes, r.Relogins)
	fmt.Fprintf(w, "ledger       %d lost, %d duplicates\n", r.Lost, r.Duplicates)
}

// world is what the bots know of the game's content, from the config.
type world struct {
	scenes map[string]*sceneKnow
	order  []string // scenes where some op of the mix can be played, in config order
}

type sceneKnow struct {
	id     string
	spawn  [2]int
	w, h   int
	exits  []string
	bosses []string
	mobs   []string
	shop   string // NPC id
	wares  []string
	ops    []string // ops of the mix playable here
	weight []int
	total  int  // sum of weight
	trade  bool // trade is one of ops
}

func newWorld(cfg *config.Config, ops []string) (*world, error) {
	weights := map[string]int{}
	for _, o := range allOps {
		weights[o.name] = o.weight
	}
	if len(ops) == 0 {
		for _, o := range allOps {
			ops = append(ops, o.name)
		}
	}
	for _, op := range ops {
		if _, ok := weights[op]; !ok {
			return nil, fmt.Errorf("--ops: unknown op %q (move, attack, loot, buy, trade, travel, chat)", op)
		}
	}
	w := &world{scenes: map[string]*sceneKnow{}}
	for _, d := range cfg.Scenes {
		if d.Kind == "dungeon" {
			continue
		}
		s := &sceneKnow{id: d.ID, spawn: [2]int{d.Spawn.X, d.Spawn.Y}, w: d.EffectiveWidth(), h: d.EffectiveHeight(), exits: d.Exits}
		for _, m := range d.Monsters {
			if m.Boss {
				s.bosses = append(s.bosses, m.ID)
			} else {
				s.mobs = append(s.mobs, m.ID)
			}
		}
		for _, n := range d.NPCs {
			if len(n.Shop) > 0 && s.shop == "" {
				s.shop = n.ID
				for _, it := range n.Shop {
					s.wares = append(s.wares, it.Item)
				}
			}
		}
		for _, op := range ops {
			ok := true
			switch op {
			case "attack", "loot":
				ok = len(s.bosses)+len(s.mobs) > 0
			case "buy":
				ok = s.shop != ""
			case "travel":
				ok = len(s.exits) > 0
			}
			if ok {
				s.ops = append(s.ops, op)
				s.weight = append(s.weight, weights[op])
				s.total += weights[op]
				s.trade = s.trade || op == "trade"
			}
		}
		w.scenes[d.ID] = s
		if len(s.ops) > 0 {
			w.order = append(w.order, d.ID)
		}
	}
	if len(w.order) == 0 {
		return nil, fmt.Errorf("--ops %s: no scene of the world can play them", strings.Join(ops, ","))
	}
	return w, nil
}

// bot is one simulated player and its ledger: what the server acknowledged.
type bot struct {
	i  int
	id string
	c  *client.Client
	r  *rand.Rand

	// offers are trades other bots offered this one (bounded; a full
	// queue drops the offer, which then just expires).
	offers chan offer

	mu        sync.Mutex
	scene     string
	gold      int64
	items     map[string]int64
	x, y      int
	uncertain bool // a request's outcome is unknown: the ledger cannot be checked
}

type offer struct {
	id   string
	from *bot
}

func (b *bot) ledgerScene() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.scene
}

// add changes the ledger by deltas (trades touch two bots' ledgers from
// two goroutines; deltas commute).
func (b *bot) add(list []game.ItemCount, sign int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ic := range list {
		if ic.Item == "gold" {
			b.gold += sign * ic.Count
		} else {
			b.items[ic.Item] += sign * ic.Count
			if b.items[ic.Item] == 0 {
				delete(b.items, ic.Item)
			}
		}
	}
}

type playRun struct {
	o     playOpts
	w     *world
	bots  []*bot
	lat   latencies
	sent  atomic.Uint64
	ans   atomic.Uint64
	errs  atomic.Uint64
	notes limitedLog
	// slowest is the slowest reply since the last progress line (ns).
	slowest atomic.Int64
}

func runPlay(ctx context.Context, cfg *config.Config, o playOpts, stderr io.Writer) (playResult, error) {
	var res playResult
	if o.n < 1 || o.rate < 0 || o.duration <= 0 || o.grace <= 0 || o.setupTimeout <= 0 {
		return res, errors.New("play: -n, --duration, --grace and --setup-timeout must be positive, --rate at least 0")
	}
	if o.n > 100000 {
		return res, fmt.Errorf("play: -n %d: at most 100000 bots", o.n)
	}
	w, err := newWorld(cfg, o.ops)
	if err != nil {
		return res, err
	}
	gateways := o.gateways
	if len(gateways) == 0 {
		for _, g := range cfg.Gateways() {
			gateways = append(gateways, g.Listen)
		}
	}
	// The secret must be the cluster's: a fresh one would sign tokens no
	// gateway accepts.
	if cfg.Secret == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, secret.FileName)); err != nil {
			return res, fmt.Errorf("no cluster secret (config secret, RESPAWN_SECRET, or %s; use the cluster's --data-dir): %w",
				filepath.Join(cfg.DataDir, secret.FileName), err)
		}
	}
	sec, err := secret.Load(cfg.Secret, cfg.DataDir)
	if err != nil {
		return res, err
	}
	opTok, err := admin.OperatorToken(cfg)
	if err != nil {
		return res, err
	}
	// The GM role: creating players and giving them gold are GM commands.
	auth, err := bus.Auth(bus.RoleGM, sec)
	if err != nil {
		return res, err
	}
	nc, err := nats.Connect(cfg.NATS.ClientURL(), append(auth, nats.Name("bot-play"), nats.MaxReconnects(-1), nats.Timeout(5*time.Second))...)
	if err != nil {
		return res, fmt.Errorf("connect to nats at %s (is datasvr running?): %w", cfg.NATS.ClientURL(), err)
	}
	defer nc.Close()
	ac := dataclient.NewAdminClient(nc, opTok)

	run := &playRun{o: o, w: w}
	defer func() {
		for _, b := range run.bots {
			if b != nil && b.c != nil {
				b.c.Close()
			}
		}
	}()
	run.bots = make([]*bot, o.n)
	sctx, cancel := context.WithTimeout(ctx, o.setupTimeout)
	defer cancel()
	setupStart := time.Now()
	idx := make([]int, o.n)
	for i := range idx {
		idx[i] = i
	}
	err = parallel(sctx, idx, 64, func(i int) error {
		b, err := run.login(sctx, ac, sec, gateways, i)
		if err != nil {
			return err
		}
		run.bots[i] = b
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("setup: %w", err)
	}
	fmt.Fprintf(stderr, "bot: %d bots logged in through %s in %s; playing for %s\n", o.n, strings.Join(gateways, ","),
		time.Since(setupStart).Round(time.Millisecond), o.duration)

	// Play.
	start := time.Now()
	end := start.Add(o.duration)
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	if o.progress > 0 {
		pwg.Go(func() { run.report(stderr, start, stopProgress) })
	}
	if o.rate > 0 {
		var wg sync.WaitGroup
		for _, b := range run.bots {
			wg.Go(func() { run.play(ctx, b, start, end) })
		}
		wg.Wait()
	} else {
		run.playClosedLoops(ctx, end)
	}
	elapsed := time.Since(start)
	close(stopProgress)
	pwg.Wait()

	// What the clients went through.
	for _, b := range run.bots {
		st := b.c.Stats()
		res.Disconnects += st.Disconnects
		res.Resumes += st.Resumes
		res.Relogins += st.Relogins
		res.Duplicates += st.Duplicates
	}
	res.Bots, res.Sent, res.Answered, res.Errors = o.n, run.sent.Load(), run.ans.Load(), run.errs.Load()
	res.RPS = float64(res.Answered) / elapsed.Seconds()
	res.P50Ms, res.P99Ms, res.MaxMs = run.lat.summary()
	run.notes.flush("request errors")

	// The ledgers against the scenes, then (after logout, which saves) the
	// data server.
	// Each phase gets its own --grace: one that never matches must not
	// leave the next unchecked.
	lost, dups := map[string]bool{}, map[string]bool{}
	var mismatches limitedLog
	phase := func(fn func(ctx context.Context)) {
		pctx, cancel := context.WithTimeout(context.Background(), o.grace)
		defer cancel()
		fn(pctx)
	}
	phase(func(ctx context.Context) { checkScenes(ctx, cfg, opTok, run.bots, lost, dups, &mismatches) })
	if o.logout {
		phase(func(ctx context.Context) {
			_ = parallel(ctx, idx, 64, func(i int) error {
				lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_ = run.bots[i].c.Logout(lctx)
				return nil
			})
		})
	}
	phase(func(ctx context.Context) { checkDatasvr(ctx, ac, run.bots, lost, dups, &mismatches) })
	mismatches.flush("ledger mismatches")
	res.Lost = uint64(len(lost))
	res.Duplicates += uint64(len(dups))
	unchecked := 0
	for _, b := range run.bots {
		if b.uncertain {
			unchecked++
		}
	}
	if unchecked > 0 {
		fmt.Fprintf(stderr, "bot: %d bots not checked: a request of theirs has an unknown outcome (see errors)\n", unchecked)
	}
	return res, nil
}

// login creates bot i's player when missing, logs it in and sends it to
// the scene it plays in (setup: not measured).
func (run *playRun) login(ctx context.Context, ac *dataclient.AdminClient, sec *secret.Secret, gateways []string, i int) (*bot, error) {
	id := fmt.Sprintf("%s-%04d", run.o.prefix, i+1)
	switch err := ac.Create(ctx, id, id); {
	case err == nil:
		if run.o.gold > 0 {
			if _, err := ac.Give(ctx, fmt.Sprintf("bot-play-gold-%s-%d", id, time.Now().UnixNano()), id, "gold", run.o.gold); err != nil {
				return nil, fmt.Errorf("give %s gold: %w", id, err)
			}
		}
	case errors.Is(err, dataclient.ErrExists):
	default:
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	// Bots spread over the gateways; each can fail over to the others.
	c, s, st, err := chaos.LoginBot(ctx, sec, id, gateways, i)
	if err != nil {
		return nil, err
	}
	b := &bot{i: i, id: id, c: c, r: rand.New(rand.NewPCG(run.o.seed, uint64(i))), offers: make(chan offer, 4),
		scene: s.Scene, gold: st.Gold, items: map[string]int64{}, x: st.X, y: st.Y}
	for k, v := range st.Items {
		b.items[k] = v
	}
	// Bots are spread over the scenes that can play the mix.
	want := run.w.order[i%len(run.w.order)]
	if sk := run.w.scenes[b.scene]; sk != nil && want != b.scene && slices.Contains(sk.exits, want) {
		op := opTravel(want)
		rep, err := c.Request(ctx, op)
		if err != nil || !rep.OK() {
			c.Close()
			return nil, fmt.Errorf("send %s to %s: %v %v", id, want, err, rep.Err())
		}
		run.apply(b, "travel", op, rep)
	}
	return b, nil
}

// play is one bot's loop until end at --rate: a goroutine per bot, asleep
// between its ticks.
func (run *playRun) play(ctx context.Context, b *bot, start, end time.Time) {
	every := time.Duration(float64(time.Second) / run.o.rate)
	// Spread the bots' phases so they do not send in lockstep.
	wait := time.Duration(b.r.Int64N(int64(every)))
	if !pause(ctx, wait) {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	// Not ctx: a request sent is waited for, through any failover, up to
	// the grace period after the end. One context for the whole run, not
	// a timer per request.
	rctx, cancel := context.WithDeadline(context.Background(), end.Add(run.o.grace))
	defer cancel()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		if ctx.Err() != nil || time.Now().After(end) {
			return
		}
		// A fresh op each time: a request given up on (rctx) may still be
		// held by the client for a resend.
		kind, op := run.next(b, nil)
		run.sent.Add(1)
		t0 := time.Now()
		rep, err := b.c.Request(rctx, op)
		if err != nil {
			if !run.failed(b, kind, err) {
				return
			}
			continue
		}
		run.answered(b, kind, op, rep, time.Since(t0))
	}
}

// failed records a request whose outcome is unknown (err instead of a
// reply) and reports whether the bot can go on playing.
func (run *playRun) failed(b *bot, kind string, err error) bool {
	run.errs.Add(1)
	b.mu.Lock()
	b.uncertain = true
	b.mu.Unlock()
	run.notes.printf("bot: %s %s: %v\n", b.id, kind, err)
	return !errors.Is(err, client.ErrReplaced) && !errors.Is(err, client.ErrClosed) && b.c.Err() == nil
}

// answered records a reply: its latency, and in the ledger what it
// acknowledged.
func (run *playRun) answered(b *bot, kind string, op []byte, rep client.Reply, took time.Duration) {
	run.ans.Add(1)
	run.lat.record(b.i, took)
	if int64(took) > run.slowest.Load() {
		run.slowest.Store(int64(took)) // racy max: good enough for a progress line
	}
	switch {
	case rep.OK():
		run.apply(b, kind, op, rep)
	case rep.Code == gwproto.CodeGameError && gameSaysNo(rep.Reason):
	default:
		run.errs.Add(1)
		run.notes.printf("bot: %s %s: %v\n", b.id, kind, rep.Err())
	}
}

// playClosedLoops plays every bot in a closed loop (--rate 0) until end,
// then waits for the requests in flight up to --grace more; a bot whose
// request is still unanswered then is closed (its request counts as an
// error, its ledger as unchecked).
func (run *playRun) playClosedLoops(ctx context.Context, end time.Time) {
	var wg sync.WaitGroup
	loops := make([]*loop, len(run.bots))
	for i, b := range run.bots {
		wg.Add(1)
		l := &loop{run: run, b: b, ctx: ctx, end: end, ended: wg.Done}
		l.onReply = l.reply
		loops[i] = l
	}
	for _, l := range loops {
		l.send()
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	t := time.NewTimer(time.Until(end.Add(run.o.grace)))
	defer t.Stop()
	select {
	case <-all:
		return
	case <-t.C:
	}
	for _, l := range loops {
		if !l.stopped.Load() {
			l.b.c.Close()
		}
	}
	<-all
}

// loop drives one bot in a closed loop with no goroutine of its own: the
// callback of each reply, on the client's reader goroutine, records it and
// sends the next request. A goroutine per bot blocked in Request would
// have to be woken for every reply, and a thread wake-up costs more than
// the rest of the bot's round trip on a VM.
type loop struct {
	run     *playRun
	b       *bot
	ctx     context.Context
	end     time.Time
	ended   func()                    // called once, when the loop stops
	onReply func(client.Reply, error) // l.reply, bound once: no closure per request
	stopped atomic.Bool

	// The request in flight, written before GoFunc and read by its
	// callback (ordered by the client's lock).
	kind string
	op   []byte // reused: the client is done with it when the callback runs
	t0   time.Time
}

// send sends the bot's next request, or stops the loop at the end.
func (l *loop) send() {
	for l.ctx.Err() == nil && time.Now().Before(l.end) {
		l.kind, l.op = l.run.next(l.b, l.op[:0])
		l.run.sent.Add(1)
		l.t0 = time.Now()
		err := l.b.c.GoFunc(l.op, l.onReply)
		if err == nil {
			return // l belongs to the callback now
		}
		if !l.run.failed(l.b, l.kind, err) {
			break
		}
	}
	l.stop()
}

func (l *loop) reply(rep client.Reply, err error) {
	if err != nil {
		if !l.run.failed(l.b, l.kind, err) {
			l.stop()
			return
		}
	} else {
		l.run.answered(l.b, l.kind, l.op, rep, time.Since(l.t0))
	}
	l.send()
}

func (l *loop) stop() {
	l.stopped.Store(true)
	l.ended()
}

// report prints a progress line every --progress while the bots play: what
// a newcomer watches while killing processes.
func (run *playRun) report(w io.Writer, start time.Time, stop <-chan struct{}) {
	t := time.NewTicker(run.o.progress)
	defer t.Stop()
	var lastAns uint64
	last := start
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			ans := run.ans.Load()
			var res, relog, disc uint64
			for _, b := range run.bots {
				st := b.c.Stats()
				res, relog, disc = res+st.Resumes, relog+st.Relogins, disc+st.Disconnects
			}
			fmt.Fprintf(w, "bot: %5.1fs  answered %d (%.0f/s)  errors %d  slowest %s  resumes %d  relogins %d  disconnects %d\n",
				now.Sub(start).Seconds(), ans, float64(ans-lastAns)/now.Sub(last).Seconds(), run.errs.Load(),
				time.Duration(run.slowest.Swap(0)).Round(time.Millisecond), res, relog, disc)
			lastAns, last = ans, now
		}
	}
}

// gameSaysNo: refusals any player may meet in normal play.
func gameSaysNo(reason string) bool {
	switch reason {
	case game.ErrMonsterDead, game.ErrNotEnough, game.ErrNotFound, game.ErrLimit:
		return true
	}
	return false
}

func opTravel(to string) []byte {
	b, _ := json.Marshal(map[string]string{"op": "travel", "to": to})
	return b
}

// next picks the bot's next request from the mix its scene can play and
// appends it to buf (every op but a trade offer is written by hand: a
// closed loop builds one per round trip).
func (run *playRun) next(b *bot, buf []byte) (string, []byte) {
	sk := run.w.scenes[b.ledgerScene()]
	if sk == nil || len(sk.ops) == 0 {
		// A scene the mix cannot play here (or unknown): only moving is
		// always possible.
		return "move", append(buf, `{"op":"move","x":1,"y":1}`...)
	}
	// A trade offered to this bot is accepted first.
	if sk.trade {
		select {
		case of := <-b.offers:
			buf = appendJSONString(append(buf, `{"op":"trade_accept","trade":`...), of.id)
			return "trade_accept:" + of.from.id, append(buf, '}')
		default:
		}
	}
	n := b.r.IntN(sk.total)
	kind := sk.ops[len(sk.ops)-1]
	for k, w := range sk.weight {
		if n < w {
			kind = sk.ops[k]
			break
		}
		n -= w
	}
	pick := func(l []string) string { return l[b.r.IntN(len(l))] }
	switch kind {
	case "move":
		buf = strconv.AppendInt(append(buf, `{"op":"move","x":`...), int64(b.r.IntN(sk.w)), 10)
		buf = strconv.AppendInt(append(buf, `,"y":`...), int64(b.r.IntN(sk.h)), 10)
		return kind, append(buf, '}')
	case "attack", "loot":
		// attack hits a boss, loot a small monster (or the other kind if
		// the scene has none).
		l, other := sk.bosses, sk.mobs
		if kind == "loot" {
			l, other = other, l
		}
		if len(l) == 0 {
			l = other
		}
		buf = appendJSONString(append(buf, `{"op":"attack","monster":`...), pick(l))
		return kind, append(buf, '}')
	case "buy":
		buf = appendJSONString(append(buf, `{"op":"buy","npc":`...), sk.shop)
		buf = appendJSONString(append(buf, `,"item":`...), pick(sk.wares))
		buf = strconv.AppendInt(append(buf, `,"count":`...), int64(1+b.r.IntN(2)), 10)
		return kind, append(buf, '}')
	case "travel":
		buf = appendJSONString(append(buf, `{"op":"travel","to":`...), pick(sk.exits))
		return kind, append(buf, '}')
	case "chat":
		buf = appendJSONString(append(buf, `{"op":"chat","text":`...), "hi from "+b.id)
		return kind, append(buf, '}')
	}
	// trade
	to := run.partner(b, sk.id)
	if to == nil {
		return "move", append(buf, `{"op":"move","x":1,"y":1}`...)
	}
	give := []game.ItemCount{{Item: "gold", Count: 1 + int64(b.r.IntN(3))}}
	var want []game.ItemCount
	to.mu.Lock()
	for _, it := range sk.wares {
		if to.items[it] > 0 {
			want = []game.ItemCount{{Item: it, Count: 1}}
			break
		}
	}
	to.mu.Unlock()
	body, _ := json.Marshal(map[string]any{"op": "trade_offer", "to": to.id, "give": give, "want": want})
	return "trade_offer:" + to.id, append(buf, body...)
}

// appendJSONString appends s as a JSON string: by hand when it needs no
// escaping (ids of the world, as they are), else by the encoder.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(buf, q...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// partner is another bot in the same scene (by its ledger), if one is
// found in a few tries.
func (run *playRun) partner(b *bot, scene string) *bot {
	for range 4 {
		o := run.bots[b.r.IntN(len(run.bots))]
		if o != b && o.ledgerScene() == scene {
			return o
		}
	}
	return nil
}

// apply records an acknowledged result in the ledger.
func (run *playRun) apply(b *bot, kind string, op []byte, rep client.Reply) {
	switch {
	case kind == "move":
		if r, ok := moveResult(rep.Body); ok {
			b.mu.Lock()
			b.x, b.y = r.X, r.Y
			b.mu.Unlock()
		}
	case kind == "attack" || kind == "loot":
		var r game.AttackResult
		if json.Unmarshal(rep.Body, &r) != nil {
			return
		}
		b.add(r.Loot, 1)
		if r.Died {
			b.mu.Lock()
			if sk := run.w.scenes[b.scene]; sk != nil {
				b.x, b.y = sk.spawn[0], sk.spawn[1]
			}
			b.mu.Unlock()
		}
	case kind == "buy":
		var r game.BuyResult
		if json.Unmarshal(rep.Body, &r) == nil {
			b.add([]game.ItemCount{{Item: "gold", Count: r.Cost}}, -1)
			b.add([]game.ItemCount{{Item: r.Item, Count: r.Count}}, 1)
		}
	case kind == "travel":
		var r game.TravelResult
		if json.Unmarshal(rep.Body, &r) == nil {
			b.mu.Lock()
			b.scene = r.To
			if sk := run.w.scenes[r.To]; sk != nil {
				b.x, b.y = sk.spawn[0], sk.spawn[1]
			}
			b.mu.Unlock()
		}
	case strings.HasPrefix(kind, "trade_offer:"):
		var r game.TradeOfferResult
		if json.Unmarshal(rep.Body, &r) != nil {
			return
		}
		to := run.byID(strings.TrimPrefix(kind, "trade_offer:"))
		if to != nil {
			select {
			case to.offers <- offer{id: r.TradeID, from: b}:
			default: // it has enough to accept; this one expires
			}
		}
	case strings.HasPrefix(kind, "trade_accept:"):
		var r game.TradeResult
		if json.Unmarshal(rep.Body, &r) != nil {
			return
		}
		// Acknowledged to the receiver: both sides moved, all or nothing.
		b.add(r.Got, 1)
		b.add(r.Gave, -1)
		if from := run.byID(strings.TrimPrefix(kind, "trade_accept:")); from != nil {
			from.add(r.Got, -1)
			from.add(r.Gave, 1)
		}
	}
}

func (run *playRun) byID(id string) *bot {
	n, err := strconv.Atoi(strings.TrimPrefix(id, run.o.prefix+"-"))
	if err != nil || n < 1 || n > len(run.bots) {
		return nil
	}
	return run.bots[n-1]
}

// held is what a scene or the data server says a player has.
type held struct {
	scene string
	gold  int64
	items map[string]int64
	x, y  int
}

// diff compares b's ledger with h and marks each field that differs: held
// less (or another position or scene) is lost; held more is a duplicate.
func (b *bot) diff(h held, where string, lost, dups map[string]bool, log *limitedLog) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	same := true
	mark := func(field string, isDup bool, format string, args ...any) {
		same = false
		if lost == nil {
			return
		}
		key := b.id + "/" + field
		if isDup {
			dups[key] = true
		} else {
			lost[key] = true
		}
		log.printf("bot: %s %s: %s\n", b.id, where, fmt.Sprintf(format, args...))
	}
	if h.scene != b.scene {
		mark("scene", false, "in scene %q, acknowledged %q", h.scene, b.scene)
	}
	if h.x != b.x || h.y != b.y {
		mark("position", false, "at (%d,%d), acknowledged (%d,%d)", h.x, h.y, b.x, b.y)
	}
	if h.gold != b.gold {
		mark("gold", h.gold > b.gold, "gold %d, acknowledged %d", h.gold, b.gold)
	}
	keys := map[string]bool{}
	for k := range h.items {
		keys[k] = true
	}
	for k := range b.items {
		keys[k] = true
	}
	for k := range keys {
		if h.items[k] != b.items[k] {
			mark("item:"+k, h.items[k] > b.items[k], "%d %s, acknowledged %d", h.items[k], k, b.items[k])
		}
	}
	return same
}

// checkScenes compares every bot's ledger with the scene holding it,
// polling until they match or ctx ends (a travel acknowledged at the end
// may still be on its way), and records what still differs.
func checkScenes(ctx context.Context, cfg *config.Config, opTok string, bots []*bot, lost, dups map[string]bool, log *limitedLog) {
	var views map[string]held
	var fetchErr error
	for {
		views, fetchErr = sceneViews(ctx, cfg, opTok)
		if fetchErr == nil && matchAll(bots, views) {
			return
		}
		if !pause(ctx, 200*time.Millisecond) {
			break
		}
	}
	if fetchErr != nil {
		log.printf("bot: scenes could not be inspected: %v\n", fetchErr)
		return
	}
	for _, b := range bots {
		if b.uncertain {
			continue
		}
		h, ok := views[b.id]
		if !ok {
			h = held{scene: "(none)"}
		}
		b.diff(h, "scene", lost, dups, log)
	}
}

func matchAll(bots []*bot, views map[string]held) bool {
	for _, b := range bots {
		if b.uncertain {
			continue
		}
		h, ok := views[b.id]
		if !ok || !b.diff(h, "", nil, nil, nil) {
			return false
		}
	}
	return true
}

// sceneViews reads every scene's players through the scene processes'
// inspect API, found in the world manager's scene table.
func sceneViews(ctx context.Context, cfg *config.Config, opTok string) (map[string]held, error) {
	var rows []struct {
		ID   string `json:"id"`
		Addr string `json:"addr"`
	}
	if err := httpJSON(ctx, "http://"+cfg.WorldMgr.Admin+"/v1/scenes", opTok, &rows); err != nil {
		return nil, err
	}
	out := map[string]held{}
	for _, r := range rows {
		if r.Addr == "" {
			return nil, fmt.Errorf("scene %s has no process right now", r.ID)
		}
		var v game.View
		if err := httpJSON(ctx, "http://"+r.Addr+"/v1/scenes/"+r.ID+"/inspect", opTok, &v); err != nil {
			return nil, err
		}
		for _, p := range v.Players {
			out[p.ID] = held{scene: r.ID, gold: p.Gold, items: p.Items, x: p.X, y: p.Y}
		}
	}
	return out, nil
}

// checkDatasvr compares every ledger with the data server's copy, polling
// until they match (saves land on the scenes' save interval) or ctx ends.
func checkDatasvr(ctx context.Context, ac *dataclient.AdminClient, bots []*bot, lost, dups map[string]bool, log *limitedLog) {
	pending := slices.Clone(bots)
	last := map[string]held{}
	for len(pending) > 0 {
		var next []*bot
		for _, b := range pending {
			if b.uncertain {
				continue
			}
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			rep, err := ac.Show(qctx, b.id)
			cancel()
			if err != nil {
				next = append(next, b)
				continue
			}
			var d struct {
				Scene string `json:"scene"`
				X     int    `json:"x"`
				Y     int    `json:"y"`
			}
			_ = json.Unmarshal(rep.Data, &d)
			h := held{scene: d.Scene, gold: rep.Gold, items: rep.Items, x: d.X, y: d.Y}
			last[b.id] = h
			if !b.diff(h, "", nil, nil, nil) {
				next = append(next, b)
			}
		}
		pending = next
		if len(pending) == 0 {
			return
		}
		if !pause(ctx, 200*time.Millisecond) {
			break
		}
	}
	for _, b := range pending {
		h, ok := last[b.id]
		if !ok {
			log.printf("bot: %s: the data server could not be asked before the grace period ended\n", b.id)
			lost[b.id+"/datasvr"] = true
			continue
		}
		b.diff(h, "datasvr", lost, dups, log)
	}
}

// pause waits d, or less if ctx ends first; it reports whether d passed.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// parallel runs fn for each item, n at a time, and returns the first error.
func parallel[T any](ctx context.Context, items []T, n int, fn func(T) error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	sem := make(chan struct{}, n)
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(it); err != nil {
				once.Do(func() { first = err })
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// httpJSON GETs url (with the operator token) and decodes the answer.
func httpJSON(ctx context.Context, url, tok string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", admin.Bearer(tok))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(raw))
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// moveResult reads a move's reply body. Every request of a benchmark is a
// move, so the form the scene writes ({"x":X,"y":Y}) is read by hand;
// anything else goes through the JSON decoder.
func moveResult(body []byte) (game.MoveResult, bool) {
	if r, ok := game.ParseMoveResult(body); ok {
		return r, true
	}
	var r game.MoveResult
	return r, json.Unmarshal(body, &r) == nil
}
