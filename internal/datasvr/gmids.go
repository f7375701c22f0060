package datasvr

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/respawn-dev/respawn/internal/validate"
)

// Operator requests are exactly once, as Stripe's idempotency keys are:
// every state-changing GM command carries a request id; the data server
// records what each id did, answers a repeat with the original result and
// refuses the id with a different body. The record of a change datasvr
// makes itself is in the same journal record as the change (a crash cannot
// separate them); the table below keeps the records after the journal is
// checkpointed away, in an append-only file that survives restarts.

const (
	// GMWindow is how long a request id is remembered.
	GMWindow = 24 * time.Hour
	// GMMaxIDs bounds the table; past it the oldest ids are forgotten
	// first (a retry that late is applied again).
	GMMaxIDs = 100000
	// maxReqID bounds a request id's length.
	maxReqID = 128
)

// gmRecord is what one operator request did.
type gmRecord struct {
	ID    string          `json:"id"`
	Op    string          `json:"op"`   // give, create, kick
	Hash  string          `json:"hash"` // of the request body without the id
	Reply json.RawMessage `json:"reply"`
	At    int64           `json:"at"` // Unix nanoseconds
}

// gmHash is the body hash of an operator request: its op and fields, with
// separators that no field can fake.
func gmHash(op string, fields ...string) string {
	h := sha256.New()
	h.Write([]byte(op))
	for _, f := range fields {
		h.Write([]byte{0})
		h.Write([]byte(strconv.Itoa(len(f))))
		h.Write([]byte{0})
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// gmTable is the request table: one owner (itself, under mu).
type gmTable struct {
	path string
	log  *zap.Logger

	mu    sync.Mutex
	f     *os.File
	ids   map[string]gmRecord
	order []string // oldest first
	lines int      // records in the file
}

// openGMTable loads the table from path, dropping expired records, and
// rewrites the file compactly.
func openGMTable(path string, log *zap.Logger) (*gmTable, error) {
	t := &gmTable{path: path, log: log, ids: map[string]gmRecord{}}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		bad := 0
		for sc.Scan() {
			var r gmRecord
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.ID == "" {
				bad++ // a line torn by a crash mid-append
				continue
			}
			t.add(r)
		}
		err := sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("gm request table %s: %w", path, err)
		}
		if bad > 0 {
			log.Warn("gm request table: skipped unreadable lines (torn by a crash)", zap.Int("lines", bad), zap.String("path", path))
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("gm request table: %w", err)
	}
	t.expire(time.Now())
	if err := t.rewrite(); err != nil {
		return nil, err
	}
	return t, nil
}

// add puts r in memory (the newest record of an id wins). Called with mu
// held or before the table is shared.
func (t *gmTable) add(r gmRecord) {
	if _, ok := t.ids[r.ID]; !ok {
		t.order = append(t.order, r.ID)
	}
	t.ids[r.ID] = r
	for len(t.order) > GMMaxIDs {
		delete(t.ids, t.order[0])
		t.order = t.order[1:]
	}
}

func (t *gmTable) expire(now time.Time) {
	cut := now.Add(-GMWindow).UnixNano()
	for len(t.order) > 0 && t.ids[t.order[0]].At < cut {
		delete(t.ids, t.order[0])
		t.order = t.order[1:]
	}
}

// rewrite replaces the file with the live records (temp file, fsync,
// rename, directory fsync) and reopens it for appending.
func (t *gmTable) rewrite() error {
	if t.f != nil {
		_ = t.f.Close()
		t.f = nil
	}
	tmp := t.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("gm request table: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, id := range t.order {
		b, _ := json.Marshal(t.ids[id]) // plain struct: cannot fail
		w.Write(b)
		w.WriteByte('\n')
	}
	err = errors.Join(w.Flush(), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, t.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(t.path))
	}
	if err != nil {
		return fmt.Errorf("gm request table %s: rewrite: %w", t.path, err)
	}
	t.lines = len(t.order)
	t.f, err = os.OpenFile(t.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("gm request table: %w", err)
	}
	return nil
}

// get returns what id did, if it is remembered.
func (t *gmTable) get(id string) (gmRecord, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.ids[id]
	if ok && r.At < time.Now().Add(-GMWindow).UnixNano() {
		return gmRecord{}, false
	}
	return r, ok
}

// put records r durably (append + fsync). A failure is logged, not
// returned: the change itself is already durable and answered, and the
// journal still holds its record until the next checkpoint.
func (t *gmTable) put(r gmRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.ids[r.ID]; ok && old.Hash == r.Hash && string(old.Reply) == string(r.Reply) {
		return
	}
	t.add(r)
	if t.f == nil {
		return
	}
	b, _ := json.Marshal(r)
	_, err := t.f.Write(append(b, '\n'))
	if err == nil {
		err = t.f.Sync()
	}
	if err != nil {
		t.log.Error("gm request table: record not made durable; a retry after a restart may apply it again",
			zap.String("req_id", r.ID), zap.Error(err))
		return
	}
	t.lines++
	if t.lines > 2*GMMaxIDs || t.lines > 2*len(t.order)+1000 {
		t.expire(time.Now())
		if err := t.rewrite(); err != nil {
			t.log.Error("gm request table: compaction failed", zap.Error(err))
		}
	}
}

func (t *gmTable) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil {
		return nil
	}
	err := t.f.Close()
	t.f = nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// replayGM adds the operator requests found in the journal to the table.
func (s *Server) replayGM() {
	for _, r := range s.replayedGM {
		s.gmids.put(r)
	}
	s.replayedGM = nil
}

// gmCheck looks id up: a repeat with the same body returns the original
// reply (ok), one with another body an ErrRequestConflict.
func (s *Server) gmCheck(id, hash string, reply any) (ok bool, err error) {
	if id == "" {
		return false, nil
	}
	r, seen := s.gmids.get(id)
	if !seen {
		return false, nil
	}
	if r.Hash != hash {
		s.m.gmConflicts.Add(1)
		return false, fmt.Errorf("%w: request id %s was used for a different %s request at %s", ErrRequestConflict, id, r.Op,
			time.Unix(0, r.At).UTC().Format(time.RFC3339))
	}
	if err := json.Unmarshal(r.Reply, reply); err != nil {
		return false, fmt.Errorf("request id %s: stored reply: %w", id, err)
	}
	s.m.gmRepeats.Add(1)
	return true, nil
}

func validReqID(id string) error {
	if len(id) > maxReqID {
		return fmt.Errorf("%w: request id of %d bytes (at most %d)", ErrBadRequest, len(id), maxReqID)
	}
	if id == "" {
		return nil // datasvr names it
	}
	if err := validate.RequestID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return nil
}

func newGMRecord(id, op, hash string, reply any) *gmRecord {
	b, _ := json.Marshal(reply) // our own reply structs
	return &gmRecord{ID: id, Op: op, Hash: hash, Reply: b, At: time.Now().UnixNano()}
}
