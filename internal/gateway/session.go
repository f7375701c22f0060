package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/scenelink"
	"github.com/respawn-dev/respawn/internal/token"
)

// Session is one player's session on this gateway. It outlives its
// connection: a dropped client has SessionTTL to resume it. Requests go to
// the scene one at a time and in order, so the scene sees strictly
// increasing seqs. A request arriving while the session has none in
// flight and is joined on its scene's current link is sent straight from
// the client's reader goroutine and answered from the link's reader
// (direct): no hand-off to the worker either way. Anything else, and any
// direct request the link fails or the scene does not answer plainly
// (not in the scene, moved), goes through the worker goroutine, which
// follows failovers and travel.
type Session struct {
	g       *Gateway
	player  string
	id      string
	limiter *rate.Limiter
	log     *zap.Logger
	wake    chan struct{}
	done    chan struct{}
	// quiet is closed once the worker, told to stop relaying (a drain),
	// has no request in flight.
	quiet     chan struct{}
	quietOnce sync.Once

	mu       sync.Mutex // guards the fields below
	conn     *clientConn
	ready    *clientConn // the connection that got SESSION: frames go to conn only once ready == conn
	scene    string
	queue    []*pending
	direct   *pending        // the request sent directly, awaiting its answer
	redo     *pending        // a direct request the worker must relay (before the queue, even when moving)
	inflight map[uint64]bool // seqs queued or being relayed
	joined   *linkEntry      // the link the session is joined on
	// attached is the scene whose state holds this session's attach: it
	// answered a join of it. The attach is logged before that answer, so
	// a new process of the same scene restores it, and after a failover
	// the session's requests go to the new link without joining again.
	attached string
	ended    bool   // replaced, taken elsewhere, expired or logged out: the worker stops
	expiring bool   // removed by the TTL, about to end: no resume may attach
	leave    bool   // take the player out of the scene when the worker stops
	moving   bool   // the gateway drains: relay nothing more, the client resends it elsewhere
	gen      uint64 // bumped on every attach/detach: stale TTL timers do nothing
	x, y     int    // last known position (for the position filter)
	hasPos   bool
	endOnce  sync.Once
}

type pending struct {
	seq      uint64
	op       []byte
	enqueued time.Time
	held     string // process whose hold counts this request; "" = not held
	// abandoned: a direct request not answered within the hold time, for
	// which the client was told so; its late answer is dropped.
	abandoned bool
}

func (s *Session) String() string { return s.player + "/" + s.id }

// registry is every session of this gateway, by player: never two for one
// player. All replacement decisions are made under its lock, and cleanup
// of an old connection or session only acts if it is still the current
// one, so a quick reconnect can never lose its new session to the old
// connection's cleanup.
type registry struct {
	g        *Gateway
	mu       sync.Mutex
	byPlayer map[string]*Session
	byScene  map[string]map[*Session]struct{}
}

func newRegistry(g *Gateway) *registry {
	return &registry{g: g, byPlayer: map[string]*Session{}, byScene: map[string]map[*Session]struct{}{}}
}

func (r *registry) newSession(player, id, scene string, c *clientConn) *Session {
	cfg := r.g.cfg
	return &Session{g: r.g, player: player, id: id, scene: scene, conn: c,
		limiter:  rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		log:      r.g.log.With(zap.String("player", player), zap.String("session", id)),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		quiet:    make(chan struct{}),
		inflight: map[uint64]bool{},
	}
}

// install makes s the player's session and returns the one it replaced.
func (r *registry) install(s *Session) (old *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old = r.byPlayer[s.player]
	if old != nil {
		r.unindexLocked(old)
	}
	r.byPlayer[s.player] = s
	r.indexLocked(s)
	return old
}

// remove drops s if it is still its player's session.
func (r *registry) remove(s *Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byPlayer[s.player] != s {
		return false
	}
	delete(r.byPlayer, s.player)
	r.unindexLocked(s)
	return true
}

func (r *registry) indexLocked(s *Session) {
	s.mu.Lock()
	scene := s.scene
	s.mu.Unlock()
	m := r.byScene[scene]
	if m == nil {
		m = map[*Session]struct{}{}
		r.byScene[scene] = m
	}
	m[s] = struct{}{}
}

func (r *registry) unindexLocked(s *Session) {
	for scene, m := range r.byScene {
		if _, ok := m[s]; ok {
			delete(m, s)
			if len(m) == 0 {
				delete(r.byScene, scene)
			}
		}
	}
}

// moved re-indexes s under its new scene.
func (r *registry) moved(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byPlayer[s.player] != s {
		return
	}
	r.unindexLocked(s)
	r.indexLocked(s)
}

func (r *registry) get(player string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byPlayer[player]
}

// inScene returns the sessions in scene.
func (r *registry) inScene(scene string) []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Session, 0, len(r.byScene[scene]))
	for s := range r.byScene[scene] {
		out = append(out, s)
	}
	return out
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byPlayer)
}

// login creates a new session for player on c, replacing any session the
// player has here (its client is told why and closed) and, through the
// scene and the announcement, anywhere else.
func (r *registry) login(ctx context.Context, player string, c *clientConn) (*Session, error) {
	s, _, err := r.start(ctx, player, newID(), c, "logged in again on another connection", false)
	if err != nil {
		return nil, err
	}
	s.log.Info("logged in", zap.String("scene", s.currentScene()))
	return s, nil
}

// start makes a new local session id for player on c, joined to the
// player's scene: it replaces (with reason replaced) any session the
// player has here and announces itself so other gateways drop theirs.
func (r *registry) start(ctx context.Context, player, id string, c *clientConn, replaced string, resumed bool) (*Session, scenelink.JoinResult, error) {
	scene, err := r.g.loc.locate(ctx, player)
	if err != nil {
		return nil, scenelink.JoinResult{}, &gwproto.Error{Code: gwproto.CodeLoginFailed, Msg: err.Error()}
	}
	s := r.newSession(player, id, scene, c)
	if old := r.install(s); old != nil {
		old.end(gwproto.CodeSessionReplaced, replaced, false)
	}
	r.g.ann.announce(player, s.id)
	jr, err := s.joinNow(ctx)
	if err != nil {
		if r.remove(s) {
			s.end(gwproto.CodeOK, "", false)
		}
		return nil, scenelink.JoinResult{}, &gwproto.Error{Code: gwproto.CodeLoginFailed, Msg: err.Error()}
	}
	go s.work()
	s.sendSession(c, jr, resumed)
	return s, jr, nil
}

// resume attaches c to the session r names: the one here if this gateway
// still has it, else a new local session with the same id (its gateway
// died), re-joined to the player's scene.
func (r *registry) resume(ctx context.Context, rt token.Resume, c *clientConn) (*Session, error) {
	if s := r.get(rt.Player); s != nil {
		if s.id != rt.Session {
			return nil, &gwproto.Error{Code: gwproto.CodeResumeFailed, Msg: "the player has a newer session: log in again"}
		}
		old, ok := s.attach(c)
		if !ok {
			return nil, &gwproto.Error{Code: gwproto.CodeResumeFailed, Msg: "the session ended: log in again"}
		}
		if old != nil {
			old.closeWith(gwproto.CodeSessionReplaced, "the session was resumed on another connection")
		}
		s.mu.Lock()
		jr := scenelink.JoinResult{Scene: s.scene}
		s.mu.Unlock()
		// The scene's record tells the client what was applied.
		if j, err := s.joinNow(ctx); err == nil {
			jr = j
		}
		s.sendSession(c, jr, true)
		s.log.Info("resumed on the same gateway")
		return s, nil
	}
	s, jr, err := r.start(ctx, rt.Player, rt.Session, c, "resumed on another connection", true)
	if err != nil {
		return nil, err
	}
	s.log.Info("resumed from another gateway", zap.String("scene", s.currentScene()), zap.Uint64("last_seq", jr.LastSeq))
	return s, nil
}

// detach is the cleanup of connection c: if c is still s's connection,
// the session waits SessionTTL for a resume, then leaves its scene.
func (r *registry) detach(s *Session, c *clientConn) {
	s.mu.Lock()
	if s.conn != c || s.ended {
		s.mu.Unlock()
		return
	}
	s.conn = nil
	s.gen++
	gen := s.gen
	s.mu.Unlock()
	// A little past the resume token's expiry, so a resume with a valid
	// token always finds the player still in the scene.
	time.AfterFunc(r.g.cfg.SessionTTL+r.g.resumeGrace, func() { r.expire(s, gen) })
}

func (r *registry) expire(s *Session, gen uint64) {
	if !r.expired(s, gen) {
		return
	}
	// A resume on another gateway is announced; if that announcement was
	// lost, taking the player out would cut them off there. Ask first.
	elsewhere, asked := r.g.ann.servedElsewhere(s.player, s.id)
	if !r.removeExpired(s, gen) {
		return // resumed meanwhile
	}
	switch {
	case elsewhere:
		s.log.Info("session expired here but another gateway serves it")
		s.end(gwproto.CodeOK, "", false)
	case !asked:
		s.log.Warn("session expired; NATS unreachable, so the player stays in the scene rather than risk cutting off a resume elsewhere")
		s.end(gwproto.CodeOK, "", false)
	default:
		s.log.Info("session expired: leaving the scene")
		s.end(gwproto.CodeOK, "", true)
	}
}

// expired reports whether s is still detached since the drop numbered gen.
func (r *registry) expired(s *Session, gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen == gen && s.conn == nil && !s.ended
}

// removeExpired removes s if it is still the player's session and still
// detached since the drop numbered gen, atomically with respect to a
// resume (which then finds the session ended).
func (r *registry) removeExpired(s *Session, gen uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.mu.Lock()
	ok := s.gen == gen && s.conn == nil && !s.ended && r.byPlayer[s.player] == s
	if ok {
		s.expiring = true // attach fails from now on
	}
	s.mu.Unlock()
	if ok {
		delete(r.byPlayer, s.player)
		r.unindexLocked(s)
	}
	return ok
}

// logout ends s at its client's request: the player leaves the scene.
func (r *registry) logout(s *Session, c *clientConn) {
	s.mu.Lock()
	mine := s.conn == c
	s.mu.Unlock()
	if mine && r.remove(s) {
		s.end(gwproto.CodeOK, "", true)
	}
}

// takenElsewhere ends the player's session here because another gateway
// logged them in or resumed them: no leave, the scene has them.
func (r *registry) takenElsewhere(player, session string) {
	s := r.get(player)
	if s == nil {
		return
	}
	if r.remove(s) {
		s.log.Info("session taken by another gateway", zap.String("new_session", session))
		s.end(gwproto.CodeSessionReplaced, "logged in or resumed on another gateway", false)
	}
}

// closeAll closes every client (the gateway is stopping). Sessions stay
// in their scenes for the clients to resume elsewhere.
func (r *registry) closeAll() {
	r.mu.Lock()
	all := make([]*Session, 0, len(r.byPlayer))
	for _, s := range r.byPlayer {
		all = append(all, s)
	}
	r.byPlayer = map[string]*Session{}
	r.byScene = map[string]map[*Session]struct{}{}
	r.mu.Unlock()
	for _, s := range all {
		s.end(gwproto.CodeShuttingDown, "gateway stopping: resume on another gateway", false)
	}
}

// attach makes c the session's connection and returns the previous one.
func (s *Session) attach(c *clientConn) (old *clientConn, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.expiring {
		return nil, false
	}
	old, s.conn = s.conn, c
	s.gen++
	return old, true
}

// end stops the session once: its client (if any) gets CLOSE code, its
// worker stops after the request in flight; with leave, the worker then
// takes the player out of the scene.
func (s *Session) end(code gwproto.Code, msg string, leave bool) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.ended, s.leave = true, leave
		c := s.conn
		s.conn = nil
		dropped := s.queue
		s.queue = nil
		if s.redo != nil {
			dropped = append(dropped, s.redo)
			s.redo = nil
		}
		s.mu.Unlock()
		for _, p := range dropped {
			s.g.rt.unhold(p)
		}
		if c != nil && (code != gwproto.CodeOK || msg != "") {
			c.closeWith(code, msg)
		}
		close(s.done)
	})
}

func (s *Session) currentScene() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scene
}

// sendSession tells c it is logged in.
func (s *Session) sendSession(c *clientConn, jr scenelink.JoinResult, resumed bool) {
	tok, err := token.IssueResume(s.g.opt.Secret, token.Resume{Player: s.player, Session: s.id, Expires: s.g.now().Add(s.g.cfg.SessionTTL)})
	if err != nil {
		s.log.Error("issue resume token", zap.Error(err))
	}
	s.notePos(jr.State)
	c.send(gwproto.TypeSession, gwproto.CodeOK, 0, gwproto.Session{
		Player: s.player, Session: s.id, ResumeToken: tok, Scene: s.currentScene(),
		LastSeq: jr.LastSeq, Resumed: resumed, State: jr.State,
	})
	s.mu.Lock()
	s.ready = c
	s.mu.Unlock()
}

// live returns the connection to send replies and pushes to: nil while
// there is none or it has not had its SESSION yet (a reply dropped then is
// resent by the client after SESSION, and answered from the scene's
// record).
func (s *Session) live() *clientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn != s.ready {
		return nil
	}
	return s.conn
}

// refreshResume sends the client a fresh resume token. A token expires
// SessionTTL after it was issued, and the gateway refreshes it well
// within that, so a valid token proves the session had not expired.
func (s *Session) refreshResume() {
	c := s.live()
	if c == nil {
		return
	}
	tok, err := token.IssueResume(s.g.opt.Secret, token.Resume{Player: s.player, Session: s.id, Expires: s.g.now().Add(s.g.cfg.SessionTTL)})
	if err != nil {
		return
	}
	data, _ := json.Marshal(map[string]string{"token": tok})
	c.sendRaw(pushFrame("resume_token", s.currentScene(), data))
}

// enqueue admits a request. A seq already queued or in flight (a resend
// after a reconnect to this gateway) is not queued twice: its reply goes
// to the current connection.
func (s *Session) enqueue(seq uint64, op []byte) (gwproto.Code, string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return gwproto.CodeUnavailable, "session ending"
	}
	if s.inflight[seq] {
		s.mu.Unlock()
		s.g.m.resends.Inc()
		return gwproto.CodeOK, ""
	}
	if len(s.inflight) >= s.g.cfg.Window {
		s.mu.Unlock()
		return gwproto.CodeWindowFull, fmt.Sprintf("%d requests unanswered: wait for replies", len(s.inflight))
	}
	p := &pending{seq: seq, op: op, enqueued: time.Now()}
	scene, joined := s.scene, s.joined
	idle := len(s.inflight) == 0 && !s.moving && joined != nil
	s.mu.Unlock()
	if idle && s.g.rt.current(scene) == joined && s.sendDirect(p, scene, joined) {
		return gwproto.CodeOK, ""
	}
	// A request for a scene that is down is held: bounded per process.
	if s.g.rt.down(scene) {
		if !s.g.rt.hold(scene, p) {
			return gwproto.CodeUnavailable, "too many requests held for a scene that is down; resend later with the same seq"
		}
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		s.g.rt.unhold(p)
		return gwproto.CodeUnavailable, "session ending"
	}
	s.inflight[seq] = true
	s.queue = append(s.queue, p)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return gwproto.CodeOK, ""
}

// sendDirect sends p on le, the session's joined link, from the caller's
// goroutine, if the session still has nothing in flight and the link has a
// free slot; false means p was not taken (the caller queues it).
func (s *Session) sendDirect(p *pending, scene string, le *linkEntry) bool {
	s.mu.Lock()
	if s.ended || s.moving || len(s.inflight) > 0 || s.joined != le || s.scene != scene {
		s.mu.Unlock()
		return false
	}
	s.direct = p
	s.inflight[p.seq] = true
	s.mu.Unlock()
	req := scenelink.Req{Scene: scene, Player: s.player, Session: s.id, Seq: p.seq, Op: p.op}
	if le.c.TryGo(req, func(rep scenelink.Reply, err error) { s.directDone(p, le, rep, err) }) {
		return true
	}
	// No slot free: the worker relays it. It stays in flight, first in
	// line, so a request that came meanwhile cannot overtake it.
	s.mu.Lock()
	if s.direct == p {
		s.direct = nil
		if s.ended {
			delete(s.inflight, p.seq)
		} else {
			s.redo = p
		}
	}
	s.mu.Unlock()
	s.wakeWorker()
	return true
}

// directDone takes the scene's answer to a direct request (on the link's
// reader goroutine: it must not block). A plain answer goes to the client;
// a lost link or a player not in the scene hands the request to the
// worker, which resends it (the scene answers a seq once).
func (s *Session) directDone(p *pending, le *linkEntry, rep scenelink.Reply, err error) {
	g := s.g
	linkLost := err != nil && !errors.Is(err, scenelink.ErrBadRequest)
	handOver := linkLost || (err == nil && (rep.Code == game.ErrNotInScene || rep.Moved != ""))
	if linkLost && s.isDirect(p) {
		s.unjoin(le)
		g.rt.broken(le)
		g.crash.Hit(crashpoint.GatewayResend)
	}
	s.mu.Lock()
	if !s.isDirectLocked(p) {
		s.mu.Unlock() // answered unavailable by the hold time already
		return
	}
	s.direct = nil
	if handOver {
		if s.ended || (linkLost && g.breakResend) {
			// Ended: nobody to answer. The test hook (package testhook)
			// forgets the request, as a gateway without resend would;
			// the client never hears.
			delete(s.inflight, p.seq)
		} else {
			s.redo = p
		}
		s.mu.Unlock()
		s.wakeWorker()
		return
	}
	delete(s.inflight, p.seq)
	// Only a worker with something to do is woken: waking it per request
	// is the cost the direct relay saves.
	wake := len(s.queue) > 0 || s.moving || s.ended
	s.mu.Unlock()
	if errors.Is(err, scenelink.ErrBadRequest) {
		s.log.Warn("the scene refused the request as malformed", zap.Uint64("seq", p.seq), zap.Error(err))
		rep, err = scenelink.Reply{Seq: p.seq, Code: game.ErrBadRequest, Error: err.Error()}, nil
	}
	s.answer(p, p.enqueued, rep, err)
	if wake {
		s.wakeWorker()
	}
}

// expireDirect answers a direct request the scene has not answered within
// the hold time as the worker answers one it gave up on; its late answer
// is dropped.
func (s *Session) expireDirect(now time.Time) {
	s.mu.Lock()
	p := s.direct
	if p == nil || now.Before(p.enqueued.Add(s.g.cfg.HoldTimeout)) {
		s.mu.Unlock()
		return
	}
	p.abandoned = true
	s.direct = nil
	delete(s.inflight, p.seq)
	s.mu.Unlock()
	s.answer(p, p.enqueued, scenelink.Reply{}, fmt.Errorf("scene %s: no answer: %w", s.currentScene(), context.DeadlineExceeded))
}

// isDirect reports whether p is still the session's direct request (not
// given up on at the hold time).
func (s *Session) isDirect(p *pending) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isDirectLocked(p)
}

func (s *Session) isDirectLocked(p *pending) bool { return !p.abandoned && s.direct == p }

func (s *Session) wakeWorker() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// work relays queued requests until the session ends.
func (s *Session) work() {
	g := s.g
	// The tick refreshes the resume token every SessionTTL/4 and gives up
	// on a direct request unanswered past the hold time.
	every := max(min(g.cfg.SessionTTL/4, g.cfg.HoldTimeout/4), 10*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	nextRefresh := time.Now().Add(max(g.cfg.SessionTTL/4, 10*time.Millisecond))
	for {
		s.mu.Lock()
		var p *pending
		if !s.ended && s.direct == nil {
			switch {
			case s.redo != nil:
				// A direct request the link failed: it was in flight,
				// so it is relayed even when moving.
				p, s.redo = s.redo, nil
			case len(s.queue) > 0 && !s.moving:
				p = s.queue[0]
				s.queue = s.queue[1:]
			}
		}
		ended, leave, moving, busy := s.ended, s.leave, s.moving, s.direct != nil
		s.mu.Unlock()
		if p != nil {
			s.relay(p)
			continue
		}
		done := s.done
		switch {
		case ended && busy:
			// Wait for the direct request's answer (its completion
			// wakes us) before taking the player out: s.done is closed.
			done = nil
		case ended:
			if leave {
				s.leaveScene()
			}
			return
		case moving && !busy:
			s.quietOnce.Do(func() { close(s.quiet) })
		}
		select {
		case <-s.wake:
		case <-done:
		case now := <-tick.C:
			s.expireDirect(now)
			if !now.Before(nextRefresh) {
				nextRefresh = now.Add(max(g.cfg.SessionTTL/4, 10*time.Millisecond))
				s.refreshResume()
			}
		}
	}
}

// errEnded stops a relay whose session ended.
var errEnded = errors.New("session ended")

// relay delivers one request to the scene, through failovers and travel,
// and its reply to the client.
func (s *Session) relay(p *pending) {
	g := s.g
	deadline := p.enqueued.Add(g.cfg.HoldTimeout)
	start := time.Now()
	rep, err := s.roundTrip(p, deadline)
	g.rt.unhold(p)
	s.mu.Lock()
	delete(s.inflight, p.seq)
	s.mu.Unlock()
	if errors.Is(err, errEnded) {
		return
	}
	s.answer(p, start, rep, err)
}

// answer tells the client the outcome of p, relayed since start: the
// scene's reply, or err (not answered within the hold time).
func (s *Session) answer(p *pending, start time.Time, rep scenelink.Reply, err error) {
	g := s.g
	c := s.live()
	var code gwproto.Code
	var body any
	switch {
	case err != nil:
		s.log.Warn("request not answered within the hold time", zap.Uint64("seq", p.seq), zap.String("scene", s.currentScene()), zap.Error(err))
		code = gwproto.CodeUnavailable
		g.m.expired.Inc()
		body = gwproto.ErrorBody{Error: "the scene did not answer within the hold time; resend with the same seq: " + err.Error()}
	case rep.Code == "":
		code, body = gwproto.CodeOK, []byte(rep.Body)
	case rep.Code == game.ErrSessionReplaced:
		s.log.Info("the scene says a newer session took the player")
		if s.g.reg.remove(s) {
			s.end(gwproto.CodeSessionReplaced, "logged in again elsewhere", false)
		}
		return
	case rep.Code == game.ErrSeqTooFar:
		// The gateway relays seqs in order and clients number them one by
		// one, so the scene's record is behind: it lost this session (the
		// player was taken out and entered again). The session cannot go
		// on; the client must log in again rather than resume it.
		s.log.Warn("the scene's record of the session is behind its seqs: ending the session", zap.Uint64("seq", p.seq), zap.String("error", rep.Error))
		if c != nil {
			c.send(gwproto.TypeReply, gwproto.CodeSeqTooFar, p.seq, gwproto.ErrorBody{Reason: rep.Code, Error: rep.Error})
		}
		if s.g.reg.remove(s) {
			s.end(gwproto.CodeResumeFailed, "the scene lost this session's record: log in again", false)
		}
		return
	default:
		code, body = gameCode(rep.Code), gwproto.ErrorBody{Reason: rep.Code, Error: rep.Error}
	}
	if code == gwproto.CodeOK {
		g.m.repliesOK.Inc()
	} else {
		g.m.replies.WithLabelValues(code.String()).Inc()
	}
	g.m.latency.Observe(time.Since(start).Seconds())
	if err == nil {
		g.crash.Hit(crashpoint.GatewayBeforeReply)
	}
	if c != nil {
		c.send(gwproto.TypeReply, code, p.seq, body)
	}
}

func gameCode(code string) gwproto.Code {
	switch code {
	case game.ErrSeqReused:
		return gwproto.CodeSeqReused
	case game.ErrSeqTooOld:
		return gwproto.CodeSeqTooOld
	case game.ErrSeqTooFar:
		return gwproto.CodeSeqTooFar
	}
	return gwproto.CodeGameError
}

// roundTrip sends p until the scene answers it or the hold deadline
// passes: a lost link is followed to the scene's next process, a player
// who travelled is followed to the next scene.
func (s *Session) roundTrip(p *pending, deadline time.Time) (scenelink.Reply, error) {
	g := s.g
	ctx, cancel := context.WithDeadline(g.ctx, deadline)
	defer cancel()
	var last error
	notIn := 0 // not_in_scene answers to this request
	for attempt := 0; ; attempt++ {
		changed := g.rt.changes()
		select {
		case <-s.done:
			return scenelink.Reply{}, errEnded
		default:
		}
		if ctx.Err() != nil {
			if last == nil {
				last = ctx.Err()
			}
			return scenelink.Reply{}, last
		}
		if attempt > 0 && p.held == "" && !g.rt.hold(s.currentScene(), p) {
			return scenelink.Reply{}, fmt.Errorf("hold limit reached: %w", last)
		}
		le, err := s.ensureJoined(ctx)
		if err != nil {
			last = err
			g.rt.backoff(ctx, attempt, changed)
			continue
		}
		s.mu.Lock()
		scene := s.scene
		s.mu.Unlock()
		rep, err := le.c.Request(ctx, scenelink.Req{Scene: scene, Player: s.player, Session: s.id, Seq: p.seq, Op: p.op})
		if err != nil {
			last = err
			if errors.Is(err, scenelink.ErrBadRequest) {
				s.log.Warn("the scene refused the request as malformed", zap.Uint64("seq", p.seq), zap.String("scene", scene), zap.Error(err))
				return scenelink.Reply{Seq: p.seq, Code: game.ErrBadRequest, Error: err.Error()}, nil
			}
			s.unjoin(le)
			g.rt.broken(le)
			g.crash.Hit(crashpoint.GatewayResend)
			if g.breakResend {
				// Test hook (package testhook): forget the request, as a
				// gateway without resend would; the client never hears.
				return scenelink.Reply{}, errEnded
			}
			g.rt.backoff(ctx, attempt, changed)
			continue
		}
		if rep.Code == game.ErrNotInScene || rep.Moved != "" {
			last = fmt.Errorf("player %s is not in scene %s", s.player, scene)
			if notIn++; notIn == 1 {
				// Join the scene we thought they were in first: for a
				// player travelling away its join waits until the
				// destination has them, then names it. Joining the
				// destination straight away could race the transfer and
				// enter the player there without their session record.
				s.notAttached(le, scene)
				continue
			}
			if err := s.follow(ctx, rep.Moved); err != nil {
				last = err
				g.rt.backoff(ctx, attempt, changed)
			}
			continue
		}
		return rep, nil
	}
}

// ensureJoined returns the link of the session's scene, joining the
// session there first if it is not joined on that link (a new process, a
// new scene).
func (s *Session) ensureJoined(ctx context.Context) (*linkEntry, error) {
	for hops := 0; hops < 8; hops++ {
		s.mu.Lock()
		scene, joined, attached := s.scene, s.joined, s.attached
		s.mu.Unlock()
		le, err := s.g.rt.link(ctx, scene)
		if err != nil {
			return nil, err
		}
		if joined == le {
			return le, nil
		}
		if attached == scene {
			// A failover: the scene's new process restored this session's
			// record from its log (its dedupe included), so a resend needs
			// no join. A scene that does not know the session after all
			// answers not_in_scene (the player is not there: we join then)
			// or session_replaced (a newer session took the player).
			s.mu.Lock()
			if s.scene == scene {
				s.joined = le
			}
			s.mu.Unlock()
			s.g.m.rejoins.WithLabelValues("skipped").Inc()
			return le, nil
		}
		jr, err := le.c.Join(ctx, scene, s.player, s.id)
		if err != nil {
			if !errors.Is(err, scenelink.ErrBadRequest) && !errors.Is(err, scenelink.ErrRefused) && !errors.Is(err, scenelink.ErrNoScene) {
				s.g.rt.broken(le)
			}
			return nil, err
		}
		if jr.Moved != "" && jr.Moved != scene {
			s.setScene(jr.Moved)
			continue
		}
		s.mu.Lock()
		if s.scene == scene {
			s.joined, s.attached = le, scene
		}
		s.mu.Unlock()
		s.g.m.rejoins.WithLabelValues("joined").Inc()
		return le, nil
	}
	return nil, fmt.Errorf("player %s: too many scene moves while joining", s.player)
}

// joinNow joins the session to its scene, waiting out a scene failover
// within ctx.
func (s *Session) joinNow(ctx context.Context) (scenelink.JoinResult, error) {
	var last error
	for attempt := 0; ; attempt++ {
		changed := s.g.rt.changes()
		if ctx.Err() != nil {
			if last == nil {
				last = ctx.Err()
			}
			return scenelink.JoinResult{}, fmt.Errorf("join player %s to scene %s: %w", s.player, s.currentScene(), last)
		}
		s.mu.Lock()
		scene := s.scene
		s.mu.Unlock()
		le, err := s.g.rt.link(ctx, scene)
		if err != nil {
			last = err
			s.g.rt.backoff(ctx, attempt, changed)
			continue
		}
		jr, err := le.c.Join(ctx, scene, s.player, s.id)
		if err != nil {
			last = err
			if errors.Is(err, scenelink.ErrBadRequest) {
				return jr, err
			}
			if !errors.Is(err, scenelink.ErrRefused) && !errors.Is(err, scenelink.ErrNoScene) {
				s.g.rt.broken(le)
			}
			s.g.rt.backoff(ctx, attempt, changed)
			continue
		}
		if jr.Moved != "" && jr.Moved != scene {
			s.setScene(jr.Moved)
			continue
		}
		s.mu.Lock()
		s.joined, s.attached = le, scene
		s.mu.Unlock()
		return jr, nil
	}
}

// follow moves the session to where the player went: moved if the scene
// said, else where the data server says.
func (s *Session) follow(ctx context.Context, moved string) error {
	if moved == "" {
		where, err := s.g.loc.locate(ctx, s.player)
		if err != nil {
			return err
		}
		moved = where
	}
	s.setScene(moved)
	return nil
}

func (s *Session) setScene(scene string) {
	s.mu.Lock()
	changed := s.scene != scene
	from := s.scene
	s.scene = scene
	if changed {
		s.joined, s.attached = nil, ""
		s.hasPos = false
	}
	s.mu.Unlock()
	if changed {
		s.g.reg.moved(s)
		s.log.Info("session follows the player", zap.String("from", from), zap.String("to", scene))
	}
}

func (s *Session) unjoin(le *linkEntry) {
	s.mu.Lock()
	if s.joined == le {
		s.joined = nil
	}
	s.mu.Unlock()
}

// notAttached is told by a scene that does not have the player (or this
// session) where the session thought: the next try joins for real.
func (s *Session) notAttached(le *linkEntry, scene string) {
	s.mu.Lock()
	if s.joined == le {
		s.joined = nil
	}
	if s.attached == scene {
		s.attached = ""
	}
	s.mu.Unlock()
}

// notePos remembers the player's position from a move reply or a join.
func (s *Session) notePos(body []byte) {
	if len(body) == 0 || !bytes.Contains(body, []byte(`"x"`)) {
		return
	}
	var p struct {
		X *int `json:"x"`
		Y *int `json:"y"`
	}
	if json.Unmarshal(body, &p) != nil || p.X == nil || p.Y == nil {
		return
	}
	s.mu.Lock()
	s.x, s.y, s.hasPos = *p.X, *p.Y, true
	s.mu.Unlock()
}

// leaveHolds is how many hold timeouts a leave may take in all.
const leaveHolds = 3

// leaveScene saves the player and takes them out of their scene, unless a
// newer session has them (the scene checks that too).
func (s *Session) leaveScene() {
	// A few holds long: the scene may take a whole hold to answer a leave
	// whose final save waits on a data server that is coming back; the
	// retry (the player already out) finishes the release it kept.
	ctx, cancel := context.WithTimeout(context.Background(), leaveHolds*s.g.cfg.HoldTimeout)
	defer cancel()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		changed := s.g.rt.changes()
		scene := s.currentScene()
		le, err := s.g.rt.link(ctx, scene)
		if err == nil {
			actx, acancel := context.WithTimeout(ctx, s.g.cfg.HoldTimeout)
			err = le.c.Leave(actx, scene, s.player, s.id)
			acancel()
			if err == nil {
				s.log.Info("left the scene", zap.String("scene", scene))
				return
			}
			s.g.rt.broken(le)
		}
		s.g.rt.backoff(ctx, attempt, changed)
	}
	s.log.Warn("could not take the player out of the scene; the scene keeps them", zap.String("scene", s.currentScene()))
}
