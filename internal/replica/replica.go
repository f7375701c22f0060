// Package replica implements master–slave replicas over NATS (seed 002,
// model 4): every module of shared data has exactly one owner role whose
// processes may write it; every other process keeps a read-only replica that
// the owner keeps current.
//
// A module is declared once, in code, next to its data type (see package
// internal/modules); the declaration says who owns it, who subscribes and
// whether changes are pushed immediately or merged per key and pushed on an
// interval.
//
// # Wire design (see docs/replicas.md for the measurements behind it)
//
// The transport is plain NATS subjects, not JetStream: the owner's memory is
// the source of truth, so the server keeps no state that could be lost or go
// stale across a server restart.
//
//   - <prefix>.<module>.upd  — the owner publishes updates (a batch of
//     versioned entries) and "state" messages (its complete key set, sent by
//     Reset and after each reconnect of the owner's connection).
//   - <prefix>.<module>.snap — a reader asks for a snapshot; EVERY owner
//     instance answers with its complete state on the reader's inbox.
//
// Versions are hybrid logical clock values (max(previous+1, wall clock in
// ns)), so they keep increasing across an owner restart without persisting
// anything, and versions written by different owner instances are comparable
// when a key moves from one instance to another (a player changing scene).
// A reader applies an entry only if its version is newer than what it holds,
// so duplicated, reordered or stale updates are harmless; deletes are
// versioned tombstones.
//
// Each writer instance has a stable Instance name (e.g. "scene-3") and a
// random session id per incarnation. A state message is authoritative for its
// instance: a reader drops the instance's keys that are not in it, which is
// how an owner that was killed and respawned removes keys it no longer holds.
// Update messages carry a per-session sequence number; a reader that sees a
// gap (slow consumer, lost message) requests a fresh snapshot, as it does
// after every reconnect.
//
// Read-only is enforced by the type system: Reader has no method that
// writes, and NewWriter refuses a role that is not the module's owner.
package replica

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Role names a kind of process in the cluster.
type Role string

// The cluster's roles.
const (
	RoleWorldMgr Role = "worldmgr"
	RoleScene    Role = "scene"
	RoleGateway  Role = "gateway"
	RoleDataSvr  Role = "datasvr"
	RoleCLI      Role = "cli"
)

// Mode says when an owner pushes its changes.
type Mode int

const (
	// Immediate publishes every Put and Delete at once.
	Immediate Mode = iota
	// Batched merges all changes to a key within Module.Interval and
	// publishes one entry per changed key per interval.
	Batched
)

// String returns "immediate" or "batched".
func (m Mode) String() string {
	switch m {
	case Immediate:
		return "immediate"
	case Batched:
		return "batched"
	default:
		return fmt.Sprintf("mode(%d)", int(m))
	}
}

// Module declares one replicated data set: its owner, its subscribers and
// its push mode. Declarations live next to the data type (internal/modules)
// and modules.All lists them: the single answer to "who syncs to whom".
type Module struct {
	Name        string
	Owner       Role
	Subscribers []Role
	Mode        Mode
	// Interval is the batching interval; only used in Batched mode.
	Interval time.Duration
}

// DefaultPrefix is the subject prefix used when options leave it empty.
const DefaultPrefix = "respawn.replica"

// nameRE keeps module names and prefixes valid as NATS subject tokens.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// ErrNotOwner is returned by NewWriter when the caller's role does not own
// the module.
var ErrNotOwner = errors.New("role is not the module's owner")

// ErrNotSubscriber is returned by NewReader when the caller's role is neither
// a declared subscriber nor the owner of the module.
var ErrNotSubscriber = errors.New("role is not a declared subscriber of the module")

// Validate reports whether the declaration is usable.
func (m Module) Validate() error {
	if !nameRE.MatchString(m.Name) {
		return fmt.Errorf("replica: module name %q must match %s", m.Name, nameRE)
	}
	if m.Owner == "" {
		return fmt.Errorf("replica: module %s: no owner role", m.Name)
	}
	switch m.Mode {
	case Immediate:
	case Batched:
		if m.Interval <= 0 {
			return fmt.Errorf("replica: module %s: batched mode needs a positive interval", m.Name)
		}
	default:
		return fmt.Errorf("replica: module %s: unknown mode %d", m.Name, int(m.Mode))
	}
	return nil
}

// Subscribes reports whether role is a declared subscriber of m.
func (m Module) Subscribes(role Role) bool { return slices.Contains(m.Subscribers, role) }

func subjects(prefix, module string) (upd, snap string, err error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(prefix) {
		return "", "", fmt.Errorf("replica: module %s: subject prefix %q is not a valid subject", module, prefix)
	}
	return prefix + "." + module + ".upd", prefix + "." + module + ".snap", nil
}

// Description is what `respawn replicas --json` prints per module.
type Description struct {
	Module      string   `json:"module"`
	Owner       string   `json:"owner"`
	Subscribers []string `json:"subscribers"`
	Mode        string   `json:"mode"`
	IntervalMS  int64    `json:"interval_ms"`
	Keys        int      `json:"keys"`
	LagP99MS    float64  `json:"lag_p99_ms"`
}

// Describe combines a module's declaration with a reader's statistics.
// Pass a zero Stats when there is no reader.
func Describe(m Module, st Stats) Description {
	subs := make([]string, 0, len(m.Subscribers))
	for _, r := range m.Subscribers {
		subs = append(subs, string(r))
	}
	var iv int64
	if m.Mode == Batched {
		iv = m.Interval.Milliseconds()
	}
	return Description{
		Module:      m.Name,
		Owner:       string(m.Owner),
		Subscribers: subs,
		Mode:        m.Mode.String(),
		IntervalMS:  iv,
		Keys:        st.Keys,
		LagP99MS:    float64(st.LagP99) / float64(time.Millisecond),
	}
}

// Wire format. JSON keeps the messages inspectable with `nats sub`; the
// benchmarks in docs/replicas.md show encoding is not the bottleneck.

const (
	kindUpdate = "u" // a batch of changed entries
	kindState  = "s" // an instance's complete state (snapshot reply, Reset, reconnect)
)

type wireEntry struct {
	Key     string `json:"k"`
	Version uint64 `json:"v"`
	Deleted bool   `json:"d,omitempty"`
	Value   []byte `json:"b,omitempty"` // JSON of T, base64 on the wire
}

type wireMsg struct {
	Kind     string `json:"kind"`
	Module   string `json:"m"`
	Instance string `json:"i"`
	Session  string `json:"s"`
	Epoch    uint64 `json:"e,omitempty"`
	// Seq numbers the session's messages on the update subject; a state
	// reply to a snapshot request carries the session's current Seq.
	Seq  uint64 `json:"q"`
	Sent int64  `json:"t"` // publish time, unix ns, for lag
	// State messages only: ID groups the parts of one state, Watermark is
	// the writer's clock when the state was taken (every key of the instance
	// with a version <= Watermark that is not in the state is gone).
	ID        string      `json:"id,omitempty"`
	Part      int         `json:"p,omitempty"`
	Parts     int         `json:"n,omitempty"`
	Watermark uint64      `json:"w,omitempty"`
	Entries   []wireEntry `json:"x"`
}

// maxChunkBytes bounds one message below NATS's default 1 MiB max payload.
const maxChunkBytes = 256 << 10

// chunk splits entries into groups whose encoded size stays under
// maxChunkBytes (approximately: values are base64, so 4/3 of their size).
func chunk(entries []wireEntry) [][]wireEntry {
	var out [][]wireEntry
	start, size := 0, 0
	for i, e := range entries {
		n := len(e.Key) + len(e.Value)*4/3 + 48
		if size+n > maxChunkBytes && i > start {
			out = append(out, entries[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(entries) || len(out) == 0 {
		out = append(out, entries[start:])
	}
	return out
}

// hlc is a hybrid logical clock: versions follow the wall clock in
// nanoseconds but never repeat or go backwards within a writer. Because
// they follow the wall clock, a restarted owner's versions exceed its
// previous incarnation's without persisting a counter (assuming the host
// clock did not step back by more than the downtime; MinVersion covers an
// owner that persists its own floor).
type hlc struct {
	last uint64
	now  func() time.Time
}

func (c *hlc) next() uint64 {
	n := uint64(c.now().UnixNano())
	if n <= c.last {
		n = c.last + 1
	}
	c.last = n
	return n
}
