// Package testhook reads RESPAWN_TEST_BREAK, the test-only switch that
// turns off one of respawn's guarantees so a test can show that `bot chaos`
// notices (internal/e2e/chaosbot_test.go). Each daemon reads it once at
// start and logs loudly when it is set. Never set it in production.
//
//	RESPAWN_TEST_BREAK=dedupe   the scene applies a resent request again instead of answering its recorded reply
//	RESPAWN_TEST_BREAK=fencing  the data server accepts saves from a stale epoch
//	RESPAWN_TEST_BREAK=resend   the gateway drops, unanswered, a request whose scene connection broke instead of resending it
package testhook

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// Env is the environment variable.
const Env = "RESPAWN_TEST_BREAK"

// The guarantees it can turn off.
const (
	Dedupe  = "dedupe"
	Fencing = "fencing"
	Resend  = "resend"
)

var known = []string{Dedupe, Fencing, Resend}

// Breaks is the set of guarantees turned off.
type Breaks []string

// FromEnv reads Env: a comma-separated list of Dedupe, Fencing, Resend.
// An unknown name is an error, so a typo cannot make a test pass.
func FromEnv() (Breaks, error) {
	return Parse(os.Getenv(Env))
}

// Parse parses the value of Env.
func Parse(s string) (Breaks, error) {
	var b Breaks
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("%s=%q: unknown %q (known: %s)", Env, s, n, strings.Join(known, ","))
		}
		b = append(b, n)
	}
	return b, nil
}

// Has reports whether guarantee name is turned off.
func (b Breaks) Has(name string) bool { return slices.Contains(b, name) }
