package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/client"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/process"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/token"
)

// benchDuration is how long a throughput run plays
// (RESPAWN_BENCH_DURATION overrides, e.g. 30s).
func benchDuration(def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RESPAWN_BENCH_DURATION")); err == nil && d > 0 {
		return d
	}
	return def
}

// benchGatewayFlags lift the per-session rate limit: a closed-loop bot
// sends far more than a player's 100/s, and the benchmark measures the
// round trip, not the limiter.
var benchGatewayFlags = []string{"--gateway.rate", "1000000", "--gateway.burst", "1000000", "--gateway.flood-limit", "1000000"}

// BenchmarkGatewayRoundTrips: N bots (`bot play`, the real binary, on the
// same cores as the cluster), closed loop, one request in flight each,
// every request a move (a logged game event), through one gateway to the
// two scene processes. Reports round trips/s and latency.
func BenchmarkGatewayRoundTrips(b *testing.B) {
	for _, n := range []int{100, 1000, 2000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				// RESPAWN_BENCH_FLAGS adds config flags (an A/B of a knob,
				// e.g. "--scene.procs 2").
				c := newCluster(b, append(slices.Clone(benchGatewayFlags), strings.Fields(os.Getenv("RESPAWN_BENCH_FLAGS"))...)...)
				c.startWorld()
				gw, _, _ := c.gateway("gateway")
				d := benchDuration(10 * time.Second)
				run := c.playBots("-n", strconv.Itoa(n), "--rate", "0", "--ops", "move", "--duration", d.String(),
					"--json", "--progress", "1s", "--logout=false", "--setup-timeout", "5m")
				pids := map[string]int{"gateway": gw.pid(), "bot": run.cmd.Process.Pid}
				for _, sc := range []string{"town", "forest"} {
					if r, err := c.scene(sc); err == nil && !slices.Contains(slices.Collect(maps.Values(pids)), r.PID) {
						pids["scene "+sc] = r.PID
					}
				}
				cpu := sampleCPU(run, pids)
				res, err := run.result(d + 10*time.Minute)
				if err != nil || res.Errors != 0 || res.Lost != 0 || res.Duplicates != 0 || res.Disconnects != 0 {
					b.Fatalf("bot play: %v: %+v", err, res)
				}
				b.ReportMetric(res.RPS, "rps")
				b.ReportMetric(res.P50Ms, "p50_ms")
				b.ReportMetric(res.P99Ms, "p99_ms")
				b.ReportMetric(res.MaxMs, "max_ms")
				fmt.Fprintf(os.Stderr, "%s: %d bots, %.0f round trips/s, p50 %.2f ms, p99 %.2f ms, max %.1f ms\n",
					b.Name(), n, res.RPS, res.P50Ms, res.P99Ms, res.MaxMs)
				if line, total := cpu.perRoundTrip(); line != "" {
					b.ReportMetric(total, "cpu_us/rt")
					fmt.Fprintf(os.Stderr, "%s: CPU per round trip: %s\n", b.Name(), line)
				}
			}
		})
	}
}

// benchClients logs n new players in through gateways (each client's
// list) and sends them to scene.
func benchClients(b *testing.B, c *cluster, n int, gateways []string, scene string) []*client.Client {
	b.Helper()
	sec, err := secret.Load("", c.dataDir)
	if err != nil {
		b.Fatal(err)
	}
	prefix := uniqueID("b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := make([]*client.Client, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fail := func(err error) {
				mu.Lock()
				first = cmpOr(first, err)
				mu.Unlock()
			}
			id := fmt.Sprintf("%s-%04d", prefix, i)
			tok, err := token.IssueLogin(sec, id, time.Now().Add(time.Hour))
			if err != nil {
				fail(err)
				return
			}
			cl, err := client.Dial(ctx, client.Options{Gateways: gateways, Token: tok, Name: id})
			if err != nil {
				fail(fmt.Errorf("%s: %w", id, err))
				return
			}
			b.Cleanup(func() { cl.Close() })
			out[i] = cl
			if scene != "" && cl.Session().Scene != scene {
				rep, err := cl.Request(ctx, map[string]any{"op": "travel", "to": scene})
				if err != nil || !rep.OK() {
					fail(fmt.Errorf("%s travel: %v %v", id, err, rep.Err()))
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	return out
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// span is one request's send and reply times.
type span struct{ start, end time.Time }

// window is from a kill or handoff request until the scene ran again.
type window struct{ from, up time.Time }

// inWindows returns the latencies of the spans that overlap a window.
func inWindows(spans []span, windows []window) []time.Duration {
	var blip []time.Duration
	for _, s := range spans {
		for _, w := range windows {
			if !s.end.Before(w.from) && !s.start.After(w.up) {
				blip = append(blip, s.end.Sub(s.start))
				break
			}
		}
	}
	return blip
}

// movers keeps clients playing in the forest (a move every 100 ms each,
// the reply awaited) and records every request's span, until finish. The
// players' ticks are spread over the 100 ms, as real players' are: in
// step, they would leave gaps a short outage could fall into unmeasured.
type movers struct {
	mu     sync.Mutex
	spans  []span
	failed int
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startMovers(clients []*client.Client) *movers {
	m := &movers{stop: make(chan struct{})}
	for i, cl := range clients {
		m.wg.Go(func() {
			phase := time.NewTimer(time.Duration(i) * 100 * time.Millisecond / time.Duration(len(clients)))
			select {
			case <-m.stop:
				phase.Stop()
				return
			case <-phase.C:
			}
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for k := 0; ; k++ {
				select {
				case <-m.stop:
					return
				case <-t.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				s := span{start: time.Now()}
				rep, err := cl.Request(ctx, []byte(fmt.Sprintf(`{"op":"move","x":%d,"y":%d}`, 1+(i+k)%90, 1+k%90)))
				s.end = time.Now()
				cancel()
				m.mu.Lock()
				m.spans = append(m.spans, s)
				if err != nil || !rep.OK() {
					m.failed++
				}
				m.mu.Unlock()
			}
		})
	}
	return m
}

// settle lets the players play on: n more requests answered.
func (m *movers) settle(b *testing.B, n int) {
	b.Helper()
	m.mu.Lock()
	base := len(m.spans)
	m.mu.Unlock()
	poll.Until(b, 60*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(m.spans)-base < n {
			return fmt.Errorf("%d of %d more requests answered", len(m.spans)-base, n)
		}
		return nil
	})
}

// finish stops the players and returns every span and how many failed.
func (m *movers) finish() ([]span, int) {
	close(m.stop)
	m.wg.Wait()
	return m.spans, m.failed
}

// BenchmarkFailoverBlip: 500 players play in the forest (a move every
// 100 ms each, the reply awaited) while its scene process, whose log holds
// 100k events since its snapshot (and 500 more players, prefilled), is
// killed with SIGKILL. It reports the latency of the requests that were in
// flight at the kill or sent before the replacement ran; "standby" with
// a warm spare per scene process (worldmgr.standby), "cold" without (the
// default: the manager spawns the replacement after the death).
func BenchmarkFailoverBlip(b *testing.B) { blipModes(b, failoverBlip) }

func failoverBlip(b *testing.B, spare []string) {
	const players = 500
	kills := benchKills(3)
	for b.Loop() {
		c := newCluster(b, append([]string{"--worldmgr.restart.max-restarts", "100000", "--worldmgr.restart.backoff-initial", "0s",
			"--scene.snapshot-events", "100000000", "--scene.snapshot-interval", "1h"}, append(spare, benchGatewayFlags...)...)...)
		prefillForest(b, c, 500, 100_000)
		c.startWorld()
		_, tcp, _ := c.gateway("gateway")
		clients := benchClients(b, c, players, []string{tcp}, "forest")

		m := startMovers(clients)
		var blip []time.Duration
		var toRunning []time.Duration
		m.settle(b, 10*players)
		var windows []window
		var epochs []uint64
		for range kills {
			old, err := c.scene("forest")
			if err != nil {
				b.Fatal(err)
			}
			kill := time.Now()
			if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
				b.Fatal(err)
			}
			poll.Until(b, 30*time.Second, func() error {
				r, err := c.scene("forest")
				if err != nil {
					return err
				}
				if r.PID == old.PID || r.State != modules.SceneRunning {
					return fmt.Errorf("forest %s pid %d", r.State, r.PID)
				}
				epochs = append(epochs, r.Epoch)
				return nil
			})
			up := time.Now()
			toRunning = append(toRunning, up.Sub(kill))
			windows = append(windows, window{kill, up})
			m.settle(b, 10*players)
		}
		spans, failed := m.finish()
		for i, w := range windows {
			fmt.Fprintln(os.Stderr, blipPhases(c, "forest", epochs[i], w.from, spans))
		}
		blip = inWindows(spans, windows)
		if failed > 0 {
			b.Fatalf("%d of %d requests failed", failed, len(spans))
		}
		if len(blip) == 0 {
			b.Fatal("no request was in flight during a kill")
		}
		reportBlip(b, "kills", "crash", kills, len(spans), blip, toRunning)
	}
}

// BenchmarkGatewayDeath: 1000 sessions on gateway gw1 (gw2 second in
// their lists); gw1 is killed with SIGKILL; measured from the kill until
// each session is resumed on gw2.
func BenchmarkGatewayDeath(b *testing.B) {
	sessions := benchN("RESPAWN_BENCH_SESSIONS", 1000)
	for b.Loop() {
		_, gw1, tcp2, clients := twoGatewaySessions(b, sessions)
		noticed := make([]time.Duration, len(clients)) // the client saw its connection end
		kill := time.Now()
		gw1.signal(syscall.SIGKILL)
		resumed := resumedAfter(b, clients, kill, func(i int, cl *client.Client, at time.Duration) {
			if noticed[i] == 0 && cl.Stats().Lost > 0 {
				noticed[i] = at
			}
		})
		for i := range noticed {
			if noticed[i] == 0 {
				noticed[i] = resumed[i] // lost and resumed within one poll
			}
		}
		for _, cl := range clients {
			if st := cl.Stats(); st.Relogins != 0 || cl.Gateway() != tcp2 {
				b.Fatalf("session on %s, stats %+v", cl.Gateway(), st)
			}
		}
		slices.Sort(resumed)
		slices.Sort(noticed)
		fmt.Fprintf(os.Stderr, "%s: connections seen lost after p50 %s, max %s\n", b.Name(),
			noticed[len(noticed)/2].Round(time.Millisecond), noticed[len(noticed)-1].Round(time.Millisecond))
		b.ReportMetric(quantileMs(resumed, 0.5), "resume_p50_ms")
		b.ReportMetric(quantileMs(resumed, 0.99), "resume_p99_ms")
		b.ReportMetric(quantileMs(resumed, 1), "resume_max_ms")
		fmt.Fprintf(os.Stderr, "%s: %d sessions resumed on gw2: p50 %.1f ms, p99 %.1f ms, all %.1f ms after the kill\n",
			b.Name(), sessions, quantileMs(resumed, 0.5), quantileMs(resumed, 0.99), quantileMs(resumed, 1))
	}
}

// twoGatewaySessions starts the world with gateways gw1 and gw2 and logs
// n sessions in on gw1, gw2 second in each client's list.
func twoGatewaySessions(b *testing.B, n int) (c *cluster, gw1 *proc, tcp2 string, clients []*client.Client) {
	b.Helper()
	c = newCluster(b, benchGatewayFlags...)
	c.startWorld()
	gw1, tcp1, _ := c.gateway("gw1")
	_, tcp2, _ = c.gateway("gw2")
	return c, gw1, tcp2, benchClients(b, c, n, []string{tcp1, tcp2}, "")
}

// resumedAfter polls every client every 1 ms (the resolution) until each
// has resumed its session, and returns when each did, from start; also
// sees every client not yet resumed at each poll.
func resumedAfter(b *testing.B, clients []*client.Client, start time.Time, also func(i int, cl *client.Client, at time.Duration)) []time.Duration {
	b.Helper()
	resumed := make([]time.Duration, len(clients))
	for left := len(clients); left > 0; {
		if time.Since(start) > 2*time.Minute {
			b.Fatalf("%d sessions not resumed after 2 minutes", left)
		}
		for i, cl := range clients {
			if resumed[i] != 0 {
				continue
			}
			at := time.Since(start)
			if also != nil {
				also(i, cl, at)
			}
			if cl.Stats().Resumes > 0 {
				resumed[i] = at
				left--
			}
		}
		time.Sleep(time.Millisecond) // polling resolution
	}
	return resumed
}

// quantileMs is the f quantile of sorted l, in milliseconds.
func quantileMs(l []time.Duration, f float64) float64 {
	return float64(l[min(int(f*float64(len(l))), len(l)-1)].Microseconds()) / 1000
}

// benchN is an integer setting of a benchmark, overridden by env.
func benchN(env string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(env)); err == nil && n > 0 {
		return n
	}
	return def
}

// reportBlip reports the latency of the requests in flight during the
// faults (blip) and the fault-to-running times, as metrics and one line.
func reportBlip(b *testing.B, faults, fault string, n, requests int, blip, toRunning []time.Duration) {
	slices.Sort(blip)
	slices.Sort(toRunning)
	q := quantileMs
	b.ReportMetric(q(blip, 0.5), "blip_p50_ms")
	b.ReportMetric(q(blip, 0.99), "blip_p99_ms")
	b.ReportMetric(q(blip, 1), "blip_max_ms")
	b.ReportMetric(q(toRunning, 0.5), fault+"_to_running_p50_ms")
	fmt.Fprintf(os.Stderr, "%s: %d %s, %d requests, %d in the blip windows: p50 %.1f ms, p99 %.1f ms, max %.1f ms; %s to running p50 %.1f ms, max %.1f ms\n",
		b.Name(), n, faults, requests, len(blip), q(blip, 0.5), q(blip, 0.99), q(blip, 1), fault, q(toRunning, 0.5), q(toRunning, 1))
}

// cpuSample is the CPU time (utime+stime) of each measured process when a
// bot progress line reported answered round trips.
type cpuSample struct {
	answered uint64
	cpu      map[string]time.Duration // user + system
	syscalls map[string]uint64        // read and write system calls
	switches map[string]uint64        // voluntary thread switches
}

// cpuSamples are taken at every progress line of a bot run: CPU per
// round trip between the first and the last excludes the bots' setup and
// the ledger check, and does not depend on how busy the machine is.
type cpuSamples struct {
	mu      sync.Mutex
	samples []cpuSample
	done    chan struct{}
}

// sampleCPU polls the bot's progress lines until it exits, sampling the
// CPU time of pids at each new line.
func sampleCPU(run *botRun, pids map[string]int) *cpuSamples {
	s := &cpuSamples{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		lines := 0
		for {
			select {
			case <-run.done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			m := answeredRE.FindAllStringSubmatch(run.stderr.String(), -1)
			if len(m) == lines {
				continue
			}
			lines = len(m)
			n, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64)
			smp := cpuSample{answered: n, cpu: map[string]time.Duration{}, syscalls: map[string]uint64{}, switches: map[string]uint64{}}
			for name, pid := range pids {
				if t, err := process.CPU(pid); err == nil {
					smp.cpu[name] = t
				}
				if n, err := procSyscalls(pid); err == nil {
					smp.syscalls[name] = n
				}
				if n, err := procSwitches(pid); err == nil {
					smp.switches[name] = n
				}
			}
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
			if dir := os.Getenv("RESPAWN_BENCH_PERF"); dir != "" && lines == 2 {
				// Profile every measured process for 3 s with perf(1).
				for name, pid := range pids {
					out := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".data")
					cmd := exec.Command("perf", "record", "-F", "499", "-g", "-o", out, "-p", strconv.Itoa(pid), "--", "sleep", "3")
					if err := cmd.Start(); err == nil {
						go func() { _ = cmd.Wait() }()
					}
				}
			}
		}
	}()
	return s
}

// perRoundTrip is each process's CPU µs per round trip between the first
// and last samples, as a line, and their total ("" without two samples).
func (s *cpuSamples) perRoundTrip() (string, float64) {
	<-s.done
	if len(s.samples) < 2 {
		return "", 0
	}
	first, last := s.samples[0], s.samples[len(s.samples)-1]
	rts := float64(last.answered - first.answered)
	if rts <= 0 {
		return "", 0
	}
	names := make([]string, 0, len(last.cpu))
	for name := range last.cpu {
		names = append(names, name)
	}
	slices.Sort(names)
	var line string
	var total float64
	for _, name := range names {
		us := float64((last.cpu[name] - first.cpu[name]).Microseconds()) / rts
		total += us
		line += fmt.Sprintf("%s %.1f µs", name, us)
		if n, ok := last.syscalls[name]; ok {
			line += fmt.Sprintf(" (%.2f read/write calls", float64(n-first.syscalls[name])/rts)
			if sw, ok := last.switches[name]; ok {
				line += fmt.Sprintf(", %.2f thread switches", float64(sw-first.switches[name])/rts)
			}
			line += ")"
		}
		line += ", "
	}
	return fmt.Sprintf("%stotal %.1f µs (%.0f round trips measured)", line, total, rts), total
}

// procSyscalls is a process's read and write system calls so far
// (/proc/PID/io syscr + syscw).
func procSyscalls(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if ok && (k == "syscr" || k == "syscw") {
			x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("pid %d: io %q: %w", pid, l, err)
			}
			n += x
		}
	}
	return n, nil
}

// procSwitches is the voluntary context switches of all a process's
// threads so far (/proc/PID/task/*/status): each is a thread parking, the
// cost a goroutine hand-off adds when it wakes an idle thread.
func procSwitches(pid int) (uint64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("pid %d: no tasks: %v", pid, err)
	}
	var n uint64
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				x, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %q: %w", t, l, err)
				}
				n += x
			}
		}
	}
	return n, nil
}
