package scene

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds on the work the bus can queue in a scene process. Each message
// (a travelling player, a GM give, kick or save-all) waits for the scene's
// loop and usually for datasvr, so it runs off the NATS dispatch goroutine,
// but on a fixed number of workers with a bounded queue: a flood of
// messages is refused with "busy", never turned into unbounded goroutines.
// Senders retry (transfers are resent until acknowledged; datasvr reports
// a failed GM command to the operator).
const (
	DefaultBusWorkers = 32
	DefaultBusQueue   = 1024
)

// workPool runs jobs on a fixed set of goroutines.
type workPool struct {
	jobs     chan func(context.Context)
	refused  atomic.Uint64
	mRefused prometheus.CounterFunc
	mQueued  prometheus.GaugeFunc
}

func newWorkPool(queue int) *workPool {
	w := &workPool{jobs: make(chan func(context.Context), queue)}
	w.mRefused = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "respawn_scene", Name: "bus_refused_total",
		Help: "Bus messages refused because the bus work queue was full.",
	}, func() float64 { return float64(w.refused.Load()) })
	w.mQueued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "respawn_scene", Name: "bus_queued",
		Help: "Bus messages waiting for a worker.",
	}, func() float64 { return float64(len(w.jobs)) })
	return w
}

// run starts n workers that stop when ctx ends; jobs still queued then
// are dropped (their senders retry).
func (w *workPool) run(ctx context.Context, wg *sync.WaitGroup, n int) {
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case job := <-w.jobs:
					job(ctx)
				}
			}
		})
	}
}

// submit queues job, or reports false when the queue is full.
func (w *workPool) submit(job func(context.Context)) bool {
	select {
	case w.jobs <- job:
		return true
	default:
		w.refused.Add(1)
		return false
	}
}
