package scene

import (
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/scenelink"
)

// BenchmarkLinkMoves is the scene's request path in one process: players
// each with one move in flight (a closed loop, as the round-trip benchmark's
// bots) over a real link connection to a real host (log, loop, pushes). It
// reports the process's CPU per request (the client's share included), so
// compare runs of it back to back only.
func BenchmarkLinkMoves(b *testing.B) {
	for _, players := range []int{1, 50} {
		b.Run(strconv.Itoa(players), func(b *testing.B) {
			f := newLinkFixture(b)
			c := f.dial(b)
			// Pushes are read and dropped, as a gateway would consume them.
			go func() {
				for range c.Pushes() {
				}
			}()
			for i := range players {
				id := fmt.Sprintf("p%02d", i)
				f.enter(b, id, 0)
				if _, err := c.Join(b.Context(), "forest", id, "s-"+id); err != nil {
					b.Fatal(err)
				}
			}
			per := b.N/players + 1
			var wg sync.WaitGroup
			errs := make(chan error, players)
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range players {
				wg.Go(func() {
					id := fmt.Sprintf("p%02d", i)
					for s := range per {
						op := []byte(`{"op":"move","x":` + strconv.Itoa(s%50) + `,"y":` + strconv.Itoa(i%50) + `}`)
						r, err := c.Request(b.Context(), scenelink.Req{Scene: "forest", Player: id, Session: "s-" + id, Seq: uint64(s + 1), Op: op})
						if err != nil || r.Code != "" {
							errs <- fmt.Errorf("%s seq %d: %+v %v", id, s+1, r, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(per*players), "cpu_us/req")
		})
	}
}
