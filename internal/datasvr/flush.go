package datasvr

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/store"
)

// flushChunk is the most players written in one SaveBatch transaction:
// big enough that statements per player stay tiny, small enough that one
// transaction does not hold the database for long.
const flushChunk = 2000

// flusher writes dirty players to the database every flush_interval, and
// on request (admin flush). A failed flush is retried with backoff while
// saves keep being acknowledged from the journal.
func (s *Server) flusher() {
	interval := s.cfg.Datasvr.FlushInterval
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var waiters []chan error
	backoff := time.Duration(0)
	for {
		select {
		case <-s.bg.Done():
			for _, w := range waiters {
				w <- fmt.Errorf("%w: datasvr is shutting down", ErrUnavailable)
			}
			return
		case w := <-s.flushReq:
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
		}
		err := s.flush(s.bg)
		for _, w := range waiters {
			w <- err
		}
		waiters = waiters[:0]
		next := interval
		if err != nil {
			backoff = min(max(2*backoff, 200*time.Millisecond), interval, 10*time.Second)
			next = backoff
			s.log.Error("database flush failed; saves are still acknowledged from the journal, retrying",
				zap.Error(err), zap.Duration("retry_in", next))
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

// requestFlush asks the flusher for a flush and waits for it.
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

// flush writes every player dirty now to the database, then lets the
// journal delete what the database now covers. Only the flusher (and
// start/shutdown, when it is not running) call it.
func (s *Server) flush(ctx context.Context) error {
	start := time.Now()
	s.mu.Lock()
	recs := make([]store.Record, 0, len(s.dirty))
	for _, e := range s.dirty {
		recs = append(recs, store.Record{ID: e.id, Version: e.version, Data: e.data, OwnerScene: e.owner.Scene, OwnerEpoch: e.owner.Epoch})
	}
	// Every journal record up to upTo is applied to the cache (so it is in
	// recs or superseded by something in recs): records of commits still
	// in flight have seq >= their start mark.
	upTo := s.journal.LastSeq()
	for mark := range s.inflight {
		upTo = min(upTo, mark-1)
	}
	s.mu.Unlock()

	sort.Slice(recs, func(i, j int) bool { return recs[i].ID < recs[j].ID })
	for i := 0; i < len(recs); i += flushChunk {
		chunk := recs[i:min(i+flushChunk, len(recs))]
		if err := s.store.SaveBatch(ctx, chunk); err != nil {
			s.m.dbErrors.Add(1)
			return fmt.Errorf("datasvr: flush %d players (first %s): %w", len(chunk), chunk[0].ID, err)
		}
		s.mu.Lock()
		for _, r := range chunk {
			// A player saved again since the snapshot stays dirty.
			if e := s.dirty[r.ID]; e != nil && e.version == r.Version && e.owner.Scene == r.OwnerScene && e.owner.Epoch == r.OwnerEpoch {
				e.dirty = false
				delete(s.dirty, r.ID)
				s.settle(e)
			}
		}
		s.evict()
		s.mu.Unlock()
	}
	if err := s.journal.Checkpoint(upTo); err != nil {
		// Not fatal: the segments are deleted at the next checkpoint.
		s.log.Warn("journal checkpoint failed", zap.Error(err))
	}
	if len(recs) > 0 {
		s.m.flushes.Add(1)
		if s.flushDur != nil {
			s.flushDur.Observe(time.Since(start).Seconds())
		}
		s.log.Debug("flushed", zap.Int("players", len(recs)), zap.Duration("took", time.Since(start)), zap.Uint64("checkpoint", upTo))
	}
	return nil
}
