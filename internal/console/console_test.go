package console

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/respawn-dev/respawn/internal/config"
	"github.com/respawn-dev/respawn/internal/modules"
)

// mux adapts http.ServeMux to Router.
type mux struct{ *http.ServeMux }

func (m mux) Handle(p string, h http.HandlerFunc) { m.ServeMux.HandleFunc(p, h) }

func (m mux) HandleStatic(p string, h http.HandlerFunc) {
	if p == "/" {
		p = "/{$}"
	}
	m.ServeMux.HandleFunc("GET "+p, h)
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// daemon is a real HTTP server answering like a daemon's admin port.
func daemon(t *testing.T, routes map[string]string) string {
	t.Helper()
	m := http.NewServeMux()
	for p, body := range routes {
		m.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) })
	}
	s := httptest.NewServer(m)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func TestPagesAreServed(t *testing.T) {
	m := mux{http.NewServeMux()}
	Mount(m, Sources{Scenes: func() ([]modules.SceneRow, error) { return nil, nil }})
	m.HandleFunc("/play/", PlayPage)
	m.HandleFunc("GET /play-root", func(w http.ResponseWriter, r *http.Request) { r.URL.Path = "/"; PlayPage(w, r) })
	s := httptest.NewServer(m)
	defer s.Close()
	for path, want := range map[string]string{
		"/":                   "respawn console",
		"/console/console.js": "sessionStorage",
		"/console/style.css":  "--bg",
		"/play-root":          "respawn play",
		"/play/play.js":       "DataView",
	} {
		code, body, h := get(t, s.URL+path)
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, want 200 with %q", path, code, want)
		}
		if h.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", path)
		}
	}
	if code, _, _ := get(t, s.URL+"/console/nope.js"); code != http.StatusNotFound {
		t.Errorf("missing file: %d, want 404", code)
	}
	if code, _, _ := get(t, s.URL+"/play/nope"); code != http.StatusNotFound {
		t.Errorf("missing play file: %d, want 404", code)
	}
}

func TestClusterProbesDaemons(t *testing.T) {
	ds := daemon(t, map[string]string{
		"/healthz": `{"healthy":true,"pid":42}`,
		"/metrics": "# HELP x\nrespawn_datasvr_journal_bytes 440\nrespawn_datasvr_flush_duration_seconds_sum 1\nrespawn_datasvr_x{a=\"b\"} 3\ngo_goroutines 9\n",
	})
	gw := daemon(t, map[string]string{"/healthz": `{"healthy":true}`, "/v1/info": `{"sessions":3}`})
	m := mux{http.NewServeMux()}
	Mount(m, Sources{
		Scenes:   func() ([]modules.SceneRow, error) { return nil, nil },
		Datasvr:  ds,
		Gateways: []config.GatewayInstance{{Name: "gw1", Admin: gw}, {Name: "gw2", Admin: "127.0.0.1:1"}},
		Replicas: func() []Replica { return []Replica{{Reader: "worldmgr", Module: "scene_load", Synced: true}} },
	})
	s := httptest.NewServer(m)
	defer s.Close()
	code, body, _ := get(t, s.URL+"/v1/cluster")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/cluster: %d %s", code, body)
	}
	var c Cluster
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	if !c.Datasvr.Up || c.Datasvr.Info["pid"] != float64(42) {
		t.Errorf("datasvr probe %+v", c.Datasvr)
	}
	if len(c.Datasvr.Metrics) != 1 || c.Datasvr.Metrics["journal_bytes"] != 440 {
		t.Errorf("datasvr metrics %v, want only journal_bytes=440", c.Datasvr.Metrics)
	}
	if len(c.Gateways) != 2 || !c.Gateways[0].Up || c.Gateways[0].Info["sessions"] != float64(3) {
		t.Errorf("gateway probes %+v", c.Gateways)
	}
	if c.Gateways[1].Up || c.Gateways[1].Error == "" {
		t.Errorf("an unreachable gateway shows %+v, want down with the error", c.Gateways[1])
	}
	if len(c.Replicas) != 1 || c.Replicas[0].Module != "scene_load" {
		t.Errorf("replicas %+v", c.Replicas)
	}
}

func TestForwardToTheScenesProcess(t *testing.T) {
	var gotAuth, gotBody string
	sm := http.NewServeMux()
	sm.HandleFunc("GET /v1/scenes/{id}/inspect", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"scene":"`+r.PathValue("id")+`","room":"`+r.URL.Query().Get("room")+`"}`)
	})
	sm.HandleFunc("POST /v1/scenes/{id}/gm/damage", func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	scene := httptest.NewServer(sm)
	defer scene.Close()
	rows := []modules.SceneRow{
		{ID: "town", Addr: strings.TrimPrefix(scene.URL, "http://"), State: modules.SceneRunning, PID: 7},
		{ID: "forest", State: modules.SceneDead},
	}
	m := mux{http.NewServeMux()}
	Mount(m, Sources{Scenes: func() ([]modules.SceneRow, error) { return rows, nil }})
	s := httptest.NewServer(m)
	defer s.Close()

	code, body, _ := get(t, s.URL+"/v1/scenes/town/inspect?room=town/r1")
	if code != http.StatusOK || !strings.Contains(body, `"scene":"town"`) || !strings.Contains(body, `"room":"town/r1"`) {
		t.Errorf("inspect: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/scenes/town/gm/damage", strings.NewReader(`{"req_id":"a","monster":"m","amount":1}`))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || gotAuth != "Bearer tok" || !strings.Contains(gotBody, `"monster":"m"`) {
		t.Errorf("gm damage: %d, auth %q, body %q", resp.StatusCode, gotAuth, gotBody)
	}
	for path, want := range map[string]int{
		"/v1/scenes/nowhere/inspect": http.StatusNotFound,
		"/v1/scenes/forest/inspect":  http.StatusConflict,
		"/v1/scenes/%20bad/inspect":  http.StatusBadRequest,
	} {
		if code, body, _ := get(t, s.URL+path); code != want {
			t.Errorf("GET %s: %d %s, want %d", path, code, body, want)
		}
	}
}

func TestParseMetricsIsBounded(t *testing.T) {
	var b strings.Builder
	for i := range MaxMetrics * 2 {
		b.WriteString("p_")
		b.WriteString(strings.Repeat("x", i%7+1))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(strings.Repeat("y", i/26))
		b.WriteString(" 1\n")
	}
	if n := len(parseMetrics(strings.NewReader(b.String()), "p_")); n != MaxMetrics {
		t.Fatalf("%d samples kept, want the bound %d", n, MaxMetrics)
	}
}
