// Package token issues and verifies the tokens a client presents to a
// gateway: login tokens (a player id and an expiry, signed with the
// cluster secret's token key) and resume tokens (a session of a player,
// signed with the resume key). Both are plain ASCII, safe in JSON and URLs:
//
//	login:  v1.PLAYER.EXPIRY.MAC
//	resume: r1.PLAYER.SESSION.EXPIRY.MAC
//
// EXPIRY is Unix seconds in decimal; MAC is base64url (no padding) of
// HMAC-SHA256 over the other fields (internal/secret Sign, each field
// length-prefixed). Player ids and session ids contain no dots.
package token

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/validate"
)

// MaxLen bounds a token a gateway will look at.
const MaxLen = 512

// MaxPlayerLen bounds a player id.
const MaxPlayerLen = 64

// Errors wrapped by Verify*: malformed (not a token of this format),
// forged (the MAC does not match: wrong secret or changed fields) and
// expired.
var (
	ErrMalformed = errors.New("malformed token")
	ErrForged    = errors.New("token signature does not match")
	ErrExpired   = errors.New("token expired")
)

// ValidID checks a player id (internal/validate's rule) or a session id
// (the same charset): 1-64 of A-Z a-z 0-9 _ -.
func ValidID(kind, id string) error {
	if kind == "player" {
		return validate.PlayerID(id)
	}
	if len(id) == 0 || len(id) > MaxPlayerLen {
		return fmt.Errorf("%s id must be 1-%d characters, got %d", kind, MaxPlayerLen, len(id))
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("%s id %q: only A-Z, a-z, 0-9, '_' and '-' are allowed", kind, id)
		}
	}
	return nil
}

// IssueLogin returns a login token for player, valid until exp.
func IssueLogin(s *secret.Secret, player string, exp time.Time) (string, error) {
	if err := ValidID("player", player); err != nil {
		return "", err
	}
	e := strconv.FormatInt(exp.Unix(), 10)
	mac := s.Sign(secret.PurposeToken, []byte("v1"), []byte(player), []byte(e))
	return "v1." + player + "." + e + "." + base64.RawURLEncoding.EncodeToString(mac), nil
}

// VerifyLogin checks a login token and returns its player.
func VerifyLogin(s *secret.Secret, tok string, now time.Time) (string, error) {
	f, err := split(tok, "v1", 4)
	if err != nil {
		return "", err
	}
	exp, err := checkMAC(s, secret.PurposeToken, f)
	if err != nil {
		return "", err
	}
	if !now.Before(exp) {
		return "", fmt.Errorf("%w: player %s, expired %s", ErrExpired, f[1], exp.UTC().Format(time.RFC3339))
	}
	return f[1], nil
}

// Resume is what a resume token names.
type Resume struct {
	Player  string
	Session string
	Expires time.Time
}

// IssueResume returns a resume token for r.
func IssueResume(s *secret.Secret, r Resume) (string, error) {
	if err := ValidID("player", r.Player); err != nil {
		return "", err
	}
	if err := ValidID("session", r.Session); err != nil {
		return "", err
	}
	e := strconv.FormatInt(r.Expires.Unix(), 10)
	mac := s.Sign(secret.PurposeResume, []byte("r1"), []byte(r.Player), []byte(r.Session), []byte(e))
	return "r1." + r.Player + "." + r.Session + "." + e + "." + base64.RawURLEncoding.EncodeToString(mac), nil
}

// VerifyResume checks a resume token.
func VerifyResume(s *secret.Secret, tok string, now time.Time) (Resume, error) {
	f, err := split(tok, "r1", 5)
	if err != nil {
		return Resume{}, err
	}
	exp, err := checkMAC(s, secret.PurposeResume, f)
	if err != nil {
		return Resume{}, err
	}
	if !now.Before(exp) {
		return Resume{}, fmt.Errorf("%w: session %s of player %s", ErrExpired, f[2], f[1])
	}
	return Resume{Player: f[1], Session: f[2], Expires: exp}, nil
}

func split(tok, version string, n int) ([]string, error) {
	if len(tok) > MaxLen {
		return nil, fmt.Errorf("%w: %d bytes, max %d", ErrMalformed, len(tok), MaxLen)
	}
	f := strings.Split(tok, ".")
	if len(f) != n || f[0] != version {
		return nil, fmt.Errorf("%w: want %d dot-separated fields starting with %q", ErrMalformed, n, version)
	}
	for i, kind := range []string{"player", "session"}[:n-3] {
		if err := ValidID(kind, f[1+i]); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return f, nil
}

// checkMAC verifies the last field over the others and returns the expiry
// (the second-last field).
func checkMAC(s *secret.Secret, purpose string, f []string) (time.Time, error) {
	sec, err := strconv.ParseInt(f[len(f)-2], 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, fmt.Errorf("%w: bad expiry %q", ErrMalformed, f[len(f)-2])
	}
	mac, err := base64.RawURLEncoding.DecodeString(f[len(f)-1])
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	parts := make([][]byte, len(f)-1)
	for i := range parts {
		parts[i] = []byte(f[i])
	}
	if !s.Verify(purpose, mac, parts...) {
		return time.Time{}, ErrForged
	}
	return time.Unix(sec, 0), nil
}
