// Package admin is the HTTP server every respawn process has: the daemons'
// admin ports (Prometheus metrics, /healthz, pprof, their API) and the scene
// processes' service addresses.
//
// Every server is bounded the same way (config section admin): header, read,
// write and idle timeouts, header and body sizes, and a connection limit,
// so idle or slow clients cannot pile up descriptors and goroutines.
//
// Who may do what:
//   - bound to loopback: GET and HEAD requests are open (status, inspect,
//     /metrics, /healthz); anything else (every request that changes state:
//     kill, restart, stop, GM commands, enter, request) and pprof needs the
//     operator token as "Authorization: Bearer TOKEN";
//   - bound beyond loopback: New refuses to start unless admin.token is
//     configured, and then every request but /healthz needs the token;
//   - either way, the static pages added with HandleStatic (the web
//     console's HTML, CSS and script, which carry no data) are open.
//
// The operator token is admin.token, or else derived from the cluster
// secret (OperatorToken), so the CLI, which reads the same secret, has it.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/secret"
	"github.com/respawn-dev/respawn/internal/version"
)

// Server is one HTTP listener with its routes.
type Server struct {
	mux      *http.ServeMux
	token    string
	loopback bool
	health   func() error
	note     func() string
	version  *version.Info
	maxBody  int64
	// static: paths of pages that carry no data (HandleStatic); a path
	// ending in "/" covers its subtree.
	static   []string
	ln       *limitListener
	srv      *http.Server
	Registry *prometheus.Registry
}

// OperatorToken returns the operator token of cfg's cluster: admin.token
// when set, else the one derived from the cluster secret (which this may
// create under the data directory, see secret.Load).
func OperatorToken(cfg *config.Config) (string, error) {
	if t := strings.TrimSpace(cfg.Admin.Token); t != "" {
		return t, nil
	}
	s, err := secret.Load(cfg.Secret, cfg.DataDir)
	if err != nil {
		return "", fmt.Errorf("operator token: %w", err)
	}
	return s.OperatorToken(), nil
}

// New prepares a server on addr with cfg's limits and operator token.
// health reports readiness for /healthz (nil means always healthy).
func New(addr string, cfg *config.Config, health func() error) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || ip != nil && ip.IsLoopback()
	if !loopback && strings.TrimSpace(cfg.Admin.Token) == "" {
		return nil, fmt.Errorf("admin %q: admin.token is required when a server is not bound to loopback", addr)
	}
	token, err := OperatorToken(cfg)
	if err != nil {
		return nil, fmt.Errorf("admin %s: %w", addr, err)
	}
	a := cfg.Admin
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{mux: http.NewServeMux(), token: token, loopback: loopback, health: health, maxBody: a.MaxBodyBytes, Registry: reg}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", addr, err)
	}
	s.ln = newLimitListener(ln, a.MaxConns)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "respawn_admin_http_connections",
		Help: "Open connections of this process's admin/service HTTP server (limit admin.max_conns).",
	}, func() float64 { return float64(s.ln.open()) }))
	s.srv = &http.Server{
		Handler:           s.guard(s.mux),
		ReadHeaderTimeout: a.ReadHeaderTimeout,
		ReadTimeout:       a.ReadTimeout,
		WriteTimeout:      a.WriteTimeout,
		IdleTimeout:       a.IdleTimeout,
		MaxHeaderBytes:    a.MaxHeaderBytes,
	}
	return s, nil
}

// SetNote sets a function whose non-empty answer /healthz reports as
// "degraded": the process serves, but something it depends on does not.
// Call before Serve.
func (s *Server) SetNote(f func() string) { s.note = f }

// SetVersion sets what /healthz reports as "version": the build and the
// formats this process speaks (`respawn status` and `respawn upgrade` read
// it). Call before Serve.
func (s *Server) SetVersion(v version.Info) { s.version = &v }

// Handle adds a route (Go 1.22 pattern syntax, e.g. "GET /v1/scenes"). Its
// method decides who may call it: see the package comment.
func (s *Server) Handle(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

// Addr is the address actually listened on (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Shutdown; it returns nil after a clean shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin %s: %w", s.Addr(), err)
	}
	return nil
}

// Shutdown stops the server; safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	body := map[string]any{"healthy": true, "pid": os.Getpid()}
	if s.version != nil {
		body["version"] = s.version
	}
	if s.note != nil {
		if n := s.note(); n != "" {
			body["degraded"] = n
		}
	}
	if s.health != nil {
		if err := s.health(); err != nil {
			body["healthy"], body["error"] = false, err.Error()
			WriteJSON(w, http.StatusServiceUnavailable, body)
			return
		}
	}
	WriteJSON(w, http.StatusOK, body)
}

// Healthy asks the server at addr for /healthz once, with c: nil when it
// answers 200, else why not. Callers poll it while a process starts.
func Healthy(c *http.Client, addr string) error {
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s", resp.Status)
	}
	return nil
}

// HandleStatic adds GET routes for files that carry no data (the web
// console's HTML, CSS and script): path "/" is the root page alone, a
// path ending in "/" is a subtree. They are open without the token even
// beyond loopback, so a browser, which cannot put a Bearer header on a
// navigation, can load the page that then asks for the token and sends it
// on every data call. Call before Serve.
func (s *Server) HandleStatic(path string, h http.HandlerFunc) {
	s.static = append(s.static, path)
	if path == "/" {
		s.mux.HandleFunc("GET /{$}", h)
		return
	}
	s.mux.HandleFunc("GET "+path, h)
}

func (s *Server) isStatic(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	for _, p := range s.static {
		if r.URL.Path == p || p != "/" && strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p) {
			return true
		}
	}
	return false
}

// needsToken says whether r must carry the operator token.
func (s *Server) needsToken(r *http.Request) bool {
	if s.isStatic(r) {
		return false
	}
	if !s.loopback {
		return !(r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead))
	}
	if strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
		// Profiles cost CPU and show the process's insides: operators only.
		return true
	}
	return r.Method != http.MethodGet && r.Method != http.MethodHead
}

// guard enforces the token rule and the body limit.
func (s *Server) guard(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.needsToken(r) {
			got := []byte(r.Header.Get("Authorization"))
			if subtle.ConstantTimeCompare(got, want) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="respawn"`)
				msg := "missing operator token"
				if len(got) > 0 {
					msg = "wrong operator token"
				}
				WriteError(w, http.StatusUnauthorized, fmt.Errorf("admin: %s %s: %s (Authorization: Bearer TOKEN; the token is admin.token or derived from the cluster secret)", r.Method, r.URL.Path, msg))
				return
			}
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
		}
		next.ServeHTTP(w, r)
	})
}

// DecodeJSON decodes r's JSON body into v strictly (unknown fields are
// errors) and writes the error answer itself: 413 for a body over
// admin.max_body_bytes, 400 otherwise. false means the answer is written.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", tooBig.Limit))
			return false
		}
		WriteError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	return true
}

// WriteJSON writes v as the JSON response body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing else to tell
}

// WriteError writes {"error": "..."} with status.
func WriteError(w http.ResponseWriter, status int, err error) {
	WriteJSON(w, status, map[string]string{"error": err.Error()})
}

// Bearer returns the Authorization header value for token ("" for none).
func Bearer(token string) string {
	if token == "" {
		return ""
	}
	return "Bearer " + strings.TrimSpace(token)
}

// limitListener accepts at most n open connections: Accept waits for a
// closed one before it takes the next from the kernel's queue.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) open() int { return len(l.sem) }

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
