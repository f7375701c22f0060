// Package ctlproto is the control protocol between the world manager and
// scene processes: one long-lived TCP connection per scene process carrying
// length-prefixed, versioned frames.
//
// Frame: 4-byte big-endian length of the rest, 1 byte protocol version,
// 1 byte message type, then the message as JSON. Control traffic is a few
// frames a second per process, so JSON's cost does not matter and its
// readability in captures does.
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
)

// Version is the protocol version this build speaks.
const Version = 1

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
	Epoch    uint64        `json:"epoch"`
	Restarts int           `json:"restarts"`
	Started  time.Time     `json:"started"`
	ReplayMS float64       `json:"replay_ms"`
	Scenes   []SceneReport `json:"scenes"`
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

// Exit tells a scene process to exit: a process with a higher epoch owns its
// scenes, or the operator stopped the world.
type Exit struct {
	Reason string `json:"reason"`
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

// Receive reads one frame, waiting at most timeout; a silent peer yields a
// net.Error with Timeout() true.
func (c *Conn) Receive(timeout time.Duration) (Frame, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
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
	if t < TypeHello || t > TypeExit {
		return Frame{}, fmt.Errorf("%w: unknown message type %d", ErrFrame, hdr[5])
	}
	body := make([]byte, n-2)
	if _, err := io.ReadFull(r, body); err != nil {
		return Frame{}, fmt.Errorf("%w: truncated %s body: %v", ErrFrame, t, err)
	}
	return Frame{Type: t, Body: body}, nil
}
