package datasvr

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/crashpoint"
	"github.com/respawn-dev/respawn/internal/store"
)

// flusher writes dirty players to the database. A player is written once
// it has been dirty for flush_interval, checked every flush_interval/50:
// each player still reaches the database once per interval however often
// it is saved, but the database sees a steady trickle of small batches
// instead of one burst per interval, which would stall acknowledgements on
// a small machine. An admin flush writes everything at once. A failed
// flush is retried with backoff while saves keep being acknowledged from
// the journal.
func (s *Server) flusher() {
	interval := s.cfg.Datasvr.FlushInterval
	tick := max(interval/50, time.Millisecond)
	timer := time.NewTimer(tick)
	defer timer.Stop()
	var waiters []chan error
	backoff := time.Duration(0)
	for {
		all := false
		select {
		case <-s.bg.Done():
			for _, w := range waiters {
				w <- fmt.Errorf("%w: datasvr is shutting down", ErrUnavailable)
			}
			return
		case w := <-s.flushReq:
			all = true
			waiters = append(waiters, w)
			// Take every request already waiting into this flush.
			for more := true; more; {
				select {
				case w := <-s.flushReq:
					waiters = append(waiters, w)
				default:
					more = false
				}
			}
		case <-timer.C:
		case <-s.wake:
		}
		err := s.flushOrProbe(all)
		for _, w := range waiters {
			w <- err
		}
		waiters = waiters[:0]
		next := tick
		if err != nil {
			backoff = min(max(2*backoff, 200*time.Millisecond), max(interval, 200*time.Millisecond), 10*time.Second)
			next = backoff
			if backoff == 200*time.Millisecond || s.degraded() == "" {
				// Once per outage at error level (dbDown logs it too);
				// the retries are counted in db_errors_total.
				s.log.Error("database flush failed; saves are still acknowledged from the journal, retrying",
					zap.Error(err), zap.Duration("retry_in", next))
			} else {
				s.log.Debug("database flush failed again", zap.Error(err), zap.Duration("retry_in", next))
			}
		} else {
			backoff = 0
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// flushOrProbe is one flusher round: without a database nothing can be
// written; after a failure, ask the database whether it is back before
// writing, and check provisional creates before they are written.
func (s *Server) flushOrProbe(all bool) error {
	if s.db() == nil {
		return fmt.Errorf("%w: nothing written: the database is not open (%s)", ErrUnavailable, s.degraded())
	}
	if s.degraded() != "" && !s.probe(s.bg) {
		return fmt.Errorf("%w: %s", ErrUnavailable, s.degraded())
	}
	if err := s.verifyCreates(s.bg); err != nil {
		return err
	}
	return s.flush(s.bg, all, s.crash)
}

// requestFlush asks the flusher for a full flush and waits for it.
func (s *Server) requestFlush(ctx context.Context) error {
	w := make(chan error, 1)
	select {
	case s.flushReq <- w:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.bg.Done():
		return fmt.Errorf("%w: datasvr is shutting down", ErrUnavailable)
	}
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flushItem is one player in a flush, with what the flush knew of it.
type flushItem struct {
	e       *entry
	rec     store.Record
	lastSeq uint64
}

// flush writes dirty players to the database (all of them, or those dirty
// for at least flush_interval), then lets the journal delete what the
// database now covers. Only the flusher (and start/shutdown, when it is
// not running) call it. crash is the armed crash points, passed by the
// flusher only: a start-up flush rewrites everything the journal replayed,
// and dying in it again would make a restart loop.
func (s *Server) flush(ctx context.Context, all bool, crash *crashpoint.Points) error {
	start := time.Now()
	cutoff := start.Add(-s.cfg.Datasvr.FlushInterval)
	s.mu.Lock()
	var items []flushItem
	// upTo: every journal record up to it is in the database once this
	// flush succeeds. Records of commits still in flight have seq >= their
	// start mark; players left dirty hold back their first unflushed record.
	upTo := s.journal.LastSeq()
	for mark := range s.inflight {
		upTo = min(upTo, mark-1)
	}
	for _, e := range s.dirty {
		if e.provisional {
			// Not written before it is checked against the database.
			upTo = min(upTo, e.dirtySeq-1)
			continue
		}
		if all || !e.dirtyAt.After(cutoff) {
			items = append(items, flushItem{e: e, lastSeq: e.lastSeq, rec: store.Record{ID: e.id, Version: e.version, Data: e.data,
				OwnerScene: e.owner.Scene, OwnerEpoch: e.owner.Epoch}})
		} else {
			upTo = min(upTo, e.dirtySeq-1)
		}
	}
	s.mu.Unlock()
	if len(items) == 0 {
		return s.checkpoint(upTo)
	}

	st := s.db()
	if st == nil {
		return fmt.Errorf("%w: nothing written: the database is not open (%s)", ErrUnavailable, s.degraded())
	}
	sort.Slice(items, func(i, j int) bool { return items[i].rec.ID < items[j].rec.ID })
	recs := make([]store.Record, len(items))
	for i := range items {
		recs[i] = items[i].rec
	}
	// datasvr.flush_batch players per SaveBatch transaction: big enough
	// that statements per player stay tiny, small enough that one
	// transaction does not hold the database for long.
	chunk := s.cfg.Datasvr.FlushBatch
	for i := 0; i < len(recs); i += chunk {
		end := min(i+chunk, len(recs))
		if i > 0 {
			// Some rows of this flush are in the database, the rest are
			// not, and the journal still holds all of them.
			crash.Hit(crashpoint.FlushBetweenRows)
		}
		if err := st.SaveBatch(ctx, recs[i:end]); err != nil {
			if ctx.Err() == nil {
				s.dbDown(err)
			}
			return fmt.Errorf("datasvr: flush %d players (first %s): %w", end-i, recs[i].ID, err)
		}
		s.mu.Lock()
		for _, it := range items[i:end] {
			e := it.e
			if !e.dirty {
				continue
			}
			if e.version == it.rec.Version {
				e.dirty = false
				delete(s.dirty, e.id)
				s.settle(e)
				continue
			}
			// Saved again while we wrote: still dirty, but only with
			// records after the one we flushed.
			e.dirtySeq, e.dirtyAt = it.lastSeq+1, start
		}
		s.evict()
		s.mu.Unlock()
	}
	s.dbUp()
	s.m.flushes.Add(1)
	if s.flushDur != nil {
		s.flushDur.Observe(time.Since(start).Seconds())
	}
	s.log.Debug("flushed", zap.Int("players", len(recs)), zap.Duration("took", time.Since(start)), zap.Uint64("checkpoint", upTo))
	return s.checkpoint(upTo)
}

// checkpoint lets the journal drop what the database now covers. A
// failure is reported (error log, checkpoint_errors_total) but does not fail
// the flush: the database has the data, and the next checkpoint retries.
func (s *Server) checkpoint(upTo uint64) error {
	if err := s.journal.Checkpoint(upTo); err != nil {
		s.m.checkpointErrors.Add(1)
		s.log.Error("journal checkpoint failed; the journal keeps the segments until the next checkpoint",
			zap.Uint64("up_to", upTo), zap.Error(err))
	}
	return nil
}
