package datasvr

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/store"
)

// flakyOpen is an OpenStoreFunc that fails while down is set.
func flakyOpen(db *memStore, down *atomic.Bool) Option {
	return WithOpenStore(func(context.Context, string, string) (store.Store, error) {
		if down.Load() {
			return nil, errDBDown
		}
		return db, nil
	})
}

func healthz(t *testing.T, h *harness) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + h.srv.AdminAddr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("healthz %s: %v", raw, err)
	}
	return m
}

func TestDatabaseDownAtStartServesFromJournal(t *testing.T) {
	dir := t.TempDir()
	db := newMemStore()
	cfg := testConfig(t, dir)
	cfg.Datasvr.FlushInterval = 50 * time.Millisecond
	// A player known only to the journal: saved, then the database lost
	// before the flush.
	h := start(t, cfg, db)
	ctx := ctxT(t)
	town := h.client("town", 1)
	l, err := town.LoadOrCreate(ctx, "old", "")
	if err != nil {
		t.Fatal(err)
	}
	db.down.Store(true)
	if err := town.Save(ctx, "old", l.Version+1, withItem(l.Data, "ring", 1)); err != nil {
		t.Fatal(err)
	}
	h.stop()

	var down atomic.Bool
	down.Store(true)
	h = start(t, cfg, db, flakyOpen(db, &down))
	if st := h.srv.stats(); st.Degraded == "" {
		t.Fatalf("started without a database but not degraded: %+v", st)
	}
	if hz := healthz(t, h); hz["healthy"] != true || hz["degraded"] == nil || hz["pid"] == nil {
		t.Fatalf("healthz while degraded: %v", hz)
	}
	town = h.client("town", 2)
	// The journal's player is served and saved.
	l2, err := town.Load(ctx, "old")
	if err != nil || l2.Data.Count("ring") != 1 {
		t.Fatalf("load of a journaled player while degraded: %+v %v", l2, err)
	}
	if err := town.Save(ctx, "old", l2.Version+1, withItem(l2.Data, "ring", 1)); err != nil {
		t.Fatal(err)
	}
	// An uncached player cannot be loaded: a clear, retryable error.
	if _, err := town.Load(ctx, "stranger"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("load of an uncached player while degraded: %v, want ErrUnavailable", err)
	}
	// A new player is created (provisionally), enters and saves.
	if err := h.admin.CreateReq(ctx, "c1", "fresh", "Fresh"); err != nil {
		t.Fatalf("create while degraded: %v", err)
	}
	if err := h.admin.CreateReq(ctx, "c1", "fresh", "Fresh"); err != nil {
		t.Fatalf("repeated create (same request id): %v", err)
	}
	lf, err := town.Load(ctx, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	if err := town.Save(ctx, "fresh", lf.Version+1, withItem(lf.Data, player.GoldItem, 5)); err != nil {
		t.Fatal(err)
	}
	if _, ok := db.row("fresh"); ok {
		t.Fatal("row written while the database was down")
	}

	down.Store(false)
	db.down.Store(false)
	poll.Until(t, 15*time.Second, poll.True("rows written through after the database came back", func() bool {
		a, okA := db.row("old")
		f, okF := db.row("fresh")
		return okA && okF && a.Version == l2.Version+1 && f.Version == lf.Version+1
	}))
	poll.Until(t, 5*time.Second, poll.True("degraded cleared", func() bool { return h.srv.stats().Degraded == "" }))
	if hz := healthz(t, h); hz["degraded"] != nil {
		t.Fatalf("healthz after recovery: %v", hz)
	}
}

func TestDatabaseLostMidRunThenBack(t *testing.T) {
	db := newMemStore()
	cfg := testConfig(t, t.TempDir())
	cfg.Datasvr.FlushInterval = 50 * time.Millisecond
	h := start(t, cfg, db)
	ctx := ctxT(t)
	town := h.client("town", 1)
	l, err := town.LoadOrCreate(ctx, "mid", "")
	if err != nil {
		t.Fatal(err)
	}
	db.down.Store(true)
	if err := town.Save(ctx, "mid", l.Version+1, withItem(l.Data, "gem", 1)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, poll.True("degraded reported", func() bool { return h.srv.stats().Degraded != "" }))
	db.down.Store(false)
	poll.Until(t, 10*time.Second, poll.True("written through", func() bool {
		r, ok := db.row("mid")
		return ok && r.Version == l.Version+1
	}))
	poll.Until(t, 5*time.Second, poll.True("degraded cleared", func() bool { return h.srv.stats().Degraded == "" }))
}

// A player created without the database that the database already has:
// the database's copy wins, above both versions, and the scene's next save
// is refused as older (the scene then reloads it).
func TestProvisionalCreateConflictKeepsDatabaseCopy(t *testing.T) {
	db := newMemStore()
	old, _ := player.Data{ID: "dup", Name: "Original", Level: 7, Gold: 500}.Encode()
	db.rows["dup"] = store.Record{ID: "dup", Version: 9, Data: old}
	var down atomic.Bool
	down.Store(true)
	cfg := testConfig(t, t.TempDir())
	cfg.Datasvr.FlushInterval = 50 * time.Millisecond
	h := start(t, cfg, db, flakyOpen(db, &down))
	ctx := ctxT(t)
	if err := h.admin.Create(ctx, "dup", "Impostor"); err != nil {
		t.Fatal(err)
	}
	town := h.client("town", 1)
	l, err := town.Load(ctx, "dup")
	if err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	poll.Until(t, 10*time.Second, poll.True("the conflict resolved", func() bool { return h.srv.m.createConflicts.Load() == 1 }))
	show, err := h.admin.Show(ctx, "dup")
	if err != nil || show.Name != "Original" || show.Gold != 500 || show.Version != 10 {
		t.Fatalf("after the conflict: %+v %v", show, err)
	}
	if err := town.Save(ctx, "dup", l.Version+1, l.Data); !errors.Is(err, ErrOldVersion) {
		t.Fatalf("save of the provisional copy: %v, want ErrOldVersion", err)
	}
	poll.Until(t, 5*time.Second, poll.True("the database row", func() bool {
		r, ok := db.row("dup")
		return ok && r.Version == 10
	}))
}

func TestGMRequestIDsExactlyOnceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	db := newMemStore()
	cfg := testConfig(t, dir)
	h := start(t, cfg, db)
	ctx := ctxT(t)
	if err := h.admin.Create(ctx, "p", ""); err != nil {
		t.Fatal(err)
	}
	rep, err := h.admin.Give(ctx, "g1", "p", player.GoldItem, 10)
	if err != nil || rep.Count != 10 {
		t.Fatalf("give: %+v %v", rep, err)
	}
	again, err := h.admin.Give(ctx, "g1", "p", player.GoldItem, 10)
	if err != nil || again != rep {
		t.Fatalf("repeat: %+v %v, want %+v", again, err, rep)
	}
	if _, err := h.admin.Give(ctx, "g1", "p", player.GoldItem, 11); !errors.Is(err, ErrRequestConflict) {
		t.Fatalf("same id, other body: %v, want ErrRequestConflict", err)
	}
	// Flush (the journal is checkpointed away) and restart: the table
	// still knows g1.
	if err := h.flush(); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h = start(t, cfg, db)
	again, err = h.admin.Give(ctx, "g1", "p", player.GoldItem, 10)
	if err != nil || again != rep {
		t.Fatalf("repeat after restart: %+v %v, want %+v", again, err, rep)
	}
	show, _ := h.admin.Show(ctx, "p")
	if show.Gold != 10 {
		t.Fatalf("gold %d after one give and two repeats", show.Gold)
	}
}

// A crash right after the journal append (before the table file is
// written) is covered by the journal's copy of the request record.
func TestGMRequestIDFromJournalAfterCrash(t *testing.T) {
	dir := t.TempDir()
	db := newMemStore()
	cfg := testConfig(t, dir)
	h := start(t, cfg, db)
	ctx := ctxT(t)
	if err := h.admin.Create(ctx, "q", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.Give(ctx, "g2", "q", "potion", 3); err != nil {
		t.Fatal(err)
	}
	db.down.Store(true) // nothing reaches the database: the journal keeps it
	h.stop()
	// Lose the table file, as if the process died before writing it.
	if err := removeFile(dir + "/gm-requests.jsonl"); err != nil {
		t.Fatal(err)
	}
	db.down.Store(false)
	h = start(t, cfg, db)
	rep, err := h.admin.Give(ctx, "g2", "q", "potion", 3)
	if err != nil || rep.Count != 3 {
		t.Fatalf("repeat after crash: %+v %v", rep, err)
	}
}

func removeFile(p string) error { return os.Remove(p) }
