package main

import (
	"math/bits"
	"sync"
	"time"
)

// latencies is a latency histogram in fixed memory, whatever the run's
// length: exact below 128 µs, then 64 buckets per power of two (under 1.6%
// error), up to 2^40 µs. Sharded so bots on several cores rarely share a
// lock.
type latencies struct {
	shards [16]latShard
}

const (
	latExact   = 128
	latSub     = 64
	latBuckets = latExact + (40-7)*latSub
)

type latShard struct {
	mu     sync.Mutex
	counts [latBuckets]uint64
	n      uint64
	max    time.Duration
	_      [64]byte // keep shards on separate cache lines
}

func latBucket(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 0))
	if us < latExact {
		return int(us)
	}
	e := bits.Len64(us) - 1 // us in [2^e, 2^(e+1))
	i := latExact + (e-7)*latSub + int((us>>(e-6))&(latSub-1))
	return min(i, latBuckets-1)
}

// latLower is the smallest latency bucket i holds.
func latLower(i int) time.Duration {
	if i < latExact {
		return time.Duration(i) * time.Microsecond
	}
	e := (i-latExact)/latSub + 7
	sub := uint64((i - latExact) % latSub)
	return time.Duration(uint64(1)<<e+sub<<(e-6)) * time.Microsecond
}

func (l *latencies) record(shard int, d time.Duration) {
	s := &l.shards[shard%len(l.shards)]
	s.mu.Lock()
	s.counts[latBucket(d)]++
	s.n++
	s.max = max(s.max, d)
	s.mu.Unlock()
}

// summary returns the p50, p99 and max in milliseconds.
func (l *latencies) summary() (p50, p99, maxMs float64) {
	var all [latBuckets]uint64
	var n uint64
	var mx time.Duration
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for b, c := range s.counts {
			all[b] += c
		}
		n += s.n
		mx = max(mx, s.max)
		s.mu.Unlock()
	}
	if n == 0 {
		return 0, 0, 0
	}
	q := func(f float64) float64 {
		rank := uint64(f * float64(n))
		var seen uint64
		for b, c := range all {
			seen += c
			if seen > rank {
				return min(float64(latLower(b)), float64(mx)) / 1e6
			}
		}
		return float64(mx) / 1e6
	}
	return q(0.50), q(0.99), float64(mx) / 1e6
}
