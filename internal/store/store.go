// Package store is the database behind the data server: one interface,
// three backends (SQLite, PostgreSQL, MySQL/MariaDB), chosen by DSN.
//
// All three share one implementation on top of database/sql (sqlstore.go);
// a dialect supplies the SQL that differs: placeholders, the versioned
// upsert, the schema migrations and the lock that serialises migrating
// processes. The write path is built for the data server's write-behind
// flush: SaveBatch is one transaction made of a few multi-row upserts, so
// the cost per player is a fraction of a statement, and the upsert itself
// refuses to replace a row with an older version, so a delayed or retried
// flush can never roll a player back.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Record is one player's row: the latest data the data server flushed, and
// who held the ownership lease when it was written.
type Record struct {
	ID         string
	Version    uint64
	Data       []byte // player.Data encoding, stored as is
	OwnerScene string // "" when nobody holds the lease
	OwnerEpoch uint64
}

// ErrNotFound is returned by Load for an unknown player.
var ErrNotFound = errors.New("store: player not found")

// Store is what the data server needs from a database. Implementations are
// safe for concurrent use.
type Store interface {
	// Load returns the stored record of id, or ErrNotFound.
	Load(ctx context.Context, id string) (Record, error)
	// SaveBatch writes recs in one transaction. A row whose stored version
	// is newer than the record's is left alone, so an old write can never
	// overwrite a new one.
	SaveBatch(ctx context.Context, recs []Record) error
	// Stats counts rows written and statements executed since Open.
	Stats() Stats
	Close() error
}

// Stats are cumulative counters for the write-behind metrics and benchmarks.
type Stats struct {
	Rows       uint64
	Statements uint64
	Batches    uint64
}

// Open connects to the database named by dsn, applies pending schema
// migrations and returns a ready Store. Accepted forms:
//
//	sqlite:PATH                       PATH relative to dataDir unless absolute
//	postgres://... / postgresql://... pgx connection URL
//	mysql://user:pass@tcp(host:port)/db?params   go-sql-driver/mysql DSN after the prefix
//
// A database that cannot be reached fails Open with an error after at most
// the connect timeout (5s unless the DSN sets one) or when ctx ends.
func Open(ctx context.Context, dsn string, dataDir string) (Store, error) {
	scheme, rest, ok := splitScheme(dsn)
	if !ok {
		// Deliberately not quoting dsn: it may hold a password.
		return nil, errors.New("store: DSN has no scheme (want sqlite:PATH, postgres://..., postgresql://... or mysql://...)")
	}
	switch scheme {
	case "sqlite":
		return openSQLite(ctx, rest, dataDir)
	case "postgres", "postgresql":
		return openPostgres(ctx, dsn)
	case "mysql":
		return openMySQL(ctx, strings.TrimPrefix(rest, "//"))
	default:
		return nil, fmt.Errorf("store: unsupported DSN scheme %q (want sqlite, postgres, postgresql or mysql)", scheme)
	}
}

// splitScheme splits "scheme:rest". The scheme is lower-cased so that
// "SQLite:x.db" works; rest is returned untouched.
func splitScheme(dsn string) (scheme, rest string, ok bool) {
	i := strings.IndexByte(dsn, ':')
	if i <= 0 {
		return "", "", false
	}
	for _, c := range dsn[:i] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return "", "", false
		}
	}
	return strings.ToLower(dsn[:i]), dsn[i+1:], true
}
