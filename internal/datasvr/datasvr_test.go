package datasvr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
)

func TestFencing(t *testing.T) {
	h := start(t, testConfig(t, t.TempDir()), newMemStore())
	ctx := ctxT(t)
	a1 := h.client("town", 1)
	if _, err := a1.Load(ctx, "p1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load of unknown player: %v, want ErrNotFound", err)
	}
	l, err := a1.LoadOrCreate(ctx, "p1", "Alice")
	if err != nil {
		t.Fatal(err)
	}
	d := withItem(l.Data, "sword", 1)
	if err := a1.Save(ctx, "p1", l.Version+1, d); err != nil {
		t.Fatal(err)
	}
	if err := a1.Save(ctx, "p1", l.Version+1, d); err != nil {
		t.Fatalf("identical resend of an acknowledged save: %v, want it acknowledged again", err)
	}
	if err := a1.Save(ctx, "p1", l.Version+1, withItem(d, "sword", 1)); !errors.Is(err, ErrOldVersion) {
		t.Fatalf("same version, other data: %v, want ErrOldVersion", err)
	}
	if err := a1.Save(ctx, "p1", l.Version, d); !errors.Is(err, ErrOldVersion) {
		t.Fatalf("older version: %v, want ErrOldVersion", err)
	}

	// Another scene can neither load nor save while town holds the lease.
	b := h.client("forest", 7)
	if _, err := b.Load(ctx, "p1"); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("load by another scene: %v, want ErrNotOwner", err)
	}
	if err := b.Save(ctx, "p1", 100, d); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("save by another scene: %v, want ErrNotOwner", err)
	}

	// A respawned town (epoch 2) takes the lease over; epoch 1 is fenced.
	a2 := h.client("town", 2)
	l2, err := a2.Load(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if l2.Data.Count("sword") != 1 || l2.Version <= l.Version+1 {
		t.Fatalf("epoch 2 loaded %+v", l2)
	}
	if err := a1.Save(ctx, "p1", l2.Version+10, d); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("save by stale epoch: %v, want ErrStaleEpoch", err)
	}
	if _, err := a1.Load(ctx, "p1"); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("load by stale epoch: %v, want ErrStaleEpoch", err)
	}
	// A save from an even newer epoch of the same scene takes over too
	// (a scene rebuilt from its log keeps saving without reloading).
	a3 := h.client("town", 3)
	if err := a3.Save(ctx, "p1", l2.Version+1, withItem(d, "gem", 1)); err != nil {
		t.Fatal(err)
	}
	if err := a2.Save(ctx, "p1", l2.Version+2, d); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("epoch 2 after epoch 3 saved: %v, want ErrStaleEpoch", err)
	}
	show, err := h.admin.Show(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if show.Owner == nil || *show.Owner != (Owner{Scene: "town", Epoch: 3}) || !show.Online || show.Items["gem"] != 1 {
		t.Fatalf("show: %+v", show)
	}

	// Release frees it for anyone.
	if err := a3.Release(ctx, "p1", 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := a3.Release(ctx, "p1", 0, nil); err != nil {
		t.Fatalf("retried release: %v", err)
	}
	if _, err := b.Load(ctx, "p1"); err != nil {
		t.Fatalf("load after release: %v", err)
	}
}

func TestHandoverMovesLeaseAndItemsTogether(t *testing.T) {
	h := start(t, testConfig(t, t.TempDir()), newMemStore())
	ctx := ctxT(t)
	a := h.client("town", 5)
	b := h.client("forest", 9)
	l, err := a.LoadOrCreate(ctx, "trav", "")
	if err != nil {
		t.Fatal(err)
	}
	d := withItem(withItem(l.Data, "potion", 3), player.GoldItem, 50)
	if err := a.Handover(ctx, "trav", "forest", l.Version+1, d); err != nil {
		t.Fatal(err)
	}
	// The source is done: it can no longer write the player.
	if err := a.Save(ctx, "trav", l.Version+2, withItem(d, "potion", 10)); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("save by the source after handover: %v, want ErrNotOwner", err)
	}
	// A retry of the same handover (the source did not see the ack) is fine.
	if err := a.Handover(ctx, "trav", "forest", l.Version+1, d); err != nil {
		t.Fatalf("retried handover: %v", err)
	}
	// Only the destination can claim it.
	if _, err := h.client("swamp", 1).Load(ctx, "trav"); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("load by a third scene: %v", err)
	}
	lb, err := b.Load(ctx, "trav")
	if err != nil {
		t.Fatal(err)
	}
	if lb.Data.Count("potion") != 3 || lb.Data.Gold != 50 {
		t.Fatalf("destination got %+v", lb.Data)
	}
	if err := a.Handover(ctx, "trav", "forest", l.Version+1, d); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("handover retry after the destination claimed: %v, want ErrNotOwner", err)
	}
	show, _ := h.admin.Show(ctx, "trav")
	if show.Owner == nil || *show.Owner != (Owner{Scene: "forest", Epoch: 9}) {
		t.Fatalf("owner after claim: %+v", show.Owner)
	}
}

func TestWriteBehindMergesSaves(t *testing.T) {
	db := newMemStore()
	h := start(t, testConfig(t, t.TempDir()), db)
	ctx := ctxT(t)
	c := h.client("town", 1)
	const players, saves = 20, 25
	var wg sync.WaitGroup
	for i := range players {
		wg.Go(func() {
			id := fmt.Sprintf("m%d", i)
			l, err := c.LoadOrCreate(ctx, id, "")
			if err != nil {
				t.Error(err)
				return
			}
			for v := range saves {
				if err := c.Save(ctx, id, l.Version+uint64(v)+1, withItem(l.Data, "coin", int64(v+1))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := h.flush(); err != nil {
		t.Fatal(err)
	}
	for i := range players {
		id := fmt.Sprintf("m%d", i)
		if n := db.writesOf(id); n != 1 {
			t.Fatalf("player %s written %d times for %d saves, want 1", id, n, saves)
		}
		r, _ := db.row(id)
		d, _ := player.Decode(r.Data)
		if d.Count("coin") != saves || r.OwnerScene != "town" || r.OwnerEpoch != 1 {
			t.Fatalf("row %s: %+v %s", id, r, r.Data)
		}
	}
	if st := h.srv.stats(); st.DirtyPlayers != 0 || st.JournalBytes != 0 || st.SavesAccepted != players*saves {
		t.Fatalf("after flush: %+v", st)
	}
}

func TestDatabaseDownAcksFromJournalAndFlushesLater(t *testing.T) {
	db := newMemStore()
	cfg := testConfig(t, t.TempDir())
	cfg.Datasvr.FlushInterval = 50 * time.Millisecond
	h := start(t, cfg, db)
	ctx := ctxT(t)
	c := h.client("town", 1)
	l, err := c.LoadOrCreate(ctx, "dbdown", "")
	if err != nil {
		t.Fatal(err)
	}
	db.down.Store(true)
	for v := uint64(1); v <= 10; v++ {
		if err := c.Save(ctx, "dbdown", l.Version+v, withItem(l.Data, "gem", int64(v))); err != nil {
			t.Fatalf("save with the database down: %v", err)
		}
	}
	poll.Until(t, 5*time.Second, poll.True("flush retries to count db errors", func() bool { return h.srv.m.dbErrors.Load() >= 2 }))
	if err := h.flush(); err == nil {
		t.Fatal("admin flush succeeded with the database down")
	}
	if st := h.srv.stats(); st.JournalBytes == 0 || st.DirtyPlayers == 0 {
		t.Fatalf("journal should hold the unflushed saves: %+v", st)
	}
	db.down.Store(false)
	poll.Until(t, 10*time.Second, poll.True("the retried flush to reach the database", func() bool {
		r, ok := db.row("dbdown")
		return ok && r.Version == l.Version+10
	}))
	poll.Until(t, 5*time.Second, poll.True("journal segments to be deleted", func() bool { return h.srv.stats().JournalBytes == 0 }))
}

func TestJournalReplayedIntoDatabaseBeforeAnswering(t *testing.T) {
	dir := t.TempDir()
	db := newMemStore()
	h := start(t, testConfig(t, dir), db)
	ctx := ctxT(t)
	c := h.client("town", 1)
	l, err := c.LoadOrCreate(ctx, "replay", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctx, "replay", l.Version+1, withItem(l.Data, "ring", 1)); err != nil {
		t.Fatal(err)
	}
	// The database never saw it; the shutdown flush fails too.
	db.down.Store(true)
	h.stop()
	if _, ok := db.row("replay"); ok {
		t.Fatal("row written although the database was down")
	}
	db.down.Store(false)
	h2 := start(t, testConfig(t, dir), db)
	r, ok := db.row("replay")
	if !ok || r.Version != l.Version+1 || r.OwnerScene != "town" {
		t.Fatalf("after restart the database has %+v (ok=%v)", r, ok)
	}
	show, err := h2.admin.Show(ctx, "replay")
	if err != nil || show.Items["ring"] != 1 {
		t.Fatalf("show after restart: %+v %v", show, err)
	}
}

func TestJournalFullRefusesSaves(t *testing.T) {
	db := newMemStore()
	cfg := testConfig(t, t.TempDir())
	cfg.Datasvr.JournalMaxBytes = 8 << 10
	h := start(t, cfg, db)
	ctx := ctxT(t)
	c := h.client("town", 1)
	l, err := c.LoadOrCreate(ctx, "full", "")
	if err != nil {
		t.Fatal(err)
	}
	db.down.Store(true)
	v := l.Version
	var saveErr error
	for range 200 {
		v++
		if saveErr = c.Save(ctx, "full", v, withItem(l.Data, "x", int64(v))); saveErr != nil {
			break
		}
	}
	if !errors.Is(saveErr, ErrUnavailable) {
		t.Fatalf("save into a full journal: %v, want ErrUnavailable", saveErr)
	}
	show, _ := h.admin.Show(ctx, "full")
	if show.Version != v-1 {
		t.Fatalf("refused save changed the player: version %d, want %d", show.Version, v-1)
	}
	db.down.Store(false)
	if err := h.flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctx, "full", v, withItem(l.Data, "x", int64(v))); err != nil {
		t.Fatalf("save after the flush made room: %v", err)
	}
}

func TestCacheEvictsOnlyCleanOfflinePlayers(t *testing.T) {
	db := newMemStore()
	cfg := testConfig(t, t.TempDir())
	cfg.Datasvr.CacheMaxBytes = 10 << 10 // ~30 players
	h := start(t, cfg, db)
	ctx := ctxT(t)
	for i := range 100 {
		if err := h.admin.Create(ctx, fmt.Sprintf("e%d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	online := h.client("town", 1)
	for i := range 5 {
		if _, err := online.Load(ctx, fmt.Sprintf("e%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.srv.stats().CachedPlayers; n != 100 {
		t.Fatalf("%d cached before the flush, want all 100 (dirty players are never evicted)", n)
	}
	if err := h.flush(); err != nil {
		t.Fatal(err)
	}
	st := h.srv.stats()
	if st.CachedPlayers >= 60 || st.CacheBytes > cfg.Datasvr.CacheMaxBytes {
		t.Fatalf("after the flush: %d cached, %d bytes", st.CachedPlayers, st.CacheBytes)
	}
	h.srv.mu.Lock()
	for i := range 5 {
		if h.srv.players[fmt.Sprintf("e%d", i)] == nil {
			t.Errorf("online player e%d was evicted", i)
		}
	}
	h.srv.mu.Unlock()
	// Evicted players come back from the database.
	show, err := h.admin.Show(ctx, "e50")
	if err != nil || show.Version != 1 {
		t.Fatalf("show evicted player: %+v %v", show, err)
	}
}

func TestGMGiveOfflineAndOnline(t *testing.T) {
	h := start(t, testConfig(t, t.TempDir()), newMemStore())
	ctx := ctxT(t)
	if err := h.admin.Create(ctx, "gm", "GM"); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.Create(ctx, "gm", "GM"); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	rep, err := h.admin.Give(ctx, "r1", "gm", player.GoldItem, 100)
	if err != nil || rep.Count != 100 || rep.Version != 2 {
		t.Fatalf("offline give: %+v %v", rep, err)
	}
	if _, err := h.admin.Give(ctx, "r2", "gm", "sword", -1); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("take more than held: %v", err)
	}

	// Online: datasvr forwards to the owner scene, which applies it and saves.
	town := h.client("town", 4)
	l, err := town.Load(ctx, "gm")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	cur, ver := l.Data, l.Version
	var got []GiveRequest
	sub, err := h.nc.Subscribe(SceneGiveSubject("town"), func(m *nats.Msg) {
		var req GiveRequest
		json.Unmarshal(m.Data, &req)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, req)
		rep := GiveReply{Player: req.Player}
		next := cur.Clone()
		if err := next.Add(req.Item, req.Count); err != nil {
			rep.Error = err.Error()
		} else if err := town.Save(context.Background(), req.Player, ver+1, next); err != nil {
			rep.Error = err.Error()
		} else {
			cur, ver = next, ver+1
			rep.Version, rep.Count = ver, next.Count(req.Item)
		}
		b, _ := json.Marshal(rep)
		m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	rep, err = h.admin.Give(ctx, "r3", "gm", player.GoldItem, -30)
	if err != nil || rep.Count != 70 {
		t.Fatalf("online take: %+v %v", rep, err)
	}
	if len(got) != 1 || got[0].ReqID != "r3" || got[0].Count != -30 {
		t.Fatalf("scene got %+v", got)
	}
	show, _ := h.admin.Show(ctx, "gm")
	if show.Gold != 70 || show.Version != rep.Version {
		t.Fatalf("show after online take: %+v", show)
	}
	if _, err := h.admin.Give(ctx, "r4", "gm", "shield", -1); err == nil {
		t.Fatal("online take of a missing item succeeded")
	}

	// Kick: the scene releases the player.
	ksub, _ := h.nc.Subscribe(SceneKickSubject("town"), func(m *nats.Msg) {
		var req KickRequest
		json.Unmarshal(m.Data, &req)
		rep := KickReply{Player: req.Player}
		if err := town.Release(context.Background(), req.Player, 0, nil); err != nil {
			rep.Error = err.Error()
		}
		b, _ := json.Marshal(rep)
		m.Respond(b)
	})
	defer ksub.Unsubscribe()
	// The subscription must reach the server before datasvr forwards the kick.
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.Kick(ctx, "k1", "gm", false); err != nil {
		t.Fatal(err)
	}
	if show, _ := h.admin.Show(ctx, "gm"); show.Online || show.Owner != nil {
		t.Fatalf("after kick: %+v", show)
	}
	// A dead scene: kick fails, --force releases the lease.
	dead := h.client("ghost", 1)
	if _, err := dead.Load(ctx, "gm"); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.Kick(ctx, "k2", "gm", false); !errors.Is(err, ErrSceneFailed) {
		t.Fatalf("kick with a dead scene: %v", err)
	}
	if err := h.admin.Kick(ctx, "k3", "gm", true); err != nil {
		t.Fatal(err)
	}
	if err := dead.Save(ctx, "gm", 1000, cur); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("save by force-kicked scene: %v", err)
	}
}

// TestSaveQueueRetriesUntilDatasvrIsBack runs datasvr against an external
// NATS server and starts it only after the scene enqueued saves.
func TestSaveQueueRetriesUntilDatasvrIsBack(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	dir := t.TempDir()
	db := newMemStore()
	cfg := testConfig(t, dir)
	cfg.NATS.URL = ns.ClientURL()
	h := start(t, cfg, db)
	ctx := ctxT(t)
	if err := h.admin.Create(ctx, "q1", ""); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.Create(ctx, "q2", ""); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	type res struct {
		player  string
		version uint64
		err     error
	}
	results := make(chan res, 100)
	c := dataclient.NewClient(nc, "town", 1, nil, dataclient.WithOnResult(func(p string, v uint64, err error) { results <- res{p, v, err} }))
	defer c.Close()
	l1, err := c.Load(ctx, "q1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Load(ctx, "q2"); err != nil {
		t.Fatal(err)
	}
	h.stop() // datasvr goes away; NATS stays

	for v := uint64(1); v <= 5; v++ {
		if err := c.Enqueue("q1", l1.Version+v, withItem(l1.Data, "arrow", int64(v))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Enqueue("q1", l1.Version+2, l1.Data); err != nil { // older: ignored
		t.Fatal(err)
	}
	// A rejected one: q2 saved with a version datasvr already has.
	if err := c.Enqueue("q2", 1, l1.Data); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(shortCtx(t, 300*time.Millisecond)); err == nil {
		t.Fatal("flush succeeded with datasvr down")
	}
	if c.Pending() != 2 {
		t.Fatalf("pending %d, want 2", c.Pending())
	}

	start(t, cfg, db) // datasvr is back, replays its journal
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]res{}
	for len(got) < 2 {
		r := <-results
		if _, dup := got[r.player]; dup && r.player == "q1" {
			continue // an intermediate version may have been sent before datasvr stopped
		}
		got[r.player] = r
	}
	if r := got["q1"]; r.err != nil || r.version != l1.Version+5 {
		// The newest version must be the one acknowledged last.
		for len(results) > 0 {
			r = <-results
		}
		if r.err != nil || r.version != l1.Version+5 {
			t.Fatalf("q1 result %+v", r)
		}
	}
	if r := got["q2"]; !errors.Is(r.err, ErrBadRequest) && !errors.Is(r.err, ErrOldVersion) {
		t.Fatalf("q2 result %+v, want a rejection", r)
	}
}

func shortCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestManyConcurrentSavesShareFsyncs(t *testing.T) {
	db := newMemStore()
	h := start(t, testConfig(t, t.TempDir()), db)
	ctx := ctxT(t)
	c := h.client("town", 1)
	const n = 200
	for i := range n {
		if _, err := c.LoadOrCreate(ctx, fmt.Sprintf("g%d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	before := h.srv.journal.Stats()
	var acked atomic.Int64
	done := make(chan struct{})
	c2 := h.client("town", 1, dataclient.WithOnResult(func(_ string, _ uint64, err error) {
		if err != nil {
			t.Error(err)
		}
		if acked.Add(1) == n {
			close(done)
		}
	}))
	for i := range n {
		id := fmt.Sprintf("g%d", i)
		if err := c2.Enqueue(id, 10, player.Data{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("only %d of %d saves acknowledged", acked.Load(), n)
	}
	after := h.srv.journal.Stats()
	if fs := after.Fsyncs - before.Fsyncs; fs >= n/2 {
		t.Fatalf("%d fsyncs for %d concurrent saves", fs, n)
	}
}

// TestPacedFlushKeepsJournalBounded saves continuously into a small
// journal: only checkpoints that keep up (while players are dirty all the
// time) let every save through.
func TestPacedFlushKeepsJournalBounded(t *testing.T) {
	db := newMemStore()
	cfg := testConfig(t, t.TempDir())
	cfg.Datasvr.FlushInterval = 50 * time.Millisecond
	cfg.Datasvr.JournalMaxBytes = 64 << 10
	h := start(t, cfg, db)
	ctx := ctxT(t)
	c := h.client("town", 1)
	const players = 8
	// A fixed number of saves, not a fixed time: a loaded machine makes
	// fewer saves per second, which must not fail the test.
	const savesEach = 100
	var wg sync.WaitGroup
	began := time.Now()
	for i := range players {
		wg.Go(func() {
			id := fmt.Sprintf("pf%d", i)
			l, err := c.LoadOrCreate(ctx, id, "")
			if err != nil {
				t.Error(err)
				return
			}
			for v := l.Version + 1; v <= l.Version+savesEach; v++ {
				if err := c.Save(ctx, id, v, withItem(l.Data, "coin", int64(v))); err != nil {
					t.Errorf("save %s v%d: %v", id, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(began)
	st := h.srv.stats()
	if st.SavesAccepted < players*savesEach {
		t.Fatalf("%d saves accepted, want %d", st.SavesAccepted, players*savesEach)
	}
	// Paced write-behind writes a player at most once per flush interval
	// (plus the first and last write), however fast the saves come.
	if limit := uint64(players) * (uint64(elapsed/cfg.Datasvr.FlushInterval) + 2); st.DBRows > limit {
		t.Fatalf("%d rows for %d saves in %s: more than one write per player per %s (limit %d)",
			st.DBRows, st.SavesAccepted, elapsed, cfg.Datasvr.FlushInterval, limit)
	}
	poll.Until(t, 5*time.Second, poll.True("every player flushed", func() bool {
		for i := range players {
			id := fmt.Sprintf("pf%d", i)
			show, err := h.admin.Show(ctx, id)
			if r, ok := db.row(id); err != nil || !ok || r.Version != show.Version {
				return false
			}
		}
		return true
	}))
}
