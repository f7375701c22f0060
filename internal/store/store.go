// Package store is the database behind the data server: one interface,
// three backends (SQLite, PostgreSQL, MySQL/MariaDB), chosen by DSN.
package store

import (
	"context"
	"errors"
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
