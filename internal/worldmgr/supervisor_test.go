package worldmgr

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/modules"
)

// sim drives a supervisor with a fake clock: no processes, no sockets, no
// sleeps. Scene processes are pids and connection ids it makes up.
type sim struct {
	t        *testing.T
	s        *supervisor
	now      time.Time
	nextPID  int
	nextConn connID
	// What the world looks like from the scenes' side.
	conn map[string]connID
	pid  map[string]int
	// spare is each process's warm spare (worldmgr.standby) by pid.
	spare map[string]int
	// acts collects every action since the last take.
	acts []action
	// timeline collects every timeline event.
	timeline []TimelineEvent
}

func testWorld() supervisorConfig {
	return supervisorConfig{
		Tick: 10 * time.Millisecond,
		WorldMgr: config.WorldMgr{
			HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: time.Second, StartTimeout: 15 * time.Second,
			Restart: config.Restart{MaxRestarts: 5, Window: 30 * time.Second, BackoffInitial: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond},
		},
		Processes: []config.Process{{Name: "forest", Scenes: []string{"forest", "dungeon"}}, {Name: "town", Scenes: []string{"town"}}},
	}
}

func newSim(t *testing.T, epochs map[string]uint64, fresh bool) *sim {
	now := time.Unix(1_000_000, 0)
	return &sim{t: t, s: newSupervisor(testWorld(), zaptest.NewLogger(t), epochs, fresh, now), now: now,
		nextPID: 1000, conn: map[string]connID{}, pid: map[string]int{}, spare: map[string]int{}}
}

// drain collects the supervisor's actions, performing spawns the way the
// manager does (a pid comes back at once).
func (m *sim) drain() {
	for {
		rd := m.s.takeReady()
		if rd.empty() {
			return
		}
		m.timeline = append(m.timeline, rd.Timeline...)
		for _, a := range rd.Actions {
			m.acts = append(m.acts, a)
			if a.Kind == actSpawn {
				if rd.Epochs == nil || rd.Epochs[a.Name] < a.Epoch {
					m.t.Fatalf("spawn of %s epoch %d before the epoch was persisted (%v)", a.Name, a.Epoch, rd.Epochs)
				}
				m.nextPID++
				if a.Standby {
					m.spare[a.Name] = m.nextPID
					m.s.spareSpawned(a.Name, a.Epoch, m.nextPID)
					continue
				}
				m.pid[a.Name] = m.nextPID
				m.s.spawned(a.Name, a.Epoch, m.nextPID)
			}
		}
	}
}

// take returns and forgets the actions so far, as "kind name" strings.
func (m *sim) take() []string {
	m.drain()
	var out []string
	for _, a := range m.acts {
		out = append(out, a.Kind.String()+" "+a.Name)
	}
	m.acts = nil
	return out
}

func (m *sim) expect(want ...string) {
	m.t.Helper()
	got := m.take()
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		m.t.Fatalf("at +%s: actions %q, want %q", m.elapsed(), got, want)
	}
}

func (m *sim) elapsed() time.Duration { return m.now.Sub(time.Unix(1_000_000, 0)) }

// run lets time pass with a healthy manager (a tick every 10 ms) while the
// named processes heartbeat every 200 ms.
func (m *sim) run(d time.Duration, beating ...string) {
	end := m.now.Add(d)
	next := m.now
	for m.now.Before(end) {
		m.now = m.now.Add(10 * time.Millisecond)
		if !m.now.Before(next) {
			for _, name := range beating {
				if c := m.conn[name]; c != 0 {
					m.s.heartbeat(m.now, c, nil)
				}
			}
			next = m.now.Add(200 * time.Millisecond)
		}
		m.s.tick(m.now)
		m.drain()
	}
}

// stall: the manager does not run for d (SIGSTOP, VM pause), then ticks.
func (m *sim) stall(d time.Duration) {
	m.now = m.now.Add(d)
	m.s.tick(m.now)
	m.drain()
}

func (m *sim) hello(name string, pid int, epoch uint64) connID {
	m.nextConn++
	c := m.nextConn
	m.s.hello(m.now, helloEvent{Conn: c, Hello: ctlproto.Hello{Process: name, PID: pid, Epoch: epoch, Started: m.now,
		Scenes: []ctlproto.SceneReport{{ID: name, Epoch: epoch, Players: 3, State: modules.SceneRunning}}}})
	m.drain()
	for _, a := range m.acts {
		if a.Conn == c && a.Kind == actWelcome {
			m.conn[name] = c
		}
	}
	return c
}

func (m *sim) row(id string) modules.SceneRow {
	for _, r := range m.s.rows() {
		if r.ID == id {
			return r
		}
	}
	m.t.Fatalf("no row %s", id)
	return modules.SceneRow{}
}

// boot is a fresh start: both processes spawned at epoch 1, registered.
func boot(t *testing.T) *sim {
	m := newSim(t, nil, true)
	m.run(10 * time.Millisecond)
	m.expect("spawn forest", "spawn town")
	for _, name := range []string{"forest", "town"} {
		m.hello(name, m.pid[name], 1)
	}
	m.expect("welcome forest", "welcome town")
	return m
}

func TestFirstStartSpawnsAndRegisters(t *testing.T) {
	m := boot(t)
	m.run(5*time.Second, "forest", "town")
	m.expect()
	for _, id := range []string{"forest", "dungeon", "town"} {
		if r := m.row(id); r.State != modules.SceneRunning || r.Epoch != 1 || r.PID == 0 {
			t.Fatalf("row %+v", r)
		}
	}
}

// Issue 11: a manager SIGSTOPped for 3 s (or 10 s) killed every healthy
// scene when it resumed. The scenes saw its heartbeats stop, closed their
// connections and reconnect; the manager must adopt them as they are.
func TestStalledManagerKillsNoOne(t *testing.T) {
	for _, stall := range []time.Duration{900 * time.Millisecond, 3 * time.Second, 10 * time.Second} {
		for _, order := range []string{"close first", "reconnect first", "no close"} {
			t.Run(fmt.Sprintf("%s/%s", stall, order), func(t *testing.T) {
				m := boot(t)
				m.run(time.Second, "forest", "town")
				before := m.s.rows()
				m.stall(stall)
				old := map[string]connID{"forest": m.conn["forest"], "town": m.conn["town"]}
				switch order {
				case "close first":
					// The readers report the closes before the scenes are back.
					for _, name := range []string{"forest", "town"} {
						m.s.connClosed(m.now, old[name], "EOF")
					}
					m.run(300*time.Millisecond, "forest", "town")
					for _, name := range []string{"forest", "town"} {
						m.hello(name, m.pid[name], 1)
					}
					m.expect("welcome forest", "welcome town")
				case "reconnect first":
					// The new connection's hello overtakes the old one's close:
					// the same pid at the same epoch is the same process, not a
					// stale claim ("epoch 1 owner_epoch 1").
					for _, name := range []string{"forest", "town"} {
						m.hello(name, m.pid[name], 1)
					}
					m.expect("close forest", "welcome forest", "close town", "welcome town")
					for _, name := range []string{"forest", "town"} {
						m.s.connClosed(m.now, old[name], "EOF")
					}
				case "no close":
					// The stall was short enough that the connections held.
				}
				m.run(5*time.Second, "forest", "town")
				m.expect()
				after := m.s.rows()
				for i := range before {
					if before[i].PID != after[i].PID || before[i].Epoch != after[i].Epoch || after[i].State != modules.SceneRunning {
						t.Fatalf("row changed:\n before %+v\n after  %+v", before[i], after[i])
					}
				}
			})
		}
	}
}

// The manager's loop lagging a little, often (a saturated machine), is not
// held against the scenes either.
func TestSaturatedManagerKillsNoOne(t *testing.T) {
	m := boot(t)
	for i := 0; i < 50; i++ {
		m.stall(700 * time.Millisecond) // never a tick for 700 ms, heartbeats queued behind
		m.s.heartbeat(m.now, m.conn["forest"], nil)
		m.s.heartbeat(m.now, m.conn["town"], nil)
		m.run(20*time.Millisecond, "forest", "town")
	}
	m.expect()
}

func TestHungSceneIsKilledWithinTheTimeout(t *testing.T) {
	m := boot(t)
	m.run(time.Second, "forest", "town")
	forest := m.pid["forest"]
	m.s.heartbeat(m.now, m.conn["forest"], nil)
	hungAt := m.now
	for m.now.Sub(hungAt) < 2*time.Second {
		m.run(10*time.Millisecond, "town")
		if len(m.acts) > 0 {
			break
		}
	}
	if d := m.now.Sub(hungAt); d > time.Second+20*time.Millisecond {
		t.Fatalf("hang noticed after %s", d)
	}
	m.expect("close forest", "kill forest")
	// The replacement waits until the hung process is gone: it holds the log.
	m.run(100*time.Millisecond, "town")
	m.expect()
	m.s.killDone(m.now, "forest", forest, nil)
	m.expect("spawn forest")
	if r := m.row("forest"); r.Epoch != 2 || r.State != modules.SceneStarting || r.Restarts != 1 {
		t.Fatalf("forest %+v", r)
	}
	m.hello("forest", m.pid["forest"], 2)
	m.expect("welcome forest")
	if r := m.row("town"); r.Epoch != 1 {
		t.Fatalf("town touched: %+v", r)
	}
}

// A scene that hangs while the manager is stalled is still found, once the
// manager has given everyone their grace.
func TestHungSceneFoundAfterManagerStall(t *testing.T) {
	m := boot(t)
	m.run(time.Second, "forest", "town")
	m.stall(3 * time.Second)
	m.run(900*time.Millisecond, "town")
	m.expect()
	m.run(200*time.Millisecond, "town")
	m.expect("close forest", "kill forest")
}

func TestDisconnectedSceneGetsAGracePeriod(t *testing.T) {
	m := boot(t)
	m.s.connClosed(m.now, m.conn["forest"], "EOF")
	m.run(1900*time.Millisecond, "town")
	m.expect()
	if r := m.row("forest"); r.State != modules.SceneRunning {
		t.Fatalf("forest is %s during its grace", r.State)
	}
	m.run(200*time.Millisecond, "town")
	m.expect("kill forest")
}

// An exit is death at once, whatever the connection says.
func TestExitIsDeathAtOnce(t *testing.T) {
	m := boot(t)
	m.s.exited(m.now, "forest", m.pid["forest"], "signal: killed")
	m.expect("close forest", "spawn forest")
}

// The console's timeline gets the death with its reason and the recovery
// with its duration.
func TestTimelineOfADeathAndRecovery(t *testing.T) {
	m := boot(t)
	old := m.pid["forest"]
	m.s.exited(m.now, "forest", old, "signal: killed")
	m.expect("close forest", "spawn forest")
	m.now = m.now.Add(30 * time.Millisecond)
	m.hello("forest", m.pid["forest"], 2)
	m.expect("welcome forest")
	if len(m.timeline) != 2 {
		t.Fatalf("timeline %+v, want died and recovered", m.timeline)
	}
	d, r := m.timeline[0], m.timeline[1]
	if d.Kind != "died" || d.Process != "forest" || d.PID != old || d.Epoch != 1 || d.Reason != "signal: killed" {
		t.Errorf("death %+v", d)
	}
	if r.Kind != "recovered" || r.PID != m.pid["forest"] || r.Epoch != 2 || r.DurationMS != 30 {
		t.Errorf("recovery %+v, want epoch 2 after 30 ms", r)
	}
}

func TestClaims(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pid        int // 0: the owner's pid
		epoch      uint64
		unverified string
		want       []string
		owner      uint64 // the epoch owning forest afterwards
	}{
		{name: "higher epoch replaces the owner", pid: 7, epoch: 2, want: []string{"exit forest", "kill forest", "welcome forest"}, owner: 2},
		{name: "lower epoch is stale", pid: 7, epoch: 1, want: []string{"exit forest"}, owner: 1},
		{name: "same epoch other pid is refused", pid: 7, epoch: 1, want: []string{"exit forest"}, owner: 1},
		{name: "same process reconnecting is adopted", epoch: 1, want: []string{"close forest", "welcome forest"}, owner: 1},
		{name: "epoch ahead by more than one", pid: 7, epoch: 3, want: []string{"exit forest"}, owner: 1},
		{name: "epoch 2^64-1", pid: 7, epoch: 1<<64 - 1, want: []string{"exit forest"}, owner: 1},
		{name: "unverified pid", pid: 7, epoch: 2, unverified: "start time differs", want: []string{"exit forest"}, owner: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := boot(t)
			if tc.name == "lower epoch is stale" {
				// Make the owner epoch 2 first.
				m.s.exited(m.now, "forest", m.pid["forest"], "crash")
				m.take()
				m.hello("forest", m.pid["forest"], 2)
				m.take()
				tc.owner = 2
			}
			owner := m.row("forest")
			pid := tc.pid
			if pid == 0 {
				pid = owner.PID
			}
			m.nextConn++
			m.s.hello(m.now, helloEvent{Conn: m.nextConn, Unverified: tc.unverified,
				Hello: ctlproto.Hello{Process: "forest", PID: pid, Epoch: tc.epoch}})
			m.expect(tc.want...)
			r := m.row("forest")
			if r.Epoch != tc.owner || r.State != modules.SceneRunning {
				t.Fatalf("forest %+v, want epoch %d running", r, tc.owner)
			}
			if tc.owner == owner.Epoch && r.PID != owner.PID {
				t.Fatalf("table changed by a refused claim: %+v → %+v", owner, r)
			}
			if m.s.epochs["forest"] > 2 {
				t.Fatalf("a refused epoch was recorded: %d", m.s.epochs["forest"])
			}
		})
	}
}

// A crash loop backs off and ends failed; the operator's restart clears it.
func TestRestartStorm(t *testing.T) {
	m := boot(t)
	var delays []time.Duration
	for i := 0; i < 6; i++ {
		died := m.now
		m.s.exited(m.now, "forest", m.pid["forest"], "crash")
		for m.now.Sub(died) < time.Second {
			got := m.take()
			if len(got) > 0 && got[len(got)-1] == "spawn forest" {
				delays = append(delays, m.now.Sub(died))
				break
			}
			if m.row("forest").State == modules.SceneFailed {
				break
			}
			m.run(10*time.Millisecond, "town")
		}
	}
	want := []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Fatalf("respawn delays %v, want %v", delays, want)
	}
	if r := m.row("forest"); r.State != modules.SceneFailed || r.Restarts != 6 {
		t.Fatalf("forest %+v", r)
	}
	m.run(time.Minute, "town")
	m.expect()
	if err := m.s.restart(m.now, "forest"); err != nil {
		t.Fatal(err)
	}
	m.expect("spawn forest")
	if m.row("town").Epoch != 1 {
		t.Fatal("town restarted by forest's storm")
	}
}

// After a manager restart, the recovery window adopts every reporter as it
// is and respawns only what nobody reported, with a higher epoch.
func TestRecoveryAdoptsReporters(t *testing.T) {
	m := newSim(t, map[string]uint64{"forest": 4, "town": 2}, false)
	m.run(500 * time.Millisecond)
	m.hello("town", 77, 2)
	m.expect("welcome town")
	m.run(1400*time.Millisecond, "town")
	m.expect()
	m.run(200*time.Millisecond, "town")
	m.expect("spawn forest")
	if r := m.row("forest"); r.Epoch != 5 {
		t.Fatalf("forest epoch %d, want 5", r.Epoch)
	}
	if r := m.row("town"); r.PID != 77 || r.Epoch != 2 || r.State != modules.SceneRunning {
		t.Fatalf("town %+v", r)
	}
}

// A manager stalled during its recovery window gets the window back.
func TestStallDuringRecoveryExtendsTheWindow(t *testing.T) {
	m := newSim(t, map[string]uint64{"forest": 4, "town": 2}, false)
	m.run(500 * time.Millisecond)
	m.stall(5 * time.Second)
	m.run(100 * time.Millisecond)
	m.expect()
	m.hello("forest", 70, 4)
	m.hello("town", 77, 2)
	m.run(3*time.Second, "forest", "town")
	m.expect("welcome forest", "welcome town")
}

func TestStopTellsEveryoneAndWaits(t *testing.T) {
	m := boot(t)
	m.s.stop(m.now)
	m.expect("exit forest", "exit town")
	m.s.exited(m.now, "forest", m.pid["forest"], "exited")
	if m.s.takeReady().Stopped {
		t.Fatal("stopped before town exited")
	}
	m.s.exited(m.now, "town", m.pid["town"], "exited")
	if rd := m.s.takeReady(); !rd.Stopped || len(rd.Actions) != 0 {
		t.Fatalf("ready %+v", rd)
	}
}

// A process told to stop is given time to save and exit: the manager's
// ticks meanwhile do not take its closed connection for a lost one and
// kill it (they did, at the next tick, cutting every scene's final save at
// `respawn shutdown`). One that does not exit in stopTimeout is killed.
func TestStopWaitsForTheExitBeforeKilling(t *testing.T) {
	m := boot(t)
	m.run(time.Second, "forest", "town")
	m.s.stop(m.now)
	m.expect("exit forest", "exit town")
	m.run(stopTimeout-100*time.Millisecond, "forest", "town")
	m.expect() // saving: nobody killed
	m.s.exited(m.now, "forest", m.pid["forest"], "exited")
	m.expect()
	if m.s.takeReady().Stopped {
		t.Fatal("stopped before town exited")
	}
	m.run(200*time.Millisecond, "forest", "town")
	m.expect("kill town") // town did not exit in time
	if r := m.row("town"); r.State != modules.SceneDead {
		t.Fatalf("town %+v", r)
	}
}

// A spawn that cannot be started counts as a crash and is retried.
func TestSpawnFailureBacksOff(t *testing.T) {
	m := newSim(t, nil, true)
	m.s.tick(m.now.Add(10 * time.Millisecond))
	rd := m.s.takeReady()
	if len(rd.Actions) != 2 || rd.Epochs["forest"] != 1 {
		t.Fatalf("ready %+v", rd)
	}
	m.s.spawnFailed(m.now, "forest", 1, fmt.Errorf("no binary"))
	m.s.spawned("town", 1, 5)
	m.expect("spawn forest")
	if r := m.row("forest"); r.Epoch != 2 {
		t.Fatalf("forest %+v", r)
	}
}

// FuzzSupervisor feeds the supervisor random sequences of events (hellos
// verified or not, with any epoch; heartbeats; closes; exits; kill and
// spawn results; stalls; ticks; restarts; stop) and checks what must hold
// whatever happens: it never asks to kill a pid nobody tied to that scene
// process, never spawns an epoch it did not persist first or one not above
// every epoch before, and never lets an epoch go back or past MaxEpoch.
func FuzzSupervisor(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{9, 9, 9, 1, 0, 3, 3, 3, 3, 3, 9, 2, 2})
	f.Add([]byte{4, 4, 4, 4, 4, 4, 4, 4, 12, 4})
	f.Fuzz(func(t *testing.T, script []byte) { runScript(t, script) })
}

// runScript is FuzzSupervisor's body.
func runScript(t testing.TB, script []byte) {
	now := time.Unix(1_000_000, 0)
	s := newSupervisor(testWorld(), zap.NewNop(), nil, len(script)%2 == 0, now)
	names := []string{"forest", "town", "nowhere"}
	tied := map[int]string{}         // pids verified or spawned, by process
	persisted := map[string]uint64{} // what the I/O side has on disk
	highest := map[string]uint64{}   // highest epoch spawned or accepted
	pids := 100
	var conn connID
	check := func() {
		for {
			rd := s.takeReady()
			if rd.empty() {
				return
			}
			for name, e := range rd.Epochs {
				if e < persisted[name] {
					t.Fatalf("epoch of %s went back: %d after %d", name, e, persisted[name])
				}
				if e > ctlproto.MaxEpoch {
					t.Fatalf("epoch of %s above MaxEpoch: %d", name, e)
				}
				persisted[name] = e
			}
			for _, a := range rd.Actions {
				switch a.Kind {
				case actKill:
					if tied[a.PID] != a.Name {
						t.Fatalf("kill of pid %d for %s, which nobody tied to it (%q)", a.PID, a.Name, tied[a.PID])
					}
				case actSpawn:
					if persisted[a.Name] < a.Epoch {
						t.Fatalf("spawn of %s epoch %d not persisted (%d)", a.Name, a.Epoch, persisted[a.Name])
					}
					if a.Epoch <= highest[a.Name] {
						t.Fatalf("spawn of %s at epoch %d, not above %d", a.Name, a.Epoch, highest[a.Name])
					}
					highest[a.Name] = a.Epoch
					if len(script)%3 != 0 { // sometimes the spawn fails
						pids++
						tied[pids] = a.Name
						s.spawned(a.Name, a.Epoch, pids)
					} else {
						s.spawnFailed(now, a.Name, a.Epoch, fmt.Errorf("no binary"))
					}
				case actWelcome:
					// The accepted owner's epoch counts as handed out.
					for _, r := range s.rows() {
						if r.Process == a.Name && r.Epoch > highest[a.Name] {
							highest[a.Name] = r.Epoch
						}
					}
				}
			}
		}
	}
	for i := 0; i+1 < len(script); i += 2 {
		op, arg := script[i]%14, script[i+1]
		name := names[int(arg)%len(names)]
		var p *slot
		if sl, ok := s.slots[name]; ok {
			p = sl
		}
		switch op {
		case 0, 1: // a hello from a fresh, verified process
			conn++
			pids++
			epoch := uint64(arg % 5)
			if p != nil {
				epoch += s.epochs[name]
				epoch -= min(epoch, 2)
			}
			if op == 1 {
				epoch = math.MaxUint64 - uint64(arg)
			}
			tied[pids] = name
			s.hello(now, helloEvent{Conn: conn, Hello: ctlproto.Hello{Process: name, PID: pids, Epoch: epoch}})
		case 2: // a hello naming someone else's pid, unverified
			conn++
			s.hello(now, helloEvent{Conn: conn, Unverified: "not a scene process",
				Hello: ctlproto.Hello{Process: name, PID: 1 + int(arg), Epoch: uint64(arg)}})
		case 3: // the owner reconnects
			if p != nil && p.pid != 0 {
				conn++
				s.hello(now, helloEvent{Conn: conn, Hello: ctlproto.Hello{Process: name, PID: p.pid, Epoch: p.epoch}})
			}
		case 4:
			if p != nil && p.conn != 0 {
				s.heartbeat(now, p.conn, nil)
			}
		case 5:
			if p != nil && p.conn != 0 {
				s.connClosed(now, p.conn, "EOF")
			}
		case 6:
			if p != nil && p.pid != 0 {
				s.exited(now, name, p.pid, "exited")
			}
		case 7:
			if p != nil && p.dying != 0 {
				s.killDone(now, name, p.dying, nil)
			}
		case 8: // a stall
			now = now.Add(time.Duration(arg) * 50 * time.Millisecond)
			s.tick(now)
		case 9, 10, 11: // time passes with a healthy loop
			for range int(arg % 64) {
				now = now.Add(10 * time.Millisecond)
				s.tick(now)
				check()
			}
		case 12:
			_ = s.restart(now, name)
		case 13:
			if arg%8 == 0 {
				s.stop(now)
			}
		}
		check()
	}
	if len(s.rows()) != 3 {
		t.Fatalf("table has %d rows", len(s.rows()))
	}
}
