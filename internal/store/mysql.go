package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// mysqlMigrationLock is the GET_LOCK name serialising migrations; locks are
// server-wide, so it carries the database name (see migrateMySQL).
const mysqlMigrationLock = "respawn.store.migrate."

// mysqlLockWaitSeconds is how long a process waits for another's migration.
const mysqlLockWaitSeconds = 60

// The IF(...) guard of every column. It must read the OLD version, and
// MySQL evaluates ON DUPLICATE KEY UPDATE assignments left to right with
// each one seeing the previous ones' results, so version is assigned last.
// VALUES() is deprecated in MySQL 8.0.20+ but still works there, and it is
// the only form MariaDB (10.11) understands.
const mysqlNewer = "VALUES(version) >= version"

func mysqlDialect() *dialect {
	return &dialect{
		name:        "mysql",
		placeholder: questionMark,
		nowExpr:     "NOW(6)",
		upsertSuffix: "ON DUPLICATE KEY UPDATE " +
			"data = IF(" + mysqlNewer + ", VALUES(data), data), " +
			"owner_scene = IF(" + mysqlNewer + ", VALUES(owner_scene), owner_scene), " +
			"owner_epoch = IF(" + mysqlNewer + ", VALUES(owner_epoch), owner_epoch), " +
			"updated_at = IF(" + mysqlNewer + ", VALUES(updated_at), updated_at), " +
			"version = IF(" + mysqlNewer + ", VALUES(version), version)",
		// utf8mb4_bin: player ids are compared byte for byte; the default
		// collation is case-insensitive and would merge "Bob" and "bob".
		// VARCHAR(191) keeps the key within InnoDB's 767-byte index limit
		// on old row formats.
		migrations: []migration{{
			version: 1,
			name:    "create players",
			stmts: []string{`CREATE TABLE IF NOT EXISTS players (
	id          VARCHAR(191) NOT NULL PRIMARY KEY,
	version     BIGINT       NOT NULL,
	data        LONGBLOB     NOT NULL,
	owner_scene VARCHAR(191) NOT NULL DEFAULT '',
	owner_epoch BIGINT       NOT NULL DEFAULT 0,
	updated_at  DATETIME(6)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`},
		}},
		migrate: migrateMySQL,
	}
}

// openMySQL takes a go-sql-driver/mysql DSN (the part after "mysql://").
func openMySQL(ctx context.Context, dsn string) (Store, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: mysql: parse DSN: %w", err)
	}
	cfg.ParseTime = true
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultConnectTimeout
	}
	// Interpolating arguments client-side turns each upsert into one round
	// trip instead of prepare+execute+close. It is safe with utf8mb4, and
	// the driver refuses it for the few charsets where it is not.
	cfg.InterpolateParams = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: mysql: %w", err)
	}
	db := sql.OpenDB(timeoutConnector{conn, cfg.Timeout})
	db.SetMaxOpenConns(sqlPoolSize)
	db.SetMaxIdleConns(sqlPoolSize)
	// Below MySQL's default wait_timeout, so the pool rarely hands out a
	// connection the server already dropped.
	db.SetConnMaxLifetime(30 * time.Minute)
	db.SetConnMaxIdleTime(5 * time.Minute)
	where := cfg.Addr + "/" + cfg.DBName
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: mysql %s: %w", where, err)
	}
	s, err := newSQLStore(ctx, mysqlDialect(), db, db)
	if err != nil {
		return nil, fmt.Errorf("%w (server %s)", err, where)
	}
	return s, nil
}

// migrateMySQL serialises migrating processes with GET_LOCK. MySQL commits
// DDL implicitly, so there is no transaction to hide behind: each migration
// runs, then its schema_migrations row is written, and a migration cut off
// in between is re-run (its statements are idempotent, see migration).
func migrateMySQL(ctx context.Context, db *sql.DB, d *dialect) (n int, err error) {
	// GET_LOCK belongs to a session: take and release it on one connection.
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()

	var dbName string
	if err := conn.QueryRowContext(ctx, "SELECT COALESCE(DATABASE(), '')").Scan(&dbName); err != nil {
		return 0, fmt.Errorf("current database: %w", err)
	}
	lock := mysqlMigrationLock + dbName
	if len(lock) > 64 { // MySQL's limit on lock names
		lock = lock[:64]
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", lock, mysqlLockWaitSeconds).Scan(&got); err != nil {
		return 0, fmt.Errorf("GET_LOCK: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		return 0, fmt.Errorf("GET_LOCK(%q): not granted within %ds", lock, mysqlLockWaitSeconds)
	}
	defer func() {
		// A fresh context: the lock must go even when ctx has ended.
		// Closing the session would release it too, but the pool may keep
		// the connection alive.
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, rerr := conn.ExecContext(rctx, "SELECT RELEASE_LOCK(?)", lock); rerr != nil && err == nil {
			err = fmt.Errorf("RELEASE_LOCK: %w", rerr)
		}
	}()

	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT       NOT NULL PRIMARY KEY,
	name       VARCHAR(255) NOT NULL,
	applied_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB`); err != nil {
		return 0, fmt.Errorf("create schema_migrations: %w", err)
	}
	cur, err := currentVersion(ctx, conn)
	if err != nil {
		return 0, err
	}
	for _, m := range d.migrations {
		if m.version <= cur {
			continue
		}
		for i, stmt := range m.stmts {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return n, fmt.Errorf("migration %d (%s) statement %d: %w", m.version, m.name, i+1, err)
			}
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", m.version, m.name); err != nil {
			return n, fmt.Errorf("record migration %d (%s): %w", m.version, m.name, err)
		}
		n++
	}
	return n, nil
}

// timeoutConnector bounds a whole MySQL connection attempt. The driver's
// timeout covers only the TCP dial; a server that accepts and then says
// nothing (overloaded, half-dead, a wrong port) would otherwise stall the
// handshake for as long as the caller's context allows, which for the data
// server's background flush is forever.
type timeoutConnector struct {
	driver.Connector
	timeout time.Duration
}

func (c timeoutConnector) Connect(ctx context.Context) (driver.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.Connector.Connect(ctx)
}
