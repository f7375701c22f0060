package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one schema step. Versions are positive, strictly increasing
// within a dialect's list and never reused: a released migration is never
// edited, a change is a new migration.
type migration struct {
	version int64
	name    string
	// stmts run in order. MySQL commits DDL implicitly, so a MySQL
	// migration that dies halfway is re-run from the start: its statements
	// must be safe to repeat (IF NOT EXISTS and friends).
	stmts []string
}

// migrateInTx applies pending migrations inside tx, which the caller has
// already made exclusive (SQLite: BEGIN IMMEDIATE holds the write lock;
// PostgreSQL: a transaction-scoped advisory lock). Everything, including
// the schema_migrations rows, commits or rolls back together.
func migrateInTx(ctx context.Context, tx *sql.Tx, d *dialect, createTable string) (int, error) {
	if _, err := tx.ExecContext(ctx, createTable); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	cur, err := currentVersion(ctx, tx)
	if err != nil {
		return 0, err
	}
	applied := 0
	for _, m := range d.migrations {
		if m.version <= cur {
			continue
		}
		for i, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return 0, fmt.Errorf("migration %d (%s) statement %d: %w", m.version, m.name, i+1, err)
			}
		}
		ins := "INSERT INTO schema_migrations (version, name) VALUES (" + d.placeholder(1) + ", " + d.placeholder(2) + ")"
		if _, err := tx.ExecContext(ctx, ins, m.version, m.name); err != nil {
			return 0, fmt.Errorf("record migration %d (%s): %w", m.version, m.name, err)
		}
		applied++
	}
	return applied, nil
}

// querier is what currentVersion needs; *sql.Tx and *sql.Conn have it.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func currentVersion(ctx context.Context, q querier) (int64, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v.Int64, nil
}
