package e2e

import (
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkGatewayDrain: two gateways; N sessions (RESPAWN_BENCH_SESSIONS,
// default 1000) logged in on gw1, gw2 second in each client's list; gw1
// gets SIGTERM and drains. Measured from the signal: when each session
// has resumed on gw2 (polled every 1 ms; the moves are paced at
// gateway.drain_rate, 1000/s, so they spread on purpose), and when gw1
// has exited. No client may count a lost connection or log in again.
func BenchmarkGatewayDrain(b *testing.B) {
	sessions := benchN("RESPAWN_BENCH_SESSIONS", 1000)
	for b.Loop() {
		_, gw1, tcp2, clients := twoGatewaySessions(b, sessions)
		exited := make(chan time.Duration, 1)
		began := time.Now()
		gw1.signal(syscall.SIGTERM)
		go func() { <-gw1.done; exited <- time.Since(began) }()
		resumed := resumedAfter(b, clients, began, nil)
		var exit time.Duration
		select {
		case exit = <-exited:
		case <-time.After(time.Minute):
			b.Fatal("gw1 did not exit within a minute of its SIGTERM")
		}
		for _, cl := range clients {
			if st := cl.Stats(); st.Relogins != 0 || st.Lost != 0 || st.Disconnects != 0 || cl.Gateway() != tcp2 {
				b.Fatalf("session on %s, stats %+v", cl.Gateway(), st)
			}
		}
		slices.Sort(resumed)
		q := func(f float64) float64 { return quantileMs(resumed, f) }
		b.ReportMetric(q(0.5), "resume_p50_ms")
		b.ReportMetric(q(1), "resume_max_ms")
		b.ReportMetric(float64(exit.Microseconds())/1000, "exit_ms")
		fmt.Fprintf(os.Stderr, "%s: %d sessions moved to gw2 without a lost connection: resumed p50 %.1f ms, p99 %.1f ms, all %.1f ms after SIGTERM; gw1 exited after %s\n",
			b.Name(), sessions, q(0.5), q(0.99), q(1), exit.Round(time.Millisecond))
	}
}
