package main

import (
	"math"
	"testing"
	"time"
)

// The histogram's quantiles are within its resolution (1.6%) of the exact
// ones, and the max is exact.
func TestLatenciesQuantiles(t *testing.T) {
	var l latencies
	// 1 µs .. 100 ms, uniformly: p50 ~50 ms, p99 ~99 ms.
	n := 100000
	for i := 1; i <= n; i++ {
		l.record(i, time.Duration(i)*time.Microsecond)
	}
	p50, p99, mx := l.summary()
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", p50, 50}, {"p99", p99, 99}} {
		if math.Abs(c.got-c.want)/c.want > 0.02 {
			t.Errorf("%s = %.3f ms, want %.3f within 2%%", c.name, c.got, c.want)
		}
	}
	if mx != 100 {
		t.Errorf("max = %v ms, want 100", mx)
	}
	// Buckets are monotonic and cover their own lower bounds.
	for i := 1; i < latBuckets; i++ {
		if latLower(i) <= latLower(i-1) {
			t.Fatalf("bucket %d lower %v <= bucket %d lower %v", i, latLower(i), i-1, latLower(i-1))
		}
		if latBucket(latLower(i)) != i {
			t.Fatalf("latBucket(latLower(%d)) = %d", i, latBucket(latLower(i)))
		}
	}
	var empty latencies
	if a, b, c := empty.summary(); a != 0 || b != 0 || c != 0 {
		t.Errorf("empty summary %v %v %v", a, b, c)
	}
}
