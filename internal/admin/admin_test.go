package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/poll"
	"github.com/respawn-dev/respawn/internal/secret"
)

func testConfig(t *testing.T) *config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	return &cfg
}

func serve(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func call(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func TestTokenRequiredOffLoopback(t *testing.T) {
	cfg := testConfig(t)
	if _, err := New("0.0.0.0:0", cfg, nil); err == nil || !strings.Contains(err.Error(), "admin.token is required") {
		t.Fatalf("non-loopback without a token: %v", err)
	}
	cfg.Admin.Token = "s3cret-operator"
	s, err := New("0.0.0.0:0", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, 200, "ok") })
	page := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) }
	s.HandleStatic("/", page)
	s.HandleStatic("/console/", page)
	serve(t, s)
	base := "http://127.0.0.1:" + portOf(t, s.Addr())
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", http.StatusOK}, // probes from anywhere
		{"/", "", http.StatusOK},        // static pages carry no data
		{"/console/console.js", "", http.StatusOK},
		{"/v1/status/", "", http.StatusUnauthorized}, // not under a static path
		{"/v1/status", "", http.StatusUnauthorized},
		{"/metrics", "", http.StatusUnauthorized},
		{"/v1/status", "Bearer wrong", http.StatusUnauthorized},
		{"/v1/status", "Bearer s3cret-operator", http.StatusOK},
		{"/metrics", "Bearer s3cret-operator", http.StatusOK},
	} {
		if got, body := call(t, "GET", base+tc.path, tc.auth, ""); got != tc.want {
			t.Errorf("GET %s with %q: %d, want %d (%s)", tc.path, tc.auth, got, tc.want, body)
		}
	}
}

func portOf(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// On loopback, reading is open and changing needs the token, which by
// default is derived from the cluster secret in the data directory.
func TestLoopbackMutationsNeedTheDerivedToken(t *testing.T) {
	cfg := testConfig(t)
	s, err := New("127.0.0.1:0", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	s.Handle("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, 200, changed) })
	s.Handle("POST /v1/kill", func(w http.ResponseWriter, _ *http.Request) { changed++; WriteJSON(w, 200, changed) })
	serve(t, s)
	sec, err := secret.Load("", cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	tok := "Bearer " + sec.OperatorToken()
	base := "http://" + s.Addr()
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/v1/status", "", 200},
		{"POST", "/v1/kill", "", 401},
		{"POST", "/v1/kill", "Bearer nope", 401},
		{"GET", "/debug/pprof/cmdline", "", 401},
		{"POST", "/v1/kill", tok, 200},
		{"GET", "/debug/pprof/cmdline", tok, 200},
	} {
		if got, body := call(t, tc.method, base+tc.path, tc.auth, ""); got != tc.want {
			t.Errorf("%s %s with %q: %d, want %d (%s)", tc.method, tc.path, tc.auth, got, tc.want, body)
		}
	}
	if changed != 1 {
		t.Errorf("the kill handler ran %d times, want once (only with the token)", changed)
	}
	code, body := call(t, "POST", base+"/v1/kill", "", "")
	if code != 401 || !strings.Contains(body, "missing operator token") {
		t.Errorf("refusal: %d %s", code, body)
	}
}

func TestBodyLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Token = "tok"
	cfg.Admin.MaxBodyBytes = 1024
	s, err := New("127.0.0.1:0", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("POST /v1/echo", func(w http.ResponseWriter, r *http.Request) {
		var v map[string]string
		if DecodeJSON(w, r, &v) {
			WriteJSON(w, 200, v)
		}
	})
	serve(t, s)
	url := "http://" + s.Addr() + "/v1/echo"
	if code, body := call(t, "POST", url, "Bearer tok", `{"a":"b"}`); code != 200 {
		t.Fatalf("small body: %d %s", code, body)
	}
	big := `{"a":"` + strings.Repeat("x", 2000) + `"}`
	if code, body := call(t, "POST", url, "Bearer tok", big); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "over 1024 bytes") {
		t.Fatalf("big body: %d %s", code, body)
	}
	if code, _ := call(t, "POST", url, "Bearer tok", `{"a":1`); code != 400 {
		t.Fatalf("truncated body: %d", code)
	}
}

func TestHeaderLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.MaxHeaderBytes = 1024
	s, err := New("127.0.0.1:0", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s)
	req, _ := http.NewRequest("GET", "http://"+s.Addr()+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("h", 8<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("8 KiB header: %d", resp.StatusCode)
	}
}

// An idle keep-alive connection and a silent new one are both closed by
// the server, and the connection limit holds extra clients in the queue.
func TestTimeoutsAndConnectionLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.IdleTimeout = 200 * time.Millisecond
	cfg.Admin.ReadHeaderTimeout = 200 * time.Millisecond
	cfg.Admin.MaxConns = 2
	s, err := New("127.0.0.1:0", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s)

	idle := dialGet(t, s.Addr()) // one request, then idle
	silent, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Both slots are taken: a third client is not served until one closes.
	waitOpen(t, s, 2)
	third, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fmt.Fprintf(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	start := time.Now()
	for _, c := range []net.Conn{idle, silent} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("connection not closed by the server: %v", err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closing idle connections took %s", d)
	}
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, err := bufio.NewReader(third).ReadString('\n')
	if err != nil || !strings.Contains(status, "200") {
		t.Fatalf("queued client: %q %v", status, err)
	}
}

func dialGet(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c
}

func waitOpen(t *testing.T, s *Server, n int) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		if got := s.ln.open(); got != n {
			return fmt.Errorf("%d open connections, want %d", got, n)
		}
		return nil
	})
}
