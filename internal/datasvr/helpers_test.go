package datasvr

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/bus"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/dataclient"
	"github.com/respawn-dev/respawn/internal/player"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/store"
)

// memStore is an in-memory store.Store whose database can be "down".
type memStore struct {
	mu     sync.Mutex
	rows   map[string]store.Record
	writes map[string]int // upserts per player
	down   atomic.Bool
	stats  store.Stats
}

func newMemStore() *memStore {
	return &memStore{rows: map[string]store.Record{}, writes: map[string]int{}}
}

var errDBDown = errors.New("memstore: database down")

func (m *memStore) Load(_ context.Context, id string) (store.Record, error) {
	if m.down.Load() {
		return store.Record{}, errDBDown
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[id]
	if !ok {
		return store.Record{}, store.ErrNotFound
	}
	return r, nil
}

func (m *memStore) SaveBatch(_ context.Context, recs []store.Record) error {
	if m.down.Load() {
		return errDBDown
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		if old, ok := m.rows[r.ID]; ok && old.Version > r.Version {
			continue
		}
		r.Data = append([]byte(nil), r.Data...)
		m.rows[r.ID] = r
		m.writes[r.ID]++
	}
	m.stats.Rows += uint64(len(recs))
	m.stats.Statements += 3
	m.stats.Batches++
	return nil
}

func (m *memStore) Stats() store.Stats { m.mu.Lock(); defer m.mu.Unlock(); return m.stats }
func (m *memStore) Close() error       { return nil }

func (m *memStore) row(id string) (store.Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.rows[id]
	return r, ok
}

func (m *memStore) writesOf(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.writes[id]
}

func testConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.Datasvr.Admin = "127.0.0.1:0"
	cfg.Datasvr.FlushInterval = time.Hour // tests flush explicitly
	cfg.Datasvr.GroupCommit = time.Millisecond
	return &cfg
}

type harness struct {
	t     *testing.T
	srv   *Server
	db    *memStore
	nc    *nats.Conn // as a scene
	gm    *nats.Conn // as the GM
	admin *dataclient.AdminClient
}

// connectAs logs in to the bus as role, with the secret of cfg's cluster.
func connectAs(t testing.TB, cfg *config.Config, url string, role bus.Role, opts ...nats.Option) *nats.Conn {
	t.Helper()
	sec, err := secret.Load(cfg.Secret, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := bus.Auth(role, sec)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, append(auth, opts...)...)
	if err != nil {
		t.Fatalf("connect to %s as %s: %v", url, role, err)
	}
	return nc
}

// start runs an in-process datasvr over db with cfg and connects to it.
func start(t *testing.T, cfg *config.Config, db *memStore, opts ...Option) *harness {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	opts = append([]Option{WithOpenStore(func(context.Context, string, string) (store.Store, error) { return db, nil })}, opts...)
	srv, err := New(cfg, log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		srv.Shutdown(context.Background())
		t.Fatal(err)
	}
	url := srv.NATSURL()
	nc := connectAs(t, cfg, url, bus.RoleScene)
	gm := connectAs(t, cfg, url, bus.RoleGM)
	tok, err := admin.OperatorToken(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, db: db, nc: nc, gm: gm, admin: dataclient.NewAdminClient(gm, tok)}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.nc.Close()
	h.gm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		h.t.Logf("shutdown: %v", err)
	}
}

func (h *harness) client(scene string, epoch uint64, opts ...dataclient.ClientOption) *dataclient.Client {
	c := dataclient.NewClient(h.nc, scene, epoch, zaptest.NewLogger(h.t, zaptest.Level(zap.ErrorLevel)), opts...)
	h.t.Cleanup(c.Close)
	return c
}

func (h *harness) flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := h.admin.Flush(ctx)
	return err
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func withItem(d player.Data, item string, n int64) player.Data {
	d = d.Clone()
	if err := d.Add(item, n); err != nil {
		panic(err)
	}
	return d
}
