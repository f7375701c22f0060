package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/respawn-dev/respawn/internal/poll"
)

const converge = 10 * time.Second

func TestNonOwnerCannotWrite(t *testing.T) {
	m := testModule(Immediate, 0)
	_, err := NewWriter[rec](ctx(t), nil, m, RoleGateway, WriterOptions{})
	if !errors.Is(err, ErrNotOwner) {
		t.Fatalf("err = %v, want ErrNotOwner", err)
	}
	for _, want := range []string{"module m", `"gateway"`, `owner is "scene"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := NewReader[rec](ctx(t), nil, m, RoleDataSvr, ReaderOptions{}); !errors.Is(err, ErrNotSubscriber) {
		t.Fatalf("reader as datasvr: err = %v, want ErrNotSubscriber", err)
	}
	// Reader is read-only by type: it has no Put/Delete/Reset method.
	rt := reflect.TypeOf(&Reader[rec]{})
	for _, name := range []string{"Put", "Delete", "Reset", "Flush"} {
		if _, ok := rt.MethodByName(name); ok {
			t.Errorf("Reader has write method %s", name)
		}
	}
	if err := (Module{Name: "bad name", Owner: RoleScene}).Validate(); err == nil {
		t.Error("module name with a space accepted")
	}
	if err := (Module{Name: "b", Owner: RoleScene, Mode: Batched}).Validate(); err == nil {
		t.Error("batched module without interval accepted")
	}
}

func TestLateAndRestartedReaderConverge(t *testing.T) {
	each(t, func(t *testing.T, tg target) {
		m := testModule(Immediate, 0)
		p := prefix()
		w := newWriter(t, connect(t, tg.url), m, WriterOptions{Prefix: p, Instance: "scene-1"})
		want := map[string]rec{}
		for i := range 200 {
			k := fmt.Sprintf("k%03d", i)
			want[k] = rec{N: i, S: k}
			if err := w.Put(k, want[k]); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 20 {
			k := fmt.Sprintf("k%03d", i)
			delete(want, k)
			if err := w.Delete(k); err != nil {
				t.Fatal(err)
			}
		}

		// Started late: everything comes from the snapshot.
		rnc := connect(t, tg.url)
		r := newReader(t, rnc, m, ReaderOptions{Prefix: p})
		if err := r.WaitSynced(ctx(t)); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, converge, func() error { return sameAs(r, want) })

		var mu sync.Mutex
		seen := map[string]rec{}
		stop := r.Subscribe(func(k string, v rec, deleted bool) {
			mu.Lock()
			defer mu.Unlock()
			if deleted {
				delete(seen, k)
			} else {
				seen[k] = v
			}
		})
		defer stop()

		// Live updates follow.
		for i := 20; i < 40; i++ {
			k := fmt.Sprintf("k%03d", i)
			want[k] = rec{N: -i}
			if err := w.Put(k, want[k]); err != nil {
				t.Fatal(err)
			}
		}
		delete(want, "k199")
		if err := w.Delete("k199"); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, converge, func() error { return sameAs(r, want) })
		poll.Until(t, converge, func() error {
			mu.Lock()
			defer mu.Unlock()
			if !reflect.DeepEqual(seen, want) {
				return fmt.Errorf("subscriber saw %d keys, want %d", len(seen), len(want))
			}
			return nil
		})
		if keys := r.Keys(); !sort.StringsAreSorted(keys) || len(keys) != len(want) {
			t.Fatalf("Keys() = %d keys, sorted %v", len(keys), sort.StringsAreSorted(keys))
		}
		if st := r.Stats(); st.LagSamples == 0 || st.Keys != len(want) || !st.Synced {
			t.Fatalf("stats %+v", st)
		}

		// Restarted reader (new instance, new connection) converges too.
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		r2 := newReader(t, connect(t, tg.url), m, ReaderOptions{Prefix: p})
		poll.Until(t, converge, func() error { return sameAs(r2, want) })
	})
}

func TestBatchedMergesPerKey(t *testing.T) {
	each(t, func(t *testing.T, tg target) {
		p := prefix()
		// An interval far longer than the test: only Flush publishes.
		m := testModule(Batched, time.Hour)
		nc := connect(t, tg.url)
		upd, _, _ := subjects(p, m.Name)
		var mu sync.Mutex
		entries := map[string]int{}
		msgs := 0
		raw, err := nc.Subscribe(upd, func(msg *nats.Msg) {
			var wm wireMsg
			if json.Unmarshal(msg.Data, &wm) != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			msgs++
			for _, e := range wm.Entries {
				entries[e.Key]++
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Unsubscribe()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		w := newWriter(t, nc, m, WriterOptions{Prefix: p})
		r := newReader(t, connect(t, tg.url), m, ReaderOptions{Prefix: p})
		if err := r.WaitSynced(ctx(t)); err != nil {
			t.Fatal(err)
		}
		const n = 500
		for i := range n {
			if err := w.Put("a", rec{N: i}); err != nil {
				t.Fatal(err)
			}
			if err := w.Put("b", rec{N: -i}); err != nil {
				t.Fatal(err)
			}
		}
		_ = w.Put("gone", rec{})
		_ = w.Delete("gone")
		if st := w.Stats(); st.Messages != 0 || st.Pending != 3 {
			t.Fatalf("before flush: %+v", st)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, converge, func() error {
			// The raw subscriber is another connection: its copy may
			// arrive after the reader's.
			mu.Lock()
			got := msgs
			mu.Unlock()
			if got == 0 {
				return errors.New("the raw subscriber has no message yet")
			}
			return sameAs(r, map[string]rec{"a": {N: n - 1}, "b": {N: -(n - 1)}})
		})
		mu.Lock()
		if msgs != 1 || entries["a"] != 1 || entries["b"] != 1 || entries["gone"] != 1 {
			t.Errorf("%d changes per key became %d messages, entries %v; want 1 message, 1 entry per key", n, msgs, entries)
		}
		mu.Unlock()
		if st := w.Stats(); st.Messages != 1 || st.Entries != 3 || st.Puts != 2*n+1 {
			t.Errorf("writer stats %+v", st)
		}
	})
}

func TestBatchedIntervalPublishes(t *testing.T) {
	each(t, func(t *testing.T, tg target) {
		p := prefix()
		m := testModule(Batched, 100*time.Millisecond)
		w := newWriter(t, connect(t, tg.url), m, WriterOptions{Prefix: p})
		r := newReader(t, connect(t, tg.url), m, ReaderOptions{Prefix: p})
		start := time.Now()
		for i := range 100 {
			_ = w.Put("k", rec{N: i})
		}
		// No Flush: the interval does it.
		poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"k": {N: 99}}) })
		if el := time.Since(start); el > time.Second {
			t.Errorf("batched change took %v with a 100ms interval", el)
		}
		if st := w.Stats(); st.Entries > 2 {
			t.Errorf("100 puts of one key published %d entries", st.Entries)
		}
		// Close flushes what is pending.
		_ = w.Put("last", rec{N: 1})
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"k": {N: 99}, "last": {N: 1}}) })
	})
}

// publishRaw injects a hand-made message on the update subject.
func publishRaw(t *testing.T, nc *nats.Conn, subj string, wm wireMsg) {
	t.Helper()
	b, err := json.Marshal(wm)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(subj, b); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestOlderVersionIgnored(t *testing.T) {
	each(t, func(t *testing.T, tg target) {
		p := prefix()
		m := testModule(Immediate, 0)
		nc := connect(t, tg.url)
		w := newWriter(t, nc, m, WriterOptions{Prefix: p})
		r := newReader(t, connect(t, tg.url), m, ReaderOptions{Prefix: p})
		if err := r.WaitSynced(ctx(t)); err != nil {
			t.Fatal(err)
		}
		if err := w.Put("k", rec{N: 1}); err != nil {
			t.Fatal(err)
		}
		poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"k": {N: 1}}) })
		e, _ := r.Entry("k")
		upd, _, _ := subjects(p, m.Name)
		val, _ := json.Marshal(rec{N: 666})

		// Older and equal versions (a stale or duplicated update): ignored.
		before := r.Stats().Ignored
		publishRaw(t, nc, upd, wireMsg{Kind: kindUpdate, Instance: "x", Session: "inj", Seq: 1, Sent: time.Now().UnixNano(),
			Entries: []wireEntry{{Key: "k", Version: e.Version - 1, Value: val}, {Key: "k", Version: e.Version, Value: val}}})
		poll.Until(t, converge, func() error {
			if got := r.Stats().Ignored - before; got != 2 {
				return fmt.Errorf("ignored %d entries, want 2", got)
			}
			return nil
		})
		if v, _ := r.Get("k"); v.N != 1 {
			t.Fatalf("stale update applied: %+v", v)
		}
		// A stale tombstone is ignored as well.
		publishRaw(t, nc, upd, wireMsg{Kind: kindUpdate, Instance: "x", Session: "inj", Seq: 2, Sent: time.Now().UnixNano(),
			Entries: []wireEntry{{Key: "k", Version: e.Version - 1, Deleted: true}}})
		// A newer one on the same path is applied: the injection works.
		publishRaw(t, nc, upd, wireMsg{Kind: kindUpdate, Instance: "x", Session: "inj", Seq: 3, Sent: time.Now().UnixNano(),
			Entries: []wireEntry{{Key: "k", Version: e.Version + 1, Value: val}}})
		poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"k": {N: 666}}) })
		if st := r.Stats(); st.Ignored-before != 3 {
			t.Fatalf("ignored %d, want 3", st.Ignored-before)
		}
		// Garbage is counted, not fatal.
		_ = nc.Publish(upd, []byte("not json"))
		poll.Until(t, converge, func() error {
			if r.Stats().Errors == 0 {
				return errors.New("garbage not counted")
			}
			return nil
		})
	})
}

func TestGapTriggersResync(t *testing.T) {
	e := startEmbedded(t)
	p := prefix()
	m := testModule(Immediate, 0)
	nc := connect(t, e.url())
	w := newWriter(t, nc, m, WriterOptions{Prefix: p})
	_ = w.Put("a", rec{N: 1})
	r := newReader(t, connect(t, e.url()), m, ReaderOptions{Prefix: p})
	poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"a": {N: 1}}) })
	resyncs := r.Stats().Resyncs
	// Skip a sequence number of the writer's session, as a lost message would.
	w.mu.Lock()
	w.seq++
	w.state["b"] = wireEntry{Key: "b", Version: w.clock.next(), Value: []byte(`{"n":2}`)} // the "lost" change
	w.mu.Unlock()
	_ = w.Put("c", rec{N: 3})
	poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"a": {N: 1}, "b": {N: 2}, "c": {N: 3}}) })
	if st := r.Stats(); st.Gaps == 0 || st.Resyncs <= resyncs {
		t.Fatalf("gap not detected: %+v", st)
	}
}

func TestServerRestart(t *testing.T) {
	e := startEmbedded(t)
	p := prefix()
	m := testModule(Immediate, 0)
	mb := Module{Name: "mb", Owner: RoleScene, Subscribers: []Role{RoleGateway}, Mode: Batched, Interval: 50 * time.Millisecond}
	w := newWriter(t, connect(t, e.url()), m, WriterOptions{Prefix: p})
	wb := newWriter(t, connect(t, e.url()), mb, WriterOptions{Prefix: p})
	r := newReader(t, connect(t, e.url()), m, ReaderOptions{Prefix: p})
	rb := newReader(t, connect(t, e.url()), mb, ReaderOptions{Prefix: p})
	want := map[string]rec{}
	for i := range 50 {
		k := fmt.Sprint("k", i)
		want[k] = rec{N: i}
		_ = w.Put(k, want[k])
		_ = wb.Put(k, want[k])
	}
	poll.Until(t, converge, func() error { return sameAs(r, want) })
	poll.Until(t, converge, func() error { return sameAs(rb, want) })

	for round := range 2 {
		e.stop()
		// Changes while the server is down: buffered by the client or lost;
		// either way the readers must end up with them.
		for i := range 10 {
			k := fmt.Sprint("k", i)
			delete(want, k)
			_ = w.Delete(k)
			_ = wb.Delete(k)
		}
		for i := 50; i < 60; i++ {
			k := fmt.Sprint("n", round, "-", i)
			want[k] = rec{N: i, S: "down"}
			_ = w.Put(k, want[k])
			_ = wb.Put(k, want[k])
		}
		e.start()
		// And changes after the restart.
		want["after"] = rec{N: round}
		poll.Until(t, converge, func() error {
			if err := w.Put("after", want["after"]); err != nil {
				return err
			}
			return wb.Put("after", want["after"])
		})
		poll.Until(t, converge, func() error { return sameAs(r, want) })
		poll.Until(t, converge, func() error { return sameAs(rb, want) })
	}
	if st := r.Stats(); st.Resyncs < 2 {
		t.Errorf("reader resynced %d times across 2 restarts", st.Resyncs)
	}
}

// A server restart while the writer's messages are lost (not buffered):
// the reader gets them from the resync, not from replay.
func TestServerRestartLostUpdates(t *testing.T) {
	e := startEmbedded(t)
	p := prefix()
	m := testModule(Immediate, 0)
	wnc, err := nats.Connect(e.url(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer wnc.Close()
	w := newWriter(t, wnc, m, WriterOptions{Prefix: p})
	r := newReader(t, connect(t, e.url()), m, ReaderOptions{Prefix: p})
	_ = w.Put("a", rec{N: 1})
	poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"a": {N: 1}}) })
	e.stop()
	poll.Until(t, converge, func() error {
		if wnc.IsConnected() {
			return errors.New("writer still connected")
		}
		return nil
	})
	// With no reconnect buffer these fail to publish, but the writer's
	// state has them.
	_ = w.Put("a", rec{N: 2})
	_ = w.Put("b", rec{N: 3})
	e.start()
	poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"a": {N: 2}, "b": {N: 3}}) })
}

func TestOwnerCrashRepublish(t *testing.T) {
	each(t, func(t *testing.T, tg target) {
		p := prefix()
		m := testModule(Batched, 300*time.Millisecond)
		// Owner instance scene-1 on its own connection, so closing the
		// connection is what kill -9 does to it.
		nc1, err := nats.Connect(tg.url)
		if err != nil {
			t.Fatal(err)
		}
		w1, err := NewWriter[rec](ctx(t), nc1, m, RoleScene, WriterOptions{Prefix: p, Instance: "scene-1", Epoch: 1})
		if err != nil {
			t.Fatal(err)
		}
		w2 := newWriter(t, connect(t, tg.url), m, WriterOptions{Prefix: p, Instance: "scene-2", Epoch: 1})
		r := newReader(t, connect(t, tg.url), m, ReaderOptions{Prefix: p})
		for _, k := range []string{"p1", "p2", "p3", "moved"} {
			_ = w1.Put(k, rec{N: 1, S: "old"})
		}
		_ = w2.Put("q1", rec{N: 2})
		_ = w1.Flush()
		_ = w2.Flush()
		poll.Until(t, converge, func() error {
			return sameAs(r, map[string]rec{"p1": {1, "old"}, "p2": {1, "old"}, "p3": {1, "old"}, "moved": {1, "old"}, "q1": {N: 2}})
		})
		// The player "moved" goes to scene-2 before the crash.
		_ = w2.Put("moved", rec{N: 2, S: "moved"})
		_ = w2.Flush()
		poll.Until(t, converge, func() error {
			if e, _ := r.Entry("moved"); e.Instance != "scene-2" {
				return fmt.Errorf("moved held by %q", e.Instance)
			}
			return nil
		})

		// Crash: pending changes are lost, nothing is flushed.
		_ = w1.Put("p1", rec{N: 99, S: "lost"})
		nc1.Close()
		defer w1.Close()

		// Respawned incarnation rebuilds its state (p2 gone, p4 new) and
		// republishes it with newer versions.
		w1b := newWriter(t, connect(t, tg.url), m, WriterOptions{Prefix: p, Instance: "scene-1", Epoch: 2})
		start := time.Now()
		if err := w1b.Reset(map[string]rec{"p1": {N: 3, S: "new"}, "p3": {N: 3, S: "new"}, "p4": {N: 3, S: "new"}}); err != nil {
			t.Fatal(err)
		}
		want := map[string]rec{"p1": {3, "new"}, "p3": {3, "new"}, "p4": {3, "new"}, "moved": {2, "moved"}, "q1": {N: 2}}
		poll.Until(t, converge, func() error { return sameAs(r, want) })
		if el := time.Since(start); el > m.Interval {
			t.Errorf("converged after %v, more than one interval (%v)", el, m.Interval)
		}
		if e, _ := r.Entry("p1"); e.Epoch != 2 || e.Instance != "scene-1" {
			t.Errorf("p1 from %s epoch %d", e.Instance, e.Epoch)
		}
		// A reader started now sees the same (scene-1's dead incarnation
		// answers nothing).
		r2 := newReader(t, connect(t, tg.url), m, ReaderOptions{Prefix: p})
		poll.Until(t, converge, func() error { return sameAs(r2, want) })
	})
}

func TestMetricsAndDescribe(t *testing.T) {
	e := startEmbedded(t)
	p := prefix()
	m := testModule(Batched, 2*time.Second)
	reg := prometheus.NewRegistry()
	w := newWriter(t, connect(t, e.url()), m, WriterOptions{Prefix: p})
	r := newReader(t, connect(t, e.url()), m, ReaderOptions{Prefix: p, Registerer: reg})
	_ = w.Put("a", rec{})
	_ = w.Flush()
	poll.Until(t, converge, func() error { return sameAs(r, map[string]rec{"a": {}}) })
	if _, err := NewReader[rec](ctx(t), connect(t, e.url()), m, RoleCLI, ReaderOptions{Prefix: p, Registerer: reg}); err == nil {
		t.Error("second reader registered the same metrics")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, n := range []string{"respawn_replica_keys", "respawn_replica_lag_seconds", "respawn_replica_age_seconds", "respawn_replica_resyncs_total"} {
		if !got[n] {
			t.Errorf("metric %s missing (have %v)", n, got)
		}
	}
	_ = r.Close()
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Errorf("metrics still registered after Close: %d", len(mfs))
	}

	d := Describe(m, Stats{Keys: 3, LagP99: 1500 * time.Microsecond})
	b, _ := json.Marshal(d)
	var fields map[string]any
	_ = json.Unmarshal(b, &fields)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if strings.Join(keys, ",") != "interval_ms,keys,lag_p99_ms,mode,module,owner,subscribers" {
		t.Errorf("Describe fields %v", keys)
	}
	if d.Mode != "batched" || d.IntervalMS != 2000 || d.LagP99MS != 1.5 || d.Keys != 3 || d.Owner != "scene" {
		t.Errorf("Describe = %+v", d)
	}
}
