// Package secret holds the cluster secret: the one shared key that lets a
// process of this cluster prove it belongs here. Every other key (control
// connection authentication, player login tokens, the gateway-scene link,
// NATS passwords per role, the operator token) is derived from it with
// HMAC-SHA256 and a purpose string, so rotating the one secret rotates all.
//
// Where the secret comes from, first match wins:
//   - the config key `secret` (env RESPAWN_SECRET, flag --secret);
//   - the file <data_dir>/secret, created with 32 random bytes (mode 0600)
//     when it does not exist. `respawn up` creates it before it starts
//     anything; a daemon started by hand creates it too, atomically, so
//     processes sharing a data directory always agree.
package secret

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Purposes: each derived key is used for exactly one thing.
const (
	PurposeControl  = "respawn control v1"  // worldmgr <-> scene challenge-response
	PurposeLink     = "respawn link v1"     // gateway <-> scene link challenge-response
	PurposeToken    = "respawn token v1"    // player login tokens
	PurposeResume   = "respawn resume v1"   // gateway resume tokens
	PurposeOperator = "respawn operator v1" // the admin API's bearer token
	PurposeNATS     = "respawn nats v1"     // NATS passwords, one per role
)

// FileName is the secret's file under the data directory.
const FileName = "secret"

// MinLen is the shortest secret accepted, in bytes.
const MinLen = 16

// Secret is the cluster secret. The zero value is unusable; use Load or New.
type Secret struct{ key []byte }

// New wraps raw secret bytes (at least MinLen).
func New(raw []byte) (*Secret, error) {
	if len(raw) < MinLen {
		return nil, fmt.Errorf("secret: %d bytes is too short, need at least %d", len(raw), MinLen)
	}
	return &Secret{key: append([]byte(nil), raw...)}, nil
}

// Load returns the configured secret, or the one in dataDir/secret, creating
// that file when it does not exist. configured is the `secret` config value
// ("" when unset).
func Load(configured, dataDir string) (*Secret, error) {
	if configured != "" {
		return New([]byte(strings.TrimSpace(configured)))
	}
	if dataDir == "" {
		return nil, errors.New("secret: no secret configured and no data directory to keep one in")
	}
	path := filepath.Join(dataDir, FileName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := create(path); err != nil {
			return nil, err
		}
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("secret: read %s: %w", path, err)
	}
	s, err := New([]byte(strings.TrimSpace(string(raw))))
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", path, err)
	}
	return s, nil
}

// create writes a fresh random secret to path unless one appears there
// first: written to a temporary file, then hard-linked into place, which
// fails if path exists, so a reader never sees a half-written secret and
// two processes racing agree on the winner's.
func create(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("secret: random: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secret-*")
	if err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("secret: %w", err)
	}
	if _, err := tmp.WriteString(hex.EncodeToString(b[:]) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("secret: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("secret: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("secret: install %s: %w", path, err)
	}
	return nil
}

// Key derives the key for one purpose.
func (s *Secret) Key(purpose string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// Sign returns HMAC-SHA256 of the parts, keyed for purpose. Each part is
// length-prefixed, so ("ab","c") and ("a","bc") sign differently.
func (s *Secret) Sign(purpose string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, s.Key(purpose))
	var n [8]byte
	for _, p := range parts {
		l := uint64(len(p))
		for i := range n {
			n[i] = byte(l >> (56 - 8*i))
		}
		m.Write(n[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// Verify reports, in constant time, whether mac is Sign(purpose, parts...).
func (s *Secret) Verify(purpose string, mac []byte, parts ...[]byte) bool {
	return hmac.Equal(mac, s.Sign(purpose, parts...))
}

// OperatorToken is the bearer token of the admin APIs' mutating endpoints,
// unless admin.token configures another.
func (s *Secret) OperatorToken() string {
	return hex.EncodeToString(s.Key(PurposeOperator)[:20])
}

// NATSPassword is the NATS password of one role (datasvr, worldmgr, scene,
// gateway, operator).
func (s *Secret) NATSPassword(role string) string {
	return hex.EncodeToString(s.Sign(PurposeNATS, []byte(role))[:20])
}
