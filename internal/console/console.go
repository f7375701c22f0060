// Package console owns the operator's web console (served by the world
// manager's admin port) and the browser play client (served by each
// gateway's WebSocket listener): static HTML, CSS and JavaScript embedded
// in the binaries, and the few JSON routes the console needs that no
// single daemon answers alone (the cluster overview, and scene inspect and
// GM commands forwarded to the scene process that hosts the scene).
//
// The pages poll the daemons' existing JSON APIs; nothing here keeps state
// beyond one request. Mutating routes are guarded by the admin server's
// operator-token rule like every other admin route.
package console

import (
	"bufio"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/respawn-dev/respawn/internal/admin"
	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/modules"
	"github.com/respawn-dev/respawn/internal/validate"
)

//go:embed static
var static embed.FS

// MaxForwardBytes bounds an answer read from another daemon on the
// console's behalf (scene inspect, health, info).
const MaxForwardBytes = 4 << 20

// probeTimeout bounds each call to another daemon: a hung (SIGSTOPped)
// daemon shows as unreachable instead of hanging the page.
const probeTimeout = 2 * time.Second

// Router is where routes are added (admin.Server). HandleStatic routes
// carry no data and are open without the operator token (see
// admin.Server.HandleStatic).
type Router interface {
	Handle(pattern string, h http.HandlerFunc)
	HandleStatic(path string, h http.HandlerFunc)
}

// Sources is what the console reads from the world manager that serves it.
type Sources struct {
	// Scenes returns the scene table as GET /v1/scenes shows it.
	Scenes func() ([]modules.SceneRow, error)
	// Datasvr is the data server's admin address.
	Datasvr string
	// Gateways are the gateways of the configuration.
	Gateways []config.GatewayInstance
	// Replicas returns the freshness of the replicas the serving daemon
	// reads (the world manager's scene-load replica); may be nil.
	Replicas func() []Replica
	// Client calls the other daemons; nil means one with probeTimeout.
	Client *http.Client
}

// Replica is one replica reader's freshness as the console shows it.
type Replica struct {
	Reader   string  `json:"reader"`
	Module   string  `json:"module"`
	Synced   bool    `json:"synced"`
	Keys     int     `json:"keys"`
	Resyncs  uint64  `json:"resyncs"`
	LagP99MS float64 `json:"lag_p99_ms"`
	LagMaxMS float64 `json:"lag_max_ms"`
}

type console struct {
	src Sources
	cl  *http.Client
}

// Mount adds the console's page and routes to r:
//
//	GET  /                               the console page
//	GET  /console/FILE                   its script and style
//	GET  /v1/cluster                     data server and gateways at a glance
//	GET  /v1/scenes/{id}/inspect         forwarded to the scene's process
//	POST /v1/scenes/{id}/gm/damage       forwarded, with the caller's token
func Mount(r Router, src Sources) {
	c := &console{src: src, cl: src.Client}
	if c.cl == nil {
		c.cl = &http.Client{Timeout: probeTimeout}
	}
	r.HandleStatic("/", page("static/console.html"))
	r.HandleStatic("/console/", func(w http.ResponseWriter, req *http.Request) {
		serveFile(w, "static/"+path.Base(req.URL.Path))
	})
	r.Handle("GET /v1/cluster", c.apiCluster)
	r.Handle("GET /v1/scenes/{id}/inspect", c.forward)
	r.Handle("POST /v1/scenes/{id}/gm/damage", c.forward)
}

// PlayPage serves the browser play client (/, /play/play.js,
// /play/style.css); the gateway answers plain (non-WebSocket) GETs on its
// WebSocket listener with it, so the page and its socket share one origin
// and one port.
func PlayPage(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/":
		serveFile(w, "static/play.html")
	case "/play/play.js":
		serveFile(w, "static/play.js")
	case "/play/style.css":
		serveFile(w, "static/style.css")
	default:
		admin.WriteError(w, http.StatusNotFound, fmt.Errorf("no page %s: the play client is at /", r.URL.Path))
	}
}

func page(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { serveFile(w, name) }
}

func serveFile(w http.ResponseWriter, name string) {
	b, err := static.ReadFile(name)
	if err != nil {
		admin.WriteError(w, http.StatusNotFound, fmt.Errorf("console: no file %s", name))
		return
	}
	ct := "text/html; charset=utf-8"
	switch {
	case strings.HasSuffix(name, ".js"):
		ct = "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".css"):
		ct = "text/css; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	// The pages load nothing from elsewhere; the play client talks only to
	// its own origin's WebSocket.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:")
	_, _ = w.Write(b)
}

// Probe is one daemon as the console sees it.
type Probe struct {
	Name  string         `json:"name"`
	Addr  string         `json:"addr"`
	Up    bool           `json:"up"`
	Error string         `json:"error,omitempty"`
	Info  map[string]any `json:"info,omitempty"`
	// Metrics: the daemon's unlabelled samples of its own metrics.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// MaxMetrics bounds the samples one probe returns.
const MaxMetrics = 200

// metrics reads addr's /metrics and keeps the unlabelled samples whose
// name starts with prefix (histogram parts left out).
func (c *console) metrics(ctx context.Context, auth, addr, prefix string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.cl.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s/metrics: %w", addr, err)
	}
	defer resp.Body.Close()
	return parseMetrics(io.LimitReader(resp.Body, MaxForwardBytes), prefix), nil
}

// parseMetrics reads Prometheus text format: "name value" lines.
func parseMetrics(r io.Reader, prefix string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() && len(out) < MaxMetrics {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || !strings.HasPrefix(f[0], prefix) || strings.ContainsAny(f[0], "{}") {
			continue
		}
		if strings.HasSuffix(f[0], "_sum") || strings.HasSuffix(f[0], "_count") {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		out[strings.TrimPrefix(f[0], prefix)] = v
	}
	return out
}

// Cluster is GET /v1/cluster.
type Cluster struct {
	Datasvr  Probe   `json:"datasvr"`
	Gateways []Probe `json:"gateways"`
	// Replicas read by the world manager; each gateway's scene-table
	// replica is in its Info (scene_table).
	Replicas []Replica `json:"replicas"`
}

func (c *console) apiCluster(w http.ResponseWriter, r *http.Request) {
	out := Cluster{Gateways: make([]Probe, len(c.src.Gateways))}
	// The caller's token goes along: beyond loopback the other daemons
	// want it on reads too.
	auth := r.Header.Get("Authorization")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out.Datasvr = c.probe(r.Context(), auth, "datasvr", c.src.Datasvr, "")
		if out.Datasvr.Up {
			// Cache, journal and database figures, as the data server's
			// own metrics say them (whatever their names are today).
			out.Datasvr.Metrics, _ = c.metrics(r.Context(), auth, c.src.Datasvr, "respawn_datasvr_")
		}
	}()
	for i, g := range c.src.Gateways {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out.Gateways[i] = c.probe(r.Context(), auth, g.Name, g.Admin, "/v1/info")
		}()
	}
	if c.src.Replicas != nil {
		out.Replicas = c.src.Replicas()
	}
	wg.Wait()
	admin.WriteJSON(w, http.StatusOK, out)
}

// probe reads a daemon's /healthz and, when infoPath is set, merges that
// route's answer in.
func (c *console) probe(ctx context.Context, auth, name, addr, infoPath string) Probe {
	p := Probe{Name: name, Addr: addr, Info: map[string]any{}}
	if addr == "" {
		p.Error = "no admin address configured"
		return p
	}
	for _, path := range []string{"/healthz", infoPath} {
		if path == "" {
			continue
		}
		var m map[string]any
		code, err := c.getJSON(ctx, auth, "http://"+addr+path, &m)
		if err != nil {
			p.Error = err.Error()
			return p
		}
		for k, v := range m {
			p.Info[k] = v
		}
		if path == "/healthz" {
			p.Up = code == http.StatusOK
		}
	}
	return p
}

func (c *console) getJSON(ctx context.Context, auth, url string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.cl.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxForwardBytes)).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: status %d: %w", url, resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

// forward sends a scene route to the process hosting the scene and copies
// its answer back. The operator token the caller sent goes along: the
// scene process checks it again.
func (c *console) forward(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := validate.SceneID(id); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	rows, err := c.src.Scenes()
	if err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	var row *modules.SceneRow
	for i := range rows {
		if rows[i].ID == id {
			row = &rows[i]
		}
	}
	switch {
	case row == nil:
		admin.WriteError(w, http.StatusNotFound, fmt.Errorf("unknown scene %q", id))
		return
	case row.Addr == "" || row.State != modules.SceneRunning:
		admin.WriteError(w, http.StatusConflict, fmt.Errorf("scene %q is %s: no process to ask", id, row.State))
		return
	}
	url := "http://" + row.Addr + r.URL.Path
	if r.URL.RawQuery != "" {
		url += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, url, r.Body)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if a := r.Header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	resp, err := c.cl.Do(req)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			admin.WriteError(w, http.StatusRequestEntityTooLarge, err)
			return
		}
		admin.WriteError(w, http.StatusBadGateway, fmt.Errorf("scene %s at %s (pid %d): %w", id, row.Addr, row.PID, err))
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, MaxForwardBytes))
}
