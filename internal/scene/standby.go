package scene

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/ctlproto"
	"github.com/respawn-dev/respawn/internal/game"
	"github.com/respawn-dev/respawn/internal/shmlog"
)

// A standby (Options.Standby, worldmgr.standby) is a hot spare: while it
// waits for the event log's lock it follows the live log without a lock
// (shmlog.OpenFollower) and keeps its own copy of each of its scenes up to
// date, every followInterval. When the primary goes and the lock is its,
// it reads the few events appended since its last catch-up, on its own
// locked store, and starts from that copy: the same state a full replay
// builds (the same records, applied in order by the same deterministic
// state machine), without replaying the log since the last snapshot.

// followInterval is how often a standby catches up with the live log: at
// the takeover it has at most this much of the primary's events to apply.
const followInterval = 10 * time.Millisecond

// parentPoll is how often a standby checks that its manager still lives.
const parentPoll = 100 * time.Millisecond

// standBy waits for the event log's lock, following the log meanwhile, for
// as long as the manager that started this spare lives. A spare whose
// manager died gives up: a restarted manager does not know of it and
// starts its own. Once it has the log it is a primary, and outlives the
// manager like any.
func (p *Process) standBy() error {
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	manager := p.opt.ManagerPID
	if manager == 0 {
		manager = os.Getppid()
	}
	path := LogPath(p.cfg.ShmDir, p.spec.Name)
	fol, err := p.host.newFollower(path, p.spec.Scenes)
	if err != nil {
		// Not fatal: the takeover replays in full, as a cold start does.
		p.log.Warn("standby cannot follow the live log; it will replay in full", zap.Error(err))
	}
	got := make(chan error, 1)
	go func() { got <- p.host.open(ctx, path, true) }()
	follow := time.NewTicker(followInterval)
	defer follow.Stop()
	parent := time.NewTicker(parentPoll)
	defer parent.Stop()
	fol.catchUp()
	p.signalReady(fol)
	gone := func() bool {
		if os.Getppid() == manager {
			return false
		}
		p.log.Warn("the world manager that started this standby is gone; giving up", zap.Int("manager_pid", manager))
		cancel()
		return true
	}
	gone() // it may have died while we started
	for {
		select {
		case err := <-got:
			fol.closeStore()
			if err != nil {
				p.host.follow = nil
				if p.ctx.Err() == nil && ctx.Err() != nil {
					return fmt.Errorf("standby: the world manager (pid %d) that started it is gone", manager)
				}
				return err
			}
			p.host.follow = fol
			return nil
		case <-follow.C:
			fol.catchUp()
		case <-parent.C:
			gone()
		}
	}
}

// signalReady tells the manager that started this spare that it follows
// the live log and has caught up (ctlproto.ReadyFDEnv): a handoff waits for
// that before it tells the primary to exit. A spare that cannot follow the
// log is ready too: it is started and connected, and replays in full at the
// takeover. Not fatal when it fails: the handoff goes on cold.
func (p *Process) signalReady(fol *follower) {
	v := os.Getenv(ctlproto.ReadyFDEnv)
	if v == "" {
		return
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		p.log.Warn("standby: bad ready descriptor; the manager will not hear it is ready", zap.String("env", ctlproto.ReadyFDEnv), zap.String("value", v))
		return
	}
	what := "not following: will replay in full"
	if fol != nil && fol.store != nil {
		var events int
		for _, fs := range fol.scenes {
			events += fs.rp.n
		}
		what = fmt.Sprintf("%s %d of %d scenes, caught up at %d events since their snapshots", ctlproto.ReadyFollowing, len(fol.scenes), len(p.spec.Scenes), events)
	}
	f := os.NewFile(uintptr(fd), "standby-ready")
	// The descriptor is a pipe, never stdout or stderr: a manager gone
	// makes this write fail with EPIPE, not kill the process.
	if _, err := fmt.Fprintf(f, "%s %s\n", ctlproto.ReadyPrefix, what); err != nil {
		p.log.Warn("standby: could not tell the manager it is ready", zap.Error(err))
	}
	if err := f.Close(); err != nil {
		p.log.Warn("standby: close the ready descriptor", zap.Error(err))
	}
	p.log.Info("standby ready: "+what, zap.Duration("since_main", time.Since(p.start)))
}

// follower keeps a standby's copies of its scenes.
type follower struct {
	store  *shmlog.Store
	log    *zap.Logger
	scenes map[string]*followed // by scene id; only the hosted scenes, not their rooms
}

type followed struct {
	rp  *replayer
	cur shmlog.Cursor
}

// newFollower maps the live log for following; nil (and an error) when it
// cannot be.
func (h *host) newFollower(path string, ids []string) (*follower, error) {
	st, err := shmlog.OpenFollower(path)
	if err != nil {
		return nil, err
	}
	f := &follower{store: st, log: h.log, scenes: map[string]*followed{}}
	for _, id := range ids {
		def, ok := h.cfg.SceneDef(id)
		if !ok {
			continue // restore says so
		}
		def.BreakDedupe = h.breakDedupe
		f.scenes[id] = &followed{rp: newReplayer(def)}
	}
	return f, nil
}

// catchUp applies what the primary appended since the last call. A scene
// that cannot be followed (its slot freed or damaged, a record that does
// not decode) is dropped: the takeover replays it in full.
func (f *follower) catchUp() {
	if f == nil || f.store == nil {
		return
	}
	for id, fs := range f.scenes {
		sl, ok := f.store.Get(id)
		if !ok {
			delete(f.scenes, id)
			continue
		}
		cur, ok, err := sl.Follow(fs.cur, fs.rp.apply)
		if err == nil && !ok {
			// A snapshot since the last call: start again from it.
			fs.rp = newReplayer(fs.rp.def)
			cur, ok, err = sl.Follow(shmlog.Cursor{}, fs.rp.apply)
		}
		if err != nil || !ok {
			f.log.Info("standby stops following a scene; it will replay it in full", zap.String("scene", id), zap.Bool("readable", ok), zap.Error(err))
			delete(f.scenes, id)
			continue
		}
		fs.cur = cur
	}
}

// closeStore unmaps the follower's view; finish works on the locked store.
func (f *follower) closeStore() {
	if f == nil || f.store == nil {
		return
	}
	if err := f.store.Close(); err != nil {
		f.log.Warn("close the followed log", zap.Error(err))
	}
	f.store = nil
}

// finish brings scene id's copy to the end of slot (on the store whose
// lock this process holds) and hands it over with the events applied since
// the snapshot and how many of them were the tail read now; ok false: no
// usable copy, replay in full.
func (f *follower) finish(id string, slot *shmlog.Slot) (st *game.Scene, n, tail int, ok bool) {
	if f == nil {
		return nil, 0, 0, false
	}
	fs := f.scenes[id]
	delete(f.scenes, id)
	if fs == nil || fs.rp.st == nil {
		return nil, 0, 0, false
	}
	if _, damaged := slot.Damage(); damaged {
		return nil, 0, 0, false // Replay's business: it reports and keeps the evidence
	}
	before := fs.rp.n
	if _, ok, err := slot.Follow(fs.cur, fs.rp.apply); err != nil || !ok {
		return nil, 0, 0, false
	}
	return fs.rp.st, fs.rp.n, fs.rp.n - before, true
}

// replay rebuilds a scene from its slot: from the standby's followed copy
// when there is one, else in full (Replay).
func (h *host) replay(slot *shmlog.Slot, def game.SceneDef) (*game.Scene, int, error) {
	if st, n, tail, ok := h.follow.finish(slot.ID(), slot); ok {
		h.log.Info("scene taken over from the standby's copy", zap.String("scene", slot.ID()),
			zap.Int("events_since_snapshot", n), zap.Int("tail_events", tail))
		return st, n, nil
	}
	return Replay(slot, def)
}
