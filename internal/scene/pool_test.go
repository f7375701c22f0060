package scene

import (
	"context"
	"sync"
	"testing"
	"time"
)

// The bus pool runs at most its workers at once, queues up to its bound,
// refuses (and counts) the rest, and stops with its context.
func TestWorkPoolIsBounded(t *testing.T) {
	const workers, queue = 3, 5
	p := newWorkPool(queue)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p.run(ctx, &wg, workers)

	release := make(chan struct{})
	started := make(chan struct{}, workers+queue)
	job := func(context.Context) { started <- struct{}{}; <-release }
	for i := range workers {
		if !p.submit(job) {
			t.Fatalf("job %d refused with idle workers", i)
		}
	}
	for range workers {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("a worker never took a job")
		}
	}
	// Every worker is busy: the queue takes exactly its bound.
	for i := range queue {
		if !p.submit(job) {
			t.Fatalf("queued job %d refused below the bound", i)
		}
	}
	if p.submit(job) {
		t.Fatal("a job beyond workers+queue was accepted")
	}
	if got := p.refused.Load(); got != 1 {
		t.Fatalf("refused count %d, want 1", got)
	}
	close(release)
	for range queue {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("a queued job never ran")
		}
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("workers did not stop with their context")
	}
}
