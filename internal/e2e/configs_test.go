package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var metricName = regexp.MustCompile(`\brespawn_[a-z0-9_]+`)

// checkQuery fails t unless every respawn_ metric expr names is in docs
// (a histogram's _bucket, _sum and _count series count as the histogram).
func checkQuery(t *testing.T, where, expr string, docs map[string]documented) int {
	t.Helper()
	names := metricName.FindAllString(expr, -1)
	if len(names) == 0 {
		t.Errorf("%s: query %q names no respawn_ metric", where, expr)
	}
	for _, n := range names {
		if _, ok := docs[n]; ok {
			continue
		}
		base := n
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suf)
		}
		if d, ok := docs[base]; ok && d.typ == "histogram" && base != n {
			continue
		}
		t.Errorf("%s: query %q names %s, which is not in docs/operations.md's metric table", where, expr, n)
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		t.Errorf("%s: query %q has unbalanced brackets", where, expr)
	}
	return len(names)
}

// The Grafana dashboard and the alert rules parse, and every query in them
// names a real, documented metric; every alert is explained in the docs.
func TestGrafanaAndAlertsNameRealMetrics(t *testing.T) {
	docs := documentedMetrics(t)
	root := filepath.Join("..", "..")

	raw, err := os.ReadFile(filepath.Join(root, "configs", "grafana", "respawn.json"))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		ID      int                       `json:"id"`
		Type    string                    `json:"type"`
		Title   string                    `json:"title"`
		GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
		Targets []target                  `json:"targets"`
	}
	var dash struct {
		UID           string  `json:"uid"`
		Title         string  `json:"title"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("configs/grafana/respawn.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion == 0 {
		t.Errorf("dashboard lacks uid, title or schemaVersion: %q %q %d", dash.UID, dash.Title, dash.SchemaVersion)
	}
	ids := map[int]bool{}
	queries, named := 0, map[string]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or repeated", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: bad gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d: no title or no query", p.ID)
		}
		for _, tg := range p.Targets {
			queries++
			checkQuery(t, "dashboard panel "+p.Title, tg.Expr, docs)
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				named[n] = true
			}
		}
	}

	raw, err = os.ReadFile(filepath.Join(root, "configs", "prometheus", "respawn-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	yd := yaml.NewDecoder(strings.NewReader(string(raw)))
	yd.KnownFields(true)
	if err := yd.Decode(&rules); err != nil {
		t.Fatalf("configs/prometheus/respawn-alerts.yaml: %v", err)
	}
	opsDoc, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: needs alert, a severity label and a summary", r.Alert)
			}
			checkQuery(t, "alert "+r.Alert, r.Expr, docs)
			if !strings.Contains(string(opsDoc), "| `"+r.Alert+"` |") {
				t.Errorf("alert %s is not explained in docs/operations.md's alert table", r.Alert)
			}
			if rb := r.Annotations["runbook"]; rb != "" {
				anchor := rb[strings.Index(rb, "#")+1:]
				if !strings.Contains(strings.ToLower(string(opsDoc)), "\n## "+strings.ReplaceAll(anchor, "-", " ")+"\n") {
					t.Errorf("alert %s: runbook %s points at no section of docs/operations.md", r.Alert, rb)
				}
			}
		}
	}
	for _, want := range []string{"RespawnSceneFailed", "RespawnRestartStorm", "RespawnCorruptLog", "RespawnDataServerDegraded", "RespawnReplicaLag", "RespawnGatewayHoldsTimingOut"} {
		if !strings.Contains(string(raw), "alert: "+want+"\n") {
			t.Errorf("no alert %s", want)
		}
	}
	t.Logf("dashboard: %d panels, %d queries naming %d metrics; %d alerts", len(dash.Panels), queries, len(named), alerts)
}
