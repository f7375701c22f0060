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
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
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

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

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

type segment struct {
	first uint64 // seq of its first record (its name)
	path  string
	size  int64
}

type request struct {
	payload []byte
	done    chan result
}

type result struct {
	seq uint64
	err error
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

// Replay calls fn for every record in order, drops a torn tail, and starts
// the writer. It must be called exactly once, before Append. fn must not
// keep payload after it returns.
func (j *Journal) Replay(fn func(seq uint64, payload []byte) error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.replayed {
		return errors.New("journal: Replay called twice")
	}
	var last uint64
	for i := range j.segs {
		s := &j.segs[i]
		isLast := i == len(j.segs)-1
		if last != 0 && s.first != last+1 {
			// Each segment starts right after the previous one's last
			// record; a gap means acknowledged records are missing.
			j.log.Error("journal: sequence gap between segments; records may be missing",
				zap.Uint64("after", last), zap.Uint64("next_segment_first", s.first), zap.String("segment", s.path))
		}
		// Records at or past the next segment's first seq are the
		// remains of a failed batch that was retried there.
		limit := uint64(1<<64 - 1)
		if !isLast {
			limit = j.segs[i+1].first - 1
		}
		good, n, err := j.replaySegment(s, limit, fn)
		if err != nil {
			return err
		}
		if good < s.size {
			// A torn or corrupt tail. In the last segment that is the
			// record a crash interrupted; in an earlier one it is the
			// tail of a batch whose write failed, which was never
			// acknowledged (the writer moved to a new segment).
			lvl := j.log.Warn
			if !isLast {
				lvl = j.log.Error
			}
			lvl("journal: dropping torn tail", zap.String("segment", s.path),
				zap.Int64("good_bytes", good), zap.Int64("file_bytes", s.size))
			if err := os.Truncate(s.path, good); err != nil {
				return fmt.Errorf("journal: truncate torn tail of %s: %w", s.path, err)
			}
			j.total -= s.size - good
			s.size = good
		}
		if n > 0 {
			last = n
		} else if last == 0 && s.first > 0 {
			last = s.first - 1
		}
	}
	if last+1 > j.nextSeq {
		j.nextSeq = last + 1
	}
	j.stats.LastSeq = last
	j.nextSeqA.Store(j.nextSeq)
	j.lastSeqA.Store(last)
	// Empty segments (a rotation right before a crash) are dropped so the
	// active segment's name is its first record's seq.
	kept := j.segs[:0]
	for _, s := range j.segs {
		if s.size == 0 {
			_ = os.Remove(s.path)
			continue
		}
		kept = append(kept, s)
	}
	j.segs = kept
	j.replayed = true
	go j.writer()
	return nil
}

// replaySegment reads s up to its first bad record. It returns the offset
// just past the last good record and that record's seq (0 if none).
func (j *Journal) replaySegment(s *segment, limit uint64, fn func(uint64, []byte) error) (int64, uint64, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return 0, 0, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	var lastSeq uint64
	hdr := make([]byte, headerSize)
	var buf []byte
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return off, lastSeq, nil // EOF or short header: end / torn
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		sum := binary.LittleEndian.Uint32(hdr[4:8])
		seq := binary.LittleEndian.Uint64(hdr[8:16])
		if n > MaxRecordSize {
			return off, lastSeq, nil
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return off, lastSeq, nil
		}
		if checksum(hdr[8:16], buf) != sum {
			return off, lastSeq, nil
		}
		if lastSeq != 0 && seq != lastSeq+1 || seq > limit {
			return off, lastSeq, nil // stale bytes past a truncated tail
		}
		if err := fn(seq, buf); err != nil {
			return off, lastSeq, fmt.Errorf("journal: replay record %d of %s: %w", seq, s.path, err)
		}
		lastSeq = seq
		off += headerSize + int64(n)
	}
}

func checksum(seq, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, seq)
	return crc32.Update(c, castagnoli, payload)
}

// Append writes payload and returns its sequence number once it is on
// disk. It fails with ErrFull when the journal is at MaxBytes, and with the
// disk's error when the write or fsync fails; in both cases the record is
// not durable and must not be acknowledged.
func (j *Journal) Append(ctx context.Context, payload []byte) (uint64, error) {
	if len(payload) > MaxRecordSize {
		return 0, ErrTooLarge
	}
	req := request{payload: payload, done: make(chan result, 1)}
	select {
	case j.reqs <- req:
	case <-j.stop:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Once queued, wait for the outcome even if ctx ends: the caller must
	// know whether the record is durable, and the writer always answers.
	select {
	case res := <-req.done:
		return res.seq, res.err
	case <-j.stopped:
		select {
		case res := <-req.done:
			return res.seq, res.err
		default:
			return 0, ErrClosed
		}
	}
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

func (j *Journal) writer() {
	defer close(j.stopped)
	var batch []request
	var buf []byte
	for {
		batch = batch[:0]
		select {
		case r := <-j.reqs:
			batch = append(batch, r)
		case <-j.stop:
			j.failQueued()
			return
		}
		batch = j.gather(batch)
		buf = j.commit(batch, buf[:0])
	}
}

// gather adds everything already queued and, with GroupCommit set, waits
// that long for more: the fsync about to happen serves them all.
func (j *Journal) gather(batch []request) []request {
	const maxBatch = 8192
	for len(batch) < maxBatch {
		select {
		case r := <-j.reqs:
			batch = append(batch, r)
			continue
		default:
		}
		break
	}
	if j.opts.GroupCommit <= 0 || len(batch) >= maxBatch {
		return batch
	}
	t := time.NewTimer(j.opts.GroupCommit)
	defer t.Stop()
	for len(batch) < maxBatch {
		select {
		case r := <-j.reqs:
			batch = append(batch, r)
		case <-t.C:
			return batch
		case <-j.stop:
			return batch
		}
	}
	return batch
}

func (j *Journal) failQueued() {
	for {
		select {
		case r := <-j.reqs:
			r.done <- result{err: ErrClosed}
		default:
			return
		}
	}
}

// commit writes and fsyncs one batch and answers every request in it.
func (j *Journal) commit(batch []request, buf []byte) []byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	first := j.nextSeq
	seq := first
	var accepted []request
	for _, r := range batch {
		size := int64(headerSize + len(r.payload))
		if j.opts.MaxBytes > 0 && j.total+int64(len(buf))+size > j.opts.MaxBytes {
			r.done <- result{err: ErrFull}
			j.stats.Errors++
			continue
		}
		var hdr [headerSize]byte
		binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(r.payload)))
		binary.LittleEndian.PutUint64(hdr[8:16], seq)
		binary.LittleEndian.PutUint32(hdr[4:8], checksum(hdr[8:16], r.payload))
		buf = append(buf, hdr[:]...)
		buf = append(buf, r.payload...)
		accepted = append(accepted, r)
		seq++
	}
	if len(accepted) == 0 {
		return buf
	}
	if err := j.write(first, buf); err != nil {
		j.stats.Errors++
		j.log.Error("journal: batch not durable; saves in it are refused", zap.Error(err), zap.Int("records", len(accepted)))
		for _, r := range accepted {
			r.done <- result{err: err}
		}
		return buf
	}
	j.nextSeq = seq
	j.stats.LastSeq = seq - 1
	// lastSeq first: a reader that sees the new nextSeq must not see an
	// older lastSeq.
	j.lastSeqA.Store(seq - 1)
	j.nextSeqA.Store(seq)
	j.stats.Appends += uint64(len(accepted))
	for i, r := range accepted {
		r.done <- result{seq: first + uint64(i)}
	}
	return buf
}

// write appends buf (records first..) to the active segment and fsyncs it,
// rotating first if the segment is full. Called with mu held.
func (j *Journal) write(first uint64, buf []byte) error {
	if j.active != nil && j.segs[len(j.segs)-1].size >= j.opts.SegmentBytes {
		if err := j.closeActive(); err != nil {
			return err
		}
	}
	if j.active == nil {
		if err := j.openSegment(first); err != nil {
			return err
		}
	}
	seg := &j.segs[len(j.segs)-1]
	n, err := j.active.Write(buf)
	if err == nil {
		j.stats.Fsyncs++
		err = j.opts.Sync(j.active)
	}
	if err != nil {
		// The tail of the file is now unknown (a failed fsync may have
		// dropped pages). Cut it back to the last acknowledged record; if
		// that fails too, abandon this segment: the next batch starts a
		// new one and replay drops this one's torn tail.
		if terr := j.active.Truncate(seg.size); terr != nil || j.opts.Sync(j.active) != nil {
			_ = j.active.Close()
			j.active = nil
			j.total += int64(n)
			seg.size += int64(n)
		} else if _, serr := j.active.Seek(seg.size, io.SeekStart); serr != nil {
			_ = j.active.Close()
			j.active = nil
		}
		return fmt.Errorf("journal: write %s: %w", seg.path, err)
	}
	seg.size += int64(n)
	j.total += int64(n)
	return nil
}

func (j *Journal) openSegment(first uint64) error {
	path := filepath.Join(j.opts.Dir, fmt.Sprintf("%020d%s", first, segmentExt))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("journal: create segment: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("journal: create segment: %w", err)
	}
	if info.Size() != 0 {
		// A segment named after a record not yet written can only hold
		// the remains of a failed write: nothing in it was acknowledged.
		if err := f.Truncate(0); err != nil {
			f.Close()
			return fmt.Errorf("journal: reset segment %s: %w", path, err)
		}
	}
	if n := len(j.segs); n > 0 && j.segs[n-1].path == path {
		j.total -= j.segs[n-1].size
		j.segs[n-1].size = 0
	} else {
		// The new name must survive a crash too: a record acknowledged in
		// a segment whose directory entry is lost would be lost with it.
		if err := syncDir(j.opts.Dir); err != nil {
			f.Close()
			_ = os.Remove(path)
			return fmt.Errorf("journal: sync directory for new segment %s: %w", path, err)
		}
		j.segs = append(j.segs, segment{first: first, path: path})
	}
	j.active = f
	return nil
}

func (j *Journal) closeActive() error {
	if j.active == nil {
		return nil
	}
	err := j.active.Close()
	j.active = nil
	if err != nil {
		return fmt.Errorf("journal: close segment: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
