package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite" // registers driver "sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteBusyTimeoutMS is how long a connection waits for another process's
// write lock before failing with SQLITE_BUSY. Long enough to outlast any
// flush or migration, short enough that a wedged peer shows up as an error.
const sqliteBusyTimeoutMS = 10000

// sqliteReaders bounds the read pool; WAL lets them all run while the
// writer commits.
const sqliteReaders = 4

// sqliteDialect is a function, not a package variable, so no caller can
// change the SQL another store uses.
func sqliteDialect() *dialect {
	return &dialect{
		name:        "sqlite",
		placeholder: questionMark,
		nowExpr:     "strftime('%Y-%m-%dT%H:%M:%fZ','now')",
		upsertSuffix: "ON CONFLICT (id) DO UPDATE SET " +
			"version = excluded.version, data = excluded.data, " +
			"owner_scene = excluded.owner_scene, owner_epoch = excluded.owner_epoch, " +
			"updated_at = excluded.updated_at " +
			"WHERE players.version <= excluded.version",
		migrations: []migration{{
			version: 1,
			name:    "create players",
			stmts: []string{`CREATE TABLE IF NOT EXISTS players (
	id          TEXT    NOT NULL PRIMARY KEY,
	version     INTEGER NOT NULL,
	data        BLOB    NOT NULL,
	owner_scene TEXT    NOT NULL DEFAULT '',
	owner_epoch INTEGER NOT NULL DEFAULT 0,
	updated_at  TEXT    NOT NULL
)`},
		}},
		migrate: migrateSQLite,
	}
}

// openSQLite opens path (relative to dataDir unless absolute) with two
// pools: one writer connection, because SQLite has one write lock per file
// anyway and queueing in Go is cheaper than spinning on SQLITE_BUSY, and a
// few query-only readers.
func openSQLite(ctx context.Context, path, dataDir string) (Store, error) {
	// "sqlite://x.db" is a common slip for "sqlite:x.db"; "sqlite:///abs"
	// then means the absolute path /abs, as in a file URL.
	path = strings.TrimPrefix(path, "//")
	if path == "" {
		return nil, errors.New("store: sqlite DSN has an empty path")
	}
	if strings.ContainsRune(path, '?') {
		// The driver reads everything after '?' as its own options.
		return nil, fmt.Errorf("store: sqlite path %q must not contain '?'", path)
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dataDir, path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("store: sqlite: create data dir: %w", err)
	}

	busy := fmt.Sprintf("_pragma=busy_timeout(%d)", sqliteBusyTimeoutMS)
	// _txlock=immediate: a write transaction takes the write lock at BEGIN
	// instead of upgrading later, which is what serialises two migrating
	// processes and avoids the deadlock-prone read-to-write upgrade.
	// synchronous=NORMAL in WAL mode can lose the last commits on power
	// loss but never corrupts; the data server keeps its own log.
	w, err := sql.Open("sqlite", "file:"+path+"?"+busy+
		"&_pragma=synchronous(NORMAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("store: sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	if err := enableWAL(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: sqlite %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", "file:"+path+"?"+busy+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: sqlite %s: %w", path, err)
	}
	r.SetMaxOpenConns(sqliteReaders)
	r.SetMaxIdleConns(sqliteReaders)

	s, err := newSQLStore(ctx, sqliteDialect(), w, r)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return s, nil
}

// migrateSQLite runs all migrations in one BEGIN IMMEDIATE transaction:
// holding the database's write lock from the start means a second process
// waits (busy_timeout) and then finds the schema up to date.
func migrateSQLite(ctx context.Context, db *sql.DB, d *dialect) (int, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	n, err := migrateInTx(ctx, tx, d, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER NOT NULL PRIMARY KEY,
	name       TEXT    NOT NULL,
	applied_at TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP
)`)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// enableWAL switches the file to WAL mode, which persists in the file, so
// later connections (the readers, other processes) inherit it. It is not a
// DSN pragma because switching can fail with SQLITE_BUSY without consulting
// the busy handler while another process is doing the same switch on a
// fresh file; here that is retried until busy_timeout has passed.
func enableWAL(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(sqliteBusyTimeoutMS * time.Millisecond)
	for {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("journal_mode is %q, want wal", mode)
			}
			return nil
		}
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return fmt.Errorf("enable WAL: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("enable WAL: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
