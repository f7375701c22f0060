package shmlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"
)

var le = binary.LittleEndian

// RecordKind tells a snapshot record from an event record.
type RecordKind uint32

const (
	KindSnapshot RecordKind = 1 // the state the events apply to; empty means "initial state"
	KindEvent    RecordKind = 2
)

func (k RecordKind) String() string {
	switch k {
	case KindSnapshot:
		return "snapshot"
	case KindEvent:
		return "event"
	}
	return fmt.Sprintf("RecordKind(%d)", uint32(k))
}

// Record is one record handed to a Replay callback. Payload aliases the
// mapping: it is valid only during the callback and must not be modified.
type Record struct {
	Kind RecordKind
	Seq  uint64 // event: its sequence number; snapshot: seq of the last event it includes
	// Payload is the event or the snapshot state.
	Payload []byte
}

// Record layout. The commit word is written last; it can never be zero for a
// committed record (commitFlag), so a zero word always means "end of log".
const (
	rCommit = 0  // u64: crc<<32 | commitFlag | length
	rSeq    = 8  // u64
	rGen    = 16 // u64: generation of the half it was written in
	rKind   = 24 // u32
	rLen    = 28 // u32: payload length again, covered by the CRC
	recHdr  = 32

	commitFlag = 1 << 31
	// MaxPayload bounds one record's payload (the length shares a u32 with
	// commitFlag); the half size is the practical limit.
	MaxPayload = commitFlag - 1 - recHdr
)

// Slot header layout.
const (
	sState = 0  // u64 state word, see below
	sIDLen = 8  // u32
	sIDCRC = 12 // u32: crc32c over id length and the 64-byte id field
	sID    = 16 // [MaxIDLen]byte, zero padded

	stateValid    = 1
	stateActive   = 2 // which half is active
	stateGenShift = 2
	genMask       = 1<<62 - 1
)

func align8(n int) int { return (n + 7) &^ 7 }

// recordSize is the space a record with an n-byte payload takes in a half.
func recordSize(n int) int { return recHdr + align8(n) }

// store64 stores v little-endian into b[0:8] with one atomic 8-byte store, so
// a process killed at any point leaves either the old or the new word. This
// and load64 are the package's only uses of unsafe: sync/atomic needs a *uint64, and the
// word lives in the mapping. b is 8-byte aligned because the mapping is
// page-aligned and every word offset in the format is a multiple of 8.
func store64(b []byte, v uint64) {
	_ = b[7]
	var w [8]byte
	le.PutUint64(w[:], v)
	atomic.StoreUint64((*uint64)(unsafe.Pointer(&b[0])), binary.NativeEndian.Uint64(w[:]))
}

// load64 is store64's counterpart: one atomic 8-byte load, for a word a
// live writer in another process may be storing (a follower, follow.go).
func load64(b []byte) uint64 {
	_ = b[7]
	var w [8]byte
	binary.NativeEndian.PutUint64(w[:], atomic.LoadUint64((*uint64)(unsafe.Pointer(&b[0]))))
	return le.Uint64(w[:])
}

// putRecord writes a record at off in half h and returns the offset just past
// it, or -1 if it does not fit. The body goes first, then a zero word after
// the record (so the log keeps ending in a zero word, whatever stale bytes lie
// beyond), and the commit word last.
//
// beforeCommit, when set, runs between the two: a crash point.
func putRecord(h []byte, off int, kind RecordKind, seq, gen uint64, payload []byte, beforeCommit func()) int {
	n := len(payload)
	end := off + recordSize(n)
	if n > MaxPayload || end > len(h) || end < off {
		return -1
	}
	r := h[off:end:end]
	le.PutUint64(r[rSeq:], seq)
	le.PutUint64(r[rGen:], gen)
	le.PutUint32(r[rKind:], uint32(kind))
	le.PutUint32(r[rLen:], uint32(n))
	copy(r[recHdr:], payload)
	clear(r[recHdr+n:]) // padding, so the half holds no stale bytes inside records
	crc := crc32.Update(0, castagnoli, r[rSeq:recHdr+n])
	if end < len(h) {
		le.PutUint64(h[end:], 0)
	}
	if beforeCommit != nil {
		beforeCommit()
	}
	store64(r[rCommit:], uint64(crc)<<32|commitFlag|uint64(n))
	return end
}

// readRecord decodes the record at off in half h if it is committed, intact
// and of generation gen. It returns the offset just past it, or -1.
func readRecord(h []byte, off int, gen uint64) (Record, int) {
	if off < 0 || len(h)-off < recHdr {
		return Record{}, -1
	}
	c := le.Uint64(h[off+rCommit:])
	if c&commitFlag == 0 {
		return Record{}, -1
	}
	n := int(uint32(c) &^ commitFlag)
	if n > len(h)-off-recHdr {
		return Record{}, -1
	}
	r := h[off : off+recordSize(n)]
	if le.Uint32(r[rLen:]) != uint32(n) || le.Uint64(r[rGen:]) != gen {
		return Record{}, -1
	}
	if crc32.Update(0, castagnoli, r[rSeq:recHdr+n]) != uint32(c>>32) {
		return Record{}, -1
	}
	k := RecordKind(le.Uint32(r[rKind:]))
	if k != KindSnapshot && k != KindEvent {
		return Record{}, -1
	}
	return Record{Kind: k, Seq: le.Uint64(r[rSeq:]), Payload: r[recHdr : recHdr+n : recHdr+n]}, off + len(r)
}

func checkID(id string) error {
	if len(id) == 0 || len(id) > MaxIDLen || !utf8.ValidString(id) {
		return fmt.Errorf("shmlog: id %q: want 1..%d bytes of UTF-8: %w", id, MaxIDLen, ErrBadID)
	}
	return nil
}

func idCRC(hdr []byte) uint32 {
	return crc32.Update(crc32.Checksum(hdr[sIDLen:sIDLen+4], castagnoli), castagnoli, hdr[sID:sID+MaxIDLen])
}

func putID(hdr []byte, id string) {
	le.PutUint32(hdr[sIDLen:], uint32(len(id)))
	f := hdr[sID : sID+MaxIDLen]
	clear(f[copy(f, id):])
	le.PutUint32(hdr[sIDCRC:], idCRC(hdr))
}

func clearID(hdr []byte) {
	clear(hdr[sIDLen : sID+MaxIDLen])
}

func readID(hdr []byte) (string, error) {
	n := le.Uint32(hdr[sIDLen:])
	if n == 0 || n > MaxIDLen {
		return "", fmt.Errorf("valid slot with id length %d: %w", n, ErrCorrupt)
	}
	if got, want := le.Uint32(hdr[sIDCRC:]), idCRC(hdr); got != want {
		return "", fmt.Errorf("id checksum %08x, computed %08x: %w", got, want, ErrCorrupt)
	}
	id := string(hdr[sID : sID+n])
	if err := checkID(id); err != nil {
		return "", fmt.Errorf("valid slot with unusable id: %w", ErrCorrupt)
	}
	return id, nil
}
