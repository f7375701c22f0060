// Package gwproto is the client protocol between game clients and the
// gateway: length-prefixed binary frames with a fixed header and a JSON body,
// the same bytes over TCP and over WebSocket (one or more frames per binary
// message). docs/protocol.md is the reference a client is written from;
// this package is the Go implementation the gateway and internal/client share.
package gwproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version this package speaks.
const Version = 1

// HeaderLen is the bytes before a frame's body: length (4), type (1),
// code (2), id (8).
const HeaderLen = 15

// fixedLen is the part of the header the length field counts.
const fixedLen = HeaderLen - 4

// DefaultMaxFrame bounds a whole frame, header included (gateway.max_frame).
const DefaultMaxFrame = 64 << 10

// Type is a frame's message type.
type Type uint8

// Message types. C→S: sent by the client; S→C: by the gateway.
const (
	TypeHello   Type = 1  // C→S first frame: protocol version
	TypeWelcome Type = 2  // S→C answer to Hello: limits
	TypeLogin   Type = 3  // C→S login token
	TypeResume  Type = 4  // C→S resume token
	TypeSession Type = 5  // S→C logged in (or resumed)
	TypeRequest Type = 6  // C→S a game request; id = seq
	TypeReply   Type = 7  // S→C the answer to one request; id = its seq
	TypePush    Type = 8  // S→C something the client did not ask for
	TypePing    Type = 9  // either way; id = nonce
	TypePong    Type = 10 // answer to Ping; same id
	TypeClose   Type = 11 // S→C the gateway closes the connection: code says why
	TypeLogout  Type = 12 // C→S leave the world; answered by Close with code OK
)

// String names a type as docs/protocol.md does.
func (t Type) String() string {
	switch t {
	case TypeHello:
		return "HELLO"
	case TypeWelcome:
		return "WELCOME"
	case TypeLogin:
		return "LOGIN"
	case TypeResume:
		return "RESUME"
	case TypeSession:
		return "SESSION"
	case TypeRequest:
		return "REQUEST"
	case TypeReply:
		return "REPLY"
	case TypePush:
		return "PUSH"
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypeClose:
		return "CLOSE"
	case TypeLogout:
		return "LOGOUT"
	}
	return fmt.Sprintf("TYPE_%d", uint8(t))
}

// Known reports whether t is a type of this protocol version.
func (t Type) Known() bool { return t >= TypeHello && t <= TypeLogout }

// Frame is one decoded frame. Body aliases the reader's buffer until the
// next call to Next.
type Frame struct {
	Type Type
	Code Code
	ID   uint64
	Body []byte
}

// Errors a frame reader returns; each is a *Error carrying the code the
// gateway closes the connection with.
var (
	ErrTooLarge  = &Error{Code: CodeFrameTooLarge, Msg: "frame larger than the maximum frame size"}
	ErrBadFrame  = &Error{Code: CodeBadFrame, Msg: "malformed frame"}
	ErrTruncated = &Error{Code: CodeBadFrame, Msg: "truncated frame: the connection ended inside a frame"}
)

// AppendFrame appends f's encoding to dst.
func AppendFrame(dst []byte, f Frame) []byte {
	var h [HeaderLen]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(fixedLen+len(f.Body)))
	h[4] = byte(f.Type)
	binary.BigEndian.PutUint16(h[5:7], uint16(f.Code))
	binary.BigEndian.PutUint64(h[7:15], f.ID)
	dst = append(dst, h[:]...)
	return append(dst, f.Body...)
}

// Decode decodes the first frame of b. n is the bytes it used; n == 0 with a
// nil error means b holds no whole frame yet. max bounds the whole frame.
func Decode(b []byte, max int) (f Frame, n int, err error) {
	if len(b) < 4 {
		return Frame{}, 0, nil
	}
	l := int64(binary.BigEndian.Uint32(b[0:4]))
	if l < fixedLen {
		return Frame{}, 0, fmt.Errorf("%w: length %d is shorter than the header", ErrBadFrame, l)
	}
	if l+4 > int64(max) {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes, max %d", ErrTooLarge, l+4, max)
	}
	if int64(len(b)) < l+4 {
		return Frame{}, 0, nil
	}
	f = Frame{Type: Type(b[4]), Code: Code(binary.BigEndian.Uint16(b[5:7])), ID: binary.BigEndian.Uint64(b[7:15]), Body: b[HeaderLen : l+4]}
	return f, int(l + 4), nil
}

// Reader reads frames from a stream.
type Reader struct {
	r   *bufio.Reader
	max int
	buf []byte
	// h is the header being read: a local array escapes through
	// io.ReadFull, one allocation per frame.
	h [HeaderLen]byte
}

// NewReader reads frames of at most max bytes from r.
func NewReader(r io.Reader, max int) *Reader {
	if max < HeaderLen {
		max = HeaderLen
	}
	return &Reader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// Next returns the next frame. io.EOF means the stream ended between frames;
// an end inside a frame is ErrTruncated. The body is valid until the next call.
func (r *Reader) Next() (Frame, error) {
	h := &r.h
	if _, err := io.ReadFull(r.r, h[:4]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, ErrTruncated
		}
		return Frame{}, err
	}
	l := int64(binary.BigEndian.Uint32(h[0:4]))
	if l < fixedLen {
		return Frame{}, fmt.Errorf("%w: length %d is shorter than the header", ErrBadFrame, l)
	}
	if l+4 > int64(r.max) {
		return Frame{}, fmt.Errorf("%w: %d bytes, max %d", ErrTooLarge, l+4, r.max)
	}
	if _, err := io.ReadFull(r.r, h[4:]); err != nil {
		return Frame{}, truncated(err)
	}
	n := int(l) - fixedLen
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return Frame{}, truncated(err)
	}
	return Frame{Type: Type(h[4]), Code: Code(binary.BigEndian.Uint16(h[5:7])), ID: binary.BigEndian.Uint64(h[7:15]), Body: r.buf}, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}
