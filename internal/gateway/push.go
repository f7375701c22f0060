package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/respawn-dev/respawn/internal/gwproto"
	"github.com/respawn-dev/respawn/internal/jsonint"
	"github.com/respawn-dev/respawn/internal/scenelink"
)

// pushFrame builds a PUSH frame without re-encoding data.
func pushFrame(kind, scene string, data json.RawMessage) []byte {
	return gwproto.AppendPush(nil, kind, scene, data)
}

// deliver routes one push from a scene process to this gateway's clients:
// to the player it names, or to everyone here in its scene. Positions are
// not forwarded one by one: they are batched per push interval and
// filtered by distance (positions.flush).
func (g *Gateway) deliver(p scenelink.Push) {
	if p.Kind == "position" {
		g.pos.update(p)
		return
	}
	if p.Kind == "notice" {
		g.pos.notice(p)
	}
	frame := pushFrame(p.Kind, p.Scene, p.Body)
	if p.Player != "" {
		if s := g.reg.get(p.Player); s != nil {
			s.push(frame)
		}
		return
	}
	for _, s := range g.reg.inScene(p.Scene) {
		s.push(frame)
	}
	g.m.pushes.Inc()
}

func (s *Session) push(frame []byte) {
	if c := s.live(); c != nil {
		c.sendRaw(frame)
	}
}

// positions keeps, per scene, where each player is (from the scenes'
// position pushes) and who moved since the last flush. Every push
// interval each client gets one "positions" push with the players that
// moved within view_radius of it (at most max_positions, nearest first)
// and those that left its view: a move costs one entry in the batches of
// the clients near it, not a frame to everyone in the scene. A batch waits
// up to push_hold for the client's next reply and goes out in the same
// write (clientConn.holdPositions).
type positions struct {
	g      *Gateway
	mu     sync.Mutex
	scenes map[string]*scenePositions
}

type scenePositions struct {
	at    map[string]gwproto.Pos
	moved map[string]bool
	gone  map[string]bool
}

func newPositions(g *Gateway) *positions {
	return &positions{g: g, scenes: map[string]*scenePositions{}}
}

func (ps *positions) scene(id string) *scenePositions {
	sp := ps.scenes[id]
	if sp == nil {
		sp = &scenePositions{at: map[string]gwproto.Pos{}, moved: map[string]bool{}, gone: map[string]bool{}}
		ps.scenes[id] = sp
	}
	return sp
}

// maxTracked bounds the players tracked per scene (the game's own limit).
const maxTracked = 10000

// scenePos is the body of a scene's position push.
type scenePos struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	X    int    `json:"x"`
	Y    int    `json:"y"`
}

// parsePos reads a position push body. Every move is one, so the form the
// scene writes ({"kind":"K","id":"ID","x":X,"y":Y}, internal/scene/link.go)
// is read by hand; anything else goes through the JSON decoder.
func parsePos(b []byte) (scenePos, bool) {
	var m scenePos
	rest, ok := bytes.CutPrefix(b, []byte(`{"kind":"`))
	if ok {
		m.Kind, rest, ok = plainStr(rest)
	}
	if ok {
		rest, ok = bytes.CutPrefix(rest, []byte(`,"id":"`))
	}
	if ok {
		m.ID, rest, ok = plainStr(rest)
	}
	if ok {
		rest, ok = bytes.CutPrefix(rest, []byte(","))
	}
	if ok {
		m.X, m.Y, ok = jsonint.XY(rest)
	}
	if ok {
		return m, true
	}
	m = scenePos{}
	return m, json.Unmarshal(b, &m) == nil
}

// plainStr reads a JSON string's content up to its closing quote; one
// with escapes is left to the JSON decoder.
func plainStr(b []byte) (string, []byte, bool) {
	for i, c := range b {
		switch {
		case c == '"':
			return string(b[:i]), b[i+1:], true
		case c == '\\' || c < 0x20:
			return "", nil, false
		}
	}
	return "", nil, false
}

func (ps *positions) update(p scenelink.Push) {
	m, ok := parsePos(p.Body)
	if !ok || m.ID == "" || (m.Kind != "" && m.Kind != "player") {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	sp := ps.scene(p.Scene)
	if _, ok := sp.at[m.ID]; !ok && len(sp.at) >= maxTracked {
		return
	}
	sp.at[m.ID] = gwproto.Pos{ID: m.ID, X: m.X, Y: m.Y}
	sp.moved[m.ID] = true
	delete(sp.gone, m.ID)
}

// notice drops players who left a scene from its table.
func (ps *positions) notice(p scenelink.Push) {
	var n struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	if json.Unmarshal(p.Body, &n) != nil || n.Type != "player_left" {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	sp := ps.scene(p.Scene)
	if _, ok := sp.at[n.ID]; ok {
		delete(sp.at, n.ID)
		delete(sp.moved, n.ID)
		if len(sp.gone) < maxTracked {
			sp.gone[n.ID] = true
		}
	}
}

func (ps *positions) run(ctx context.Context) {
	t := time.NewTicker(ps.g.cfg.PushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ps.flush()
		}
	}
}

type cellKey struct{ x, y int }

// mover is a moved player with its JSON entry encoded once per flush.
type mover struct {
	gwproto.Pos
	enc []byte
}

// batch is one scene's moves since the last flush.
type batch struct {
	scene string
	moved []mover // in id order: a mover's index is its rank, the tie-break among movers at the same distance
	gone  []byte  // encoded "gone" array, nil if none
}

// flush sends each client the moves near it since the last flush.
func (ps *positions) flush() {
	batches := ps.take()
	hold := ps.g.cfg.PushHold
	var held []*clientConn // batches waiting to ride on a reply (push_hold)
	defer func() {
		if len(held) > 0 {
			// One timer per flush, not per client: what no write carried
			// within push_hold goes out alone.
			time.AfterFunc(hold, func() {
				for _, c := range held {
					c.releasePositions()
				}
			})
		}
	}()
	for _, b := range batches {
		sessions := ps.g.reg.inScene(b.scene)
		if len(sessions) == 0 {
			continue
		}
		ps.mu.Lock()
		at := ps.scenes[b.scene]
		mine := make([]gwproto.Pos, len(sessions))
		known := make([]bool, len(sessions))
		for i, s := range sessions {
			if at != nil {
				mine[i], known[i] = at.at[s.player]
			}
		}
		ps.mu.Unlock()
		v := newView(b, ps.g.cfg.ViewRadius, ps.g.cfg.MaxPositions)
		for i, s := range sessions {
			me, ok := mine[i], known[i]
			if !ok {
				s.mu.Lock()
				me, ok = gwproto.Pos{X: s.x, Y: s.y}, s.hasPos
				s.mu.Unlock()
			}
			if !ok {
				continue
			}
			frame := v.frame(me, s.player)
			if frame == nil {
				continue
			}
			c := s.live()
			switch {
			case c == nil:
			case hold > 0:
				c.holdPositions(frame)
				held = append(held, c)
			default:
				c.sendAlone(frame)
			}
		}
	}
}

// take returns each scene's moves since the last flush and starts afresh.
func (ps *positions) take() []batch {
	var batches []batch
	max := ps.g.cfg.MaxPositions
	ps.mu.Lock()
	for id, sp := range ps.scenes {
		if len(sp.moved) == 0 && len(sp.gone) == 0 {
			if len(sp.at) == 0 {
				delete(ps.scenes, id)
			}
			continue
		}
		b := batch{scene: id, moved: make([]mover, 0, len(sp.moved))}
		for pid := range sp.moved {
			b.moved = append(b.moved, mover{Pos: sp.at[pid]})
		}
		if len(sp.gone) > 0 {
			gone := make([]string, 0, len(sp.gone))
			for pid := range sp.gone {
				gone = append(gone, pid)
			}
			sort.Strings(gone)
			b.gone, _ = json.Marshal(gone[:min(len(gone), max)])
		}
		clear(sp.moved)
		clear(sp.gone)
		batches = append(batches, b)
	}
	ps.mu.Unlock()
	// Sorted and encoded outside the lock: the scenes' links deliver every
	// position push through it (update).
	for _, b := range batches {
		slices.SortFunc(b.moved, func(x, y mover) int { return strings.Compare(x.ID, y.ID) })
		for i := range b.moved {
			b.moved[i].enc, _ = json.Marshal(b.moved[i].Pos)
		}
	}
	return batches
}

// cand is a mover as a viewer's scan reads it: compact and contiguous.
type cand struct {
	x, y int
	rank int
}

// view answers "which movers are near this point" for one batch. Movers
// are put in a grid of cells view_radius wide, so a viewer looks at its
// cell and the 8 around it, not at every mover in the scene; each cell's
// block (the movers of those 9 cells) is gathered once and shared by every
// viewer in the cell (in a crowd, most viewers share a few cells).
type view struct {
	b      batch
	r, max int
	blocks map[cellKey][]cand
	// Scratch, reused across viewers.
	near, sorted []uint64
	count        []int
	data         []byte
}

func newView(b batch, r, max int) *view {
	v := &view{b: b, r: r, max: max, blocks: map[cellKey][]cand{}}
	// Movers in rank order, so every block is in rank order too.
	for i := range b.moved {
		m := &b.moved[i]
		cx, cy := floorDiv(m.X, r), floorDiv(m.Y, r)
		for dx := -1; dx <= 1; dx++ {
			for dy := -1; dy <= 1; dy++ {
				k := cellKey{cx + dx, cy + dy}
				v.blocks[k] = append(v.blocks[k], cand{x: m.X, y: m.Y, rank: i})
			}
		}
	}
	return v
}

// maxBucketRadius bounds the view radius for which the nearest are picked
// by counting distances (a counter per distance); beyond it they are
// selected by comparison (smallest).
const maxBucketRadius = 4096

// frame is the positions PUSH for a viewer at me (player, whose own move
// is left out), or nil when it has nothing to tell.
func (v *view) frame(me gwproto.Pos, player string) []byte {
	self := -1
	if i, ok := slices.BinarySearchFunc(v.b.moved, player, func(m mover, id string) int { return strings.Compare(m.ID, id) }); ok {
		self = i
	}
	r := v.r
	// near holds distance<<32 | rank, in rank order: sorting the keys
	// orders the movers nearest first, ties by id.
	near := v.near[:0]
	for _, c := range v.blocks[cellKey{floorDiv(me.X, r), floorDiv(me.Y, r)}] {
		dx, dy := abs(c.x-me.X), abs(c.y-me.Y)
		if dx <= r && dy <= r && c.rank != self {
			near = append(near, uint64(max(dx, dy))<<32|uint64(c.rank))
		}
	}
	v.near = near
	if len(near) == 0 && v.b.gone == nil {
		return nil
	}
	switch {
	case r <= maxBucketRadius:
		near = v.nearest(near)
	case len(near) > v.max:
		near = smallest(near, v.max)
	default:
		slices.Sort(near)
	}
	// {"players":[...],"gone":[...]} from the pre-encoded entries, in a
	// buffer reused across viewers; the frame is the one allocation.
	data := append(v.data[:0], `{"players":[`...)
	for j, k := range near {
		if j > 0 {
			data = append(data, ',')
		}
		data = append(data, v.b.moved[uint32(k)].enc...)
	}
	data = append(data, ']')
	if v.b.gone != nil {
		data = append(data, `,"gone":`...)
		data = append(data, v.b.gone...)
	}
	data = append(data, '}')
	v.data = data
	return gwproto.AppendPush(make([]byte, 0, gwproto.PushLen("positions", v.b.scene, len(data))), "positions", v.b.scene, data)
}

// nearest returns the first max of keys (distance<<32 | rank, in rank
// order) in key order, by a counting sort on the distance: linear, where
// selecting and sorting by comparison was half of a flush's CPU.
func (v *view) nearest(keys []uint64) []uint64 {
	count := v.count[:0]
	for range v.r + 1 {
		count = append(count, 0)
	}
	v.count = count
	for _, k := range keys {
		count[k>>32]++
	}
	// Keep every distance below the cut and the first (lowest ranks) of
	// the cut's distance that fit; count becomes each distance's offset.
	n, taken := min(len(keys), v.max), 0
	cut := 0
	for d := range count {
		c := min(count[d], n-taken)
		count[d] = taken
		taken += c
		cut = d
		if taken == n {
			break
		}
	}
	end := taken // offsets past cut's last slot stop placing at the cut
	out := slices.Grow(v.sorted[:0], n)[:n]
	for _, k := range keys {
		d := int(k >> 32)
		if d > cut {
			continue
		}
		i := count[d]
		if d == cut && i >= end {
			continue
		}
		out[i] = k
		count[d]++
	}
	v.sorted = out
	return out
}

// smallest returns the k smallest of keys (distinct), in order, in keys'
// first k slots. A client in a crowd has hundreds of movers in view and
// gets the nearest 64: selecting them first (quickselect, linear on
// average) and sorting only those costs a fraction of sorting them all,
// which was a quarter of the gateway's CPU at 2000 bots.
func smallest(keys []uint64, k int) []uint64 {
	if k <= 0 {
		return keys[:0]
	}
	lo, hi := 0, len(keys) // the k-th smallest lies in keys[lo:hi]
	for hi-lo > 16 {
		// Median of three as the pivot, moved to hi-1.
		mid := lo + (hi-lo)/2
		a, b, c := keys[lo], keys[mid], keys[hi-1]
		piv := mid
		switch {
		case (a <= b) == (b <= c):
			piv = mid
		case (b <= a) == (a <= c):
			piv = lo
		default:
			piv = hi - 1
		}
		keys[piv], keys[hi-1] = keys[hi-1], keys[piv]
		p := keys[hi-1]
		store := lo
		for i := lo; i < hi-1; i++ {
			if keys[i] < p {
				keys[i], keys[store] = keys[store], keys[i]
				store++
			}
		}
		keys[store], keys[hi-1] = keys[hi-1], keys[store]
		switch {
		case store == k || store == k-1:
			lo, hi = k, k
		case store > k:
			hi = store
		default:
			lo = store + 1
		}
	}
	if hi > lo {
		slices.Sort(keys[lo:hi])
	}
	slices.Sort(keys[:k])
	return keys[:k]
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}

func dist(a, b gwproto.Pos) int { return max(abs(a.X-b.X), abs(a.Y-b.Y)) }
