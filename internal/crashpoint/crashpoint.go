// Package crashpoint is named crash points in the write paths: a process
// armed through RESPAWN_TEST_CRASH kills itself with SIGKILL at the Nth time
// it passes a point, so a test (or `bot chaos --crash-points`) can crash it
// at the worst moment instead of a random one, as etcd's gofail failpoints
// do. Unarmed points cost one nil check. Never arm them in production.
//
//	RESPAWN_TEST_CRASH=journal.before-fsync=40,shmlog.before-commit=3000
//
// Each incarnation counts from zero, so a point armed with N crashes every
// incarnation after N passes (the supervisor restarts it; the run checks
// that nothing acknowledged was lost).
package crashpoint

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Env is the environment variable that arms points.
const Env = "RESPAWN_TEST_CRASH"

// The points.
const (
	// ShmlogBeforeCommit: a scene's log record is written but its commit
	// word is not (the torn record replay must ignore).
	ShmlogBeforeCommit = "shmlog.before-commit"
	// SnapshotWrite: a snapshot is written into the other half of its slot
	// but the slot header does not point at it yet.
	SnapshotWrite = "snapshot.write"
	// JournalBeforeFsync / JournalAfterFsync: a datasvr group commit is
	// written but not synced / synced but not acknowledged.
	JournalBeforeFsync = "journal.before-fsync"
	JournalAfterFsync  = "journal.after-fsync"
	// GatewayResend: the gateway is about to resend a request after its
	// scene connection broke.
	GatewayResend = "gateway.resend"
	// GatewayBeforeReply: the gateway holds a scene's answer to a request
	// (applied and logged) that it has not passed to the client; the
	// client resumes on another gateway and resends it, and the scene must
	// answer it from its reply window, not apply it again.
	GatewayBeforeReply = "gateway.before-reply"
	// SceneTravelApplied: a scene logged and applied a request that sent
	// its player away (a travel, a dungeon entry) but has sent neither the
	// reply nor the transfer; the gateway resends it where the player went.
	SceneTravelApplied = "scene.travel-applied"
	// FlushBetweenRows: datasvr's write-behind flush has committed some
	// of its batches (datasvr.flush_batch players each) to the database
	// and not the rest; the journal is not yet checkpointed.
	FlushBetweenRows = "datasvr.flush-between-rows"
	// LeaseHandoff: a scene's handover of a travelling player is
	// acknowledged by datasvr (the destination holds the lease) but the
	// player is not yet delivered to the destination. Passed only by a
	// transfer's first send in this incarnation, not by its resends, so a
	// restarted scene finishes the handoff instead of dying at it again.
	LeaseHandoff = "scene.lease-handoff"
)

// Names lists every point.
var Names = []string{ShmlogBeforeCommit, SnapshotWrite, JournalBeforeFsync, JournalAfterFsync, GatewayResend, GatewayBeforeReply,
	SceneTravelApplied, FlushBetweenRows, LeaseHandoff}

// Points is a process's armed points. A nil *Points arms nothing.
type Points struct {
	mu   sync.Mutex
	at   map[string]uint64
	hits map[string]uint64
	kill func(point string)
}

// FromEnv arms the points Env names; nil when it is empty.
func FromEnv() (*Points, error) { return Parse(os.Getenv(Env)) }

// Parse parses "point=N,point=N". An unknown point or a count below 1 is an
// error, so a typo cannot make a crash test pass without crashing.
func Parse(s string) (*Points, error) {
	p := &Points{at: map[string]uint64{}, hits: map[string]uint64{}, kill: killSelf}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, n, ok := strings.Cut(part, "=")
		if !ok {
			n = "1"
		}
		if !slices.Contains(Names, name) {
			return nil, fmt.Errorf("%s: unknown crash point %q (known: %s)", Env, name, strings.Join(Names, ","))
		}
		c, err := strconv.ParseUint(n, 10, 64)
		if err != nil || c < 1 {
			return nil, fmt.Errorf("%s: %s=%s: want a count of at least 1", Env, name, n)
		}
		p.at[name] = c
	}
	if len(p.at) == 0 {
		return nil, nil
	}
	return p, nil
}

// Armed lists the armed points (for the start-up log).
func (p *Points) Armed() []string {
	if p == nil {
		return nil
	}
	var out []string
	for k, v := range p.at {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(out)
	return out
}

// Hit passes point: at its armed count the process dies by SIGKILL, with
// nothing flushed or closed, as a crash would leave it.
func (p *Points) Hit(point string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	at, ok := p.at[point]
	if !ok {
		p.mu.Unlock()
		return
	}
	p.hits[point]++
	now := p.hits[point] == at
	p.mu.Unlock()
	if now {
		p.kill(point)
	}
}

func killSelf(point string) {
	fmt.Fprintf(os.Stderr, "crashpoint: %s reached: SIGKILL\n", point)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
