package benchreport

import (
	"fmt"
	"strings"
)

// Suite is one `go test` run of `make bench`; every figure of the report
// comes from one.
type Suite struct {
	ID string
	// Args follow `go test -json`; Pkgs are the packages it runs.
	Args []string
	Pkgs []string
	// Env is added to the environment (short durations that keep the
	// whole of `make bench` under 20 minutes).
	Env []string
	// Run names the figures of a test (not a benchmark) it runs, for the
	// row's command: `-run` instead of `-bench`.
	Run bool
}

// Suites are the runs of `make bench`, in order: the cheap ones first.
var Suites = []Suite{
	{ID: "micro", Args: []string{"-run=^$", "-bench=.", "-benchmem", "-timeout=20m"},
		Pkgs: []string{"./internal/shmlog", "./internal/game", "./internal/store", "./internal/scene"}},
	{ID: "replica", Args: []string{"-run=^$", "-bench=.", "-benchtime=1x", "-timeout=20m"},
		Pkgs: []string{"./internal/replica"}},
	{ID: "e2e", Args: []string{"-run=^$", "-bench=.", "-benchtime=1x", "-timeout=40m"},
		Pkgs: []string{"./internal/e2e"}, Env: []string{"RESPAWN_BENCH_DURATION=10s"}},
	{ID: "floor", Args: []string{"-run=^$", "-bench=.", "-benchtime=1x", "-timeout=5m"},
		Pkgs: []string{"./internal/echofloor"}, Env: []string{"RESPAWN_BENCH_DURATION=8s"}},
	{ID: "upgrade", Args: []string{"-run=^TestUpgradeEveryProcessWhilePlaying$", "-count=1", "-timeout=10m"},
		Pkgs: []string{"./internal/e2e"}, Run: true},
}

// Op is how a figure is compared with its limit.
type Op string

// The comparisons; None: the row has no target (context for another row).
const (
	None    Op = ""
	Below   Op = "<"
	AtMost  Op = "≤"
	AtLeast Op = "≥"
)

// Row is one line of the results table: a figure, its target and the
// anchor it is judged against.
type Row struct {
	Section string
	What    string
	Suite   string
	Key     Key
	// Derive computes the figure from others instead of Key (a ratio);
	// Pattern is then the -bench pattern of the command.
	Derive  func(Results) (float64, bool)
	Pattern string
	// Show formats the figure: fmt verb with the unit, after Scale
	// (0: 1).
	Show  string
	Scale float64
	Op    Op
	Limit float64 // in the figure's unit, before Scale
	// Target is how the target reads in the table ("p99 < 300 ms").
	Target string
	Anchor string
}

// ms formats milliseconds.
const ms = "%.1f ms"

func k(pkg, bench, unit string) Key { return Key{pkg, bench, unit} }

// Rows is the one table of targets and anchors. Targets are the issues'
// (docs/benchmarks-notes.md says where each comes from); anchors are what
// today's notes compare with.
var Rows = []Row{
	{Section: "Scene process recovery", What: "crash-to-running (SIGKILL), 100 kills, p50", Suite: "e2e",
		Key: k("e2e", "BenchmarkCrashToRunning", "p50_ms"), Show: ms},
	{Section: "Scene process recovery", What: "crash-to-running (SIGKILL), 100 kills, p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkCrashToRunning", "p99_ms"), Show: ms, Op: Below, Limit: 300, Target: "p99 < 300 ms", Anchor: "BigWorld: a ~2 s pause"},
	{Section: "Scene process recovery", What: "hang-to-replaced (SIGSTOP, 1 s heartbeat timeout), 10 hangs, p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkHangToReplaced", "p99_ms"), Show: ms, Op: Below, Limit: 1500, Target: "< 1.5 s", Anchor: "BigWorld 3 s, KBEngine 60 s"},
	{Section: "Scene process recovery", What: "crash-to-running, forest log of 500 players + 100,000 events, 30 kills, p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkCrashToRunningFullLog", "p99_ms"), Show: ms, Op: Below, Limit: 300, Target: "p99 < 300 ms", Anchor: "BigWorld: a ~2 s pause"},
	{Section: "Scene process recovery", What: "… of which replay, p50", Suite: "e2e",
		Key: k("e2e", "BenchmarkCrashToRunningFullLog", "replay_p50_ms"), Show: ms},

	{Section: "Scene log", What: "shm log append, 64-byte event", Suite: "micro",
		Key: k("shmlog", "BenchmarkAppend", "ns/op"), Show: "%.1f ns", Op: Below, Limit: 200, Target: "< 200 ns", Anchor: "one write(2) per event (next row)"},
	{Section: "Scene log", What: "one write(2) per event to a file on /dev/shm", Suite: "micro",
		Key: k("shmlog", "BenchmarkWriteSyscall", "ns/op"), Show: "%.1f ns", Anchor: "write(2)"},
	{Section: "Scene log", What: "append speed-up over write(2), same run", Suite: "micro",
		Key: k("shmlog", "BenchmarkWriteSyscall/BenchmarkAppend", "×"), Derive: ratio(k("shmlog", "BenchmarkWriteSyscall", "ns/op"), k("shmlog", "BenchmarkAppend", "ns/op")),
		Pattern: "^Benchmark(Append|WriteSyscall)$", Show: "%.1f×", Op: AtLeast, Limit: 10, Target: "≥ 10×", Anchor: "write(2)"},
	{Section: "Scene log", What: "shm log replay, 1M events, records only", Suite: "micro",
		Key: k("shmlog", "BenchmarkReplay", "events/s"), Show: "%.1f M events/s", Scale: 1e-6, Op: AtLeast, Limit: 1e6, Target: "≥ 1 M events/s"},
	{Section: "Scene log", What: "decode + apply replay of game events (40 % ticks, 50 % moves, 10 % attacks)", Suite: "micro",
		Key: k("game", "BenchmarkReplay", "events/s"), Show: "%.1f M events/s", Scale: 1e-6, Op: AtLeast, Limit: 1e6, Target: "≥ 1 M events/s"},
	{Section: "Scene log", What: "snapshot of a scene with 500 players", Suite: "micro",
		Key: k("game", "BenchmarkSnapshot500", "ns/op"), Show: "%.0f µs", Scale: 1e-3},
	{Section: "Scene log", What: "… with a full reply window per player (the forest after 100,000 events): the loop's stall per snapshot", Suite: "micro",
		Key: k("scene", "BenchmarkSnapshotForest", "ns/op"), Show: "%.0f µs", Scale: 1e-3},
	{Section: "Scene log", What: "scene link round trips, 100 players (no gateway)", Suite: "micro",
		Key: k("scene", "BenchmarkLinkRoundTrip/players=100", "roundtrips/s"), Show: "%.0f /s"},

	{Section: "Gateway: players end to end", What: "round trips, 100 bots, closed loop, moves", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/100", "rps"), Show: "%.0f /s", Op: AtLeast, Limit: 60000, Target: "≥ 60 k/s", Anchor: "nano 60–73 k/s"},
	{Section: "Gateway: players end to end", What: "… latency p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/100", "p99_ms"), Show: ms},
	{Section: "Gateway: players end to end", What: "… CPU per round trip, bot + gateway + scene processes", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/100", "cpu_us/rt"), Show: "%.1f µs"},
	{Section: "Gateway: players end to end", What: "round trips, 1000 bots", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/1000", "rps"), Show: "%.0f /s", Op: AtLeast, Limit: 53000, Target: "≥ 53 k/s", Anchor: "nano 53–57 k/s"},
	{Section: "Gateway: players end to end", What: "… latency p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/1000", "p99_ms"), Show: ms, Op: Below, Limit: 44, Target: "p99 < 44 ms", Anchor: "nano p99 33–44 ms"},
	{Section: "Gateway: players end to end", What: "… CPU per round trip, bot + gateway + scene processes", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/1000", "cpu_us/rt"), Show: "%.1f µs"},
	{Section: "Gateway: players end to end", What: "the machine's floor: gateway frames echoed by a bare Go server of nano's shape, one hop, no game, 100 clients", Suite: "floor",
		Key: k("echofloor", "BenchmarkEchoFloor/100", "rps"), Show: "%.0f /s", Anchor: "nano 60–73 k/s (not fetchable here)"},
	{Section: "Gateway: players end to end", What: "… 1000 clients", Suite: "floor",
		Key: k("echofloor", "BenchmarkEchoFloor/1000", "rps"), Show: "%.0f /s", Anchor: "nano 53–57 k/s"},
	{Section: "Gateway: players end to end", What: "the two-hop floor: the same clients through a bare relay process (a reader and a channel-fed writer per client, two batched connections) to a bare echo process, no game, 100 clients", Suite: "floor",
		Key: k("echofloor", "BenchmarkRelayFloor/100", "rps"), Show: "%.0f /s"},
	{Section: "Gateway: players end to end", What: "… 1000 clients", Suite: "floor",
		Key: k("echofloor", "BenchmarkRelayFloor/1000", "rps"), Show: "%.0f /s"},
	{Section: "Gateway: players end to end", What: "round trips, 2000 bots", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/2000", "rps"), Show: "%.0f /s"},
	{Section: "Gateway: players end to end", What: "… latency p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayRoundTrips/2000", "p99_ms"), Show: ms},
	{Section: "Gateway: players end to end", What: "failover blip (500 players, 100k-event log, 3 SIGKILLs), warm standby (worldmgr.standby), p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkFailoverBlip/standby", "blip_p99_ms"), Show: ms, Op: Below, Limit: 100, Target: "p99 < 100 ms"},
	{Section: "Gateway: players end to end", What: "… max", Suite: "e2e",
		Key: k("e2e", "BenchmarkFailoverBlip/standby", "blip_max_ms"), Show: ms, Op: Below, Limit: 300, Target: "max < 300 ms"},
	{Section: "Gateway: players end to end", What: "failover blip, cold respawn (the default), p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkFailoverBlip/cold", "blip_p99_ms"), Show: ms, Op: Below, Limit: 100, Target: "p99 < 100 ms"},
	{Section: "Gateway: players end to end", What: "… max", Suite: "e2e",
		Key: k("e2e", "BenchmarkFailoverBlip/cold", "blip_max_ms"), Show: ms, Op: Below, Limit: 300, Target: "max < 300 ms"},
	{Section: "Gateway: players end to end", What: "handoff blip (same world, 3 planned handoffs), warm standby, p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkHandoffBlip/standby", "blip_p99_ms"), Show: ms, Op: Below, Limit: 50, Target: "p99 < 50 ms"},
	{Section: "Gateway: players end to end", What: "handoff blip, cold (the default), p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkHandoffBlip/cold", "blip_p99_ms"), Show: ms, Op: Below, Limit: 50, Target: "p99 < 50 ms"},
	{Section: "Gateway: players end to end", What: "gateway drain (SIGTERM): 1000 sessions moved to the other gateway, the last one", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayDrain", "resume_max_ms"), Show: ms, Op: Below, Limit: 5000, Target: "< 5 s (half of drain_timeout)", Anchor: "N / drain_rate = 1 s by design"},
	{Section: "Gateway: players end to end", What: "gateway death: 1000 sessions resumed on the other gateway, p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkGatewayDeath", "resume_p99_ms"), Show: ms, Op: Below, Limit: 1000, Target: "p99 < 1 s"},

	{Section: "Data server (bot save-load: 4000 players saving every 1 s, SQLite)", What: "saves acknowledged", Suite: "e2e",
		Key: k("e2e", "BenchmarkDatasvrSaveLoad", "saves/s"), Show: "%.0f /s", Op: AtLeast, Limit: 3900, Target: "≥ 3900 /s (every save)"},
	{Section: "Data server (bot save-load: 4000 players saving every 1 s, SQLite)", What: "ack latency p99", Suite: "e2e",
		Key: k("e2e", "BenchmarkDatasvrSaveLoad", "ack_p99_ms"), Show: ms, Op: Below, Limit: 10, Target: "p99 < 10 ms"},
	{Section: "Data server (bot save-load: 4000 players saving every 1 s, SQLite)", What: "database statements", Suite: "e2e",
		Key: k("e2e", "BenchmarkDatasvrSaveLoad", "db_stmts/s"), Show: "%.1f /s", Op: Below, Limit: 1000, Target: "< 1000 /s"},
	{Section: "Data server (bot save-load: 4000 players saving every 1 s, SQLite)", What: "coalescing: saves per database row", Suite: "e2e",
		Key: k("e2e", "BenchmarkDatasvrSaveLoad", "saves/row"), Show: "%.1f", Op: AtLeast, Limit: 10, Target: "≥ 10 (rows < 1/10 of saves)", Anchor: "flush_interval 5 s / save every 1 s = 5"},
	{Section: "Data server (bot save-load: 4000 players saving every 1 s, SQLite)", What: "acknowledged saves lost", Suite: "e2e",
		Key: k("e2e", "BenchmarkDatasvrSaveLoad", "lost"), Show: "%.0f", Op: AtMost, Limit: 0, Target: "0"},

	{Section: "Replicas", What: "immediate mode paced at 10,000 updates/s, lag p99", Suite: "replica",
		Key: k("replica", "BenchmarkImmediatePaced", "lag_p99_ms"), Show: "%.2f ms", Op: Below, Limit: 20, Target: "p99 < 20 ms"},
	{Section: "Replicas", What: "immediate mode flat out, applied by one reader", Suite: "replica",
		Key: k("replica", "BenchmarkImmediateThroughput", "updates/s"), Show: "%.0f /s"},
	{Section: "Replicas", What: "JetStream KV (memory), paced 10,000/s, lag p99", Suite: "replica",
		Key: k("replica", "BenchmarkJetStreamKV/memory", "paced_lag_p99_ms"), Show: "%.2f ms", Anchor: "the replica row above"},

	{Section: "Upgrade", What: "whole-cluster `respawn upgrade` (datasvr, worldmgr, 2 scene processes, 2 gateways) while 100 players play", Suite: "upgrade",
		Key: k("e2e", "upgrade_whole", "s"), Show: "%.2f s"},
}

func ratio(num, den Key) func(Results) (float64, bool) {
	return func(r Results) (float64, bool) {
		n, ok1 := r[num]
		d, ok2 := r[den]
		if !ok1 || !ok2 || d == 0 {
			return 0, false
		}
		return n / d, true
	}
}

// Verdict is a row's outcome.
type Verdict string

// The outcomes: a figure without a target is Context.
const (
	Met     Verdict = "met"
	Missing Verdict = "**missing**"
	Context Verdict = "—"
	// NoFigure: the run produced no figure (it failed or was not run):
	// shown as missing too, never hidden.
	NoFigure Verdict = "**missing** (no figure)"
	// NotRun: the row's suite was left out of this run (-suites).
	NotRun Verdict = "**missing** (not run)"
)

// Figure returns the row's figure from res.
func (r Row) Figure(res Results) (float64, bool) {
	if r.Derive != nil {
		return r.Derive(res)
	}
	v, ok := res[r.Key]
	return v, ok
}

// Judge compares the row's figure with its target.
func (r Row) Judge(res Results) (string, Verdict) {
	v, ok := r.Figure(res)
	if !ok {
		if r.Op == None {
			return "no figure", Context
		}
		return "no figure", NoFigure
	}
	scale := r.Scale
	if scale == 0 {
		scale = 1
	}
	shown := fmt.Sprintf(r.Show, v*scale)
	met := false
	switch r.Op {
	case None:
		return shown, Context
	case Below:
		met = v < r.Limit
	case AtMost:
		met = v <= r.Limit
	case AtLeast:
		met = v >= r.Limit
	}
	if met {
		return shown, Met
	}
	return shown, Missing
}

// Command is the command that reproduces the row's figure alone.
func (r Row) Command() string {
	s := suite(r.Suite)
	pkg := "./internal/" + r.Key.Pkg
	var b strings.Builder
	b.WriteString("go test")
	for _, a := range s.Args {
		switch {
		case strings.HasPrefix(a, "-bench=") && r.Pattern != "":
			b.WriteString(" -bench='" + r.Pattern + "'")
		case strings.HasPrefix(a, "-bench="):
			b.WriteString(" -bench='" + benchPattern(r.Key.Bench) + "'")
		case strings.HasPrefix(a, "-run="):
			b.WriteString(" -run='" + strings.TrimPrefix(a, "-run=") + "'")
		case strings.HasPrefix(a, "-timeout="):
		default:
			b.WriteString(" " + a)
		}
	}
	env := ""
	for _, e := range s.Env {
		env += e + " "
	}
	return env + b.String() + " " + pkg
}

// benchPattern is the -bench pattern of one benchmark (sub-benchmarks:
// one anchored element per level).
func benchPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + p + "$"
	}
	return strings.Join(parts, "/")
}

func suite(id string) Suite {
	for _, s := range Suites {
		if s.ID == id {
			return s
		}
	}
	return Suite{ID: id}
}
