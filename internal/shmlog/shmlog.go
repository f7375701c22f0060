// Package shmlog is the shared-memory event log (the "ShmStore") that lets a
// scene process survive kill -9.
//
// A scene appends every event to its slot BEFORE applying it. The log lives in
// one mmap'd file, on /dev/shm by default, so it outlives the process without
// touching a disk; a respawned process opens the same file and replays each
// slot: its snapshot first, then its events in order.
//
// # File format (all integers little-endian)
//
//	file   = header (4096 B) | slot[0] | slot[1] | ... | slot[Slots-1]
//	header = magic "RSPWNSHM" | version u32 | header size u32 | slot count u32 |
//	         slot header size u32 | slot size u64 | crc32c(bytes 0..32) u32
//	slot   = slot header (256 B) | half A | half B      (SlotSize bytes, 4096-aligned)
//	slot header = state u64 | id length u32 | crc32c(id length, id) u32 | id [64]B
//	state  = generation<<2 | active half<<1 | valid      (one 8-byte atomic store)
//	half   = snapshot record | event record* | zero word
//	record = commit u64 | seq u64 | gen u64 | kind u32 | length u32 | payload | pad to 8
//	commit = crc32c(seq..payload)<<32 | 1<<31 | length  (stored last, atomically)
//
// # Why it is crash-safe
//
// Every write that makes something visible is a single aligned 8-byte atomic
// store done after everything it covers has been written: the record's commit
// word (after its body and after zeroing the word that follows it, so the log
// always ends in a zero word), and the slot's state word (which flips the
// active half after a snapshot, and sets or clears the valid flag). A process
// killed at any instruction therefore leaves either the old or the new
// version, never a mix; a record whose commit word is missing, whose CRC does
// not match, whose generation is not the half's, or whose sequence number is
// not the next one ends the log, and nothing after it is replayed.
//
// # Damage stays in its slot
//
// A torn record always has a zero commit word, and nothing committed ever
// lies beyond the end of the log; so a bad record followed by committed ones
// is damage, not a crash. Open judges each slot on its own and never fails
// for what one slot holds: damage mid-log or in a snapshot is kept on the
// Slot (Damage, ErrDamaged, Repair), a damaged snapshot is bypassed with the
// previous half when that is exactly its history, and a header whose id
// cannot be read is quarantined (Store.Damaged, Reclaim). See damage.go.
//
// Compaction writes the new snapshot into the inactive half under a new
// generation and then flips the state word; stale records from an earlier use
// of that half carry an older generation and sit behind a zero word, so they
// can never be mistaken for live ones.
//
// The room index (id -> slot) and free-slot list are rebuilt from the valid
// flags at Open and never stored. The file is flock'ed exclusively while open,
// so two incarnations of a scene process can never write it at once.
//
// # Concurrency
//
// A Store may be used from many goroutines: Create, Free, Get and the other
// Store methods are serialised by a mutex. A Slot belongs to one goroutine
// (the scene that owns the room): Append, Snapshot, Replay and Stats take no
// lock, which is what keeps Append free of syscalls and allocation. Free and
// Close must not run while the slot's owner is still using it.
package shmlog

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"

	"github.com/respawn-dev/respawn/internal/crashpoint"
)

// Defaults and limits of Options.
const (
	DefaultSlots    = 64
	DefaultSlotSize = 16 << 20

	MinSlotSize = 4 << 10
	MaxSlotSize = 1 << 30
	MaxSlots    = 1 << 16

	// SlotAlign keeps every slot page-aligned so a slot never shares a page
	// with its neighbour and the 8-byte words inside it are naturally aligned.
	SlotAlign = 4096

	// MaxIDLen is the longest room/scene id a slot header can hold.
	MaxIDLen = 64

	// DefaultDir is where callers should put the file: tmpfs survives the
	// process but needs no disk.
	DefaultDir = "/dev/shm"
)

// FormatVersion is the file format this build writes and reads; a file
// of another version is refused at open (`respawn status` reports it).
const FormatVersion = formatVersion

const (
	formatVersion  = 1
	headerSize     = 4096
	slotHeaderSize = 256
	fileMagic      = "RSPWNSHM"

	// Header field offsets.
	hMagic      = 0
	hVersion    = 8
	hHeaderSize = 12
	hSlots      = 16
	hSlotHdr    = 20
	hSlotSize   = 24
	hCRC        = 32
)

// Errors. Every error returned by this package wraps one of these (or an
// os/syscall error) and names the file, slot or id involved.
var (
	ErrLocked           = errors.New("shmlog: file is locked by another open")
	ErrCorrupt          = errors.New("shmlog: file is corrupt or not a shmlog file")
	ErrGeometry         = errors.New("shmlog: bad geometry")
	ErrNoFreeSlot       = errors.New("shmlog: no free slot")
	ErrExists           = errors.New("shmlog: id already has a slot")
	ErrNotFound         = errors.New("shmlog: no slot with that id")
	ErrBadID            = errors.New("shmlog: bad id")
	ErrSlotFull         = errors.New("shmlog: active half is full")
	ErrRecordTooLarge   = errors.New("shmlog: record can never fit in a half")
	ErrSnapshotTooLarge = errors.New("shmlog: snapshot does not fit in a half")
	ErrReadOnly         = errors.New("shmlog: store is read-only")
	ErrClosed           = errors.New("shmlog: store is closed")
	ErrFreed            = errors.New("shmlog: slot was freed")
	ErrNotDamaged       = errors.New("shmlog: slot is not damaged")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options sets the geometry of a new file and the geometry an existing file
// must have. Zero fields take the defaults.
type Options struct {
	Slots    int // number of slots; default 64, at most MaxSlots
	SlotSize int // bytes per slot including both halves; default 16 MiB, a multiple of 4096 in [4 KiB, 1 GiB]
	// Crash arms named crash points (package crashpoint; tests only).
	Crash *crashpoint.Points
	// WaitLock makes Open block until the writer's lock is free instead of
	// failing with ErrLocked: a standby process waiting for its primary to
	// exit takes the log the moment the kernel releases the lock.
	WaitLock bool
}

func (o Options) withDefaults() (Options, error) {
	if o.Slots == 0 {
		o.Slots = DefaultSlots
	}
	if o.SlotSize == 0 {
		o.SlotSize = DefaultSlotSize
	}
	if o.Slots < 1 || o.Slots > MaxSlots {
		return o, fmt.Errorf("%w: Slots=%d, want 1..%d", ErrGeometry, o.Slots, MaxSlots)
	}
	if o.SlotSize < MinSlotSize || o.SlotSize > MaxSlotSize || o.SlotSize%SlotAlign != 0 {
		return o, fmt.Errorf("%w: SlotSize=%d, want a multiple of %d in [%d, %d]",
			ErrGeometry, o.SlotSize, SlotAlign, MinSlotSize, MaxSlotSize)
	}
	return o, nil
}

func (o Options) fileSize() int64 {
	return headerSize + int64(o.Slots)*int64(o.SlotSize)
}

// Store is an open log file.
type Store struct {
	// crash and beforeCommit are the armed crash points (tests only).
	crash        *crashpoint.Points
	beforeCommit func()

	path     string
	f        *os.File
	mem      mmap.MMap
	ro       bool
	geo      Options
	halfSize int

	mu    sync.Mutex
	index map[string]*Slot
	free  []int // stack; the lowest free index is on top
	// damaged are the quarantined slots: headers that cannot be read.
	damaged []Damage
	closed  bool
}

// Open opens the log at path for writing, creating and preallocating it if it
// does not exist. It takes an exclusive flock (a second Open, from any
// process, fails with ErrLocked until Close), validates the header against
// opt, and rebuilds the room index and free list from the valid flags.
func Open(path string, opt Options) (*Store, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("shmlog: open %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shmlog: open: %w", err)
	}
	s, err := openFile(f, path, opt, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// flockIf is flock unless how is 0 (no lock wanted).
func flockIf(fd, how int) error {
	if how == 0 {
		return nil
	}
	return flock(fd, how)
}

// flock is unix.Flock, retried when a blocking wait is interrupted by a
// signal (the Go runtime's preemption signals do that).
func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// OpenReadOnly opens an existing log for reading only (a PROT_READ mapping),
// for tools that check or inspect a log. It takes a shared flock, so it fails
// with ErrLocked while a writer has the file open, and a writer cannot open it
// while it is being read. The geometry is taken from the file's header.
func OpenReadOnly(path string) (*Store, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("shmlog: open read-only: %w", err)
	}
	s, err := openFile(f, path, Options{}, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func openFile(f *os.File, path string, opt Options, ro bool) (*Store, error) {
	return openFileLocked(f, path, opt, ro, true)
}

// openFileLocked is openFile; lock false maps the file without a lock (a
// follower beside the live writer: OpenFollower).
func openFileLocked(f *os.File, path string, opt Options, ro, lock bool) (*Store, error) {
	how := unix.LOCK_EX | unix.LOCK_NB
	switch {
	case ro:
		how = unix.LOCK_SH | unix.LOCK_NB
	case opt.WaitLock:
		how = unix.LOCK_EX
	}
	if !lock && !ro {
		return nil, fmt.Errorf("shmlog: open %s: only a read-only store may be unlocked", path)
	}
	if !lock {
		how = 0 // a follower (OpenFollower)
	}
	if err := flockIf(int(f.Fd()), how); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("shmlog: open %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("shmlog: flock %s: %w", path, err)
	}
	// The lock goes away with the descriptor; every error path closes f.

	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shmlog: stat %s: %w", path, err)
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("shmlog: %s is not a regular file: %w", path, ErrCorrupt)
	}

	var hdr [headerSize]byte
	initialise := false
	switch {
	case size == 0:
		initialise = true
	case size < headerSize:
		return nil, fmt.Errorf("shmlog: %s: %d bytes, shorter than the %d-byte header (truncated?): %w",
			path, size, headerSize, ErrCorrupt)
	default:
		if _, err := f.ReadAt(hdr[:], 0); err != nil {
			return nil, fmt.Errorf("shmlog: read header of %s: %w", path, err)
		}
		// Open writes the header only after sizing the file, so an all-zero
		// header is a creation that was interrupted, not a log.
		initialise = allZero(hdr[:])
	}

	if initialise {
		if ro {
			return nil, fmt.Errorf("shmlog: %s is empty (never initialised): %w", path, ErrCorrupt)
		}
		// Truncate to zero first so nothing from an earlier file survives;
		// on tmpfs the new size is sparse and costs no memory until written.
		if err := f.Truncate(0); err != nil {
			return nil, fmt.Errorf("shmlog: truncate %s: %w", path, err)
		}
		if err := f.Truncate(opt.fileSize()); err != nil {
			return nil, fmt.Errorf("shmlog: preallocate %s to %d bytes: %w", path, opt.fileSize(), err)
		}
		size = opt.fileSize()
	} else {
		fileOpt, err := parseHeader(hdr[:])
		if err != nil {
			return nil, fmt.Errorf("shmlog: %s: %w", path, err)
		}
		if ro {
			opt = fileOpt
		} else if fileOpt.Slots != opt.Slots || fileOpt.SlotSize != opt.SlotSize {
			return nil, fmt.Errorf("shmlog: %s has %d slots of %d bytes, options want %d of %d: %w",
				path, fileOpt.Slots, fileOpt.SlotSize, opt.Slots, opt.SlotSize, ErrGeometry)
		}
		if size != opt.fileSize() {
			return nil, fmt.Errorf("shmlog: %s is %d bytes, header says %d (truncated or extended): %w",
				path, size, opt.fileSize(), ErrCorrupt)
		}
	}

	prot := mmap.RDWR
	if ro {
		prot = mmap.RDONLY
	}
	mem, err := mmap.MapRegion(f, int(size), prot, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("shmlog: mmap %s (%d bytes): %w", path, size, err)
	}
	s := &Store{
		path:     path,
		f:        f,
		mem:      mem,
		ro:       ro,
		geo:      opt,
		halfSize: (opt.SlotSize - slotHeaderSize) / 2,
		index:    make(map[string]*Slot),
		crash:    opt.Crash,
	}
	if opt.Crash != nil {
		s.beforeCommit = func() { opt.Crash.Hit(crashpoint.ShmlogBeforeCommit) }
	}
	if initialise {
		putHeader(mem[:headerSize], opt)
		// The header is the only thing Open itself must make durable.
		if err := unix.Msync(mem[:headerSize], unix.MS_SYNC); err != nil {
			mem.Unmap()
			return nil, fmt.Errorf("shmlog: msync header of %s: %w", path, err)
		}
	}
	if err := s.rebuild(); err != nil {
		mem.Unmap()
		return nil, fmt.Errorf("shmlog: %s: %w", path, err)
	}
	return s, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func putHeader(h []byte, o Options) {
	copy(h[hMagic:], fileMagic)
	le.PutUint32(h[hVersion:], formatVersion)
	le.PutUint32(h[hHeaderSize:], headerSize)
	le.PutUint32(h[hSlots:], uint32(o.Slots))
	le.PutUint32(h[hSlotHdr:], slotHeaderSize)
	le.PutUint64(h[hSlotSize:], uint64(o.SlotSize))
	le.PutUint32(h[hCRC:], crc32.Checksum(h[:hCRC], castagnoli))
}

func parseHeader(h []byte) (Options, error) {
	if string(h[hMagic:hMagic+len(fileMagic)]) != fileMagic {
		return Options{}, fmt.Errorf("wrong magic %q, want %q: %w", h[hMagic:hMagic+len(fileMagic)], fileMagic, ErrCorrupt)
	}
	if v := le.Uint32(h[hVersion:]); v != formatVersion {
		return Options{}, fmt.Errorf("format version %d, this build reads %d: %w", v, formatVersion, ErrCorrupt)
	}
	if got, want := le.Uint32(h[hCRC:]), crc32.Checksum(h[:hCRC], castagnoli); got != want {
		return Options{}, fmt.Errorf("header checksum %08x, computed %08x: %w", got, want, ErrCorrupt)
	}
	if hs, sh := le.Uint32(h[hHeaderSize:]), le.Uint32(h[hSlotHdr:]); hs != headerSize || sh != slotHeaderSize {
		return Options{}, fmt.Errorf("header size %d / slot header size %d, want %d / %d: %w",
			hs, sh, headerSize, slotHeaderSize, ErrCorrupt)
	}
	ss := le.Uint64(h[hSlotSize:])
	if ss > MaxSlotSize {
		return Options{}, fmt.Errorf("slot size %d in header: %w", ss, ErrGeometry)
	}
	o := Options{Slots: int(le.Uint32(h[hSlots:])), SlotSize: int(ss)}
	if o.Slots == 0 {
		return Options{}, fmt.Errorf("zero slots in header: %w", ErrGeometry)
	}
	return o.withDefaults()
}

// rebuild builds the index and free list from the slot headers, and scans
// every valid slot's active half to find where appending continues. Each
// slot is judged on its own: one whose id cannot be read is quarantined
// (neither free nor indexed: it may hold some scene's log), and damage in a
// slot's records stays on that Slot (see Slot.Damage). Neither stops Open.
func (s *Store) rebuild() error {
	for i := s.geo.Slots - 1; i >= 0; i-- {
		hdr := s.slotHeader(i)
		st := le.Uint64(hdr[sState:])
		if st&stateValid == 0 {
			s.free = append(s.free, i)
			continue
		}
		id, err := readID(hdr)
		if err != nil {
			s.quarantine(i, err.Error())
			continue
		}
		if other, dup := s.index[id]; dup {
			// Which of the two is the real one cannot be told from the
			// headers; neither is trusted.
			why := fmt.Sprintf("id %q is also in slot %d", id, other.idx)
			s.quarantine(i, why)
			s.quarantine(other.idx, fmt.Sprintf("id %q is also in slot %d", id, i))
			delete(s.index, id)
			continue
		}
		sl := s.newSlot(i, id, st)
		sl.recover()
		s.index[id] = sl
	}
	return nil
}

func (s *Store) quarantine(i int, why string) {
	s.damaged = append(s.damaged, Damage{
		Kind: DamageHeader, Slot: i, FileOffset: int64(headerSize) + int64(i)*int64(s.geo.SlotSize),
		Reason: "slot header is marked valid but " + why,
	})
}

// Damaged returns the slots Open quarantined because their header cannot be
// read (DamageHeader), lowest index first. They are neither free nor in the
// index until Reclaim.
func (s *Store) Damaged() []Damage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.damaged)
	slices.SortFunc(out, func(a, b Damage) int { return a.Slot - b.Slot })
	return out
}

// Stray returns a free slot whose header still carries id with an intact
// checksum. Free clears the valid flag before it wipes the id, so a room
// freed by a crash in between looks like this; so does a slot whose valid
// flag alone was damaged. Only the caller can tell (a scene's slot is never
// freed); Adopt takes such a slot back.
func (s *Store) Stray(id string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return -1, false
	}
	for _, i := range s.free {
		hdr := s.slotHeader(i)
		if got, err := readID(hdr); err == nil && got == id {
			return i, true
		}
	}
	return -1, false
}

// Adopt marks the free slot idx valid again under the id its header
// carries, keeping its generation and active half, and validates its log
// as Open does (see Slot.Damage). It is for a slot Stray found.
func (s *Store) Adopt(idx int) (*Slot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable("adopt", fmt.Sprintf("slot %d", idx)); err != nil {
		return nil, err
	}
	at := slices.Index(s.free, idx)
	if at < 0 {
		return nil, fmt.Errorf("shmlog: adopt slot %d: not free: %w", idx, ErrNotFound)
	}
	hdr := s.slotHeader(idx)
	id, err := readID(hdr)
	if err != nil {
		return nil, fmt.Errorf("shmlog: adopt slot %d: %w", idx, err)
	}
	if _, ok := s.index[id]; ok {
		return nil, fmt.Errorf("shmlog: adopt slot %d (%q): %w", idx, id, ErrExists)
	}
	st := le.Uint64(hdr[sState:]) | stateValid
	store64(hdr[sState:], st) // commit: valid again
	s.free = slices.Delete(s.free, at, at+1)
	sl := s.newSlot(idx, id, st)
	sl.recover()
	s.index[id] = sl
	return sl, nil
}

// Reclaim returns a quarantined slot to the free list. The caller decides
// that no scene or room can be missing it (every one it knows found its
// slot, or was rebuilt without it). The header is wiped and both halves are
// zeroed: the slot's real generation is unknown, so the next Create's
// cannot be made larger than what the halves hold, and nothing in them may
// pass for a current record or a previous snapshot.
func (s *Store) Reclaim(idx int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable("reclaim", fmt.Sprintf("slot %d", idx)); err != nil {
		return err
	}
	i := slices.IndexFunc(s.damaged, func(d Damage) bool { return d.Slot == idx })
	if i < 0 {
		return fmt.Errorf("shmlog: reclaim slot %d: not quarantined: %w", idx, ErrNotFound)
	}
	hdr := s.slotHeader(idx)
	store64(hdr[sState:], 0) // commit: free
	clearID(hdr)
	// Punching the pages out zeroes them and gives the memory back; if the
	// file system cannot, write the zeros.
	off := int64(headerSize) + int64(idx)*int64(s.geo.SlotSize) + slotHeaderSize
	if err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE,
		off, int64(s.geo.SlotSize-slotHeaderSize)); err != nil {
		clear(s.slotBytes(idx)[slotHeaderSize:])
	}
	s.damaged = slices.Delete(s.damaged, i, i+1)
	s.free = append(s.free, idx)
	slices.SortFunc(s.free, func(a, b int) int { return b - a })
	return nil
}

// Path returns the file the store maps.
func (s *Store) Path() string { return s.path }

// Options returns the geometry of the open file.
func (s *Store) Options() Options { return s.geo }

// ReadOnly reports whether the store was opened with OpenReadOnly.
func (s *Store) ReadOnly() bool { return s.ro }

// Flush msyncs the whole mapping. On tmpfs this only matters for ordering
// against a machine crash, which tmpfs does not survive anyway; on a real
// disk it makes everything appended so far durable.
func (s *Store) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("shmlog: flush %s: %w", s.path, ErrClosed)
	}
	if s.ro {
		return nil
	}
	if err := s.mem.Flush(); err != nil {
		return fmt.Errorf("shmlog: msync %s: %w", s.path, err)
	}
	return nil
}

// Close msyncs, unmaps and unlocks the file. Slots obtained from the store
// become unusable (ErrClosed). Calling Close again returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, sl := range s.index {
		sl.detach(ErrClosed)
	}
	var errs []error
	if !s.ro {
		if err := s.mem.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("shmlog: msync %s: %w", s.path, err))
		}
	}
	if err := s.mem.Unmap(); err != nil {
		errs = append(errs, fmt.Errorf("shmlog: munmap %s: %w", s.path, err))
	}
	s.mem = nil
	// Closing the descriptor releases the flock.
	if err := s.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("shmlog: close %s: %w", s.path, err))
	}
	return errors.Join(errs...)
}

// IDs returns the ids of the valid slots, sorted.
func (s *Store) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.index))
	for id := range s.index {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Get returns the slot of id.
func (s *Store) Get(id string) (*Slot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, ok := s.index[id]
	return sl, ok
}

// SlotIndex returns the index of id's slot in the file (tests use it to show
// a freed slot is reused).
func (s *Store) SlotIndex(id string) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl, ok := s.index[id]
	if !ok {
		return -1, false
	}
	return sl.idx, true
}

// FreeSlots returns how many slots Create can still take.
func (s *Store) FreeSlots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.free)
}

// Create takes a free slot for id and commits it with an empty snapshot
// (meaning "initial state") and no events.
func (s *Store) Create(id string) (*Slot, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable("create", id); err != nil {
		return nil, err
	}
	if _, ok := s.index[id]; ok {
		return nil, fmt.Errorf("shmlog: create %q: %w", id, ErrExists)
	}
	if len(s.free) == 0 {
		return nil, fmt.Errorf("shmlog: create %q: all %d slots in use: %w", id, s.geo.Slots, ErrNoFreeSlot)
	}
	// The lowest free slot, but not one whose header still carries an id
	// (see Stray) while another is free: it may be some scene's log whose
	// valid flag was damaged, waiting to be adopted.
	at := len(s.free) - 1
	for i := len(s.free) - 1; i >= 0; i-- {
		if _, err := readID(s.slotHeader(s.free[i])); err != nil {
			at = i
			break
		}
	}
	idx := s.free[at]
	hdr := s.slotHeader(idx)
	// The generation keeps growing across reuse of the slot, so nothing left
	// in its halves from the previous room can pass for this room's records.
	// It skips one: the other half may hold the previous room's last
	// snapshot at the old generation, and generation-1 in the other half is
	// what stands in for a damaged snapshot (see Slot.fallback).
	gen := (le.Uint64(hdr[sState:])>>stateGenShift + 2) & genMask
	putID(hdr, id)
	half := s.half(idx, 0)
	end := putRecord(half, 0, KindSnapshot, 0, gen, nil, nil)
	if end < 0 {
		// Cannot happen: MinSlotSize leaves room for an empty record.
		return nil, fmt.Errorf("shmlog: create %q in slot %d: half too small: %w", id, idx, ErrGeometry)
	}
	st := gen<<stateGenShift | stateValid // active half 0
	store64(hdr[sState:], st)             // commit: the slot now exists
	s.free = slices.Delete(s.free, at, at+1)
	sl := s.newSlot(idx, id, st)
	sl.tail = end
	s.index[id] = sl
	return sl, nil
}

// Free clears id's slot and returns it to the free list. The valid flag is
// cleared (committed) before the id is wiped, so a crash in between leaves a
// free slot, never a valid slot without its id. The owner must have stopped
// using the Slot.
func (s *Store) Free(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable("free", id); err != nil {
		return err
	}
	sl, ok := s.index[id]
	if !ok {
		return fmt.Errorf("shmlog: free %q: %w", id, ErrNotFound)
	}
	hdr := s.slotHeader(sl.idx)
	store64(hdr[sState:], sl.gen<<stateGenShift) // commit: valid=0, generation kept
	clearID(hdr)
	// Give the room's pages back to tmpfs; best effort, the halves are
	// already dead (older generation, and the next Create rewrites half A).
	off := int64(headerSize) + int64(sl.idx)*int64(s.geo.SlotSize) + slotHeaderSize
	_ = unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE,
		off, int64(s.geo.SlotSize-slotHeaderSize))
	delete(s.index, id)
	sl.detach(ErrFreed)
	// Keep the lowest free index on top so reuse is predictable.
	s.free = append(s.free, sl.idx)
	slices.SortFunc(s.free, func(a, b int) int { return b - a })
	return nil
}

func (s *Store) writable(op, id string) error {
	if s.closed {
		return fmt.Errorf("shmlog: %s %q: %w", op, id, ErrClosed)
	}
	if s.ro {
		return fmt.Errorf("shmlog: %s %q: %w", op, id, ErrReadOnly)
	}
	return nil
}

func (s *Store) slotBytes(i int) []byte {
	off := headerSize + i*s.geo.SlotSize
	return s.mem[off : off+s.geo.SlotSize : off+s.geo.SlotSize]
}

func (s *Store) slotHeader(i int) []byte {
	return s.slotBytes(i)[:slotHeaderSize:slotHeaderSize]
}

func (s *Store) half(i, h int) []byte {
	off := slotHeaderSize + h*s.halfSize
	return s.slotBytes(i)[off : off+s.halfSize : off+s.halfSize]
}

// DefaultPath returns the conventional location of a log named name.
func DefaultPath(name string) string {
	return filepath.Join(DefaultDir, name)
}
