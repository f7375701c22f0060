package poll

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestWaitRetriesUntilNil(t *testing.T) {
	n := 0
	err := Wait(context.Background(), func() error {
		n++
		if n < 5 {
			return fmt.Errorf("attempt %d", n)
		}
		return nil
	})
	if err != nil || n != 5 {
		t.Fatalf("err %v after %d attempts, want nil after 5", err, n)
	}
}

func TestWithinReportsTheLastAttempt(t *testing.T) {
	errLast := errors.New("not yet")
	n := 0
	start := time.Now()
	err := Within(context.Background(), 60*time.Millisecond, func() error {
		n++
		if n == 1 {
			return errors.New("first")
		}
		return errLast
	})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errLast) {
		t.Fatalf("got %v, want the deadline and the last attempt's error", err)
	}
	if el := time.Since(start); el < 60*time.Millisecond {
		t.Fatalf("gave up after %v, before the deadline", el)
	}
	// Backoff: far fewer attempts than a 1 ms spin would make, but more
	// than one.
	if n < 3 || n > 30 {
		t.Fatalf("%d attempts in 60ms", n)
	}
}

func TestStopEndsAtOnce(t *testing.T) {
	errExited := errors.New("process exited")
	n := 0
	err := Within(context.Background(), time.Minute, func() error {
		n++
		return Stop(fmt.Errorf("waiting for the port: %w", errExited))
	})
	if !errors.Is(err, errExited) || n != 1 {
		t.Fatalf("err %v after %d attempts, want the stop error after 1", err, n)
	}
	if Stop(nil) != nil {
		t.Fatal("Stop(nil) is not nil")
	}
}

func TestWaitCalledOnceWithCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	err := Wait(ctx, func() error { n++; return errors.New("no") })
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("err %v after %d attempts", err, n)
	}
	if err := Wait(ctx, func() error { return nil }); err != nil {
		t.Fatalf("a condition that holds fails on a cancelled context: %v", err)
	}
}

// recorder is a T that records the failure instead of ending the test.
type recorder struct{ failed string }

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestUntil(t *testing.T) {
	var r recorder
	Until(&r, 30*time.Millisecond, func() error { return errors.New("queue has 3 items, want 0") })
	if !strings.Contains(r.failed, "within 30ms") || !strings.Contains(r.failed, "queue has 3 items, want 0") {
		t.Fatalf("failure message %q lacks the timeout or the last error", r.failed)
	}
	r = recorder{}
	ready := time.Now().Add(10 * time.Millisecond)
	Until(&r, time.Second, True("the clock", func() bool { return time.Now().After(ready) }))
	if r.failed != "" {
		t.Fatalf("failed: %s", r.failed)
	}
	Until(&r, 10*time.Millisecond, True("a thing that never happens", func() bool { return false }))
	if !strings.Contains(r.failed, "a thing that never happens") {
		t.Fatalf("failure message %q does not say what was awaited", r.failed)
	}
}
