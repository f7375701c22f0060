package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/replica"
	"github.com/respawn-dev/respawn/internal/scenelink"
)

// router finds the scene process of a scene in the replica of the scene
// table and keeps one scenelink.Client per process, replaced when the
// table names a new process (a new epoch or address) or the link dies.
type router struct {
	g     *Gateway
	table *replica.Reader[modules.SceneRow]
	unsub func()

	mu      sync.Mutex
	links   map[string]*linkEntry // by process name
	changed chan struct{}         // closed and replaced when the table or a link changes
	held    map[string]*holdCount // by process name
	closed  bool
}

// linkEntry is one dialled (or dialling) link to a scene process.
type linkEntry struct {
	proc  string
	addr  string
	epoch uint64
	ready chan struct{} // closed once c or err is set
	c     *scenelink.Client
	err   error
}

type holdCount struct {
	n     int
	bytes int64
}

// errNoRoute: the table has no running process for the scene (yet).
var errNoRoute = errors.New("no running scene process")

func newRouter(g *Gateway) *router {
	return &router{g: g, links: map[string]*linkEntry{}, changed: make(chan struct{}), held: map[string]*holdCount{}}
}

func (r *router) start(table *replica.Reader[modules.SceneRow]) {
	r.table = table
	seen := map[string]uint64{} // scene -> the running epoch last logged; one entry per table row
	r.unsub = table.Subscribe(func(key string, row modules.SceneRow, deleted bool) {
		// Subscribe calls are serialised by the reader: seen needs no lock.
		if deleted {
			delete(seen, key)
		} else if row.State == modules.SceneRunning && seen[key] != row.Epoch {
			seen[key] = row.Epoch
			r.g.log.Info("scene table: process running", zap.String("scene", key), zap.String("process", row.Process),
				zap.Uint64("epoch", row.Epoch), zap.String("link", row.Link))
		}
		r.signal()
	})
}

func (r *router) synced() bool { return r.table != nil && r.table.Stats().Synced }

func (r *router) close() {
	r.mu.Lock()
	r.closed = true
	links := r.links
	r.links = map[string]*linkEntry{}
	r.mu.Unlock()
	if r.unsub != nil {
		r.unsub()
	}
	if r.table != nil {
		r.table.Close()
	}
	for _, le := range links {
		<-le.ready
		if le.c != nil {
			le.c.Close()
		}
	}
}

// signal wakes everyone waiting for the table or a link to change.
func (r *router) signal() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *router) changes() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// baseScene is the table key of a scene or of a dungeon room in it
// ("forest/dungeon-3" lives in forest's process).
func baseScene(scene string) string {
	base, _, _ := strings.Cut(scene, "/")
	return base
}

func (r *router) row(scene string) (modules.SceneRow, bool) {
	if r.table == nil {
		return modules.SceneRow{}, false
	}
	row, ok := r.table.Get(baseScene(scene))
	if !ok || row.State != modules.SceneRunning || row.Link == "" {
		return row, false
	}
	return row, true
}

// down reports whether scene has no live link now: its requests are held.
func (r *router) down(scene string) bool {
	row, ok := r.row(scene)
	if !ok {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	le := r.links[row.Process]
	if le == nil {
		return false // not dialled yet; that is not an outage
	}
	select {
	case <-le.ready:
		return le.c == nil || le.addr != row.Link || le.epoch != row.Epoch
	default:
		return true
	}
}

// current returns the link of scene's process if it is dialled, up and
// the one the table names now; nil otherwise. It never dials or waits:
// the direct relay asks it per request.
func (r *router) current(scene string) *linkEntry {
	row, ok := r.row(scene)
	if !ok {
		return nil
	}
	r.mu.Lock()
	le := r.links[row.Process]
	r.mu.Unlock()
	if le == nil {
		return nil
	}
	select {
	case <-le.ready:
	default:
		return nil
	}
	if le.c == nil || le.addr != row.Link || le.epoch != row.Epoch {
		return nil
	}
	select {
	case <-le.c.Done():
		return nil
	default:
		return le
	}
}

// link returns the live link of scene's process, dialling it if needed.
// It does not wait for a failover: errNoRoute or a dial error say "try
// again" (callers back off, woken early by table changes). A dial in
// progress is waited for only while the table still names its process.
func (r *router) link(ctx context.Context, scene string) (*linkEntry, error) {
	for {
		// Taken before the row is read: a change after the read wakes us.
		changed := r.changes()
		le, err := r.linkFor(scene)
		if err != nil {
			return nil, err
		}
		for le != nil {
			select {
			case <-le.ready:
				if le.err != nil {
					return nil, le.err
				}
				return le, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-changed:
				// A dial to a process that is going (its listener still
				// accepts while the kernel tears it down, so the dial hangs)
				// must not hold us once the table names its successor.
				changed = r.changes()
				row, ok := r.row(scene)
				if !ok {
					// Dead or starting: back off until the successor runs.
					return nil, fmt.Errorf("scene %s: %w (state %q)", scene, errNoRoute, row.State)
				}
				if row.Link != le.addr || row.Epoch > le.epoch {
					le = nil
				}
			}
		}
	}
}

// linkFor returns the link entry (dialled or dialling) of the process the
// table names for scene, starting a dial if there is none.
func (r *router) linkFor(scene string) (*linkEntry, error) {
	row, ok := r.row(scene)
	if !ok {
		return nil, fmt.Errorf("scene %s: %w (state %q)", scene, errNoRoute, row.State)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("gateway stopping")
	}
	le := r.links[row.Process]
	if le != nil && (le.addr != row.Link || le.epoch < row.Epoch) {
		// The table names a newer process: drop the old link.
		delete(r.links, row.Process)
		old := le
		go func() {
			<-old.ready
			if old.c != nil {
				old.c.Close()
			}
		}()
		le = nil
	}
	if le == nil {
		le = &linkEntry{proc: row.Process, addr: row.Link, epoch: row.Epoch, ready: make(chan struct{})}
		r.links[row.Process] = le
		go r.dial(le)
	}
	r.mu.Unlock()
	return le, nil
}

func (r *router) dial(le *linkEntry) {
	g := r.g
	ctx, cancel := context.WithTimeout(g.ctx, 3*time.Second)
	began := time.Now()
	c, err := scenelink.Dial(ctx, scenelink.Options{Addr: le.addr, Secret: g.opt.Secret, Conns: g.cfg.LinkConns,
		Log: g.log.With(zap.String("process", le.proc), zap.Uint64("epoch", le.epoch))})
	cancel()
	if err == nil && c.Epoch() != 0 && c.Epoch() < le.epoch {
		c.Close()
		err = fmt.Errorf("process %s at %s is epoch %d, the table says %d", le.proc, le.addr, c.Epoch(), le.epoch)
	}
	if err != nil {
		le.err = fmt.Errorf("dial scene process %s (epoch %d) at %s: %w", le.proc, le.epoch, le.addr, err)
		close(le.ready)
		r.drop(le)
		return
	}
	le.c = c
	close(le.ready)
	g.log.Info("linked to scene process", zap.String("process", le.proc), zap.Uint64("epoch", le.epoch), zap.String("link", le.addr),
		zap.Duration("dial", time.Since(began)))
	go r.pushes(le)
	go func() {
		<-c.Done()
		g.log.Info("link to scene process lost", zap.String("process", le.proc), zap.Uint64("epoch", le.epoch), zap.Error(c.Err()))
		r.drop(le)
	}()
	r.signal()
}

// drop forgets le if it is still the process's link.
func (r *router) drop(le *linkEntry) {
	r.mu.Lock()
	if r.links[le.proc] == le {
		delete(r.links, le.proc)
	}
	r.mu.Unlock()
	r.signal()
}

// broken is told by a caller whose call on le failed: if le's client is
// gone it is dropped, so the next link call dials again.
func (r *router) broken(le *linkEntry) {
	if le == nil || le.c == nil {
		return
	}
	select {
	case <-le.c.Done():
		r.drop(le)
	default:
	}
}

// backoff waits a little (more each attempt, at most 200 ms) or until the
// table or a link changed since changed was taken (r.changes() before the
// attempt that failed: a change during the attempt is not missed, which
// would cost a whole back-off after a failover), whichever is first.
func (r *router) backoff(ctx context.Context, attempt int, changed <-chan struct{}) {
	d := time.Duration(min(attempt+1, 8)) * 25 * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-changed:
	case <-ctx.Done():
	}
}

// hold counts p against the hold limits of scene's process; false means
// over a limit (p is not counted).
func (r *router) hold(scene string, p *pending) bool {
	proc := baseScene(scene)
	if row, ok := r.table.Get(baseScene(scene)); ok {
		proc = row.Process
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.held[proc]
	if h == nil {
		h = &holdCount{}
		r.held[proc] = h
	}
	if h.n >= r.g.cfg.HoldMax || h.bytes+int64(len(p.op)) > r.g.cfg.HoldMaxBytes {
		return false
	}
	h.n++
	h.bytes += int64(len(p.op))
	p.held = proc
	r.g.m.held.Inc()
	return true
}

func (r *router) unhold(p *pending) {
	if p.held == "" {
		return
	}
	r.mu.Lock()
	if h := r.held[p.held]; h != nil {
		h.n--
		h.bytes -= int64(len(p.op))
		if h.n <= 0 {
			delete(r.held, p.held)
		}
	}
	r.mu.Unlock()
	p.held = ""
	r.g.m.held.Dec()
}

// pushes delivers le's pushes until the link ends.
func (r *router) pushes(le *linkEntry) {
	for {
		select {
		case p, ok := <-le.c.Pushes():
			if !ok {
				return
			}
			r.g.deliver(p)
		case <-le.c.Done():
			return
		}
	}
}
