// The journal's API and lifecycle: options, Open, Checkpoint, Stats, Close.

// Package journal is the data server's write-ahead log: append-only segment
// files of length-prefixed, checksummed records, written with group commit.
//
// A record is acknowledged (Append returns) only after the fsync that made it
// durable, so "acknowledged" and "survives kill -9 or a power cut" mean the
// same thing. Concurrent appends are batched: one writer goroutine writes
// every queued record with a single write(2) and a single fsync, so the cost
// of an fsync is shared by everyone who was waiting for one.
//
// On disk, a segment is a file named after the sequence number of its first
// record (%020d.wal). A record is
//
//	uint32 length of payload | uint32 CRC-32C of (seq, payload) | uint64 seq | payload
//
// little-endian. A crash can leave the last record of the last segment torn;
// Replay detects it (short read or checksum mismatch), drops it and
// truncates the file, so new records follow the last good one. Torn records
// were never acknowledged, because their fsync never returned.
//
// The caller tells the journal when records are safe elsewhere (the data
// server after a database flush) with Checkpoint; segments holding only such
// records are deleted.
package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

const (
	headerSize = 16
	// MaxRecordSize bounds one payload; bigger ones are refused, and a
	// length field above it on replay marks a torn or corrupt record.
	MaxRecordSize = 16 << 20
	segmentExt    = ".wal"
)

var (
	// ErrFull is returned by Append when the journal holds MaxBytes and
	// nothing has been checkpointed away yet: the record was not written.
	ErrFull = errors.New("journal: full (database flush is behind; not acknowledged)")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("journal: closed")
	// ErrTooLarge is returned for a payload above MaxRecordSize.
	ErrTooLarge = errors.New("journal: record too large")
)

// Options configure a Journal.
type Options struct {
	// Dir holds the segment files; it is created if missing.
	Dir string
	// MaxBytes bounds the total size of all segments. An append that would
	// exceed it fails with ErrFull. 0 means unbounded.
	MaxBytes int64
	// SegmentBytes is the size at which the active segment is closed and a
	// new one started. 0 means 64 MiB (or MaxBytes/4 if that is smaller).
	SegmentBytes int64
	// GroupCommit is the longest the writer waits for more records to
	// join a batch before it writes and fsyncs. 0 means no waiting: a
	// batch is whatever queued up during the previous fsync.
	GroupCommit time.Duration
	Log         *zap.Logger
	// Sync replaces (*os.File).Sync; tests use it to inject disk errors.
	Sync func(*os.File) error
}

// Stats are cumulative counters and current sizes.
type Stats struct {
	Bytes    int64  // current total size of all segments
	Segments int    // current number of segment files
	Appends  uint64 // records made durable
	Fsyncs   uint64 // fsyncs issued for batches
	Errors   uint64 // batches that failed (disk error or full)
	LastSeq  uint64 // sequence number of the last durable record
}

// Journal is an open journal. Append is safe for concurrent use.
type Journal struct {
	opts Options
	log  *zap.Logger

	reqs    chan request
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once

	// mu guards the segment list, the active file and the counters. The
	// writer holds it while it writes and fsyncs; Checkpoint and Stats take
	// it briefly.
	mu      sync.Mutex
	segs    []segment // oldest first; the last one is active
	active  *os.File
	total   int64
	nextSeq uint64
	// seqs mirrors nextSeq and stats.LastSeq for lock-free readers: the
	// data server reads them under its own lock, which must never wait
	// for an fsync.
	nextSeqA atomic.Uint64
	lastSeqA atomic.Uint64
	replayed bool
	stats    Stats
}

// Open opens (or creates) the journal in opts.Dir. Call Replay before the
// first Append: it validates the tail of the last segment.
func Open(opts Options) (*Journal, error) {
	if opts.Dir == "" {
		return nil, errors.New("journal: no directory")
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Sync == nil {
		opts.Sync = (*os.File).Sync
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
		if opts.MaxBytes > 0 && opts.MaxBytes/4 < opts.SegmentBytes {
			opts.SegmentBytes = max(opts.MaxBytes/4, 4096)
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal %s: %w", opts.Dir, err)
	}
	j := &Journal{
		opts:    opts,
		log:     opts.Log,
		reqs:    make(chan request, 4096),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		nextSeq: 1,
	}
	j.nextSeqA.Store(1)
	entries, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", opts.Dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, segmentExt) {
			continue
		}
		first, err := strconv.ParseUint(strings.TrimSuffix(name, segmentExt), 10, 64)
		if err != nil {
			continue // not ours
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", name, err)
		}
		j.segs = append(j.segs, segment{first: first, path: filepath.Join(opts.Dir, name), size: info.Size()})
		j.total += info.Size()
	}
	sort.Slice(j.segs, func(a, b int) bool { return j.segs[a].first < j.segs[b].first })
	return j, nil
}

// NextSeq is the sequence number the next record will get (or a lower
// one: it never over-estimates). The data server uses it as a lower bound
// for records still on their way to disk when it picks a checkpoint.
func (j *Journal) NextSeq() uint64 { return j.nextSeqA.Load() }

// LastSeq is the sequence number of the last durable record.
func (j *Journal) LastSeq() uint64 { return j.lastSeqA.Load() }

// Stats returns the current counters.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.stats
	s.Bytes = j.total
	s.Segments = len(j.segs)
	return s
}

// Checkpoint says every record with seq <= upTo is safe elsewhere. Segments
// that hold only such records are deleted; if that is all of them, the
// active segment is closed so it can be deleted too.
func (j *Journal) Checkpoint(upTo uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if upTo >= j.stats.LastSeq && len(j.segs) > 0 && j.segs[len(j.segs)-1].size > 0 {
		// Everything is safe: close the active segment so the next
		// append starts a new file and this one can go.
		if err := j.closeActive(); err != nil {
			return err
		}
	}
	var errs []error
	kept := j.segs[:0]
	for i, s := range j.segs {
		// A segment's last record is the one before the next segment's
		// first; the active segment (open file) is never deleted.
		isActive := i == len(j.segs)-1 && j.active != nil
		var lastInSeg uint64
		if i+1 < len(j.segs) {
			lastInSeg = j.segs[i+1].first - 1
		} else {
			lastInSeg = j.stats.LastSeq
		}
		if !isActive && lastInSeg <= upTo {
			if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("journal: delete %s: %w", s.path, err))
				kept = append(kept, s)
				continue
			}
			j.total -= s.size
			continue
		}
		kept = append(kept, s)
	}
	j.segs = kept
	if len(errs) == 0 {
		// The deletes must survive a crash too, or replay would find
		// segments the database already covers (harmless) — but a failed
		// directory sync is a disk problem the operator should hear of.
		if err := syncDir(j.opts.Dir); err != nil {
			errs = append(errs, fmt.Errorf("journal: sync directory after checkpoint: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close stops the writer after the batch in progress. Records queued but
// not yet written fail with ErrClosed. Safe to call more than once.
func (j *Journal) Close() error {
	var err error
	j.once.Do(func() {
		close(j.stop)
		j.mu.Lock()
		replayed := j.replayed
		j.mu.Unlock()
		if replayed {
			<-j.stopped
		} else {
			close(j.stopped)
		}
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.active != nil {
			err = j.active.Close()
			j.active = nil
		}
	})
	return err
}
