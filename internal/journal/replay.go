// Recovery: Replay reads every segment in order, hands each good record to
// the caller, and truncates a torn tail so new records follow the last good one.

package journal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
)

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
