package gateway

import (
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
	rest, ok := cutPrefix(b, `{"kind":"`)
	if ok {
		m.Kind, rest, ok = plainStr(rest)
	}
	if ok {
		rest, ok = cutPrefix(rest, `,"id":"`)
	}
	if ok {
		m.ID, rest, ok = plainStr(rest)
	}
	if ok {
		rest, ok = cutPrefix(rest, `,"x":`)
	}
	if ok {
		m.X, rest, ok = jsonint.Small(rest)
	}
	if ok {
		rest, ok = cutPrefix(rest, `,"y":`)
	}
	if ok {
		m.Y, rest, ok = jsonint.Small(rest)
	}
	if ok && string(rest) == "}" {
		return m, true
	}
	m = scenePos{}
	return m, json.Unmarshal(b, &m) == nil
}

func cutPrefix(b []byte, p string) ([]byte, bool) {
	if len(b) < len(p) || string(b[:len(p)]) != p {
		return nil, false
	}
	return b[len(p):], true
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

// flush sends each client the moves near it since the last flush.
func (ps *positions) flush() {
	type batch struct {
		scene string
		moved []mover
		gone  []byte // encoded "gone" array, nil if none
		me    map[*Session]gwproto.Pos
	}
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
		b := batch{scene: id}
		for pid := range sp.moved {
			p := sp.at[pid]
			enc, _ := json.Marshal(p)
			b.moved = append(b.moved, mover{Pos: p, enc: enc})
		}
		// In id order: a mover's index is its rank, the tie-break among
		// movers at the same distance.
		slices.SortFunc(b.moved, func(x, y mover) int { return strings.Compare(x.ID, y.ID) })
		if len(sp.gone) > 0 {
			gone := make([]string, 0, len(sp.gone))
			for pid := range sp.gone {
				gone = append(gone, pid)
			}
			sort.Strings(gone)
			b.gone, _ = json.Marshal(gone[:min(len(gone), max)])
		}
		sp.moved, sp.gone = map[string]bool{}, map[string]bool{}
		batches = append(batches, b)
	}
	ps.mu.Unlock()
	r := ps.g.cfg.ViewRadius
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
		// A grid of cells view_radius wide: a client looks at its cell and
		// the 8 around it, not at every mover in the scene.
		grid := map[cellKey][]int{}
		for i := range b.moved {
			m := &b.moved[i]
			k := cellKey{floorDiv(m.X, r), floorDiv(m.Y, r)}
			grid[k] = append(grid[k], i)
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
		// near holds distance<<32 | rank: sorting the keys orders the
		// movers nearest first, ties by id, without a comparison callback.
		var near []uint64
		var data []byte
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
			near = near[:0]
			cx, cy := floorDiv(me.X, r), floorDiv(me.Y, r)
			for dx := -1; dx <= 1; dx++ {
				for dy := -1; dy <= 1; dy++ {
					for _, i := range grid[cellKey{cx + dx, cy + dy}] {
						m := &b.moved[i]
						if abs(m.X-me.X) <= r && abs(m.Y-me.Y) <= r && m.ID != s.player {
							near = append(near, uint64(dist(m.Pos, me))<<32|uint64(i))
						}
					}
				}
			}
			if len(near) == 0 && b.gone == nil {
				continue
			}
			if len(near) > max {
				near = smallest(near, max)
			}
			// {"players":[...],"gone":[...]} from the pre-encoded entries.
			data = append(data[:0], `{"players":[`...)
			for j, k := range near {
				if j > 0 {
					data = append(data, ',')
				}
				data = append(data, b.moved[uint32(k)].enc...)
			}
			data = append(data, ']')
			if b.gone != nil {
				data = append(data, `,"gone":`...)
				data = append(data, b.gone...)
			}
			data = append(data, '}')
			frame := pushFrame("positions", b.scene, data)
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
