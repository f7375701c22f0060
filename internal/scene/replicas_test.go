package scene

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// While a republish is out, updates are held and then published after it,
// in the order they were made; past the bound a loop waits for the
// republish rather than publish ahead of it.
func TestUpdatesHeldWhileRepublishing(t *testing.T) {
	r := &replicas{log: zaptest.NewLogger(t)}
	var mu sync.Mutex
	var out []string
	pub := func(s string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			out = append(out, s)
			return nil
		}
	}
	r.put(pub("before")) // nothing to hold for: out at once
	r.mu.Lock()
	r.holding, r.flushed = true, make(chan struct{})
	r.mu.Unlock()
	for i := range 3 {
		r.put(pub(fmt.Sprint("held", i)))
	}
	mu.Lock()
	if fmt.Sprint(out) != "[before]" {
		t.Fatalf("published while the republish is out: %v", out)
	}
	mu.Unlock()
	pub("reset")()
	r.release()
	r.put(pub("after"))
	mu.Lock()
	if fmt.Sprint(out) != "[before reset held0 held1 held2 after]" {
		t.Fatalf("order %v", out)
	}
	mu.Unlock()

	// Over the bound: the update waits for the republish.
	out = nil
	r.mu.Lock()
	r.holding, r.flushed = true, make(chan struct{})
	for range maxHeld {
		r.held = append(r.held, func() {})
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.put(pub("waited")); close(done) }()
	select {
	case <-done:
		t.Fatal("an update over the bound was published during the republish")
	case <-time.After(50 * time.Millisecond):
	}
	r.release()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting update was not published after the republish")
	}
	if fmt.Sprint(out) != "[waited]" {
		t.Fatalf("after the bound: %v", out)
	}
}
