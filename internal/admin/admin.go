// Package admin is the admin HTTP port every respawn process has:
// Prometheus metrics, /healthz, pprof, and the process's own API routes.
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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is one admin HTTP listener.
type Server struct {
	mux      *http.ServeMux
	token    string
	health   func() error
	note     func() string
	ln       net.Listener
	srv      *http.Server
	Registry *prometheus.Registry
}

// New prepares an admin server on addr. A token is required when addr is
// not a loopback address; with a token set every request must carry it as
// "Authorization: Bearer TOKEN". health reports readiness for /healthz (nil
// means always healthy).
func New(addr, token string, health func() error) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && token == "" {
		return nil, fmt.Errorf("admin %q: admin.token is required when the admin port is not bound to loopback", addr)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{mux: http.NewServeMux(), token: token, health: health, Registry: reg}
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
	s.ln = ln
	s.srv = &http.Server{Handler: s.auth(s.mux), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// SetNote sets a function whose non-empty answer /healthz reports as
// "degraded": the process serves, but something it depends on does not.
// Call before Serve.
func (s *Server) SetNote(f func() string) { s.note = f }

// Handle adds an API route (Go 1.22 pattern syntax, e.g. "GET /v1/scenes").
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

func (s *Server) auth(next http.Handler) http.Handler {
	if s.token == "" {
		return next
	}
	want := []byte("Bearer " + s.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			WriteError(w, http.StatusUnauthorized, errors.New("admin: missing or wrong token"))
			return
		}
		next.ServeHTTP(w, r)
	})
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
