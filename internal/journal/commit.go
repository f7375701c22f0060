// Group commit: Append queues a record, and one writer goroutine gathers the
// queue into a batch, writes it with one write(2) and makes it durable with
// one fsync before anyone in the batch is answered.

package journal

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
)

type request struct {
	payload []byte
	done    chan result
}

type result struct {
	seq uint64
	err error
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
