package scenelink

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Wire format (docs/link.md): every frame is a 4-byte big-endian length n,
// then n bytes: one type byte and the message. Message fields are, in
// order, uvarints (ids, seqs, counts), length-prefixed strings and byte
// strings (uvarint length, then the bytes), bools (one byte 0/1) and fixed
// 32-byte nonces/MACs. Unknown types, truncated fields, bad bools and
// trailing bytes are errors: a frame that decodes is the frame that was
// sent.

// Version is the link protocol version this build speaks.
const Version = 1

// Frame types. Never renumber.
const (
	TClientHello byte = 1  // gateway → scene: version, client nonce, client id
	TServerHello byte = 2  // scene → gateway: server nonce, scene's proof, process, epoch
	TClientProof byte = 3  // gateway → scene: gateway's proof
	TWelcome     byte = 4  // scene → gateway: authenticated; the limits
	TJoin        byte = 5  // gateway → scene
	TRequest     byte = 6  // gateway → scene
	TLeave       byte = 7  // gateway → scene
	TJoinReply   byte = 16 // scene → gateway
	TReply       byte = 17 // scene → gateway
	TLeaveReply  byte = 18 // scene → gateway
	TFail        byte = 19 // scene → gateway: a join/request/leave that could not be handled
	TPush        byte = 20 // scene → gateway
	TClose       byte = 21 // either way: why the sender closes the connection
)

// Defaults of the limits (config keys scene.link_*).
const (
	// DefaultMaxFrame bounds one frame (scene.link_max_frame).
	DefaultMaxFrame = 1 << 20
	// DefaultMaxInflight bounds unanswered joins, requests and leaves on one
	// connection (scene.link_max_inflight).
	DefaultMaxInflight = 4096
	// DefaultMaxConns bounds gateway connections to one scene process
	// (scene.link_max_conns).
	DefaultMaxConns = 64
	// NonceLen is the length of both handshake nonces and of the MACs.
	NonceLen = 32
	// maxStr bounds any string field (ids, codes, error texts).
	maxStr = 4096
)

// ErrFrame marks a malformed frame: the peer does not speak this protocol.
var ErrFrame = errors.New("scenelink: bad frame")

// ReadFrame reads one frame from r and returns its type and body. The body
// is only valid until the next ReadFrame with the same buf; buf is reused
// when large enough. A length over max is an error before anything is
// allocated.
func ReadFrame(r *bufio.Reader, max int, buf []byte) (typ byte, body []byte, nbuf []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || uint64(n) > uint64(max) {
		return 0, nil, buf, fmt.Errorf("%w: frame of %d bytes (limit %d)", ErrFrame, n, max)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, buf, err
	}
	return buf[0], buf[1:], buf, nil
}

// Encoder builds one frame. Start it with Begin, add fields, and End it.
type Encoder struct {
	B     []byte
	start int
}

// Begin starts a frame of type t at the end of e.B.
func (e *Encoder) Begin(t byte) {
	e.start = len(e.B)
	e.B = append(e.B, 0, 0, 0, 0, t)
}

// End fills in the frame's length.
func (e *Encoder) End() {
	binary.BigEndian.PutUint32(e.B[e.start:], uint32(len(e.B)-e.start-4))
}

// Uv appends a uvarint.
func (e *Encoder) Uv(v uint64) { e.B = binary.AppendUvarint(e.B, v) }

// Str appends a length-prefixed string.
func (e *Encoder) Str(s string) { e.Uv(uint64(len(s))); e.B = append(e.B, s...) }

// Bytes appends a length-prefixed byte string.
func (e *Encoder) Bytes(b []byte) { e.Uv(uint64(len(b))); e.B = append(e.B, b...) }

// Bool appends a bool.
func (e *Encoder) Bool(v bool) {
	if v {
		e.B = append(e.B, 1)
	} else {
		e.B = append(e.B, 0)
	}
}

// Fixed appends b as is (nonces, MACs).
func (e *Encoder) Fixed(b []byte) { e.B = append(e.B, b...) }

// Decoder reads the fields of one frame body. The first error sticks; check
// Finish at the end.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder reads body.
func NewDecoder(body []byte) *Decoder { return &Decoder{b: body} }

func (d *Decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrFrame}, args...)...)
	}
	d.b = nil
}

// Uv reads a uvarint.
func (d *Decoder) Uv() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n != max(1, (bits.Len64(v)+6)/7) {
		// Overlong encodings too: one value, one spelling.
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Bytes reads a length-prefixed byte string of at most max bytes; it aliases
// the frame.
func (d *Decoder) Bytes(max int) []byte {
	n := d.Uv()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.fail("field of %d bytes (limit %d, %d left)", n, max, len(d.b))
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// Str reads a string of at most maxStr bytes.
func (d *Decoder) Str() string { return string(d.Bytes(maxStr)) }

// Bool reads a bool.
func (d *Decoder) Bool() bool {
	if len(d.b) < 1 {
		d.fail("truncated bool")
		return false
	}
	v := d.b[0]
	d.b = d.b[1:]
	if v > 1 {
		d.fail("bad bool %d", v)
	}
	return v == 1
}

// Fixed reads n bytes (aliasing the frame).
func (d *Decoder) Fixed(n int) []byte {
	if len(d.b) < n {
		d.fail("truncated: want %d bytes, have %d", n, len(d.b))
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

// Finish returns the first error, or an error if bytes are left over.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrFrame, len(d.b))
	}
	return d.err
}

// The messages. Each has an Append (encode one whole frame) and a Decode
// (fields of a body of its type).

// ClientHello opens the handshake.
type ClientHello struct {
	Version  uint64
	Nonce    []byte // NonceLen
	ClientID string // one per Client: pushes go to one connection of each
}

// Append encodes m as a frame.
func (m *ClientHello) Append(e *Encoder) {
	e.Begin(TClientHello)
	e.Uv(m.Version)
	e.Fixed(m.Nonce)
	e.Str(m.ClientID)
	e.End()
}

// Decode parses a body.
func (m *ClientHello) Decode(b []byte) error {
	d := NewDecoder(b)
	m.Version = d.Uv()
	m.Nonce = d.Fixed(NonceLen)
	m.ClientID = d.Str()
	return d.Finish()
}

// ServerHello answers ClientHello: the scene proves it holds the secret.
type ServerHello struct {
	Nonce   []byte
	MAC     []byte
	Process string
	Epoch   uint64
}

// Append encodes m as a frame.
func (m *ServerHello) Append(e *Encoder) {
	e.Begin(TServerHello)
	e.Fixed(m.Nonce)
	e.Fixed(m.MAC)
	e.Str(m.Process)
	e.Uv(m.Epoch)
	e.End()
}

// Decode parses a body.
func (m *ServerHello) Decode(b []byte) error {
	d := NewDecoder(b)
	m.Nonce = d.Fixed(NonceLen)
	m.MAC = d.Fixed(NonceLen)
	m.Process = d.Str()
	m.Epoch = d.Uv()
	return d.Finish()
}

// ClientProof is the gateway's proof.
type ClientProof struct{ MAC []byte }

// Append encodes m as a frame.
func (m *ClientProof) Append(e *Encoder) {
	e.Begin(TClientProof)
	e.Fixed(m.MAC)
	e.End()
}

// Decode parses a body.
func (m *ClientProof) Decode(b []byte) error {
	d := NewDecoder(b)
	m.MAC = d.Fixed(NonceLen)
	return d.Finish()
}

// Welcome ends the handshake with the scene's limits.
type Welcome struct {
	MaxInflight uint64
	MaxFrame    uint64
}

// Append encodes m as a frame.
func (m *Welcome) Append(e *Encoder) {
	e.Begin(TWelcome)
	e.Uv(m.MaxInflight)
	e.Uv(m.MaxFrame)
	e.End()
}

// Decode parses a body.
func (m *Welcome) Decode(b []byte) error {
	d := NewDecoder(b)
	m.MaxInflight = d.Uv()
	m.MaxFrame = d.Uv()
	return d.Finish()
}

// Session names a join or leave: TJoin and TLeave share this layout.
type Session struct {
	ID      uint64
	Scene   string
	Player  string
	Session string
}

// Append encodes m as a frame of type t (TJoin or TLeave).
func (m *Session) Append(e *Encoder, t byte) {
	e.Begin(t)
	e.Uv(m.ID)
	e.Str(m.Scene)
	e.Str(m.Player)
	e.Str(m.Session)
	e.End()
}

// Decode parses a body.
func (m *Session) Decode(b []byte) error {
	d := NewDecoder(b)
	m.ID = d.Uv()
	m.Scene = d.Str()
	m.Player = d.Str()
	m.Session = d.Str()
	return d.Finish()
}

// Request is one client request; ID correlates the reply.
type Request struct {
	ID uint64
	Req
}

// Append encodes m as a frame.
func (m *Request) Append(e *Encoder) {
	e.Begin(TRequest)
	e.Uv(m.ID)
	e.Str(m.Scene)
	e.Str(m.Player)
	e.Str(m.Session)
	e.Uv(m.Seq)
	e.Bytes(m.Op)
	e.End()
}

// Decode parses a body; Op aliases b.
func (m *Request) Decode(b []byte) error {
	d := NewDecoder(b)
	m.ID = d.Uv()
	m.Scene = d.Str()
	m.Player = d.Str()
	m.Session = d.Str()
	m.Seq = d.Uv()
	m.Op = d.Bytes(len(b))
	return d.Finish()
}

// JoinReply answers TJoin.
type JoinReply struct {
	ID uint64
	JoinResult
}

// Append encodes m as a frame.
func (m *JoinReply) Append(e *Encoder) {
	e.Begin(TJoinReply)
	e.Uv(m.ID)
	e.Str(m.Scene)
	e.Str(m.Moved)
	e.Uv(m.LastSeq)
	e.Bytes(m.State)
	e.End()
}

// Decode parses a body.
func (m *JoinReply) Decode(b []byte) error {
	d := NewDecoder(b)
	m.ID = d.Uv()
	m.Scene = d.Str()
	m.Moved = d.Str()
	m.LastSeq = d.Uv()
	if st := d.Bytes(len(b)); len(st) > 0 {
		m.State = append([]byte(nil), st...)
	}
	return d.Finish()
}

// ReplyMsg answers TRequest.
type ReplyMsg struct {
	ID uint64
	Reply
}

// Append encodes m as a frame.
func (m *ReplyMsg) Append(e *Encoder) {
	e.Begin(TReply)
	e.Uv(m.ID)
	e.Uv(m.Seq)
	e.Str(m.Code)
	e.Str(m.Error)
	e.Bytes(m.Body)
	e.Bool(m.Resent)
	e.Str(m.Moved)
	e.End()
}

// Decode parses a body; Body is copied out of the frame.
func (m *ReplyMsg) Decode(b []byte) error {
	d := NewDecoder(b)
	m.ID = d.Uv()
	m.Seq = d.Uv()
	m.Code = d.Str()
	m.Error = d.Str()
	if body := d.Bytes(len(b)); len(body) > 0 {
		m.Body = append([]byte(nil), body...)
	}
	m.Resent = d.Bool()
	m.Moved = d.Str()
	return d.Finish()
}

// Fail says a join, request or leave could not be handled. Code is one of
// the Fail* codes.
type Fail struct {
	ID    uint64
	Code  string
	Error string
}

// Codes of a Fail.
const (
	// FailUnavailable: the scene could not take it now (its loop stopped,
	// the data server did not answer); it may or may not have been applied.
	FailUnavailable = "unavailable"
	// FailNoScene: this process does not host the scene.
	FailNoScene = "no_scene"
	// FailBadRequest: malformed (an op that does not parse, empty ids).
	FailBadRequest = "bad_request"
	// FailRefused: the data server refused (unknown player, lease lost).
	FailRefused = "refused"
)

// Append encodes m as a frame of type t (TFail or TLeaveReply).
func (m *Fail) Append(e *Encoder, t byte) {
	e.Begin(t)
	e.Uv(m.ID)
	e.Str(m.Code)
	e.Str(m.Error)
	e.End()
}

// Decode parses a body.
func (m *Fail) Decode(b []byte) error {
	d := NewDecoder(b)
	m.ID = d.Uv()
	m.Code = d.Str()
	m.Error = d.Str()
	return d.Finish()
}

// Append encodes a push as a frame.
func (m *Push) Append(e *Encoder) {
	e.Begin(TPush)
	e.Str(m.Scene)
	e.Str(m.Player)
	e.Str(m.Kind)
	e.Bytes(m.Body)
	e.End()
}

// Decode parses a body; Body is copied out of the frame.
func (m *Push) Decode(b []byte) error {
	d := NewDecoder(b)
	m.Scene = d.Str()
	m.Player = d.Str()
	m.Kind = d.Str()
	if body := d.Bytes(len(b)); len(body) > 0 {
		m.Body = append([]byte(nil), body...)
	}
	return d.Finish()
}

// CloseMsg tells the peer why the connection closes.
type CloseMsg struct{ Reason string }

// Append encodes m as a frame.
func (m *CloseMsg) Append(e *Encoder) {
	e.Begin(TClose)
	e.Str(m.Reason)
	e.End()
}

// Decode parses a body.
func (m *CloseMsg) Decode(b []byte) error {
	d := NewDecoder(b)
	m.Reason = d.Str()
	return d.Finish()
}

// Proofs: each side signs both nonces with its role, so neither proof can
// be replayed as the other.
const (
	roleScene   = "scene"
	roleGateway = "gateway"
)
