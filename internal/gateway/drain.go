package gateway

import (
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/gwproto"
)

// drainTick is how often the drain looks for connections it has not told
// yet (a login that finished after the first pass) and whether every
// client has gone.
const drainTick = 10 * time.Millisecond

// DrainResult is what one drain did.
type DrainResult struct {
	// Moved is the sessions told to move once their request in flight was
	// answered; Forced those told at the deadline with one still in
	// flight (the client resends it with the same seq on resume, and the
	// scene answers it once).
	Moved, Forced int
	// Closed is the connections without a session (handshake) closed.
	Closed int
	// Left is the connections still open when the drain ended (closed at
	// once afterwards).
	Left int
	Took time.Duration
}

// drain is the first half of a shutdown: stop accepting, tell every
// client to move (CLOSE shutting_down with move_to) once the request its
// session is relaying has been answered, spacing the moves out at
// DrainRate per second (faster if needed to be done in half the drain
// timeout), and wait for every connection to end or the drain timeout.
// Sessions are ended without leaving their scenes: their clients resume
// them on another gateway.
func (g *Gateway) drain() DrainResult {
	began := time.Now()
	g.draining.Store(true)
	// No new connections: a client dialling now goes to another gateway.
	if g.tcp != nil {
		g.tcp.Close()
	}
	if g.wsSrv != nil {
		// Closes the listener and idle HTTP connections; upgraded
		// WebSocket connections are ours and stay open.
		g.wsSrv.Close()
	}
	res := DrainResult{}
	timeout := g.cfg.DrainTimeout
	if timeout <= 0 {
		res.Left = g.limits.count()
		res.Took = time.Since(began)
		return res
	}
	deadline := began.Add(timeout)
	conns := g.limits.snapshot()
	spread := time.Duration(0)
	if n := len(conns); n > 1 && g.cfg.DrainRate > 0 {
		spread = min(time.Duration(n-1)*time.Second/time.Duration(g.cfg.DrainRate), timeout/2)
	}
	g.log.Info("draining: clients are told to move", zap.Int("connections", len(conns)), zap.Int("sessions", g.reg.count()),
		zap.String("move_to", g.opt.MoveTo), zap.Duration("spread", spread), zap.Duration("timeout", timeout))
	var mu sync.Mutex // guards res's counters, written by the movers
	var movers sync.WaitGroup
	told := make(map[*clientConn]bool, len(conns))
	tell := func(c *clientConn, owners map[*clientConn]*Session) {
		told[c] = true
		s := owners[c]
		if s == nil {
			c.closeWith(gwproto.CodeShuttingDown, "gateway stopping")
			res.Closed++
			return
		}
		movers.Add(1)
		go func() {
			defer movers.Done()
			forced := g.moveSession(s, deadline)
			mu.Lock()
			if forced {
				res.Forced++
			} else {
				res.Moved++
			}
			mu.Unlock()
		}()
	}
	owners := g.reg.owners()
	for i, c := range conns {
		if spread > 0 && i > 0 {
			at := began.Add(spread * time.Duration(i) / time.Duration(len(conns)-1))
			if d := time.Until(at); d > 0 {
				time.Sleep(d) // pacing the moves is the point
			}
		}
		tell(c, owners)
	}
	// Connections that got their session after the snapshot, and waiting
	// for every connection to end.
	t := time.NewTicker(drainTick)
	defer t.Stop()
	for time.Now().Before(deadline) {
		owners = g.reg.owners()
		open := g.limits.snapshot()
		for _, c := range open {
			if !told[c] {
				tell(c, owners)
			}
		}
		if len(open) == 0 {
			break
		}
		<-t.C
	}
	movers.Wait() // each returns by the deadline
	res.Left = g.limits.count()
	res.Took = time.Since(began)
	g.log.Info("drained", zap.Int("moved", res.Moved), zap.Int("forced", res.Forced), zap.Int("closed", res.Closed),
		zap.Int("left", res.Left), zap.Duration("took", res.Took))
	return res
}

// moveSession tells s's client to move once the request its worker is
// relaying (if any) has been answered, or at deadline; it reports whether
// it had to stop waiting. Requests queued behind are not relayed here:
// the client resends them on the next gateway with their seqs, so the old
// and the new gateway never relay the same session to the scene at once.
func (g *Gateway) moveSession(s *Session, deadline time.Time) (forced bool) {
	quiet := s.stopRelaying()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-quiet:
	case <-s.done: // ended meanwhile (replaced, taken elsewhere)
		return false
	case <-timer.C:
		forced = true
	}
	if g.reg.remove(s) {
		s.end(gwproto.CodeShuttingDown, "gateway stopping: resume on another gateway", false)
	}
	return forced
}

// stopRelaying makes the worker stop taking queued requests; the returned
// channel is closed once it relays none.
func (s *Session) stopRelaying() <-chan struct{} {
	s.mu.Lock()
	s.moving = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return s.quiet
}

// owners maps each connection to the session it serves.
func (r *registry) owners() map[*clientConn]*Session {
	r.mu.Lock()
	all := make([]*Session, 0, len(r.byPlayer))
	for _, s := range r.byPlayer {
		all = append(all, s)
	}
	r.mu.Unlock()
	m := make(map[*clientConn]*Session, len(all))
	for _, s := range all {
		s.mu.Lock()
		if s.conn != nil {
			m[s.conn] = s
		}
		s.mu.Unlock()
	}
	return m
}

// snapshot lists the open connections.
func (l *connLimits) snapshot() []*clientConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	all := make([]*clientConn, 0, len(l.open))
	for c := range l.open {
		all = append(all, c)
	}
	return all
}
