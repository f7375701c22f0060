package worldmgr

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/supervise"
	"github.com/respawn-dev/respawn/internal/version"
)

// The supervisor is every decision the manager makes about scene processes,
// as a state machine that does no I/O, the way etcd's raft does: events
// (a hello, a heartbeat, a closed connection, an exit, a tick with the
// current time, an operator's restart) go in; a Ready with the actions
// (welcome, exit, close, kill, spawn, persist epochs) comes out, and the
// manager's loop performs them. It never reads a clock, so every race —
// a stalled manager, a reconnect that overtakes its own close, two claims
// of one scene, a crash loop — is a table test.

// connID names one control connection; 0 is none.
type connID uint64

// actionKind is what the I/O side must do.
type actionKind int

const (
	// actWelcome: send a welcome on Conn.
	actWelcome actionKind = iota + 1
	// actExit: send exit (Reason) on Conn, then close it.
	actExit
	// actClose: close Conn without a word (superseded or silent).
	actClose
	// actKill: SIGKILL PID of process Name through the handle that ties it
	// to this cluster, wait until it is gone, then feed killDone.
	actKill
	// actSpawn: start process Name with Epoch and Restarts, then feed
	// spawned or spawnFailed.
	actSpawn
)

func (k actionKind) String() string {
	names := [...]string{"?", "welcome", "exit", "close", "kill", "spawn"}
	if int(k) < 0 || int(k) >= len(names) {
		return fmt.Sprintf("action(%d)", int(k))
	}
	return names[k]
}

type action struct {
	Kind     actionKind
	Name     string
	Conn     connID
	PID      int
	Epoch    uint64
	Restarts int
	Reason   string
	// Handoff marks an actExit that starts a planned handoff.
	Handoff bool
	// Standby marks an actSpawn of a warm spare (worldmgr.standby): feed
	// spareSpawned or spareFailed; on a handoff's actExit, that a spare
	// waits to take over (ctlproto.Exit.Standby).
	Standby bool
}

// ready is what the loop must do after the events fed since the last one,
// in order.
type ready struct {
	// Epochs, when not nil, must be persisted (fsync) BEFORE any spawn
	// below is performed: an epoch handed out must never be handed out
	// again, also after a crash of the manager.
	Epochs map[string]uint64
	// Actions, performed in order.
	Actions []action
	// Restarts counts respawns decided (a metric).
	Restarts int
	// Recovered: for each replacement that registered, the time from the
	// death being noticed to it running.
	Recovered []time.Duration
	// Stalls counts the manager's own stalls noticed.
	Stalls int
	// Stopped: the world was stopped and every scene process is gone.
	Stopped bool
	// Timeline: faults and recoveries, for the console's timeline.
	Timeline []TimelineEvent
}

func (r *ready) empty() bool {
	return r.Epochs == nil && len(r.Actions) == 0 && r.Restarts == 0 && len(r.Recovered) == 0 && r.Stalls == 0 && !r.Stopped && len(r.Timeline) == 0
}

// supervisorConfig is what the supervisor's decisions depend on.
type supervisorConfig struct {
	WorldMgr config.WorldMgr
	// Tick is how often the loop feeds tick; a tick later than this means
	// the manager itself was not running for the difference.
	Tick time.Duration
	// Processes: name → hosted scenes.
	Processes []config.Process
}

// slot is one scene process of the world: its scenes and the incarnation
// currently serving them.
type slot struct {
	name   string
	scenes []string

	state    string
	epoch    uint64
	pid      int
	addr     string
	link     string // the gateway link address
	since    time.Time
	replayMS float64
	version  version.Info
	players  map[string]int
	// reported is each scene's last report, for the states only the scene
	// process knows (corrupt) and their reasons.
	reported map[string]ctlproto.SceneReport
	hist     supervise.History

	conn connID
	// heard is when the current connection last said anything, in
	// manager-running time: stalls of the manager are added to it.
	heard time.Time
	// graceEnd: a running process without a connection may reconnect
	// until then.
	graceEnd  time.Time
	spawnedAt time.Time
	diedAt    time.Time
	// respawnAt is when the next incarnation may start; zero: none pending.
	respawnAt time.Time
	// dying is a previous incarnation being killed; the next one waits for
	// it to be gone (it holds the event log's lock).
	dying int
	// handoff: the current incarnation was told to exit for a planned
	// replacement (an upgrade); its exit is not a crash, and its successor
	// starts at once. handoffEnd: kill it if it has not exited by then.
	handoff    bool
	handoffEnd time.Time
	// The warm spare (worldmgr.standby): spareEpoch is handed out (and
	// persisted) when it is spawned, sparePID once it started. It waits
	// for the event log's lock and is promoted when the current
	// incarnation exits. spareAt: no new spare before then (backoff).
	spareEpoch uint64
	sparePID   int
	spareAt    time.Time
	// spareReady: the spare said it is ready (spareReady); only such a
	// spare is handed over to at once. spareFollows: it follows the live
	// log and caught up; one that cannot follow replays at the takeover,
	// so the old incarnation snapshots for it as it exits.
	spareReady   bool
	spareFollows bool
	// handoffWait: a planned handoff waits until then for its spare to be
	// ready before the current incarnation is told to exit; zero: none
	// waiting.
	handoffWait time.Time
	// discarded is a spare killed because the process failed: its hello,
	// if it got that far, is refused.
	discarded int
}

type supervisor struct {
	cfg   supervisorConfig
	log   *zap.Logger
	slots map[string]*slot
	names []string
	conns map[connID]string

	epochs      map[string]uint64
	epochsDirty bool

	recovering  bool
	recoveryEnd time.Time
	stopping    bool
	lastTick    time.Time

	rd ready
}

// newSupervisor starts in recovery: for the recovery window (none when
// fresh, i.e. no epoch was ever handed out) it only collects reports.
// epochs are the persisted highest epochs.
func newSupervisor(cfg supervisorConfig, log *zap.Logger, epochs map[string]uint64, fresh bool, now time.Time) *supervisor {
	s := &supervisor{
		cfg: cfg, log: log, slots: map[string]*slot{}, conns: map[connID]string{},
		epochs: maps.Clone(epochs), recovering: true, recoveryEnd: now, lastTick: now,
	}
	if s.epochs == nil {
		s.epochs = map[string]uint64{}
	}
	if !fresh {
		s.recoveryEnd = now.Add(cfg.WorldMgr.EffectiveRecoveryWindow())
	}
	for _, p := range cfg.Processes {
		s.slots[p.Name] = &slot{name: p.Name, scenes: p.Scenes, state: modules.SceneRecovering,
			players: map[string]int{}, reported: map[string]ctlproto.SceneReport{}}
		s.names = append(s.names, p.Name)
	}
	sort.Strings(s.names)
	return s
}

// takeReady returns what must be done and forgets it.
func (s *supervisor) takeReady() ready {
	if s.epochsDirty {
		s.rd.Epochs = maps.Clone(s.epochs)
		s.epochsDirty = false
	}
	rd := s.rd
	s.rd = ready{}
	return rd
}

func (s *supervisor) act(a action) { s.rd.Actions = append(s.rd.Actions, a) }

func (s *supervisor) slotLog(p *slot) *zap.Logger {
	return s.log.With(zap.String("process", p.name), zap.Int("scene_pid", p.pid), zap.Uint64("epoch", p.epoch))
}

// tick is the passage of time. A tick later than expected means the
// manager was not running (a stall, a GC or VM pause, SIGSTOP): that time
// is not held against anyone, and after a stall longer than the heartbeat
// timeout the manager suspects itself first and gives every scene a fresh
// grace period to report, as SWIM's Lifeguard does.
func (s *supervisor) tick(now time.Time) {
	if lag := now.Sub(s.lastTick) - s.cfg.Tick; lag > 0 {
		s.shift(now, lag)
		if lag > s.cfg.WorldMgr.HeartbeatTimeout {
			s.suspectSelf(now, lag)
		}
	}
	s.lastTick = now
	if s.recovering && !now.Before(s.recoveryEnd) {
		s.endRecovery(now)
	}
	w := s.cfg.WorldMgr
	for _, name := range s.names {
		p := s.slots[name]
		switch p.state {
		case modules.SceneStarting:
			if now.Sub(p.spawnedAt) > w.StartTimeout {
				s.died(p, fmt.Sprintf("did not register within worldmgr.start_timeout (%s)", w.StartTimeout), now, true)
			}
		case modules.SceneRunning:
			switch {
			case p.handoff:
				if now.After(p.handoffEnd) {
					s.died(p, fmt.Sprintf("did not exit within %s of being told to hand over", handoffTimeout), now, true)
				}
			case p.conn != 0 && now.Sub(p.heard) > w.HeartbeatTimeout:
				s.died(p, fmt.Sprintf("no heartbeat for %s (hung?)", now.Sub(p.heard).Round(time.Millisecond)), now, true)
			case p.conn == 0 && now.After(p.graceEnd):
				reason := "connection lost and not re-established within the grace period"
				if s.stopping {
					reason = fmt.Sprintf("did not exit within %s of being told to stop", stopTimeout)
				}
				s.died(p, reason, now, true)
			default:
				s.advanceHandoff(p, now)
				s.maybeSpare(p, now)
			}
		case modules.SceneDead:
			s.maybeRespawn(p, now)
		}
	}
	s.checkStopped()
}

// silence is the longest a running, connected scene process has said
// nothing: how close the slowest one is to worldmgr.heartbeat_timeout.
func (s *supervisor) silence(now time.Time) time.Duration {
	var worst time.Duration
	for _, p := range s.slots {
		if p.state == modules.SceneRunning && p.conn != 0 {
			worst = max(worst, now.Sub(p.heard))
		}
	}
	return worst
}

// shift moves every liveness deadline by the time the manager lost.
func (s *supervisor) shift(now time.Time, lag time.Duration) {
	later := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		if t = t.Add(lag); t.After(now) {
			return now
		}
		return t
	}
	for _, p := range s.slots {
		p.heard = later(p.heard)
		if !p.graceEnd.IsZero() {
			p.graceEnd = p.graceEnd.Add(lag)
		}
		p.spawnedAt = later(p.spawnedAt)
	}
	if s.recovering {
		s.recoveryEnd = s.recoveryEnd.Add(lag)
	}
}

func (s *supervisor) suspectSelf(now time.Time, lag time.Duration) {
	grace := s.cfg.WorldMgr.EffectiveRecoveryWindow()
	s.rd.Stalls++
	s.rd.Timeline = append(s.rd.Timeline, TimelineEvent{At: now, Process: "worldmgr", Kind: "stall",
		Reason: "the manager itself was not running; every scene gets a grace period", DurationMS: float64(lag) / float64(time.Millisecond)})
	s.log.Warn("world manager was not running; suspecting itself before any scene: every scene process gets a grace period to report",
		zap.Duration("stalled", lag.Round(time.Millisecond)), zap.Duration("grace", grace))
	for _, p := range s.slots {
		if p.state != modules.SceneRunning {
			continue
		}
		if p.heard.Before(now) {
			p.heard = now
		}
		if p.conn == 0 && p.graceEnd.Before(now.Add(grace)) {
			p.graceEnd = now.Add(grace)
		}
	}
	if s.recovering && s.recoveryEnd.Before(now.Add(grace)) {
		s.recoveryEnd = now.Add(grace)
	}
}

// endRecovery: every process that reported during the window is adopted;
// the others are dead and get respawned.
func (s *supervisor) endRecovery(now time.Time) {
	s.recovering = false
	var missing []string
	for _, name := range s.names {
		if s.slots[name].state == modules.SceneRecovering {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		s.log.Info("recovery window over", zap.Strings("missing", missing))
	}
	for _, name := range missing {
		p := s.slots[name]
		if p.epoch == 0 && s.epochs[name] == 0 {
			s.spawn(p, now) // never started: a first start, not a restart
			continue
		}
		s.died(p, "not reported after manager restart", now, false)
	}
}

// helloEvent is an authenticated hello. unverified says why its pid could
// not be tied to a scene process ("" when it could: one we spawned, or one
// whose executable, start time and command line match the hello).
type helloEvent struct {
	Conn       connID
	Hello      ctlproto.Hello
	Unverified string
}

// hello registers a scene process and arbitrates between claims.
func (s *supervisor) hello(now time.Time, ev helloEvent) {
	h := ev.Hello
	log := s.log.With(zap.String("process", h.Process), zap.Int("scene_pid", h.PID), zap.Uint64("epoch", h.Epoch))
	refuse := func(msg, reason string, f ...zap.Field) {
		log.Warn(msg, f...)
		s.act(action{Kind: actExit, Conn: ev.Conn, Name: h.Process, Reason: reason})
	}
	p, ok := s.slots[h.Process]
	switch {
	case !ok:
		refuse("unknown scene process registered; telling it to exit", "process "+h.Process+" is not in the world config")
		return
	case s.stopping:
		refuse("scene process registered while the world stops; telling it to exit", "world is stopping")
		return
	case ev.Unverified != "":
		// Never let a pid we cannot tie to a scene process into the table:
		// the table's pids are the ones we kill.
		refuse("refused a hello whose pid is not the process it describes; nothing changed",
			fmt.Sprintf("pid %d cannot be verified: %s", h.PID, ev.Unverified), zap.String("why", ev.Unverified))
		return
	case h.Epoch == 0 || h.Epoch > ctlproto.MaxEpoch:
		refuse("refused a hello with an epoch out of range", fmt.Sprintf("epoch %d outside 1..%d", h.Epoch, uint64(ctlproto.MaxEpoch)))
		return
	case h.Epoch > s.epochs[p.name]+1:
		// Epochs move forward by one per restart and every one is
		// persisted before its process starts: a bigger jump is forged or
		// corrupt, and believing it would push the epoch towards a wrap.
		refuse("refused a hello with an epoch ahead of any handed out",
			fmt.Sprintf("epoch %d is ahead of the highest epoch handed out for %s (%d) by more than one", h.Epoch, p.name, s.epochs[p.name]),
			zap.Uint64("max_epoch", s.epochs[p.name]))
		return
	}
	if p.discarded != 0 && h.PID == p.discarded {
		refuse("a discarded standby registered; telling it to exit", "standby discarded: the process failed")
		return
	}
	same := h.PID == p.pid && h.Epoch == p.epoch
	switch {
	case same && (p.state == modules.SceneDead || p.state == modules.SceneFailed):
		refuse("a process declared dead reconnected; telling it to exit", "declared dead")
		return
	case same:
		// The same incarnation: its first registration, or a reconnect that
		// may have overtaken the close of its old connection.
		if p.conn != 0 && p.conn != ev.Conn {
			s.dropConn(p)
		}
	case h.Epoch < p.epoch || h.Epoch == p.epoch && p.epoch != 0:
		refuse("stale claim: another incarnation owns these scenes; telling it to exit",
			fmt.Sprintf("epoch %d is stale: epoch %d (pid %d) owns process %s", h.Epoch, p.epoch, p.pid, p.name),
			zap.Uint64("owner_epoch", p.epoch), zap.Int("owner_pid", p.pid))
		return
	default:
		// A higher epoch: it replaces whatever we knew.
		if p.epoch != 0 && p.state != modules.SceneRecovering {
			log.Warn("newer claim replaces the current owner", zap.Int("old_pid", p.pid), zap.Uint64("old_epoch", p.epoch))
		}
		if p.conn != 0 {
			s.act(action{Kind: actExit, Conn: p.conn, Name: p.name, Reason: fmt.Sprintf("epoch %d replaced you", h.Epoch)})
			delete(s.conns, p.conn)
			p.conn = 0
		}
		if p.pid != 0 && p.pid != h.PID && p.state != modules.SceneDead && p.state != modules.SceneFailed {
			p.dying = p.pid
			s.act(action{Kind: actKill, Name: p.name, PID: p.pid, Epoch: p.epoch, Reason: "replaced by a higher epoch"})
		}
		// The replaced incarnation's handoff is over: the new one is not
		// handing over.
		p.handoff, p.handoffEnd, p.handoffWait = false, time.Time{}, time.Time{}
	}
	if h.PID == p.sparePID && h.Epoch == p.spareEpoch {
		// The spare took the log before its primary's exit reached us.
		s.clearSpare(p)
	}
	if h.Epoch > s.epochs[p.name] {
		s.epochs[p.name] = h.Epoch
		s.epochsDirty = true
	}
	wasStarting := p.state == modules.SceneStarting && same
	p.conn = ev.Conn
	s.conns[ev.Conn] = p.name
	p.pid, p.epoch, p.addr, p.link, p.replayMS, p.version = h.PID, h.Epoch, h.Addr, h.LinkAddr, h.ReplayMS, h.Version
	p.state = modules.SceneRunning
	p.since = h.Started
	p.heard = now
	p.graceEnd = time.Time{}
	p.respawnAt = time.Time{}
	if h.Restarts > p.hist.Total() {
		p.hist.SetTotal(h.Restarts)
	}
	s.report(p, h.Scenes)
	s.act(action{Kind: actWelcome, Conn: ev.Conn, Name: p.name})
	if wasStarting && !p.diedAt.IsZero() {
		d := now.Sub(p.diedAt)
		s.rd.Recovered = append(s.rd.Recovered, d)
		s.rd.Timeline = append(s.rd.Timeline, TimelineEvent{At: now, Process: p.name, Kind: "recovered", PID: h.PID, Epoch: h.Epoch,
			Reason: fmt.Sprintf("running again (replay %.1f ms)", h.ReplayMS), DurationMS: float64(d) / float64(time.Millisecond)})
		log.Info("scene process running again", zap.Duration("crash_to_running", d), zap.Float64("replay_ms", h.ReplayMS))
	} else {
		log.Info("scene process registered", zap.String("addr", h.Addr))
	}
}

func (s *supervisor) report(p *slot, scenes []ctlproto.SceneReport) {
	for _, r := range scenes {
		if _, ours := p.players[r.ID]; !ours && !slices.Contains(p.scenes, r.ID) {
			continue // not a scene of this process: ignore, do not grow
		}
		p.players[r.ID] = r.Players
		p.reported[r.ID] = r
	}
}

// heartbeat: the connection is alive; it may carry a fresh report.
func (s *supervisor) heartbeat(now time.Time, c connID, scenes []ctlproto.SceneReport) {
	p := s.owner(c)
	if p == nil {
		return
	}
	p.heard = now
	s.report(p, scenes)
}

func (s *supervisor) owner(c connID) *slot {
	name, ok := s.conns[c]
	if !ok {
		return nil
	}
	if p := s.slots[name]; p.conn == c {
		return p
	}
	return nil
}

// dropConn closes p's connection without telling it anything: a newer one
// of the same process replaces it, or it is dead.
func (s *supervisor) dropConn(p *slot) {
	s.act(action{Kind: actClose, Conn: p.conn, Name: p.name})
	delete(s.conns, p.conn)
	p.conn = 0
}

// connClosed: a closed connection alone is not death. The process may be
// reconnecting (it lost us during a stall, or the network blinked); if it
// exited, its exit arrives on its own.
func (s *supervisor) connClosed(now time.Time, c connID, reason string) {
	p := s.owner(c)
	delete(s.conns, c)
	if p == nil {
		return
	}
	p.conn = 0
	if s.stopping || p.state != modules.SceneRunning {
		return
	}
	grace := s.cfg.WorldMgr.EffectiveRecoveryWindow()
	p.graceEnd = now.Add(grace)
	s.slotLog(p).Info("control connection lost; the process keeps serving and may reconnect",
		zap.String("reason", reason), zap.Duration("grace", grace))
}

// exited: process pid of name is gone (a child reaped, or a pidfd said so).
func (s *supervisor) exited(now time.Time, name string, pid int, reason string) {
	p, ok := s.slots[name]
	if !ok {
		return
	}
	if p.dying == pid {
		p.dying = 0
	}
	if p.discarded == pid {
		p.discarded = 0
	}
	if pid != 0 && pid == p.sparePID {
		s.spareGone(p, now, reason)
		return
	}
	if p.pid != pid || p.state == modules.SceneDead || p.state == modules.SceneFailed {
		s.maybeRespawn(p, now)
		s.checkStopped()
		return
	}
	if p.handoff && !s.stopping {
		s.handedOff(p, now, reason)
		return
	}
	s.died(p, reason, now, false)
	s.checkStopped()
}

// killDone: a kill finished; err is nil when the process is gone.
func (s *supervisor) killDone(now time.Time, name string, pid int, err error) {
	p, ok := s.slots[name]
	if !ok {
		return
	}
	if err != nil {
		s.slotLog(p).Error("could not kill scene process", zap.Int("killed_pid", pid), zap.Error(err))
	}
	if p.discarded == pid && err == nil {
		p.discarded = 0
	}
	if p.dying == pid {
		p.dying = 0
		s.maybeRespawn(p, now)
	}
	s.checkStopped()
}

// spawned: the process for epoch started as pid.
func (s *supervisor) spawned(name string, epoch uint64, pid int) {
	if p, ok := s.slots[name]; ok && p.state == modules.SceneStarting && p.epoch == epoch {
		p.pid = pid
	}
}

// spawnFailed: the process for epoch could not be started.
func (s *supervisor) spawnFailed(now time.Time, name string, epoch uint64, err error) {
	if p, ok := s.slots[name]; ok && p.state == modules.SceneStarting && p.epoch == epoch {
		s.died(p, "spawn failed: "+err.Error(), now, false)
	}
}

// died handles the death of p's current incarnation, however noticed.
// kill: the process may still exist (silent, disconnected, too slow) and
// must be killed by pid before anything replaces it, so it can never come
// back and write.
func (s *supervisor) died(p *slot, reason string, now time.Time, kill bool) {
	if p.state == modules.SceneDead || p.state == modules.SceneFailed {
		return
	}
	log := s.slotLog(p)
	p.handoff, p.handoffEnd, p.handoffWait = false, time.Time{}, time.Time{}
	if p.conn != 0 {
		s.dropConn(p)
	}
	if kill && p.pid != 0 {
		p.dying = p.pid
		s.act(action{Kind: actKill, Name: p.name, PID: p.pid, Epoch: p.epoch, Reason: reason})
	}
	p.diedAt = now
	p.graceEnd = time.Time{}
	clear(p.players)
	clear(p.reported)
	if s.stopping {
		p.state = modules.SceneDead
		log.Info("scene process stopped", zap.String("reason", reason))
		return
	}
	d := supervise.Next(s.cfg.WorldMgr.Restart, &p.hist, now)
	p.since = now
	kind := "died"
	if d.Failed {
		kind = "failed"
	}
	s.rd.Timeline = append(s.rd.Timeline, TimelineEvent{At: now, Process: p.name, Kind: kind, PID: p.pid, Epoch: p.epoch, Reason: reason})
	if d.Failed {
		p.state = modules.SceneFailed
		s.discardSpare(p, "the process failed: restart intensity exceeded")
		log.Error("scene process failed: restart intensity exceeded; not restarting until `respawn scene restart`",
			zap.String("reason", reason), zap.Int("max_restarts", s.cfg.WorldMgr.Restart.MaxRestarts),
			zap.Duration("window", s.cfg.WorldMgr.Restart.Window))
		return
	}
	if s.promote(p, now, d.Delay) {
		s.rd.Restarts++
		log.Warn("scene process died; its standby takes over", zap.String("reason", reason),
			zap.Int("standby_pid", p.pid), zap.Uint64("standby_epoch", p.epoch))
		return
	}
	p.state = modules.SceneDead
	p.respawnAt = now.Add(d.Delay)
	log.Warn("scene process died", zap.String("reason", reason), zap.Duration("respawn_in", d.Delay))
	s.maybeRespawn(p, now)
}

// promote makes p's warm spare its current incarnation, if it has one
// that started: it is waiting for the log's lock, which the one that
// died releases (or has released). The next spare waits delay (the
// restart backoff, so a crash loop is not fed spares at full speed).
func (s *supervisor) promote(p *slot, now time.Time, delay time.Duration) bool {
	if p.sparePID == 0 {
		return false
	}
	p.epoch, p.pid, p.addr, p.link = p.spareEpoch, p.sparePID, "", ""
	s.clearSpare(p)
	p.spareAt = now.Add(delay)
	p.state = modules.SceneStarting
	p.spawnedAt, p.since = now, now
	p.respawnAt = time.Time{}
	return true
}

// maybeSpare spawns p's warm spare when worldmgr.standby asks for one and
// p runs without one.
func (s *supervisor) maybeSpare(p *slot, now time.Time) {
	if !s.cfg.WorldMgr.Standby || s.stopping || s.recovering || p.state != modules.SceneRunning || p.handoff ||
		!p.handoffWait.IsZero() || p.spareEpoch != 0 || now.Before(p.spareAt) {
		return
	}
	s.spawnSpare(p)
}

// spawnSpare hands out the next epoch to a new spare of p and starts it;
// false when the epochs are exhausted (spawn says it loudly when a real
// restart needs one).
func (s *supervisor) spawnSpare(p *slot) bool {
	epoch := s.epochs[p.name] + 1
	if epoch > ctlproto.MaxEpoch {
		return false
	}
	s.epochs[p.name] = epoch
	s.epochsDirty = true
	p.spareEpoch, p.sparePID, p.spareReady, p.spareFollows = epoch, 0, false, false
	s.act(action{Kind: actSpawn, Name: p.name, Epoch: epoch, Restarts: p.hist.Total(), Standby: true})
	return true
}

// clearSpare forgets p's spare: promoted, gone or discarded.
func (s *supervisor) clearSpare(p *slot) {
	p.spareEpoch, p.sparePID, p.spareReady, p.spareFollows = 0, 0, false, false
}

// spareReady: the spare for epoch (pid) is started and ready to take the
// log; follows: it follows the live log and has caught up (what says how
// far, for the log). A handoff waiting for it goes on.
func (s *supervisor) spareReady(now time.Time, name string, epoch uint64, pid int, follows bool, what string) {
	p, ok := s.slots[name]
	if !ok || p.spareEpoch != epoch || p.sparePID != pid || pid == 0 {
		return
	}
	p.spareReady, p.spareFollows = true, follows
	s.slotLog(p).Info("standby ready", zap.Int("standby_pid", pid), zap.Uint64("standby_epoch", epoch),
		zap.Bool("follows", follows), zap.String("caught_up", what))
	s.advanceHandoff(p, now)
}

// spareRetry is how long after a spare failed to start, or exited while
// waiting, the next one is spawned.
const spareRetry = time.Second

// spareSpawned: the spare for epoch started as pid. A spare nobody wants
// any more (a regular spawn replaced it while it started) is killed.
func (s *supervisor) spareSpawned(name string, epoch uint64, pid int) {
	p, ok := s.slots[name]
	if !ok {
		return
	}
	if p.spareEpoch == epoch && p.sparePID == 0 {
		p.sparePID = pid
		return
	}
	p.discarded = pid
	s.act(action{Kind: actKill, Name: p.name, PID: pid, Epoch: epoch, Reason: "standby no longer wanted"})
}

// spareFailed: the spare for epoch could not be started.
func (s *supervisor) spareFailed(now time.Time, name string, epoch uint64, err error) {
	if p, ok := s.slots[name]; ok && p.spareEpoch == epoch && p.sparePID == 0 {
		s.slotLog(p).Warn("could not start a standby; trying again later", zap.Uint64("standby_epoch", epoch), zap.Error(err))
		s.clearSpare(p)
		p.spareAt = now.Add(spareRetry)
		s.advanceHandoff(p, now)
	}
}

// spareGone: p's spare exited while waiting (it crashed, or was killed).
// Its epoch is spent; the next spare gets a new one.
func (s *supervisor) spareGone(p *slot, now time.Time, reason string) {
	s.slotLog(p).Warn("standby exited while waiting; a new one follows", zap.Int("standby_pid", p.sparePID),
		zap.Uint64("standby_epoch", p.spareEpoch), zap.String("reason", reason))
	s.clearSpare(p)
	p.spareAt = now.Add(spareRetry)
	s.advanceHandoff(p, now)
}

// discardSpare kills p's spare: the process is not to be restarted (it
// failed, or the world stops), and a spare would take over on its own.
func (s *supervisor) discardSpare(p *slot, reason string) {
	if p.sparePID != 0 {
		p.discarded = p.sparePID
		s.act(action{Kind: actKill, Name: p.name, PID: p.sparePID, Epoch: p.spareEpoch, Reason: reason})
	}
	s.clearSpare(p)
}

func (s *supervisor) maybeRespawn(p *slot, now time.Time) {
	if p.state != modules.SceneDead || s.stopping || s.recovering || p.dying != 0 ||
		p.respawnAt.IsZero() || now.Before(p.respawnAt) {
		return
	}
	s.rd.Restarts++
	s.spawn(p, now)
}

// spawn starts a new incarnation with the next epoch.
func (s *supervisor) spawn(p *slot, now time.Time) {
	p.respawnAt = time.Time{}
	epoch := s.epochs[p.name] + 1
	if epoch > ctlproto.MaxEpoch {
		p.state, p.since = modules.SceneFailed, now
		s.slotLog(p).Error("epochs exhausted: not spawning", zap.Uint64("max_epoch", ctlproto.MaxEpoch))
		return
	}
	s.epochs[p.name] = epoch
	s.epochsDirty = true
	// A spare still starting would wait for the lock beside the new one.
	s.discardSpare(p, "replaced by a regular spawn")
	p.epoch, p.pid, p.addr, p.link, p.spawnedAt, p.since = epoch, 0, "", "", now, now
	p.state = modules.SceneStarting
	s.act(action{Kind: actSpawn, Name: p.name, Epoch: epoch, Restarts: p.hist.Total()})
}

// restart is the operator's `respawn scene restart`: a failed process gets
// a fresh restart history and starts; a live one is killed and replaced.
func (s *supervisor) restart(now time.Time, name string) error {
	p, ok := s.slots[name]
	if !ok {
		return fmt.Errorf("unknown scene process %q", name)
	}
	if s.stopping {
		return fmt.Errorf("world is stopping")
	}
	p.hist.Reset()
	switch p.state {
	case modules.SceneFailed:
		p.state = modules.SceneDead
		p.respawnAt = now
		s.maybeRespawn(p, now)
	case modules.SceneDead:
		p.respawnAt = now
		s.maybeRespawn(p, now)
	case modules.SceneRunning, modules.SceneStarting:
		s.died(p, "restarted by operator", now, true)
		p.hist.Reset() // the operator's restart is not a crash
	}
	return nil
}

// handoff is a planned replacement of process name (an upgrade). It
// always goes through a spare of the current scene binary: one is started
// (whether or not worldmgr.standby is on; a spare already there is
// reused), and only once it follows the live log and has caught up
// (spareReady) is the running incarnation told to exit, which makes it
// stop taking events, flush and release the log's lock, which the spare
// takes with at most a few milliseconds of events to apply. Players then
// wait for no process start and no replay. If no spare is ready within
// spareReadyTimeout the handoff goes on cold and says so: the successor
// starts after the exit and replays. Gateways hold and resend across the
// gap exactly as for a crash. The successor is whatever the scene binary
// is by then: the caller installed the new one, checked it reads this
// incarnation's formats and killed a spare of the old build before asking.
func (s *supervisor) handoff(now time.Time, name string) error {
	p, ok := s.slots[name]
	switch {
	case !ok:
		return fmt.Errorf("unknown scene process %q", name)
	case s.stopping:
		return fmt.Errorf("world is stopping")
	case s.recovering:
		return fmt.Errorf("manager is recovering its table; try again in %s", s.recoveryEnd.Sub(now).Round(time.Millisecond))
	case p.state != modules.SceneRunning || p.conn == 0:
		return fmt.Errorf("scene process %s is %s (connected: %v); only a running, connected one can hand over", name, p.state, p.conn != 0)
	case p.handoff || !p.handoffWait.IsZero():
		return fmt.Errorf("scene process %s (pid %d) is already handing over", name, p.pid)
	}
	if p.spareEpoch == 0 && !s.spawnSpare(p) {
		s.handOver(p, now, "epochs exhausted: no standby can be started")
		return nil
	}
	p.handoffWait = now.Add(spareReadyTimeout)
	s.slotLog(p).Info("handoff waits for a caught-up standby", zap.Uint64("standby_epoch", p.spareEpoch),
		zap.Int("standby_pid", p.sparePID), zap.Duration("timeout", spareReadyTimeout))
	s.advanceHandoff(p, now)
	return nil
}

// spareReadyTimeout bounds how long a handoff waits for its spare to start
// and catch up with the live log before it goes on cold.
const spareReadyTimeout = 10 * time.Second

// advanceHandoff goes on with a handoff waiting for its spare: to the spare
// once it is ready; cold (the spare killed, the successor started after the
// exit) once the wait timed out or the spare is gone. It needs the control
// connection to tell the process; without one it waits (the process
// reconnects, or it is declared dead and its spare takes over as after a
// crash).
func (s *supervisor) advanceHandoff(p *slot, now time.Time) {
	if p.handoffWait.IsZero() || p.state != modules.SceneRunning || p.conn == 0 || s.stopping {
		return
	}
	switch {
	case p.sparePID != 0 && p.spareReady:
		s.handOver(p, now, "")
	case p.spareEpoch == 0:
		s.handOver(p, now, "the standby exited or could not be started")
	case !now.Before(p.handoffWait):
		s.discardSpare(p, "not ready within the handoff's wait")
		s.handOver(p, now, fmt.Sprintf("no standby caught up within %s", spareReadyTimeout))
	}
}

// handOver tells p's running incarnation to exit for its successor: its
// ready spare, or (cold says why) one started after the exit.
func (s *supervisor) handOver(p *slot, now time.Time, cold string) {
	p.handoffWait = time.Time{}
	p.handoff = true
	p.handoffEnd = now.Add(handoffTimeout)
	next := s.epochs[p.name] + 1
	if p.sparePID != 0 {
		next = p.spareEpoch
	}
	// Standby (no final snapshot) only for a spare that has the state.
	standby := p.sparePID != 0 && cold == "" && p.spareFollows
	s.act(action{Kind: actExit, Conn: p.conn, Name: p.name, Reason: fmt.Sprintf("handoff to epoch %d", next), Handoff: true, Standby: standby})
	delete(s.conns, p.conn)
	p.conn = 0
	if cold != "" {
		s.rd.Timeline = append(s.rd.Timeline, TimelineEvent{At: now, Process: p.name, Kind: "handoff", PID: p.pid, Epoch: p.epoch, Reason: "cold handoff: " + cold})
		s.slotLog(p).Warn("scene process handing over cold: its successor starts after it exits and replays", zap.String("why", cold))
		return
	}
	s.slotLog(p).Info("scene process handing over to its caught-up standby", zap.Int("standby_pid", p.sparePID), zap.Uint64("standby_epoch", p.spareEpoch))
}

// stopTimeout bounds how long a process told to stop (the world stops)
// may take to exit before it is killed: its final save waits up to 3 s
// for the data server, after up to 2 s closing its admin port.
const stopTimeout = 10 * time.Second

// handoffTimeout bounds how long a process told to hand over may take to
// exit (stop its loops, wait for queued saves, flush) before it is killed.
const handoffTimeout = 10 * time.Second

// handedOff: the incarnation that was handing over has exited; start its
// successor now. A planned exit is not a crash: no restart is counted.
func (s *supervisor) handedOff(p *slot, now time.Time, reason string) {
	p.handoff, p.handoffEnd = false, time.Time{}
	p.diedAt = now
	clear(p.players)
	clear(p.reported)
	if s.promote(p, now, 0) {
		s.slotLog(p).Info("scene process handed over; its standby takes over", zap.String("exit", reason))
		return
	}
	p.state = modules.SceneDead
	p.respawnAt = now
	s.slotLog(p).Info("scene process handed over; starting its successor", zap.String("exit", reason))
	s.maybeRespawn(p, now)
}

// stop stops the world: every scene process is told to exit (or killed if
// it cannot be told) and none is started again.
func (s *supervisor) stop(now time.Time) {
	s.stopping = true
	// Spares first: told nothing, they would take over as their primary
	// exits.
	for _, name := range s.names {
		s.slots[name].handoffWait = time.Time{}
		s.discardSpare(s.slots[name], "world stopping")
	}
	for _, name := range s.names {
		p := s.slots[name]
		switch {
		case p.conn != 0:
			s.act(action{Kind: actExit, Conn: p.conn, Name: p.name, Reason: "world stopping"})
			delete(s.conns, p.conn)
			p.conn = 0
			// Its exit, not the connection, says it is done: it saves
			// every player first. Without a deadline of its own the next
			// tick took the dropped connection for a lost one whose grace
			// had passed and killed it in the middle of its final save.
			p.graceEnd = now.Add(stopTimeout)
		case p.state == modules.SceneRunning || p.state == modules.SceneStarting:
			s.died(p, "world stopping and the process cannot be told", now, true)
		case p.state == modules.SceneRecovering || p.state == modules.SceneFailed:
			p.state = modules.SceneDead
		}
	}
	s.checkStopped()
}

func (s *supervisor) checkStopped() {
	if !s.stopping {
		return
	}
	for _, p := range s.slots {
		if p.state == modules.SceneRunning || p.state == modules.SceneStarting || p.dying != 0 {
			return
		}
	}
	s.rd.Stopped = true
}

// rows returns the scene table, one row per scene, sorted by id.
func (s *supervisor) rows() []modules.SceneRow {
	var rows []modules.SceneRow
	for _, p := range s.slots {
		for _, id := range p.scenes {
			row := modules.SceneRow{
				ID: id, Process: p.name, PID: p.pid, Addr: p.addr, Link: p.link, Epoch: p.epoch, State: p.state,
				Players: p.players[id], Restarts: p.hist.Total(), Since: p.since, ReplayMS: p.replayMS,
				StandbyPID: p.sparePID,
			}
			if p.version.Build != "" && p.state == modules.SceneRunning {
				v := p.version
				row.Version = &v
			}
			if rep, ok := p.reported[id]; ok && p.state == modules.SceneRunning {
				// The process serves, but this scene of it may not.
				if rep.State == modules.SceneCorrupt {
					row.State = rep.State
				}
				row.Reason = rep.Reason
			}
			rows = append(rows, row)
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	return rows
}

// slotOf returns the slot hosting scene id.
func (s *supervisor) slotOf(id string) *slot {
	for _, name := range s.names {
		if p := s.slots[name]; slices.Contains(p.scenes, id) {
			return p
		}
	}
	return nil
}

// pids are the processes the supervisor may still ask to be killed, by
// slot: the I/O side keeps their handles and may release all others.
func (s *supervisor) pids() map[int]string {
	out := map[int]string{}
	for _, p := range s.slots {
		if p.pid != 0 && p.state != modules.SceneRecovering {
			out[p.pid] = p.name
		}
		if p.dying != 0 {
			out[p.dying] = p.name
		}
		if p.sparePID != 0 {
			out[p.sparePID] = p.name
		}
		if p.discarded != 0 {
			out[p.discarded] = p.name
		}
	}
	return out
}
