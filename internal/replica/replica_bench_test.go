package replica

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/respawn-dev/respawn/internal/poll"
)

// Run: go test -run '^$' -bench . -benchtime 1x ./internal/replica/
// (each benchmark paces itself in wall-clock time; see docs/replicas.md).

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func quantiles(lags []time.Duration) (p50, p99 time.Duration) {
	if len(lags) == 0 {
		return 0, 0
	}
	slices.Sort(lags)
	return lags[(len(lags)-1)*50/100], lags[(len(lags)-1)*99/100]
}

// BenchmarkImmediateThroughput: flat-out Puts over 1000 keys; updates/s is
// measured until the reader has received every one.
func BenchmarkImmediateThroughput(b *testing.B) {
	e := startEmbedded(b)
	p := prefix()
	m := testModule(Immediate, 0)
	w := newWriter(b, connect(b, e.url()), m, WriterOptions{Prefix: p})
	r := newReader(b, connect(b, e.url()), m, ReaderOptions{Prefix: p, LagWindow: 1 << 20})
	if err := r.WaitSynced(context.Background()); err != nil {
		b.Fatal(err)
	}
	n := max(b.N, 200_000)
	start := time.Now()
	for i := range n {
		if err := w.Put(fmt.Sprint("k", i%1000), rec{N: i}); err != nil {
			b.Fatal(err)
		}
	}
	pub := time.Since(start)
	// Converged when every key shows its last value (a reader that fell
	// behind and dropped messages still gets there through a resync).
	poll.Until(b, time.Minute, func() error {
		for k := n - 1000; k < n; k++ {
			if v, _ := r.Get(fmt.Sprint("k", k%1000)); v.N != k {
				return fmt.Errorf("key k%d = %d, want %d", k%1000, v.N, k)
			}
		}
		return nil
	})
	el := time.Since(start)
	st := r.Stats()
	b.ReportMetric(float64(n)/pub.Seconds(), "published/s")
	b.ReportMetric(float64(n)/el.Seconds(), "updates/s")
	b.ReportMetric(float64(st.Gaps), "gaps")
	b.ReportMetric(ms(st.LagP50), "lag_p50_ms")
	b.ReportMetric(ms(st.LagP99), "lag_p99_ms")
}

// BenchmarkImmediatePaced: 10,000 updates/s for 2 s, a realistic busy
// module; lag is receive minus the owner's publish stamp.
func BenchmarkImmediatePaced(b *testing.B) {
	e := startEmbedded(b)
	p := prefix()
	m := testModule(Immediate, 0)
	w := newWriter(b, connect(b, e.url()), m, WriterOptions{Prefix: p})
	r := newReader(b, connect(b, e.url()), m, ReaderOptions{Prefix: p, LagWindow: 1 << 20})
	if err := r.WaitSynced(context.Background()); err != nil {
		b.Fatal(err)
	}
	const rate, dur = 10_000, 2 * time.Second
	n := pace(rate, dur, func(i int) { _ = w.Put(fmt.Sprint("k", i%1000), rec{N: i}) })
	poll.Until(b, time.Minute, func() error {
		if got := r.Stats().Messages; got < uint64(n) {
			return fmt.Errorf("reader got %d of %d", got, n)
		}
		return nil
	})
	st := r.Stats()
	b.ReportMetric(float64(n)/dur.Seconds(), "updates/s")
	b.ReportMetric(ms(st.LagP50), "lag_p50_ms")
	b.ReportMetric(ms(st.LagP99), "lag_p99_ms")
	b.ReportMetric(ms(st.LagMax), "lag_max_ms")
}

// pace calls fn rate times per second for dur, in 1 ms steps, and returns
// how many calls it made.
func pace(rate int, dur time.Duration, fn func(i int)) int {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	start := time.Now()
	i := 0
	for now := range t.C {
		el := now.Sub(start)
		if el >= dur {
			break
		}
		for target := int(el.Seconds() * float64(rate)); i < target; i++ {
			fn(i)
		}
	}
	return i
}

type benchPos struct {
	ID   string  `json:"id"`
	X    float64 `json:"x"`
	Y    float64 `json:"y"`
	Tput int64   `json:"t"` // when the owner called Put, to measure staleness
}

// BenchmarkPositions4000: 4000 players each moving at 10 Hz for 4 s,
// immediate versus batched on a 2 s interval (seed 002's example). Reports
// messages, entries and bytes published and the wire lag. (In batched mode
// a change also waits up to one interval, interval/2 on average, before it
// leaves the owner.)
func BenchmarkPositions4000(b *testing.B) {
	const players, hz, dur = 4000, 10, 4 * time.Second
	for _, mode := range []struct {
		name string
		m    Mode
		iv   time.Duration
	}{{"immediate", Immediate, 0}, {"batched2s", Batched, 2 * time.Second}} {
		b.Run(mode.name, func(b *testing.B) {
			e := startEmbedded(b)
			p := prefix()
			m := Module{Name: "pos", Owner: RoleScene, Subscribers: []Role{RoleCLI}, Mode: mode.m, Interval: mode.iv}
			wnc := connect(b, e.url())
			w, err := NewWriter[benchPos](ctx(b), wnc, m, RoleScene, WriterOptions{Prefix: p})
			if err != nil {
				b.Fatal(err)
			}
			r, err := NewReader[benchPos](ctx(b), connect(b, e.url()), m, RoleCLI, ReaderOptions{Prefix: p, LagWindow: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			if err := r.WaitSynced(context.Background()); err != nil {
				b.Fatal(err)
			}
			ids := make([]string, players)
			for i := range ids {
				ids[i] = fmt.Sprintf("player-%04d", i)
			}
			out0 := wnc.Stats().OutBytes
			puts := pace(players*hz, dur, func(i int) {
				pl := i % players
				_ = w.Put(ids[pl], benchPos{ID: ids[pl], X: float64(i), Y: float64(-i), Tput: time.Now().UnixNano()})
			})
			if err := w.Close(); err != nil { // flushes the last batch
				b.Fatal(err)
			}
			ws := w.Stats()
			poll.Until(b, time.Minute, func() error {
				if got := r.Stats().Messages; got < ws.Messages {
					return fmt.Errorf("reader got %d of %d messages", got, ws.Messages)
				}
				return nil
			})
			st := r.Stats()
			b.ReportMetric(float64(puts), "puts")
			b.ReportMetric(float64(ws.Messages), "msgs")
			b.ReportMetric(float64(ws.Entries), "entries")
			b.ReportMetric(float64(wnc.Stats().OutBytes-out0)/1e6, "MB")
			b.ReportMetric(ms(st.LagP50), "lag_p50_ms")
			b.ReportMetric(ms(st.LagP99), "lag_p99_ms")
		})
	}
}

// BenchmarkJetStreamKV is the alternative design: the owner Puts into an
// in-memory JetStream KV bucket and the reader follows a watcher. Same
// paced load as BenchmarkImmediatePaced, then flat out.
func BenchmarkJetStreamKV(b *testing.B) {
	for _, st := range []jetstream.StorageType{jetstream.MemoryStorage, jetstream.FileStorage} {
		b.Run(map[jetstream.StorageType]string{jetstream.MemoryStorage: "memory", jetstream.FileStorage: "file"}[st], func(b *testing.B) { benchKV(b, st) })
	}
}

func benchKV(b *testing.B, storage jetstream.StorageType) {
	e := startEmbedded(b)
	nc := connect(b, e.url())
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	c := context.Background()
	bucket := "rtest_" + nuid.Next()
	kv, err := js.CreateOrUpdateKeyValue(c, jetstream.KeyValueConfig{Bucket: bucket, Storage: storage})
	if err != nil {
		b.Fatal(err)
	}
	defer js.DeleteKeyValue(c, bucket)
	rjs, _ := jetstream.New(connect(b, e.url()))
	rkv, err := rjs.KeyValue(c, bucket)
	if err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithCancel(c)
	defer cancel()
	watch, err := rkv.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		b.Fatal(err)
	}
	defer watch.Stop()
	var mu sync.Mutex
	var lags []time.Duration
	got := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for en := range watch.Updates() {
			if en == nil {
				continue
			}
			var v benchPos
			if json.Unmarshal(en.Value(), &v) == nil {
				d := time.Since(time.Unix(0, v.Tput))
				mu.Lock()
				lags = append(lags, d)
				got++
				mu.Unlock()
			}
		}
	}()
	put := func(i int) {
		bb, _ := json.Marshal(benchPos{ID: "k", X: float64(i), Tput: time.Now().UnixNano()})
		if _, err := kv.Put(c, fmt.Sprint("k", i%1000), bb); err != nil {
			b.Error(err)
		}
	}
	wait := func(n int) {
		poll.Until(b, time.Minute, func() error {
			mu.Lock()
			defer mu.Unlock()
			if got < n {
				return fmt.Errorf("watcher got %d of %d", got, n)
			}
			return nil
		})
	}
	const rate, dur = 10_000, 2 * time.Second
	n := pace(rate, dur, put)
	wait(n)
	mu.Lock()
	p50, p99 := quantiles(lags)
	lags, got = nil, 0
	mu.Unlock()
	b.ReportMetric(float64(n)/dur.Seconds(), "paced_updates/s")
	b.ReportMetric(ms(p50), "paced_lag_p50_ms")
	b.ReportMetric(ms(p99), "paced_lag_p99_ms")

	const flat = 50_000
	start := time.Now()
	for i := range flat {
		put(i)
	}
	wait(flat)
	b.ReportMetric(flat/time.Since(start).Seconds(), "flat_updates/s")
	cancel()
	_ = watch.Stop()
	<-done
}
