package token

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/secret"
)

func testSecret(t *testing.T, b byte) *secret.Secret {
	t.Helper()
	s, err := secret.New([]byte(strings.Repeat(string(rune('a'+b)), 32)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoginToken(t *testing.T) {
	s, other := testSecret(t, 0), testSecret(t, 1)
	now := time.Unix(1_800_000_000, 0)
	tok, err := IssueLogin(s, "alice", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := VerifyLogin(s, tok, now); err != nil || p != "alice" {
		t.Fatalf("valid token: %q, %v", p, err)
	}
	forgedPlayer := strings.Replace(tok, "alice", "mallory", 1)
	parts := strings.Split(tok, ".")
	laterExpiry := strings.Join([]string{parts[0], parts[1], "9999999999", parts[3]}, ".")
	otherTok, _ := IssueLogin(other, "alice", now.Add(time.Hour))
	resumeTok, _ := IssueResume(s, Resume{Player: "alice", Session: "s1", Expires: now.Add(time.Hour)})
	for _, c := range []struct {
		name string
		tok  string
		now  time.Time
		want error
	}{
		{"expired", tok, now.Add(time.Hour), ErrExpired},
		{"other player", forgedPlayer, now, ErrForged},
		{"later expiry", laterExpiry, now, ErrForged},
		{"other secret", otherTok, now, ErrForged},
		{"resume token as login", resumeTok, now, ErrMalformed},
		{"empty", "", now, ErrMalformed},
		{"garbage", "\x00\xff..", now, ErrMalformed},
		{"bad mac encoding", parts[0] + "." + parts[1] + "." + parts[2] + ".!!", now, ErrMalformed},
		{"negative expiry", parts[0] + "." + parts[1] + ".-5." + parts[3], now, ErrMalformed},
		{"bad player id", "v1.a/b." + parts[2] + "." + parts[3], now, ErrMalformed},
		{"huge", "v1." + strings.Repeat("a", 1000) + ".1.x", now, ErrMalformed},
	} {
		if _, err := VerifyLogin(s, c.tok, c.now); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := IssueLogin(s, "a.b", now); err == nil {
		t.Error("a player id with a dot was accepted")
	}
}

func TestResumeToken(t *testing.T) {
	s := testSecret(t, 0)
	now := time.Unix(1_800_000_000, 0)
	r := Resume{Player: "bob", Session: "0123abcd", Expires: now.Add(time.Minute)}
	tok, err := IssueResume(s, r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyResume(s, tok, now)
	if err != nil || got.Player != "bob" || got.Session != "0123abcd" || !got.Expires.Equal(r.Expires) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := VerifyResume(s, strings.Replace(tok, "0123abcd", "0123abce", 1), now); !errors.Is(err, ErrForged) {
		t.Errorf("changed session: %v", err)
	}
	if _, err := VerifyResume(s, tok, now.Add(time.Minute)); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	login, _ := IssueLogin(s, "bob", now.Add(time.Hour))
	if _, err := VerifyResume(s, login, now); !errors.Is(err, ErrMalformed) {
		t.Errorf("login token as resume: %v", err)
	}
}
