// Segment files and the record checksum: opening and closing the active
// segment, and fsyncing the directory so new names survive a crash.

package journal

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	first uint64 // seq of its first record (its name)
	path  string
	size  int64
}

func checksum(seq, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, seq)
	return crc32.Update(c, castagnoli, payload)
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
