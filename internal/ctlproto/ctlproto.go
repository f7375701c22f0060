// Package ctlproto is the control protocol between the world manager and
// scene processes: one long-lived TCP connection per scene process carrying
// length-prefixed, versioned frames.
//
// Frame: 4-byte big-endian length of the rest, 1 byte protocol version,
// 1 byte message type, then the message as JSON. Control traffic is a few
// frames a second per process, so JSON's cost does not matter and its
// readability in captures does.
//
// Nothing a peer says counts before it proved it holds the cluster secret
// (see auth.go): the manager opens with a challenge, the scene answers
// with a signed hello, and the manager's welcome or exit is signed over
// both nonces.
package ctlproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/respawn-dev/respawn/internal/version"
)

// Version is the protocol version this build speaks. 2: authenticated
// handshake.
const Version = 2

// MaxFrame bounds a frame so a garbage length cannot make us allocate
// gigabytes.
const MaxFrame = 1 << 20

// Type identifies a message.
type Type uint8

// Message types.
const (
	TypeHello     Type = 1 // scene → manager, first frame: who I am
	TypeWelcome   Type = 2 // manager → scene: accepted
	TypeHeartbeat Type = 3 // both ways; from a scene it carries a fresh report
	TypeExit      Type = 4 // manager → scene: you lost a claim, exit now
	TypeChallenge Type = 5 // manager → scene, first frame: a nonce to sign

	maxType = TypeChallenge
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeWelcome:
		return "welcome"
	case TypeHeartbeat:
		return "heartbeat"
	case TypeExit:
		return "exit"
	case TypeChallenge:
		return "challenge"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// SceneReport is one hosted scene as its process sees it.
type SceneReport struct {
	ID      string `json:"id"`
	Epoch   uint64 `json:"epoch"`
	Players int    `json:"players"`
	State   string `json:"state"`
	// Reason explains a state that needs the operator (corrupt).
	Reason string `json:"reason,omitempty"`
}

// Hello registers a scene process, or re-registers it after the manager
// restarted. It is sent once the process has replayed its log and serves.
type Hello struct {
	Process  string        `json:"process"`
	PID      int           `json:"pid"`
	Addr     string        `json:"addr"`
	LinkAddr string        `json:"link_addr"` // the gateway link listener
	Epoch    uint64        `json:"epoch"`
	Restarts int           `json:"restarts"`
	Started  time.Time     `json:"started"`
	ReplayMS float64       `json:"replay_ms"`
	Scenes   []SceneReport `json:"scenes"`
	// Who the process is, as /proc shows it: a manager that did not spawn
	// it (it restarted since) signals the pid only if these still match.
	Exe        string   `json:"exe"`
	StartTicks uint64   `json:"start_ticks"` // /proc/PID/stat field 22
	Cmdline    []string `json:"cmdline"`
	// Version: the build and the formats the process writes, so the
	// manager's table and `respawn status` show version skew, and an
	// upgrade can check a new binary reads what this one wrote.
	Version version.Info `json:"version"`
}

// Bounds of a hello's fields. The frame limit bounds the total; these keep
// any one field from being a megabyte of nonsense in the table and logs.
const (
	MaxNameLen  = 128
	MaxScenes   = 1024
	MaxCmdline  = 256
	MaxFieldLen = 4096
	MaxRestarts = 1 << 30
	MaxPlayers  = 1 << 24
	MaxStateLen = 32
	maxReplayMS = 24 * 3600 * 1000
)

// MaxEpoch bounds epochs. An epoch moves forward by one per restart, so
// real ones never come near it; anything above it is forged or corrupt and
// is refused rather than allowed anywhere near a wrap. 2^53 also keeps
// epochs exact in any JSON reader.
const MaxEpoch = 1 << 53

// Validate checks the hello's fields against their bounds.
func (h *Hello) Validate() error {
	switch {
	case h.Process == "" || len(h.Process) > MaxNameLen:
		return fmt.Errorf("%w: process name of %d bytes (1..%d)", ErrFrame, len(h.Process), MaxNameLen)
	case h.PID <= 0 || h.PID > 1<<22:
		return fmt.Errorf("%w: pid %d is not a process id", ErrFrame, h.PID)
	case h.Epoch == 0 || h.Epoch > MaxEpoch:
		return fmt.Errorf("%w: epoch %d outside 1..%d", ErrFrame, h.Epoch, uint64(MaxEpoch))
	case h.Restarts < 0 || h.Restarts > MaxRestarts:
		return fmt.Errorf("%w: restarts %d outside 0..%d", ErrFrame, h.Restarts, MaxRestarts)
	case len(h.Addr) > MaxFieldLen || len(h.Exe) > MaxFieldLen:
		return fmt.Errorf("%w: address or executable longer than %d bytes", ErrFrame, MaxFieldLen)
	case h.ReplayMS < 0 || h.ReplayMS > maxReplayMS:
		return fmt.Errorf("%w: replay_ms %v out of range", ErrFrame, h.ReplayMS)
	case len(h.Cmdline) > MaxCmdline:
		return fmt.Errorf("%w: %d command-line arguments (at most %d)", ErrFrame, len(h.Cmdline), MaxCmdline)
	}
	for _, a := range h.Cmdline {
		if len(a) > MaxFieldLen {
			return fmt.Errorf("%w: command-line argument longer than %d bytes", ErrFrame, MaxFieldLen)
		}
	}
	if err := h.Version.Validate(); err != nil {
		return fmt.Errorf("%w: version: %w", ErrFrame, err)
	}
	return validateReports(h.Scenes)
}

func validateReports(rs []SceneReport) error {
	if len(rs) > MaxScenes {
		return fmt.Errorf("%w: %d scene reports (at most %d)", ErrFrame, len(rs), MaxScenes)
	}
	for _, r := range rs {
		switch {
		case r.ID == "" || len(r.ID) > MaxNameLen:
			return fmt.Errorf("%w: scene id of %d bytes (1..%d)", ErrFrame, len(r.ID), MaxNameLen)
		case r.Players < 0 || r.Players > MaxPlayers:
			return fmt.Errorf("%w: scene %q: players %d outside 0..%d", ErrFrame, r.ID, r.Players, MaxPlayers)
		case len(r.State) > MaxStateLen:
			return fmt.Errorf("%w: scene %q: state of %d bytes", ErrFrame, r.ID, len(r.State))
		case len(r.Reason) > MaxFieldLen:
			return fmt.Errorf("%w: scene %q: reason of %d bytes", ErrFrame, r.ID, len(r.Reason))
		case r.Epoch > MaxEpoch:
			return fmt.Errorf("%w: scene %q: epoch %d above %d", ErrFrame, r.ID, r.Epoch, uint64(MaxEpoch))
		}
	}
	return nil
}

// Welcome accepts a Hello.
type Welcome struct {
	HeartbeatInterval time.Duration `json:"heartbeat_interval"`
	HeartbeatTimeout  time.Duration `json:"heartbeat_timeout"`
}

// Heartbeat proves liveness; from a scene it also refreshes its report.
type Heartbeat struct {
	Scenes []SceneReport `json:"scenes,omitempty"`
}

// Validate checks the report's bounds.
func (hb *Heartbeat) Validate() error { return validateReports(hb.Scenes) }

// Exit tells a scene process to exit: a process with a higher epoch owns its
// scenes, or the operator stopped the world.
type Exit struct {
	Reason string `json:"reason"`
	// Handoff: a planned replacement (an upgrade), not a lost claim. The
	// process exits without waiting for its queued saves: its successor
	// replays the log and resends every save not acknowledged in it, so
	// waiting would only lengthen the players' pause.
	Handoff bool `json:"handoff,omitempty"`
	// Standby: a handoff to a hot standby that follows this process's log
	// (worldmgr.standby). The process skips its final snapshot: the
	// standby has the state, and a snapshot would move the log's
	// generation under it and make it restore from the snapshot instead.
	Standby bool `json:"standby,omitempty"`
}

// ErrFrame marks a malformed frame: the peer is not speaking this protocol.
var ErrFrame = errors.New("ctlproto: bad frame")

// Conn frames messages over a net.Conn. Reads must come from one goroutine;
// writes may come from several.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader
	wm sync.Mutex
}

// NewConn wraps nc.
func NewConn(nc net.Conn) *Conn { return &Conn{nc: nc, r: bufio.NewReader(nc)} }

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// RemoteAddr is the peer's address, for logs.
func (c *Conn) RemoteAddr() string { return c.nc.RemoteAddr().String() }

// Send writes one message within timeout.
func (c *Conn) Send(t Type, msg any, timeout time.Duration) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("ctlproto: encode %s: %w", t, err)
	}
	if len(body)+2 > MaxFrame {
		return fmt.Errorf("ctlproto: %s of %d bytes exceeds the %d-byte frame limit", t, len(body), MaxFrame)
	}
	buf := make([]byte, 6+len(body))
	binary.BigEndian.PutUint32(buf, uint32(2+len(body)))
	buf[4] = Version
	buf[5] = byte(t)
	copy(buf[6:], body)
	c.wm.Lock()
	defer c.wm.Unlock()
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("ctlproto: %w", err)
	}
	if _, err := c.nc.Write(buf); err != nil {
		return fmt.Errorf("ctlproto: send %s: %w", t, err)
	}
	return nil
}

// Frame is one received message, still encoded.
type Frame struct {
	Type Type
	Body []byte
}

// Decode unmarshals the frame's body into msg.
func (f Frame) Decode(msg any) error {
	if err := json.Unmarshal(f.Body, msg); err != nil {
		return fmt.Errorf("%w: %s body: %v", ErrFrame, f.Type, err)
	}
	return nil
}

// Receive reads one frame, waiting at most timeout (0: no limit); a silent
// peer yields a net.Error with Timeout() true.
func (c *Conn) Receive(timeout time.Duration) (Frame, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if err := c.nc.SetReadDeadline(deadline); err != nil {
		return Frame{}, fmt.Errorf("ctlproto: %w", err)
	}
	return ReadFrame(c.r)
}

// ReadFrame reads and checks one frame from r.
func ReadFrame(r io.Reader) (Frame, error) {
	var hdr [6]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 2 || n > MaxFrame {
		return Frame{}, fmt.Errorf("%w: length %d outside 2..%d", ErrFrame, n, MaxFrame)
	}
	if _, err := io.ReadFull(r, hdr[4:6]); err != nil {
		return Frame{}, fmt.Errorf("%w: truncated header: %v", ErrFrame, err)
	}
	if hdr[4] != Version {
		return Frame{}, fmt.Errorf("%w: protocol version %d, this build speaks %d", ErrFrame, hdr[4], Version)
	}
	t := Type(hdr[5])
	if t < TypeHello || t > maxType {
		return Frame{}, fmt.Errorf("%w: unknown message type %d", ErrFrame, hdr[5])
	}
	body := make([]byte, n-2)
	if _, err := io.ReadFull(r, body); err != nil {
		return Frame{}, fmt.Errorf("%w: truncated %s body: %v", ErrFrame, t, err)
	}
	return Frame{Type: t, Body: body}, nil
}

// A standby (a spare a handoff goes to) tells the manager that started it
// when it follows the live log and has caught up, on a pipe only the two of
// them hold: the manager passes the pipe's write end as a file descriptor
// and names it in ReadyFDEnv; the spare writes one line starting with
// ReadyPrefix, then ReadyFollowing when it follows the live log and has
// caught up (then how far, for the log), and closes it. No
// authentication is needed: nobody else holds the pipe. A scene binary
// that does not know the variable never writes, and the handoff goes on
// cold after its wait.
const (
	ReadyFDEnv     = "RESPAWN_STANDBY_READY_FD"
	ReadyPrefix    = "ready"
	ReadyFollowing = "following"
)
