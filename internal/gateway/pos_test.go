package gateway

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
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
