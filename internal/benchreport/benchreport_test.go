package benchreport

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A go test -json stream as Go 1.26 writes it: a benchmark's name and its
// figures arrive as separate output events, logs interleave, a test logs a
// benchmetric line, and one package fails.
const stream = `go: downloading something
{"Action":"start","Package":"github.com/x/internal/shmlog"}
{"Action":"output","Package":"github.com/x/internal/shmlog","Output":"cpu: AMD EPYC\n"}
{"Action":"output","Package":"github.com/x/internal/shmlog","Test":"BenchmarkAppend","Output":"BenchmarkAppend\n"}
{"Action":"output","Package":"github.com/x/internal/shmlog","Test":"BenchmarkAppend","Output":"BenchmarkAppend-2         \t"}
{"Action":"output","Package":"github.com/x/internal/shmlog","Test":"BenchmarkWriteSyscall","Output":"BenchmarkWriteSyscall-2   \t    2000\t       500.0 ns/op\t 111.96 MB/s\n"}
{"Action":"output","Package":"github.com/x/internal/shmlog","Test":"BenchmarkAppend","Output":"    2000\t        25.00 ns/op\t 903.31 MB/s\t       0 B/op\t       0 allocs/op\n"}
{"Action":"output","Package":"github.com/x/internal/shmlog","Test":"BenchmarkReplay","Output":"BenchmarkReplay-2 \t 1\t 17000 ns/op\t 57300000 events/s\n"}
{"Action":"pass","Package":"github.com/x/internal/shmlog"}
{"Action":"output","Package":"github.com/x/internal/e2e","Test":"BenchmarkGatewayRoundTrips/100","Output":"BenchmarkGatewayRoundTrips/100-2 \t 1\t 1000 ns/op\t 15294 rps\t 18.9 p99_ms\n"}
{"Action":"output","Package":"github.com/x/internal/e2e","Test":"BenchmarkFailoverBlip","Output":"BenchmarkFailoverBlip: 3 kills, 21663 requests\n"}
{"Action":"output","Package":"github.com/x/internal/e2e","Test":"TestUpgradeEveryProcessWhilePlaying","Output":"    upgrade_test.go:131: benchmetric: upgrade_whole 4.15 s\n"}
{"Action":"output","Package":"github.com/x/internal/e2e","Test":"BenchmarkCrashToRunning","Output":"BenchmarkCrashToRunning-2 \t 1\t 9 ns/op\t 17.7 p50_ms\t 350.5 p99_ms"}
{"Action":"fail","Package":"github.com/x/internal/e2e","Test":"BenchmarkHangToReplaced"}
{"Action":"fail","Package":"github.com/x/internal/e2e"}
`

func TestParseJSON(t *testing.T) {
	res := Results{}
	failed, err := ParseJSON(strings.NewReader(stream), res)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || failed[0] != "github.com/x/internal/e2e" {
		t.Errorf("failed packages %v", failed)
	}
	want := map[Key]float64{
		{"shmlog", "BenchmarkAppend", "ns/op"}:              25,
		{"shmlog", "BenchmarkAppend", "allocs/op"}:          0,
		{"shmlog", "BenchmarkWriteSyscall", "ns/op"}:        500,
		{"shmlog", "BenchmarkReplay", "events/s"}:           57.3e6,
		{"e2e", "BenchmarkGatewayRoundTrips/100", "rps"}:    15294,
		{"e2e", "BenchmarkGatewayRoundTrips/100", "p99_ms"}: 18.9,
		{"e2e", "upgrade_whole", "s"}:                       4.15,
		{"e2e", "BenchmarkCrashToRunning", "p99_ms"}:        350.5, // last line without a newline
		{"e2e", "BenchmarkCrashToRunning", "p50_ms"}:        17.7,
	}
	for k, v := range want {
		if got, ok := res[k]; !ok || got != v {
			t.Errorf("%s = %v (found %v), want %v", k, got, ok, v)
		}
	}
	for k := range res {
		if strings.Contains(k.Bench, ":") {
			t.Errorf("a log line parsed as a figure: %s", k)
		}
	}
}

func TestParseJSONRefusesOtherStreams(t *testing.T) {
	if _, err := ParseJSON(strings.NewReader("{not json\n"), Results{}); err == nil {
		t.Fatal("a broken stream parsed")
	}
}

func TestJudge(t *testing.T) {
	res := Results{
		{"shmlog", "BenchmarkAppend", "ns/op"}:       25,
		{"shmlog", "BenchmarkWriteSyscall", "ns/op"}: 500,
		{"e2e", "BenchmarkCrashToRunning", "p99_ms"}: 350.5,
		{"e2e", "BenchmarkDatasvrSaveLoad", "lost"}:  0,
	}
	cases := []struct {
		key  Key
		fig  string
		want Verdict
	}{
		{Key{"shmlog", "BenchmarkAppend", "ns/op"}, "25.0 ns", Met},
		{Key{"shmlog", "BenchmarkWriteSyscall/BenchmarkAppend", "×"}, "20.0×", Met},
		{Key{"e2e", "BenchmarkCrashToRunning", "p99_ms"}, "350.5 ms", Missing},
		{Key{"e2e", "BenchmarkDatasvrSaveLoad", "lost"}, "0", Met},
		{Key{"e2e", "BenchmarkHangToReplaced", "p99_ms"}, "no figure", NoFigure},
		{Key{"e2e", "BenchmarkCrashToRunning", "p50_ms"}, "no figure", Context},
	}
	for _, c := range cases {
		row := findRow(t, c.key)
		fig, v := row.Judge(res)
		if fig != c.fig || v != c.want {
			t.Errorf("%s: %q %s, want %q %s", c.key, fig, v, c.fig, c.want)
		}
	}
}

func findRow(t *testing.T, k Key) Row {
	t.Helper()
	for _, r := range Rows {
		if r.Key == k {
			return r
		}
	}
	t.Fatalf("no row for %s", k)
	return Row{}
}

// Every row names a suite that exists and a command that runs its
// benchmark (or test) alone.
func TestRowsAndCommands(t *testing.T) {
	seen := map[Key]bool{}
	for _, r := range Rows {
		if seen[r.Key] {
			t.Errorf("two rows for %s", r.Key)
		}
		seen[r.Key] = true
		s := suite(r.Suite)
		if len(s.Pkgs) == 0 {
			t.Errorf("row %q: unknown suite %q", r.What, r.Suite)
		}
		if r.Op != None && r.Target == "" {
			t.Errorf("row %q has a limit but no target text", r.What)
		}
	}
	cmd := findRow(t, Key{"e2e", "BenchmarkGatewayRoundTrips/1000", "p99_ms"}).Command()
	if want := "RESPAWN_BENCH_DURATION=10s go test -run='^$' -bench='^BenchmarkGatewayRoundTrips$/^1000$' -benchtime=1x ./internal/e2e"; cmd != want {
		t.Errorf("command\n got %s\nwant %s", cmd, want)
	}
	cmd = findRow(t, Key{"e2e", "upgrade_whole", "s"}).Command()
	if want := "go test -run='^TestUpgradeEveryProcessWhilePlaying$' -count=1 ./internal/e2e"; cmd != want {
		t.Errorf("command\n got %s\nwant %s", cmd, want)
	}
}

func TestRender(t *testing.T) {
	res := Results{}
	if _, err := ParseJSON(strings.NewReader(stream), res); err != nil {
		t.Fatal(err)
	}
	m := Machine{CPU: "AMD EPYC", Cores: 2, RAM: "23.4 GiB", Go: "go1.26", Kernel: "Linux 6.1",
		Date: time.Date(2026, 11, 29, 21, 0, 0, 0, time.UTC), Commit: "abc123", LoadAvg: "0.10 0.20 0.30"}
	doc := Render(m, []Run{{Suite: "micro", Took: 90 * time.Second}, {Suite: "e2e", Took: 10 * time.Minute, Failed: true, Note: "go test failed in e2e"}},
		13*time.Minute, res)
	for _, want := range []string{
		"| CPU | AMD EPYC |", "| cores | 2 |", "| load average at start | 0.10 0.20 0.30 |", "| commit | abc123 |",
		"| `make bench` took | 13m0s |",
		"| e2e | 10m0s | **failed**: go test failed in e2e |",
		"| shm log append, 64-byte event | `go test -run='^$' -bench='^BenchmarkAppend$' -benchmem ./internal/shmlog` | 25.0 ns | < 200 ns | one write(2) per event (next row) | met |",
		"-bench='^Benchmark(Append\\|WriteSyscall)$'",
		"| 350.5 ms | p99 < 300 ms | BigWorld: a ~2 s pause | **missing** |",
		"| no figure | < 1.5 s | BigWorld 3 s, KBEngine 60 s | **missing** (no figure) |",
		"immediate mode paced at 10,000 updates/s, lag p99 | `go test -run='^$' -bench='^BenchmarkImmediatePaced$' -benchtime=1x ./internal/replica` | not run |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(doc)
	}
}

// Every row names a benchmark (or a benchmetric line) that exists in the
// tree, with a unit it reports: a renamed benchmark or metric would
// otherwise leave its row without a figure until someone runs make bench.
func TestRowsNameRealFigures(t *testing.T) {
	for _, r := range Rows {
		if r.Derive != nil {
			continue
		}
		files, err := filepath.Glob(filepath.Join("..", r.Key.Pkg, "*_test.go"))
		if err != nil || len(files) == 0 {
			t.Errorf("row %q: no test files in internal/%s", r.What, r.Key.Pkg)
			continue
		}
		var src strings.Builder
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			src.Write(raw)
		}
		code := src.String()
		top, _, _ := strings.Cut(r.Key.Bench, "/")
		if strings.HasPrefix(top, "Benchmark") {
			if !strings.Contains(code, "func "+top+"(b *testing.B)") {
				t.Errorf("row %q: no func %s in internal/%s", r.What, top, r.Key.Pkg)
			}
		} else if !strings.Contains(code, "MetricPrefix") || !strings.Contains(code, top+" ") {
			t.Errorf("row %q: no benchmetric line %s in internal/%s", r.What, top, r.Key.Pkg)
		}
		unit := strings.TrimPrefix(r.Key.Unit, "paced_")
		if r.Key.Unit != "ns/op" && !strings.Contains(code, `"`+r.Key.Unit+`"`) && !strings.Contains(code, `"`+unit+`"`) {
			t.Errorf("row %q: internal/%s never reports unit %q", r.What, r.Key.Pkg, r.Key.Unit)
		}
	}
}
