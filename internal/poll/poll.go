// Package poll owns waiting for a condition to hold: call it again and again,
// with a growing pause between attempts, until it holds, a deadline passes or
// the caller gives up. Tests use Until instead of sleeping for a fixed time;
// daemons' drivers (chaos) use Wait and Within with their own contexts.
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Pauses between attempts: the first is short so a condition that is nearly
// true costs little, then each pause doubles up to MaxPause so a long wait
// does not spin.
const (
	FirstPause = time.Millisecond
	MaxPause   = 25 * time.Millisecond
)

// T is the part of testing.TB that Until needs. It is an interface so that
// this package does not import "testing" and production code may use it.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Until calls fn until it returns nil. If timeout passes first (or fn
// returns a Stop error), it fails t with the last error fn returned.
func Until(t T, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Within(context.Background(), timeout, fn); err != nil {
		t.Fatalf("condition not met within %v: %v", timeout, err)
	}
}

// Within is Wait bounded by d.
func Within(ctx context.Context, d time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return Wait(ctx, fn)
}

// Wait calls fn until it returns nil (Wait returns nil), an error made by
// Stop (Wait returns the error inside, at once), or ctx ends (Wait returns
// ctx's error joined with fn's last error). fn is always called at least once.
func Wait(ctx context.Context, fn func() error) error {
	pause := FirstPause
	var timer *time.Timer
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var stop stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		if timer == nil {
			timer = time.NewTimer(pause)
			defer timer.Stop()
		} else {
			timer.Reset(pause)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last attempt: %w", ctx.Err(), err)
		case <-timer.C:
		}
		pause = min(2*pause, MaxPause)
	}
}

// stopError carries the error that ends a Wait early.
type stopError struct{ err error }

func (s stopError) Error() string { return s.err.Error() }
func (s stopError) Unwrap() error { return s.err }

// Stop marks err as final: Wait returns it at once instead of trying again
// (for example when the process being waited for has exited). Stop(nil)
// is nil.
func Stop(err error) error {
	if err == nil {
		return nil
	}
	return stopError{err}
}

// True adapts a boolean condition to Until and Wait: while cond is false the
// attempt fails with an error that says what was awaited.
func True(what string, cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("still waiting for %s", what)
	}
}
