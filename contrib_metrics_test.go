package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/glockd/glockd/internal/ha"
)

// metricNameRE finds the metric names a PromQL expression uses: glockd's,
// and the Go and process collectors'.
var metricNameRE = regexp.MustCompile(`\b(glockd|go|process)_[a-z_]+\b`)

// checkExprMetrics fails when expr names a metric the server does not export.
func checkExprMetrics(t *testing.T, where, expr string, exported map[string]bool) {
	t.Helper()
	names := metricNameRE.FindAllString(expr, -1)
	if len(names) == 0 {
		t.Errorf("%s: %q uses no glockd metric", where, expr)
	}
	for _, n := range names {
		base := n
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !exported[n] && !exported[base] {
			t.Errorf("%s: %q names %s, which glockd does not export", where, expr, n)
		}
	}
}

// exportedMetrics is every metric family a server's /metrics lists, and
// those a node with -etcd adds.
func exportedMetrics(t *testing.T) map[string]bool {
	srv := startServer(t, nil)
	names := map[string]bool{}
	reg := prometheus.NewRegistry()
	isLeader, elections, stepDowns := ha.NewMetrics()
	reg.MustRegister(isLeader, elections, stepDowns)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for series := range scrape(t, srv.WSAddr().String()) {
		name, _, _ := strings.Cut(series, "{")
		names[name] = true
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			names[strings.TrimSuffix(name, suffix)] = true
		}
	}
	return names
}

// TestGrafanaDashboard: the dashboard is JSON Grafana can load, and every
// query names a metric glockd exports.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("contrib/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatal("dashboard has no title or panels")
	}
	exported := exportedMetrics(t)
	for _, p := range dash.Panels {
		if p.Type == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q has no type or queries", p.Title)
		}
		for _, target := range p.Targets {
			checkExprMetrics(t, "panel "+p.Title, target.Expr, exported)
		}
	}
}

// TestAlertRules: every alert rule's expression names metrics glockd
// exports. (The file is YAML; its expr: lines are read as text.)
func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile("contrib/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	alerts := 0
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "- alert:") {
			alerts++
		}
		if expr, ok := strings.CutPrefix(line, "expr:"); ok {
			checkExprMetrics(t, "alert rules", strings.TrimSpace(expr), exported)
		}
	}
	if alerts < 3 {
		t.Fatalf("%d alert rules", alerts)
	}
}
