package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/respawn-dev/respawn/internal/dataclient"
)

// Operator commands are exactly once: each carries a request id (made
// here, or given with --request-id), the scene and the data server record
// what each id did, and a repeat is answered with the original result. So
// the CLI retries a "temporarily unavailable" answer itself, with the same
// id, and an operator who retries by hand passes the id it printed.

// unavailable marks an admin API failure whose outcome is unknown (the
// daemon did not answer, or answered 503): retrying the same request id is
// safe.
type unavailable struct{ err error }

func (u unavailable) Error() string { return u.err.Error() }
func (u unavailable) Unwrap() error { return u.err }

func isUnavailable(err error) bool {
	var u unavailable
	return errors.As(err, &u) || errors.Is(err, dataclient.ErrUnavailable)
}

// newReqID makes a request id: prefix and 16 random hex digits.
func newReqID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand does not fail on Linux
	return prefix + "-" + hex.EncodeToString(b[:])
}

// maxAttemptTimeout bounds one attempt of a retried command.
const maxAttemptTimeout = 10 * time.Second

// retry runs attempt until it succeeds, fails with anything but
// "temporarily unavailable", or timeout passes, backing off between tries.
// Every attempt sends the same request id. The final error names the id so
// the operator can retry by hand without applying the command twice.
func (a *app) retry(timeout time.Duration, reqID string, attempt func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	a.attempt = min(maxAttemptTimeout, timeout)
	backoff := 200 * time.Millisecond
	for n := 1; ; n++ {
		actx, acancel := context.WithTimeout(ctx, a.attempt)
		err := attempt(actx)
		acancel()
		if err == nil || !isUnavailable(err) {
			return err
		}
		left := time.Until(deadlineOf(ctx))
		if left <= backoff {
			return fmt.Errorf("%w\nrequest %s: outcome unknown after %d attempts; retry with --request-id %s (it is applied at most once)", err, reqID, n, reqID)
		}
		fmt.Fprintf(os.Stderr, "respawn: temporarily unavailable (%v); retrying request %s in %s\n", err, reqID, backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}
