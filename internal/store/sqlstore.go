package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// Chunk limits for SaveBatch. One statement per chunk keeps the statement
// count low while staying far below every dialect's bind-parameter limit
// (PostgreSQL and MySQL: 65535, SQLite: 32766; we bind 5 per row) and, via
// the byte cap, below MariaDB's default max_allowed_packet (16 MiB) even
// when players carry large blobs.
const (
	maxChunkRows  = 500
	maxChunkBytes = 4 << 20
)

// dialect is what differs between the SQL backends.
type dialect struct {
	name string
	// placeholder returns the bind marker for the n-th (1-based) argument.
	placeholder func(n int) string
	// nowExpr is the SQL expression stored in updated_at.
	nowExpr string
	// upsertSuffix follows the VALUES list; it must leave a row alone when
	// the stored version is newer than the incoming one.
	upsertSuffix string
	// migrations are applied in order by migrate.
	migrations []migration
	// migrate brings the schema up to date, serialised against other
	// processes, and returns how many migrations it applied.
	migrate func(ctx context.Context, db *sql.DB, d *dialect) (int, error)
}

// sqlStore implements Store for every dialect.
type sqlStore struct {
	d *dialect
	// w runs writes and migrations; r runs Load. They are the same pool
	// except for SQLite, where writes go through a single connection and
	// reads use their own pool so a login never queues behind a flush.
	w, r *sql.DB

	// applied is how many migrations this Open ran (tests check that
	// concurrent Opens migrate exactly once in total).
	applied int

	rows, statements, batches atomic.Uint64
}

func newSQLStore(ctx context.Context, d *dialect, w, r *sql.DB) (*sqlStore, error) {
	s := &sqlStore{d: d, w: w, r: r}
	n, err := d.migrate(ctx, w, d)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("store: %s: migrate: %w", d.name, err)
	}
	s.applied = n
	return s, nil
}

func (s *sqlStore) Load(ctx context.Context, id string) (Record, error) {
	rec := Record{ID: id}
	var version, epoch int64
	q := "SELECT version, data, owner_scene, owner_epoch FROM players WHERE id = " + s.d.placeholder(1)
	s.statements.Add(1)
	err := s.r.QueryRowContext(ctx, q, id).Scan(&version, &rec.Data, &rec.OwnerScene, &epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, fmt.Errorf("store: load player %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("store: load player %q: %w", id, err)
	}
	rec.Version, rec.OwnerEpoch = uint64(version), uint64(epoch)
	if rec.Data == nil {
		rec.Data = []byte{}
	}
	return rec, nil
}

// SaveBatch writes recs in one transaction of BEGIN, one upsert per chunk
// and COMMIT; Stats counts each of them as a statement.
func (s *sqlStore) SaveBatch(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := validate(recs); err != nil {
		return fmt.Errorf("store: save batch of %d: %w", len(recs), err)
	}
	// PostgreSQL refuses an upsert that touches the same row twice, and
	// sending a row that is going to lose anyway is wasted work, so keep
	// only the winner per id.
	recs = normalize(recs)

	tx, err := s.w.BeginTx(ctx, nil)
	s.statements.Add(1)
	if err != nil {
		return fmt.Errorf("store: save batch of %d: begin: %w", len(recs), err)
	}
	var sb strings.Builder
	args := make([]any, 0, 5*min(len(recs), maxChunkRows))
	for start := 0; start < len(recs); {
		end := chunkEnd(recs, start)
		sb.Reset()
		args = args[:0]
		s.buildUpsert(&sb, &args, recs[start:end])
		s.statements.Add(1)
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			s.statements.Add(1) // ROLLBACK
			_ = tx.Rollback()
			return fmt.Errorf("store: save batch of %d: upsert rows %d..%d (first player %q): %w",
				len(recs), start, end-1, recs[start].ID, err)
		}
		start = end
	}
	s.statements.Add(1)
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: save batch of %d: commit: %w", len(recs), err)
	}
	s.rows.Add(uint64(len(recs)))
	s.batches.Add(1)
	return nil
}

// buildUpsert appends one multi-row upsert for recs to sb and its
// arguments to args.
func (s *sqlStore) buildUpsert(sb *strings.Builder, args *[]any, recs []Record) {
	sb.WriteString("INSERT INTO players (id, version, data, owner_scene, owner_epoch, updated_at) VALUES ")
	n := 0
	for i, r := range recs {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('(')
		for j := 0; j < 5; j++ {
			n++
			sb.WriteString(s.d.placeholder(n))
			sb.WriteByte(',')
		}
		sb.WriteString(s.d.nowExpr)
		sb.WriteByte(')')
		data := r.Data
		if data == nil {
			data = []byte{} // NOT NULL column; nil would bind as NULL
		}
		*args = append(*args, r.ID, int64(r.Version), data, r.OwnerScene, int64(r.OwnerEpoch))
	}
	sb.WriteByte(' ')
	sb.WriteString(s.d.upsertSuffix)
}

// chunkEnd returns the end of the chunk starting at start: at most
// maxChunkRows rows and, past the first row, at most maxChunkBytes of data.
func chunkEnd(recs []Record, start int) int {
	end, size := start, 0
	for end < len(recs) && end-start < maxChunkRows {
		size += len(recs[end].Data) + len(recs[end].ID) + len(recs[end].OwnerScene)
		if size > maxChunkBytes && end > start {
			break
		}
		end++
	}
	return end
}

// validate rejects what the schema cannot hold: the columns are signed
// 64-bit on every backend, and an empty id is surely a caller bug.
func validate(recs []Record) error {
	for i, r := range recs {
		switch {
		case r.ID == "":
			return fmt.Errorf("record %d: empty player id", i)
		case r.Version > math.MaxInt64:
			return fmt.Errorf("player %q: version %d exceeds int64", r.ID, r.Version)
		case r.OwnerEpoch > math.MaxInt64:
			return fmt.Errorf("player %q: owner epoch %d exceeds int64", r.ID, r.OwnerEpoch)
		}
	}
	return nil
}

// normalize returns recs sorted by id with one record per id: the one the
// database would end with had the records been written one by one (highest
// version, the later one on a tie). Sorting makes every batch lock its rows
// in the same order, so two processes flushing overlapping players at once
// queue on each other instead of deadlocking. recs itself is not modified.
func normalize(recs []Record) []Record {
	out := slices.Clone(recs)
	// Stable, so records of one id keep their submission order.
	slices.SortStableFunc(out, func(a, b Record) int { return strings.Compare(a.ID, b.ID) })
	w := 0
	for _, r := range out {
		if w > 0 && out[w-1].ID == r.ID {
			if r.Version >= out[w-1].Version {
				out[w-1] = r
			}
			continue
		}
		out[w] = r
		w++
	}
	clear(out[w:]) // drop references to the losers' data
	return out[:w]
}

func (s *sqlStore) Stats() Stats {
	return Stats{
		Rows:       s.rows.Load(),
		Statements: s.statements.Load(),
		Batches:    s.batches.Load(),
	}
}

func (s *sqlStore) Close() error {
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

func questionMark(int) string { return "?" }

func dollar(n int) string { return "$" + strconv.Itoa(n) }
