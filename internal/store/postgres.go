package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// defaultConnectTimeout bounds dialing a PostgreSQL or MySQL server when
// the DSN does not say otherwise, so a down database fails Open instead of
// hanging the data server's start.
const defaultConnectTimeout = 5 * time.Second

// sqlPoolSize bounds connections to a PostgreSQL or MySQL server. The data
// server flushes from a few goroutines; more connections would only add
// lock contention on the players table.
const sqlPoolSize = 16

// pgMigrationLockKey is the pg_advisory_xact_lock key serialising
// migrations across processes: an arbitrary constant ("respawn" in ASCII).
const pgMigrationLockKey int64 = 0x72657370_61776e

func postgresDialect() *dialect {
	return &dialect{
		name:        "postgres",
		placeholder: dollar,
		// now() is the transaction's start time: one timestamp per batch.
		nowExpr: "now()",
		upsertSuffix: "ON CONFLICT (id) DO UPDATE SET " +
			"version = excluded.version, data = excluded.data, " +
			"owner_scene = excluded.owner_scene, owner_epoch = excluded.owner_epoch, " +
			"updated_at = excluded.updated_at " +
			"WHERE players.version <= excluded.version",
		migrations: []migration{{
			version: 1,
			name:    "create players",
			stmts: []string{`CREATE TABLE IF NOT EXISTS players (
	id          TEXT        NOT NULL PRIMARY KEY,
	version     BIGINT      NOT NULL,
	data        BYTEA       NOT NULL,
	owner_scene TEXT        NOT NULL DEFAULT '',
	owner_epoch BIGINT      NOT NULL DEFAULT 0,
	updated_at  TIMESTAMPTZ NOT NULL
)`},
		}},
		migrate: migratePostgres,
	}
}

// openPostgres connects through pgx's database/sql adapter, so the
// PostgreSQL backend shares every line of SaveBatch and Load with the
// others; pgx still caches the prepared upsert per connection.
func openPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password in its parse errors.
		return nil, fmt.Errorf("store: postgres: parse DSN: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(sqlPoolSize)
	db.SetMaxIdleConns(sqlPoolSize)
	db.SetConnMaxIdleTime(5 * time.Minute)
	where := fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: postgres %s: %w", where, err)
	}
	s, err := newSQLStore(ctx, postgresDialect(), db, db)
	if err != nil {
		return nil, fmt.Errorf("%w (server %s)", err, where)
	}
	return s, nil
}

// migratePostgres runs all migrations in one transaction (PostgreSQL DDL
// is transactional) after taking a transaction-scoped advisory lock, so
// concurrent processes queue up and the later ones find nothing to do. The
// lock also protects CREATE TABLE IF NOT EXISTS, which is not safe against
// a concurrent twin on its own.
func migratePostgres(ctx context.Context, db *sql.DB, d *dialect) (int, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", pgMigrationLockKey); err != nil {
		return 0, fmt.Errorf("advisory lock: %w", err)
	}
	n, err := migrateInTx(ctx, tx, d, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT      NOT NULL PRIMARY KEY,
	name       TEXT        NOT NULL,
	applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}
