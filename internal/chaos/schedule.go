package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Fault kinds, as --faults names them.
const (
	KindScene    = "scene"    // kill -9 of a random scene process
	KindWorldmgr = "worldmgr" // kill -9 of the world manager
	KindDatasvr  = "datasvr"  // kill -9 of the data server
	KindGateway  = "gateway"  // kill -9 of a random gateway
	KindHang     = "hang"     // SIGSTOP of a scene process until it is replaced
	KindStall    = "stall"    // SIGSTOP, then SIGCONT after 1-5 s, of worldmgr or datasvr
)

// AllKinds is every fault kind, in the order the schedule cycles them.
var AllKinds = []string{KindScene, KindWorldmgr, KindDatasvr, KindGateway, KindHang, KindStall}

// ParseKinds parses "scene,worldmgr,…"; an unknown kind is an error.
func ParseKinds(s string) ([]string, error) {
	var out []string
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		if !slices.Contains(AllKinds, k) {
			return nil, fmt.Errorf("unknown fault kind %q (known: %s)", k, strings.Join(AllKinds, ","))
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no fault kind in %q", s)
	}
	return out, nil
}

// Planned is one fault of the schedule: when, what, and the seeded choices
// (which of the candidate targets, how long a stall lasts) that make a run
// repeatable.
type Planned struct {
	At    time.Duration
	Kind  string
	Pick  uint64        // index into the candidate targets, modulo their number
	Stall time.Duration // stall: how long the process stays stopped
}

// Schedule is the fault plan for a run: one fault every `every` from
// `every` until before `duration` (play goes on after the last one), the same for the same seed. Each kind comes up
// once before any repeats (a shuffled round), so a short run with one
// fault per kind covers them all.
func Schedule(seed uint64, kinds []string, duration, every time.Duration) []Planned {
	if every <= 0 || len(kinds) == 0 {
		return nil
	}
	r := rand.New(rand.NewPCG(seed, 0x6368616f73)) // "chaos"
	var out []Planned
	var round []string
	for at := every; at < duration; at += every {
		if len(round) == 0 {
			round = slices.Clone(kinds)
			r.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		p := Planned{At: at, Kind: round[0], Pick: r.Uint64()}
		round = round[1:]
		if p.Kind == KindStall {
			p.Stall = time.Second + time.Duration(r.Int64N(int64(4*time.Second)))
		}
		out = append(out, p)
	}
	return out
}
