package datasvr

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/store"
)

// The database is a write-behind target, not a dependency: while it is
// unreachable (at start or mid-run) the data server keeps serving what it
// has from its cache and journal, journals creates and saves, answers loads
// it cannot serve with ErrUnavailable, and reports itself degraded. The
// flusher writes everything through once the database answers again.

// probeID is the player id the flusher loads to learn whether a database
// it lost is back (any answer, found or not, means reachable).
const probeID = "respawn-datasvr-probe"

// dbOpenTimeout bounds one attempt to open the database, so a start with an
// unreachable database reaches "serving, degraded" quickly.
const dbOpenTimeout = 5 * time.Second

// dbHealth is the one owner of the database handle and its reachability.
type dbHealth struct {
	mu        sync.Mutex
	st        store.Store // nil until opened
	downSince time.Time   // zero while reachable
	lastErr   string
}

// db returns the open store, or nil while it was never opened.
func (s *Server) db() store.Store {
	s.dbh.mu.Lock()
	defer s.dbh.mu.Unlock()
	return s.dbh.st
}

func (s *Server) setDB(st store.Store) {
	s.dbh.mu.Lock()
	s.dbh.st = st
	s.dbh.mu.Unlock()
}

// dbDown records that the database failed; the first failure of an outage
// is logged at error level, the rest are counted.
func (s *Server) dbDown(err error) {
	s.m.dbErrors.Add(1)
	s.dbh.mu.Lock()
	first := s.dbh.downSince.IsZero()
	if first {
		s.dbh.downSince = time.Now()
	}
	s.dbh.lastErr = err.Error()
	s.dbh.mu.Unlock()
	if first {
		s.log.Error("database unreachable: serving from cache and journal (degraded); creates and saves are journaled and written through when it is back",
			zap.Error(err))
	}
}

// dbUp records that the database answered.
func (s *Server) dbUp() {
	s.dbh.mu.Lock()
	since := s.dbh.downSince
	s.dbh.downSince, s.dbh.lastErr = time.Time{}, ""
	s.dbh.mu.Unlock()
	if !since.IsZero() {
		s.log.Info("database reachable again; writing the journal through", zap.Duration("outage", time.Since(since)))
	}
}

// degraded describes the outage ("" while the database is reachable).
func (s *Server) degraded() string {
	s.dbh.mu.Lock()
	defer s.dbh.mu.Unlock()
	if s.dbh.downSince.IsZero() {
		return ""
	}
	return fmt.Sprintf("degraded: database unreachable since %s (%s ago): %s",
		s.dbh.downSince.UTC().Format(time.RFC3339), time.Since(s.dbh.downSince).Round(time.Second), s.dbh.lastErr)
}

func (s *Server) downSeconds() float64 {
	s.dbh.mu.Lock()
	defer s.dbh.mu.Unlock()
	if s.dbh.downSince.IsZero() {
		return 0
	}
	return time.Since(s.dbh.downSince).Seconds()
}

// errNoDB is the answer to a request that needs the database while it is
// unreachable: retryable, and saying why.
func (s *Server) errNoDB(id string) error {
	why := s.degraded()
	if why == "" {
		why = "database not open yet"
	}
	return fmt.Errorf("%w: player %s is not in datasvr's cache and the database cannot be asked (%s); retry later", ErrUnavailable, id, why)
}

// openDB tries once to open the database.
func (s *Server) openDB(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dbOpenTimeout)
	defer cancel()
	st, err := s.openStore(ctx, s.cfg.Datasvr.Database, s.cfg.DataDir)
	if err != nil {
		s.dbDown(err)
		return err
	}
	s.setDB(st)
	s.dbUp()
	return nil
}

// reopen retries opening the database in the background after a start
// without it.
func (s *Server) reopen() {
	for backoff := 200 * time.Millisecond; s.db() == nil; backoff = min(2*backoff, 5*time.Second) {
		select {
		case <-s.bg.Done():
			return
		case <-time.After(backoff):
		}
		if err := s.openDB(s.bg); err == nil {
			s.log.Info("database opened after a degraded start")
			s.kickFlusher()
		}
	}
}

// kickFlusher wakes the flusher without waiting for it.
func (s *Server) kickFlusher() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// probe asks the database whether it is back. Called by the flusher only.
func (s *Server) probe(ctx context.Context) bool {
	st := s.db()
	if st == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, dbOpenTimeout)
	defer cancel()
	if _, err := st.Load(ctx, probeID); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.dbDown(err)
		return false
	}
	s.dbUp()
	return true
}

// Provisional creates. A player created while the database is unreachable
// may already exist there (the cache only knows recent players), so it is
// journaled as provisional and not written to the database until checked:
// absent there → verified as is; present → the database's copy wins (it is
// the older history of that id), with a version above both, and the scene
// holding the lease reloads it when its next save is refused as older.

const (
	createProvisional = "provisional"
	createVerified    = "verified"
)

// verifyCreates checks every provisional player against the reachable
// database. Called by the flusher before it writes.
func (s *Server) verifyCreates(ctx context.Context) error {
	s.mu.Lock()
	ids := make([]string, 0, len(s.provisional))
	for id := range s.provisional {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sort.Strings(ids) // a stable order for the log
	st := s.db()
	for _, id := range ids {
		err := s.withPlayer(ctx, id, func(e *entry) error {
			if !e.provisional {
				return nil
			}
			rec, err := st.Load(ctx, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return s.commitRec(e, journalRecord{Version: e.version, Owner: e.owner, Data: e.data, Create: createVerified})
			case err != nil:
				s.dbDown(err)
				return fmt.Errorf("%w: verify provisional player %s: %v", ErrUnavailable, id, err)
			}
			v := max(rec.Version, e.version) + 1
			s.m.createConflicts.Add(1)
			s.log.Error("player created while the database was unreachable already exists in the database; the database's copy wins",
				zap.String("player", id), zap.Uint64("db_version", rec.Version), zap.Uint64("dropped_version", e.version),
				zap.Uint64("version", v), zap.String("scene", e.owner.Scene))
			return s.commitRec(e, journalRecord{Version: v, Owner: e.owner, Data: cloneBytes(rec.Data), Create: createVerified})
		})
		if err != nil {
			return err
		}
	}
	return nil
}
