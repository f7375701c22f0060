package gateway

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/respawn-dev/respawn/internal/gwproto"
)

// parsePos reads what the JSON decoder reads, by hand for the scene's own
// form and through the decoder for anything else.
func TestParsePosMatchesJSON(t *testing.T) {
	bodies := []string{
		`{"kind":"player","id":"bot-0001","x":3,"y":97}`,
		`{"kind":"player","id":"a","x":-12,"y":0}`,
		`{"kind":"","id":"b","x":0,"y":-0}`,
		`{"kind":"monster","id":"boar-1","x":123456789,"y":1}`,
		`{"kind":"player","id":"q\"uote","x":1,"y":2}`,
		`{"id":"reordered","kind":"player","y":5,"x":4}`,
		`{"kind":"player","id":"big","x":12345678901,"y":2}`,
		`{"kind":"player","id":"lead","x":01,"y":2}`,
		`{"kind":"player","id":"trail","x":1,"y":2} `,
		`{"kind":"player","id":"short","x":1`,
		`not json`,
		``,
	}
	for i := range 200 {
		bodies = append(bodies, fmt.Sprintf(`{"kind":"player","id":"p%d","x":%d,"y":%d}`, i, i*7919%2001-1000, -i*31))
	}
	for _, b := range bodies {
		got, ok := parsePos([]byte(b))
		var want scenePos
		wantOK := json.Unmarshal([]byte(b), &want) == nil
		if ok != wantOK || (ok && got != want) {
			t.Errorf("parsePos(%s) = %+v, %v; JSON decoder %+v, %v", b, got, ok, want, wantOK)
		}
	}
}

// smallest picks what a full sort would put first, in the same order.
func TestSmallestMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 15, 16, 17, 64, 65, 100, 1000, 5000} {
		for _, k := range []int{1, 2, 16, 63, 64, 65, n - 1, n} {
			if k <= 0 || k > n {
				continue
			}
			for range 5 {
				seen := map[uint64]bool{}
				keys := make([]uint64, 0, n)
				for len(keys) < n {
					v := uint64(r.IntN(50))<<32 | uint64(r.IntN(1<<20))
					if !seen[v] {
						seen[v] = true
						keys = append(keys, v)
					}
				}
				want := slices.Clone(keys)
				slices.Sort(want)
				if got := smallest(slices.Clone(keys), k); !slices.Equal(got, want[:k]) {
					t.Fatalf("n %d k %d: smallest = %v, want %v", n, k, got, want[:k])
				}
			}
		}
	}
}

// randomBatch is n movers at random points of a w x w square (some at
// negative coordinates when off is set), ids in order.
func randomBatch(r *rand.Rand, n, w int, off bool) batch {
	b := batch{scene: "forest"}
	for i := range n {
		p := gwproto.Pos{ID: fmt.Sprintf("bot-%04d", i), X: r.IntN(w), Y: r.IntN(w)}
		if off {
			p.X, p.Y = p.X-w/2, p.Y-w/2
		}
		enc, _ := json.Marshal(p)
		b.moved = append(b.moved, mover{Pos: p, enc: enc})
	}
	return b
}

// A viewer's batch names the movers a brute-force scan picks: within the
// radius on both axes, not the viewer, nearest first, ties by id, at most
// max of them.
func TestViewMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ n, w, radius, max int }{{500, 100, 30, 64}, {50, 100, 30, 64}, {300, 40, 7, 10}, {200, 1000, 30, 64}, {1, 10, 30, 64}} {
		for _, off := range []bool{false, true} {
			b := randomBatch(r, tc.n, tc.w, off)
			if tc.n > 10 {
				b.gone = []byte(`["left-1"]`)
			}
			v := newView(b, tc.radius, tc.max)
			for range 100 {
				me := b.moved[r.IntN(len(b.moved))].Pos
				if r.IntN(3) == 0 { // a viewer that did not move
					me = gwproto.Pos{ID: "still", X: r.IntN(tc.w) - tc.w/4, Y: r.IntN(tc.w) - tc.w/4}
				}
				var want []gwproto.Pos
				for _, m := range b.moved {
					if m.ID != me.ID && abs(m.X-me.X) <= tc.radius && abs(m.Y-me.Y) <= tc.radius {
						want = append(want, m.Pos)
					}
				}
				slices.SortStableFunc(want, func(a, c gwproto.Pos) int { return dist(a, me) - dist(c, me) }) // ids already in order
				want = want[:min(len(want), tc.max)]
				frame := v.frame(me, me.ID)
				if len(want) == 0 && b.gone == nil {
					if frame != nil {
						t.Fatalf("nothing near %+v, got a frame", me)
					}
					continue
				}
				f, _, err := gwproto.Decode(frame, gwproto.DefaultMaxFrame)
				if err != nil {
					t.Fatal(err)
				}
				p, err := gwproto.DecodePush(f.Body)
				if err != nil || p.Kind != "positions" || p.Scene != "forest" {
					t.Fatalf("push %+v, %v", p, err)
				}
				var got struct {
					Players []gwproto.Pos   `json:"players"`
					Gone    json.RawMessage `json:"gone"`
				}
				if err := json.Unmarshal(p.Data, &got); err != nil {
					t.Fatalf("%s: %v", p.Data, err)
				}
				if !slices.Equal(got.Players, want) && !(len(got.Players) == 0 && len(want) == 0) {
					t.Fatalf("n %d radius %d, viewer %+v:\n got %v\nwant %v", tc.n, tc.radius, me, got.Players, want)
				}
				if string(got.Gone) != string(b.gone) {
					t.Fatalf("gone %s, want %s", got.Gone, b.gone)
				}
			}
		}
	}
}

// BenchmarkPositionsView: one flush's work for a crowded scene, 500
// players all moving on the default 100 x 100 map, each getting the 64
// nearest of the ~180 within view_radius 30 (the round-trip benchmark's
// 1000 bots in two scenes).
//
//	go test -run='^$' -bench=PositionsView -benchmem ./internal/gateway
func BenchmarkPositionsView(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	bt := randomBatch(r, 500, 100, false)
	b.ReportAllocs()
	for b.Loop() {
		v := newView(bt, 30, 64)
		for _, m := range bt.moved {
			if v.frame(m.Pos, m.ID) == nil {
				b.Fatal("no frame")
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(bt.moved)), "ns/viewer")
}
