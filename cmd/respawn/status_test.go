package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/dataclient"
)

func testApp(t *testing.T) *app {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Admin.Token = "t0ken-for-tests-0123456789abcdef"
	a := newApp(io.Discard)
	a.once.Do(func() { a.cfg = &cfg })
	return a
}

// A daemon that is up but unhealthy (datasvr still starting) answers 503:
// its row keeps its pid and reason, and a degraded one shows why.
func TestDaemonStatusShowsPIDWhenUnhealthyAndDegraded(t *testing.T) {
	body := `{"healthy":false,"pid":4242,"error":"datasvr not ready: replaying journal"}`
	code := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	a := testApp(t)
	addr := strings.TrimPrefix(srv.URL, "http://")
	st := a.daemonStatus(addr)
	if !st.Running || st.PID != 4242 || st.Healthy || !strings.Contains(st.Error, "replaying journal") {
		t.Fatalf("unhealthy daemon: %+v", st)
	}
	body, code = `{"healthy":true,"pid":4242,"degraded":"degraded: database unreachable since X"}`, http.StatusOK
	st = a.daemonStatus(addr)
	if !st.Healthy || st.PID != 4242 || !strings.HasPrefix(st.Degraded, "degraded: database unreachable") {
		t.Fatalf("degraded daemon: %+v", st)
	}
	srv.Close()
	if st := a.daemonStatus(addr); st.Running || !strings.HasPrefix(st.Error, "not reachable") {
		t.Fatalf("stopped daemon: %+v", st)
	}
}

// The CLI retries "temporarily unavailable" with the same request id and
// stops at the first other answer; when it gives up it names the id.
func TestRetryReusesTheRequestID(t *testing.T) {
	a := testApp(t)
	var calls atomic.Int32
	err := a.retry(5*time.Second, "gm-x", func(context.Context) error {
		if calls.Add(1) < 3 {
			return dataclient.ErrUnavailable
		}
		return nil
	})
	if err != nil || calls.Load() != 3 {
		t.Fatalf("retry: %v after %d calls", err, calls.Load())
	}
	bad := errors.New("refused")
	calls.Store(0)
	if err := a.retry(5*time.Second, "gm-y", func(context.Context) error { calls.Add(1); return bad }); !errors.Is(err, bad) || calls.Load() != 1 {
		t.Fatalf("a refusal is not retried: %v after %d calls", err, calls.Load())
	}
	err = a.retry(300*time.Millisecond, "gm-z", func(context.Context) error { return unavailable{errors.New("connection refused")} })
	if err == nil || !strings.Contains(err.Error(), "--request-id gm-z") {
		t.Fatalf("giving up: %v", err)
	}
}
