package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/poll"
)

// documented is one row of the metrics table in docs/operations.md.
type documented struct {
	name, typ, labels string
	procs             []string // process kinds; "all" means every one
	optional          bool     // exported only while something is true
}

var metricRow = regexp.MustCompile("^\\| `(respawn_[a-z0-9_]+)` \\| ([a-z]+) \\| ([^|]*)\\| ([^|]+)\\|")

// documentedMetrics parses the table under "## Metrics" in docs/operations.md.
func documentedMetrics(t testing.TB) map[string]documented {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	i := strings.Index(text, "\n## Metrics\n")
	if i < 0 {
		t.Fatal("docs/operations.md has no ## Metrics section")
	}
	text = text[i+1:]
	if j := strings.Index(text[3:], "\n## "); j >= 0 {
		text = text[:j+3]
	}
	out := map[string]documented{}
	for _, line := range strings.Split(text, "\n") {
		m := metricRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		d := documented{name: m[1], typ: m[2], labels: strings.TrimSpace(m[3])}
		procs := m[4]
		if k := strings.Index(procs, "(only while"); k >= 0 {
			d.optional, procs = true, procs[:k]
		}
		for _, p := range strings.Split(procs, ",") {
			d.procs = append(d.procs, strings.TrimSpace(p))
		}
		if _, dup := out[d.name]; dup {
			t.Errorf("docs/operations.md lists %s twice", d.name)
		}
		out[d.name] = d
	}
	if len(out) < 20 {
		t.Fatalf("docs/operations.md: only %d metric rows parsed", len(out))
	}
	return out
}

// metricFamilies reads addr's /metrics and returns its respawn_ families
// and their types.
func metricFamilies(addr string) (map[string]string, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: status %d", addr, resp.StatusCode)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "respawn_") {
			out[f[2]] = f[3]
		}
	}
	return out, sc.Err()
}

// The metrics table in docs/operations.md is true of a running cluster:
// datasvr, worldmgr, every scene process and a gateway that served players
// are scraped, and the table and what they expose agree both ways.
func TestMetricsMatchTheDocs(t *testing.T) {
	docs := documentedMetrics(t)
	c := newCluster(t)
	c.startWorld()
	_, tcp, ws := c.gateway("gateway")
	w := newPlayers(t, c, 4, [][]string{{tcp, ws}})
	stop := w.playing(20 * time.Millisecond)
	w.progress(3)
	stop()
	// A client that sends garbage is closed with a code: closes_total moves.
	nc, err := net.DialTimeout("tcp", tcp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = nc.Write([]byte("this is not a frame\r\n\r\n"))
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.Copy(io.Discard, nc)
	nc.Close()

	// kind -> admin addresses
	procs := map[string][]string{
		"datasvr":  {c.ports["datasvr.admin"]},
		"worldmgr": {c.ports["worldmgr.admin"]},
		"gateway":  {c.ports["gateway.admin"]},
	}
	rows, err := c.scenes()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		if !seen[r.Process] {
			seen[r.Process] = true
			procs["scene"] = append(procs["scene"], r.Addr)
		}
	}
	if len(procs["scene"]) == 0 {
		t.Fatal("no scene process in the scene table")
	}
	var kinds []string
	for k := range procs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	exposed := 0
	for _, kind := range kinds {
		for _, addr := range procs[kind] {
			var fams map[string]string
			// Gauge funcs and zero-initialised series are there from the
			// start, but the closes counter moves on the gateway's own time.
			poll.Until(t, 10*time.Second, func() error {
				var err error
				if fams, err = metricFamilies(addr); err != nil {
					return err
				}
				if kind == "gateway" && fams["respawn_gateway_closes_total"] == "" {
					return fmt.Errorf("gateway %s: no closes counted yet", addr)
				}
				return nil
			})
			for name, typ := range fams {
				exposed++
				d, ok := docs[name]
				switch {
				case !ok:
					t.Errorf("%s %s exposes %s (%s), which docs/operations.md does not list", kind, addr, name, typ)
				case d.typ != typ:
					t.Errorf("%s: docs say %s, %s %s exposes a %s", name, d.typ, kind, addr, typ)
				case !d.on(kind):
					t.Errorf("%s: docs say it is on %v, but %s %s exposes it too", name, d.procs, kind, addr)
				}
			}
			for name, d := range docs {
				if d.on(kind) && !d.optional && fams[name] == "" {
					t.Errorf("docs/operations.md lists %s on %s, but %s %s does not expose it", name, kind, kind, addr)
				}
			}
		}
	}
	// And the ones this play moved have moved.
	gwAdm := c.ports["gateway.admin"]
	atLeast(t, gwAdm, "respawn_gateway_sessions", 4)
	atLeast(t, gwAdm, `respawn_gateway_logins_total{result="ok"}`, 4)
	atLeast(t, gwAdm, "respawn_gateway_request_seconds_count", 12)
	atLeast(t, gwAdm, "respawn_gateway_closes_total", 1)
	var events, bytes, players float64
	for _, a := range procs["scene"] {
		for name, p := range map[string]*float64{"respawn_scene_events_total": &events, "respawn_scene_log_appended_bytes_total": &bytes, "respawn_scene_players": &players} {
			v, err := metricSum(a, name)
			if err != nil {
				t.Fatal(err)
			}
			*p += v
		}
		atLeast(t, a, "respawn_scene_log_slots_free", 1)
		// A scene process starts on every CPU and serves with scene.procs
		// (0: one thread per hosted scene; each hosts one here) a moment
		// later, as the Go collector's go_sched_gomaxprocs_threads shows.
		poll.Until(t, 10*time.Second, func() error {
			if v, err := metricSum(a, "go_sched_gomaxprocs_threads"); err != nil || v != 1 {
				return fmt.Errorf("scene process %s serves with GOMAXPROCS %g (%v), want 1", a, v, err)
			}
			return nil
		})
	}
	if events < 12 || bytes < events || players < 4 {
		t.Errorf("scene processes: %g events, %g log bytes, %g players; want >= 12, >= events, >= 4", events, bytes, players)
	}
	atLeast(t, c.ports["worldmgr.admin"], `respawn_worldmgr_scenes{state="running"}`, float64(len(rows)))
	atLeast(t, c.ports["datasvr.admin"], "respawn_datasvr_loads_total", 4)
	t.Logf("%d documented metrics; %d families scraped from %d processes", len(docs), exposed, len(procs["scene"])+3)
}

func (d documented) on(kind string) bool {
	for _, p := range d.procs {
		if p == "all" || p == kind {
			return true
		}
	}
	return false
}

// metricSum is the sum of every sample of metric name (all label sets)
// that addr's /metrics serves.
func metricSum(addr, name string) (float64, error) {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer name with this prefix
		}
		var v float64
		if _, err := fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &v); err != nil {
			return 0, fmt.Errorf("%s: %q: %w", name, line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, fmt.Errorf("%s: no %s", addr, name)
	}
	return sum, sc.Err()
}

// atLeast fails t unless metric name on addr reaches min within a few seconds.
func atLeast(t *testing.T, addr, name string, min float64) {
	t.Helper()
	poll.Until(t, 10*time.Second, func() error {
		v, err := metricSum(addr, name)
		if err != nil {
			return err
		}
		if v < min {
			return fmt.Errorf("%s = %g, want >= %g", name, v, min)
		}
		return nil
	})
}
