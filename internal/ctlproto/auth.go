package ctlproto

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/respawn-dev/respawn/internal/secret"
)

// The handshake, both directions authenticated with HMAC-SHA256 under the
// cluster secret (secret.PurposeControl):
//
//	manager → scene  challenge {nonce Nm}
//	scene → manager  hello     {msg: hello, nonce: Ns, mac: H("hello", Nm, Ns, msg)}
//	manager → scene  welcome   {msg: welcome, mac: H("reply", type, Ns, Nm, msg)}   (or exit, signed the same way)
//
// The scene's MAC covers the manager's fresh nonce, so a recorded hello
// cannot be replayed; the manager's covers the scene's, so nobody without
// the secret can welcome a scene or tell it to exit. Each MAC covers the
// exact bytes of the message it vouches for. Labels keep a MAC of one kind
// from passing as the other.

// NonceLen is the length of both nonces.
const NonceLen = 32

// ErrAuth marks a peer that failed to prove it holds the cluster secret.
var ErrAuth = errors.New("ctlproto: authentication failed")

// ErrBadHello marks a signed hello whose fields are out of bounds.
var ErrBadHello = errors.New("ctlproto: hello refused")

// Challenge is the manager's first frame.
type Challenge struct {
	Nonce []byte `json:"nonce"`
}

// signed is the envelope of every authenticated message.
type signed struct {
	Msg   json.RawMessage `json:"msg"`
	Nonce []byte          `json:"nonce,omitempty"`
	MAC   []byte          `json:"mac"`
}

// NewNonce returns NonceLen random bytes.
func NewNonce() ([]byte, error) {
	n := make([]byte, NonceLen)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("ctlproto: nonce: %w", err)
	}
	return n, nil
}

// SendChallenge opens a session on the manager's side; it returns the nonce
// the hello must be signed over.
func (c *Conn) SendChallenge(timeout time.Duration) ([]byte, error) {
	n, err := NewNonce()
	if err != nil {
		return nil, err
	}
	return n, c.Send(TypeChallenge, Challenge{Nonce: n}, timeout)
}

// DecodeChallenge reads the manager's nonce from its first frame.
func DecodeChallenge(f Frame) ([]byte, error) {
	if f.Type != TypeChallenge {
		return nil, fmt.Errorf("%w: first frame is %s, want challenge", ErrFrame, f.Type)
	}
	var ch Challenge
	if err := f.Decode(&ch); err != nil {
		return nil, err
	}
	if len(ch.Nonce) != NonceLen {
		return nil, fmt.Errorf("%w: challenge nonce of %d bytes, want %d", ErrFrame, len(ch.Nonce), NonceLen)
	}
	return ch.Nonce, nil
}

// SendHello sends h signed over the manager's nonce nm; it returns the
// scene's own nonce, which the manager's answers are signed over.
func (c *Conn) SendHello(s *secret.Secret, nm []byte, h Hello, timeout time.Duration) ([]byte, error) {
	raw, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("ctlproto: encode hello: %w", err)
	}
	ns, err := NewNonce()
	if err != nil {
		return nil, err
	}
	mac := s.Sign(secret.PurposeControl, []byte("hello"), nm, ns, raw)
	return ns, c.Send(TypeHello, signed{Msg: raw, Nonce: ns, MAC: mac}, timeout)
}

// OpenHello checks that f is a hello signed with the cluster secret over
// the challenge nm and returns it with the scene's nonce. Its error wraps
// ErrAuth for a wrong or missing signature, ErrFrame for anything
// malformed, and also ErrBadHello when a signed hello is out of bounds;
// nothing of an unauthenticated hello is returned.
func OpenHello(s *secret.Secret, nm []byte, f Frame) (Hello, []byte, error) {
	if f.Type != TypeHello {
		return Hello{}, nil, fmt.Errorf("%w: first frame is %s, want hello", ErrFrame, f.Type)
	}
	var env signed
	if err := f.Decode(&env); err != nil {
		return Hello{}, nil, err
	}
	if len(env.Nonce) != NonceLen {
		return Hello{}, nil, fmt.Errorf("%w: hello nonce of %d bytes, want %d", ErrAuth, len(env.Nonce), NonceLen)
	}
	if !s.Verify(secret.PurposeControl, env.MAC, []byte("hello"), nm, env.Nonce, env.Msg) {
		return Hello{}, nil, fmt.Errorf("%w: hello signature does not verify (wrong or no cluster secret)", ErrAuth)
	}
	var h Hello
	if err := json.Unmarshal(env.Msg, &h); err != nil {
		return Hello{}, nil, fmt.Errorf("%w: %w: hello body: %v", ErrBadHello, ErrFrame, err)
	}
	if err := h.Validate(); err != nil {
		return Hello{}, nil, fmt.Errorf("%w: %w", ErrBadHello, err)
	}
	return h, env.Nonce, nil
}

// Session is an authenticated connection's pair of nonces; the manager's
// welcome and exit frames are signed over them.
type Session struct {
	Secret *secret.Secret
	// Scene is the scene's nonce, Manager the manager's.
	Scene, Manager []byte
}

// SendSigned sends a manager → scene message (welcome or exit) signed over
// the session's nonces.
func (c *Conn) SendSigned(ss Session, t Type, msg any, timeout time.Duration) error {
	raw, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("ctlproto: encode %s: %w", t, err)
	}
	mac := ss.Secret.Sign(secret.PurposeControl, []byte("reply"), []byte{byte(t)}, ss.Scene, ss.Manager, raw)
	return c.Send(t, signed{Msg: raw, MAC: mac}, timeout)
}

// OpenSigned checks a manager → scene frame signed over the session's
// nonces and decodes it into msg.
func OpenSigned(ss Session, f Frame, msg any) error {
	var env signed
	if err := f.Decode(&env); err != nil {
		return err
	}
	if !ss.Secret.Verify(secret.PurposeControl, env.MAC, []byte("reply"), []byte{byte(f.Type)}, ss.Scene, ss.Manager, env.Msg) {
		return fmt.Errorf("%w: %s signature does not verify: the manager does not hold this cluster's secret", ErrAuth, f.Type)
	}
	if err := json.Unmarshal(env.Msg, msg); err != nil {
		return fmt.Errorf("%w: %s body: %v", ErrFrame, f.Type, err)
	}
	return nil
}
