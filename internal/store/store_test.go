package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is one database the conformance suite runs against.
type backend struct {
	name string
	// dsn returns a DSN and data dir for a test. SQLite gets a fresh file
	// per test; the servers are shared (also with concurrent test runs),
	// so tests there isolate by player-id prefix instead.
	dsn    func(t testing.TB) (dsn, dataDir string)
	shared bool
}

func backends(t testing.TB) []backend {
	bs := []backend{{
		name: "sqlite",
		dsn: func(t testing.TB) (string, string) {
			return "sqlite:respawn.db", t.TempDir()
		},
	}}
	for _, b := range []struct{ name, env string }{
		{"postgres", "RESPAWN_TEST_POSTGRES_DSN"},
		{"mysql", "RESPAWN_TEST_MYSQL_DSN"},
	} {
		dsn := os.Getenv(b.env)
		if dsn == "" {
			t.Logf("%s: %s unset, skipping this backend", b.name, b.env)
			continue
		}
		bs = append(bs, backend{
			name:   b.name,
			dsn:    func(testing.TB) (string, string) { return dsn, "" },
			shared: true,
		})
	}
	return bs
}

// forEachBackend runs fn as a subtest per backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

var prefixSeq atomic.Uint64

// uniquePrefix returns a player-id prefix no other test (or test run on the
// same server) uses. It avoids LIKE's wildcards so cleanup can match it.
func uniquePrefix() string {
	return fmt.Sprintf("t%d-%d-%d-", os.Getpid(), time.Now().UnixNano(), prefixSeq.Add(1))
}

// openTest opens b and returns the store plus an id prefix; rows with that
// prefix are deleted when the test ends.
func openTest(t testing.TB, b backend) (*sqlStore, string) {
	t.Helper()
	dsn, dir := b.dsn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Open(ctx, dsn, dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s := st.(*sqlStore)
	prefix := uniquePrefix()
	t.Cleanup(func() {
		q := "DELETE FROM players WHERE id LIKE " + s.d.placeholder(1)
		if _, err := s.w.Exec(q, prefix+"%"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, prefix
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustLoad(t testing.TB, s Store, id string) Record {
	t.Helper()
	r, err := s.Load(ctxT(t), id)
	if err != nil {
		t.Fatalf("Load(%q): %v", id, err)
	}
	return r
}

func mustSave(t testing.TB, s Store, recs ...Record) {
	t.Helper()
	if err := s.SaveBatch(ctxT(t), recs); err != nil {
		t.Fatalf("SaveBatch(%d): %v", len(recs), err)
	}
}

func checkRecord(t testing.TB, got, want Record) {
	t.Helper()
	if got.ID != want.ID || got.Version != want.Version || !bytes.Equal(got.Data, want.Data) ||
		got.OwnerScene != want.OwnerScene || got.OwnerEpoch != want.OwnerEpoch {
		t.Fatalf("record mismatch:\n got  %+v\n want %+v", got, want)
	}
}

func TestLoadUnknown(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		_, err := s.Load(ctxT(t), p+"nobody")
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Load unknown: got %v, want ErrNotFound", err)
		}
		if !strings.Contains(err.Error(), p+"nobody") {
			t.Errorf("error %q does not name the player", err)
		}
	})
}

func TestSaveLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		recs := []Record{
			{ID: p + "alice", Version: 1, Data: []byte("hello")},
			{ID: p + "bob", Version: 7, Data: []byte{0, 1, 2, 0xff, 0, '\'', '\\', '"'}, OwnerScene: "scene-3", OwnerEpoch: 42},
			{ID: p + "empty", Version: 2, Data: []byte{}},
			{ID: p + "Alice", Version: 3, Data: []byte("case matters")},
			{ID: p + "ünï©ødé", Version: 4, Data: []byte("utf8 id")},
		}
		mustSave(t, s, recs...)
		for _, want := range recs {
			checkRecord(t, mustLoad(t, s, want.ID), want)
		}
		// A nil Data is stored as empty, not rejected as NULL.
		mustSave(t, s, Record{ID: p + "nil", Version: 1})
		if got := mustLoad(t, s, p+"nil"); got.Data == nil || len(got.Data) != 0 {
			t.Errorf("nil data loaded as %#v, want empty non-nil", got.Data)
		}
	})
}

func TestBatch2000(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		recs := make([]Record, 2000)
		for i := range recs {
			recs[i] = Record{ID: fmt.Sprintf("%sp%04d", p, i), Version: uint64(i + 1), Data: bytes.Repeat([]byte{byte(i)}, 100+i%50)}
		}
		before := s.Stats()
		mustSave(t, s, recs...)
		after := s.Stats()
		// BEGIN + 2000/maxChunkRows upserts + COMMIT.
		if d := after.Statements - before.Statements; d != 2+2000/maxChunkRows {
			t.Errorf("statements for one batch of 2000: %d, want %d", d, 2+2000/maxChunkRows)
		}
		if d := after.Rows - before.Rows; d != 2000 {
			t.Errorf("rows: %d, want 2000", d)
		}
		var n int
		q := "SELECT COUNT(*) FROM players WHERE id LIKE " + s.d.placeholder(1)
		if err := s.r.QueryRow(q, p+"%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 2000 {
			t.Fatalf("stored %d rows, want 2000", n)
		}
		for _, i := range []int{0, 499, 500, 1234, 1999} {
			checkRecord(t, mustLoad(t, s, recs[i].ID), recs[i])
		}
	})
}

func TestOlderVersionNeverOverwrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		id := p + "x"
		rec := func(v uint64, data string) Record {
			return Record{ID: id, Version: v, Data: []byte(data), OwnerScene: "s" + data, OwnerEpoch: v * 10}
		}

		// Within one batch, in both orders.
		mustSave(t, s, rec(5, "five"), rec(3, "three"))
		checkRecord(t, mustLoad(t, s, id), rec(5, "five"))
		mustSave(t, s, rec(7, "seven"), rec(6, "six"), rec(8, "eight"), rec(2, "two"))
		checkRecord(t, mustLoad(t, s, id), rec(8, "eight"))

		// Across batches.
		mustSave(t, s, rec(4, "four"))
		checkRecord(t, mustLoad(t, s, id), rec(8, "eight"))
		mustSave(t, s, rec(9, "nine"))
		checkRecord(t, mustLoad(t, s, id), rec(9, "nine"))

		// The same version rewrites (Store: only a NEWER stored version is
		// left alone), so a retried flush is harmless; within a batch the
		// later record wins, as if written one by one.
		mustSave(t, s, rec(9, "nine-a"), rec(9, "nine-b"))
		checkRecord(t, mustLoad(t, s, id), rec(9, "nine-b"))

		// Mixed batch: the stale row is skipped, the others are written.
		other := Record{ID: p + "y", Version: 1, Data: []byte("y")}
		mustSave(t, s, rec(1, "one"), other)
		checkRecord(t, mustLoad(t, s, id), rec(9, "nine-b"))
		checkRecord(t, mustLoad(t, s, other.ID), other)
	})
}

func TestOwnerRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		r := Record{ID: p + "o", Version: 1, Data: []byte("d"), OwnerScene: "scene-a", OwnerEpoch: 1 << 40}
		mustSave(t, s, r)
		checkRecord(t, mustLoad(t, s, r.ID), r)
		r.Version, r.OwnerScene, r.OwnerEpoch = 2, "scene-b", 1<<40+1
		mustSave(t, s, r)
		checkRecord(t, mustLoad(t, s, r.ID), r)
		r.Version, r.OwnerScene = 3, "" // lease released
		mustSave(t, s, r)
		checkRecord(t, mustLoad(t, s, r.ID), r)
	})
}

func TestMigrationsIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn, dir := b.dsn(t)
		ctx := ctxT(t)
		s1, err := Open(ctx, dsn, dir)
		if err != nil {
			t.Fatal(err)
		}
		defer s1.Close()
		s2, err := Open(ctx, dsn, dir)
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer s2.Close()
		if n := s2.(*sqlStore).applied; n != 0 {
			t.Errorf("second Open applied %d migrations, want 0", n)
		}
		if !b.shared {
			if n := s1.(*sqlStore).applied; n != len(s1.(*sqlStore).d.migrations) {
				t.Errorf("first Open applied %d migrations, want %d", n, len(s1.(*sqlStore).d.migrations))
			}
		}
		checkMigrationRows(t, s2.(*sqlStore))
	})
}

// checkMigrationRows asserts schema_migrations holds each version once.
func checkMigrationRows(t *testing.T, s *sqlStore) {
	t.Helper()
	var n, distinct int
	if err := s.r.QueryRow("SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if want := len(s.d.migrations); n != want || distinct != want {
		t.Errorf("schema_migrations has %d rows (%d distinct), want %d", n, distinct, want)
	}
}

func TestConcurrentOpen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn, dir := b.dsn(t)
		ctx := ctxT(t)
		const n = 8
		stores := make([]Store, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				stores[i], errs[i] = Open(ctx, dsn, dir)
			})
		}
		close(start)
		wg.Wait()
		applied := 0
		for i := range n {
			if errs[i] != nil {
				t.Errorf("Open %d: %v", i, errs[i])
				continue
			}
			applied += stores[i].(*sqlStore).applied
			defer stores[i].Close()
		}
		if t.Failed() {
			return
		}
		s := stores[0].(*sqlStore)
		if !b.shared && applied != len(s.d.migrations) {
			t.Errorf("%d concurrent Opens applied %d migrations in total, want %d", n, applied, len(s.d.migrations))
		}
		checkMigrationRows(t, s)
	})
}

// TestConcurrentWriters flushes overlapping players from several
// goroutines, half of them in reverse order: without a consistent row
// order PostgreSQL and InnoDB would report deadlocks here.
func TestConcurrentWriters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 10 {
					recs := make([]Record, 200)
					for j := range recs {
						k := j
						if w%2 == 1 {
							k = len(recs) - 1 - j
						}
						recs[j] = Record{ID: fmt.Sprintf("%sw-%03d", p, k), Version: uint64(i + 1), Data: []byte{byte(w)}}
					}
					if err := s.SaveBatch(ctxT(t), recs); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		if got := mustLoad(t, s, p+"w-199"); got.Version != 10 {
			t.Errorf("version %d, want 10", got.Version)
		}
	})
}

func TestStats(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		if st := s.Stats(); st != (Stats{}) {
			t.Fatalf("fresh store stats %+v, want zero (migrations are not counted)", st)
		}
		mustSave(t, s) // empty batch: nothing sent
		mustSave(t, s, Record{ID: p + "a", Version: 1}, Record{ID: p + "b", Version: 1}, Record{ID: p + "c", Version: 1})
		mustLoad(t, s, p+"a")
		want := Stats{Rows: 3, Statements: 3 + 1, Batches: 1}
		if st := s.Stats(); st != want {
			t.Fatalf("stats %+v, want %+v", st, want)
		}
		// Duplicates collapse before they are sent.
		mustSave(t, s, Record{ID: p + "a", Version: 2}, Record{ID: p + "a", Version: 3})
		want = Stats{Rows: 4, Statements: 7, Batches: 2}
		if st := s.Stats(); st != want {
			t.Fatalf("stats %+v, want %+v", st, want)
		}
	})
}

func TestSaveBatchErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s, p := openTest(t, b)
		err := s.SaveBatch(ctxT(t), []Record{{ID: p + "big", Version: 1 << 63}})
		if err == nil || !strings.Contains(err.Error(), p+"big") {
			t.Errorf("version > MaxInt64: got %v, want error naming the player", err)
		}
		err = s.SaveBatch(ctxT(t), []Record{{ID: p + "ok", Version: 1}, {Version: 1}})
		if err == nil || !strings.Contains(err.Error(), "batch of 2") {
			t.Errorf("empty id: got %v, want error naming the batch size", err)
		}
		if _, err := s.Load(ctxT(t), p+"ok"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a rejected batch wrote a row: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err = s.SaveBatch(ctx, []Record{{ID: p + "c", Version: 1}})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled ctx: got %v, want context.Canceled", err)
		}
	})
}

func TestBadDSN(t *testing.T) {
	for _, dsn := range []string{
		"redis://user:hunter2@localhost:6379/0",
		"user:hunter2@tcp(localhost:3306)/db",
		"hunter2",
		"",
	} {
		_, err := Open(context.Background(), dsn, t.TempDir())
		if err == nil {
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Open(%q) error leaks the password: %v", dsn, err)
		}
		t.Logf("%q: %v", dsn, err)
	}
	_, err := Open(context.Background(), "redis://user:hunter2@localhost/0", t.TempDir())
	if !strings.Contains(err.Error(), `"redis"`) {
		t.Errorf("error %q does not name the scheme", err)
	}
}

func TestSQLitePaths(t *testing.T) {
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "not", "yet")
	s, err := Open(ctx, "sqlite:sub/r.db", dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, "sub", "r.db")); err != nil {
		t.Errorf("relative path not under dataDir: %v", err)
	}
	abs := filepath.Join(t.TempDir(), "abs.db")
	s, err = Open(ctx, "sqlite:"+abs, dir)
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := s.(*sqlStore).w.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q (%v), want wal", mode, err)
	}
	s.Close()
	if _, err := os.Stat(abs); err != nil {
		t.Errorf("absolute path ignored: %v", err)
	}
	// A data dir that is a file cannot be created: error, not panic.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Open(ctx, "sqlite:x.db", file); err == nil {
		t.Error("Open under a regular file succeeded")
	}
}

// TestDownDatabase checks that an unreachable server fails Open quickly:
// both a closed port and a server that accepts but never answers, which
// is what a hung database looks like.
func TestDownDatabase(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	hung := silent.Addr().String()

	for _, c := range []struct{ name, dsn string }{
		{"postgres-refused", "postgres://127.0.0.1:1/x?sslmode=disable"},
		{"mysql-refused", "mysql://root@tcp(127.0.0.1:1)/x"},
		{"postgres-silent", "postgres://postgres@" + hung + "/x?sslmode=disable&connect_timeout=1"},
		{"mysql-silent", "mysql://root@tcp(" + hung + ")/x?timeout=1s"},
	} {
		dsn := c.dsn
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			s, err := Open(context.Background(), dsn, "")
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", dsn)
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("Open(%q) took %v", dsn, d)
			}
			t.Logf("%v", err)
		})
	}
}

func TestNormalize(t *testing.T) {
	in := []Record{
		{ID: "b", Version: 2, Data: []byte("b2")},
		{ID: "a", Version: 5, Data: []byte("a5")},
		{ID: "b", Version: 1, Data: []byte("b1")},
		{ID: "a", Version: 5, Data: []byte("a5-later")},
		{ID: "c", Version: 1},
		{ID: "a", Version: 4},
	}
	orig := slices.Clone(in)
	got := normalize(in)
	want := []string{"a/5/a5-later", "b/2/b2", "c/1/"}
	var gotS []string
	for _, r := range got {
		gotS = append(gotS, fmt.Sprintf("%s/%d/%s", r.ID, r.Version, r.Data))
	}
	if !slices.Equal(gotS, want) {
		t.Errorf("normalize = %v, want %v", gotS, want)
	}
	for i := range in {
		if in[i].ID != orig[i].ID || in[i].Version != orig[i].Version {
			t.Fatalf("normalize modified its input at %d", i)
		}
	}
}

// TestConcurrentOpenProcesses is TestConcurrentOpen with real processes
// (this test binary re-executed), since SQLite's file locks are what keeps
// two data servers from migrating the same file twice.
func TestConcurrentOpenProcesses(t *testing.T) {
	if dsn := os.Getenv("RESPAWN_STORE_HELPER_DSN"); dsn != "" {
		s, err := Open(context.Background(), dsn, os.Getenv("RESPAWN_STORE_HELPER_DIR"))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("applied=%d\n", s.(*sqlStore).applied)
		s.Close()
		os.Exit(0)
	}
	dir := t.TempDir()
	const n = 4
	outs := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestConcurrentOpenProcesses$")
			cmd.Env = append(os.Environ(), "RESPAWN_STORE_HELPER_DSN=sqlite:shared.db", "RESPAWN_STORE_HELPER_DIR="+dir)
			outs[i], errs[i] = cmd.CombinedOutput()
		})
	}
	wg.Wait()
	applied := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("process %d: %v\n%s", i, errs[i], outs[i])
		}
		var a int
		_, after, _ := strings.Cut(string(outs[i]), "applied=")
		if _, err := fmt.Sscanf(after, "%d", &a); err != nil {
			t.Fatalf("process %d output %q: %v", i, outs[i], err)
		}
		applied += a
	}
	s, err := Open(ctxT(t), "sqlite:shared.db", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if want := len(s.(*sqlStore).d.migrations); applied != want {
		t.Errorf("%d processes applied %d migrations in total, want %d", n, applied, want)
	}
	checkMigrationRows(t, s.(*sqlStore))
}
