package gateway

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/respawn-dev/respawn/internal/gwproto"
)

type metrics struct {
	conns   prometheus.Gauge
	refused prometheus.Counter
	slow    prometheus.Counter
	held    prometheus.Gauge
	pushes  prometheus.Counter
	logins  *prometheus.CounterVec
	resumes *prometheus.CounterVec
	replies *prometheus.CounterVec
	// repliesOK is replies{code="ok"}, resolved once: one per round trip.
	repliesOK prometheus.Counter
	closes    *prometheus.CounterVec
	latency   prometheus.Histogram
	// expired counts requests answered "unavailable" because the scene did
	// not come back within the hold time; resends counts requests whose seq
	// was already queued or in flight (a client resending after a reconnect).
	expired prometheus.Counter
	resends prometheus.Counter
	// rejoins counts a session's joins on a new link of its scene:
	// "joined" (a join round trip) or "skipped" (a failover, the restored
	// scene holds the session's attach already).
	rejoins *prometheus.CounterVec
	// positions counts positions pushes by how they went out: "carried"
	// in a write with other frames (a reply) or "alone" (push_hold).
	positions *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, g *Gateway) (*metrics, error) {
	m := &metrics{
		conns:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "respawn_gateway_connections", Help: "Open client connections."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "respawn_gateway_refused_total", Help: "Connections refused by the connection limits."}),
		slow:    prometheus.NewCounter(prometheus.CounterOpts{Name: "respawn_gateway_slow_consumers_total", Help: "Clients cut because their outbound queue was full."}),
		held:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "respawn_gateway_held_requests", Help: "Requests held for a scene process that is down."}),
		pushes:  prometheus.NewCounter(prometheus.CounterOpts{Name: "respawn_gateway_scene_pushes_total", Help: "Scene-wide pushes fanned out to clients."}),
		logins:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "respawn_gateway_logins_total", Help: "Logins by result."}, []string{"result"}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "respawn_gateway_resumes_total", Help: "Resumes by result."}, []string{"result"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "respawn_gateway_replies_total", Help: "Replies to requests by protocol code."}, []string{"code"}),
		closes:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "respawn_gateway_closes_total", Help: "Connections the gateway closed, by code."}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "respawn_gateway_request_seconds", Help: "Time from a request's turn to its reply, failovers included.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}),
		expired:   prometheus.NewCounter(prometheus.CounterOpts{Name: "respawn_gateway_hold_timeouts_total", Help: "Held requests answered unavailable because the scene did not come back within the hold time."}),
		resends:   prometheus.NewCounter(prometheus.CounterOpts{Name: "respawn_gateway_resends_total", Help: "Requests resent with a seq already queued or in flight (answered once)."}),
		positions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "respawn_gateway_positions_pushes_total", Help: "Positions pushes written to clients, by how: carried (in the same write as a reply or another frame) or alone."}, []string{"how"}),
		rejoins:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "respawn_gateway_link_joins_total", Help: "Sessions attached to a new link of their scene, by how: joined, or skipped (a failover; the restored scene holds the attach)."}, []string{"how"}),
	}
	m.repliesOK = m.replies.WithLabelValues(gwproto.CodeOK.String())
	// The label values are known: export them at zero, so rate() and
	// alerts see a series before the first event.
	for _, r := range []string{"ok", "failed", "refused"} {
		m.logins.WithLabelValues(r)
		m.resumes.WithLabelValues(r)
	}
	for _, h := range []string{"joined", "skipped"} {
		m.rejoins.WithLabelValues(h)
	}
	for _, h := range []string{"carried", "alone"} {
		m.positions.WithLabelValues(h)
	}
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "respawn_gateway_sessions", Help: "Sessions on this gateway, connected or waiting for a resume."},
		func() float64 { return float64(g.reg.count()) })
	for _, c := range []prometheus.Collector{m.conns, m.refused, m.slow, m.held, m.pushes, m.logins, m.resumes, m.replies, m.closes, m.latency, m.expired, m.resends, m.rejoins, m.positions, sessions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("gateway metrics: %w", err)
		}
	}
	return m, nil
}
