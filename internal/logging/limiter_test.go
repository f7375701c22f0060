package logging

import (
	"testing"
	"time"
)

func TestLimiterCountsWhatItHolds(t *testing.T) {
	l := NewLimiter(time.Second, 2)
	t0 := time.Unix(1000, 0)
	if ok, n := l.Allow("a", t0); !ok || n != 0 {
		t.Fatalf("first line: %v %d", ok, n)
	}
	for i := range 5 {
		if ok, _ := l.Allow("a", t0.Add(time.Duration(i)*100*time.Millisecond)); ok {
			t.Fatalf("line %d within the interval passed", i)
		}
	}
	if ok, _ := l.Allow("b", t0); !ok {
		t.Fatal("another key is limited on its own")
	}
	if ok, n := l.Allow("a", t0.Add(time.Second)); !ok || n != 5 {
		t.Fatalf("after the interval: %v, suppressed %d, want 5", ok, n)
	}
	// Bounded: a third key resets the table instead of growing it.
	l.Allow("c", t0)
	if len(l.keys) > 2 {
		t.Fatalf("%d keys kept, limit 2", len(l.keys))
	}
}
