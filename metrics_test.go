package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/prometheus/client_golang/prometheus"
)

// httpGet fetches url with a client of the test's own, so that no idle
// connection outlives the test.
func httpGet(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// scrape fetches /metrics from addr and returns its samples, keyed by the
// series as the text format prints it: `name{label="value"}`.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, body := httpGet(t, "http://"+addr+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s\n%s", resp.Status, body)
	}
	samples := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		samples[line[:i]] = v
	}
	return samples
}

// expectSamples checks some series of a scrape.
func expectSamples(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		if g, ok := got[series]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", series, g, ok, v)
		}
	}
}

func TestMetrics(t *testing.T) {
	srv := startServer(t, nil)
	addr := srv.WSAddr().String()
	a, b := dial(t, srv, "tcp"), dial(t, srv, "unix")
	ws := dial(t, srv, "websocket")
	a.expect("g x", "1 Lock Get Success: x\n")
	a.expect("g y", "1 Lock Get Success: y\n")
	b.expect("sg s", "1 Shared Lock Get Success: s\n")
	ws.expect("sg s", "2 Shared Lock Get Success: s\n")
	a.send("xx\n\n")
	// A wait that is granted, one that times out, and one still queued.
	b.send("gw 10000 x\n")
	eventually(t, "b queued", func() bool { return scrape(t, addr)["glockd_waiters"] == 1 })
	a.expect("r x", "1 Lock Release Success: x\n")
	if got := b.line(); got != "1 Lock Get Success: x\n" {
		t.Fatalf("gw: %q", got)
	}
	b.expect("gw 20 y", "0 Lock Get Timeout: y\n")
	ws.send("gw -1 y")

	// The unix client leaves holding x and s: two orphans.
	eventually(t, "ws queued", func() bool { return scrape(t, addr)["glockd_waiters"] == 1 })
	b.close()
	eventually(t, "b orphaned", func() bool { return scrape(t, addr)["glockd_orphans_total"] == 1 })

	got := scrape(t, addr)
	expectSamples(t, got, map[string]float64{
		"glockd_manager_up":                                     1,
		`glockd_commands_total{verb="g"}`:                       2,
		`glockd_commands_total{verb="r"}`:                       1,
		`glockd_commands_total{verb="sg"}`:                      2,
		`glockd_commands_total{verb="gw"}`:                      3,
		`glockd_commands_total{verb="t"}`:                       0,
		`glockd_commands_total{verb="me"}`:                      3, // dial asks
		"glockd_invalid_commands_total":                         2,
		"glockd_orphans_total":                                  1,
		"glockd_shared_orphans_total":                           1,
		`glockd_connections{transport="tcp"}`:                   1,
		`glockd_connections{transport="unix"}`:                  0,
		`glockd_connections{transport="websocket"}`:             1,
		"glockd_locks":                                          1, // y, held by a; ws waits for it
		"glockd_shared_locks":                                   1,
		"glockd_waiters":                                        1,
		`glockd_wait_duration_seconds_count{outcome="granted"}`: 1,
		`glockd_wait_duration_seconds_count{outcome="timeout"}`: 1,
	})
	if got[`glockd_wait_duration_seconds_sum{outcome="timeout"}`] < 0.02 {
		t.Errorf("timeout waited %vs, want at least 20ms", got[`glockd_wait_duration_seconds_sum{outcome="timeout"}`])
	}
	if n := got["glockd_command_batch_duration_seconds_count"]; n < 5 {
		t.Errorf("command batch latency observed %v times", n)
	}
	for _, series := range []string{"go_goroutines", "process_cpu_seconds_total", `glockd_command_batch_duration_seconds_bucket{le="+Inf"}`} {
		if _, ok := got[series]; !ok {
			t.Errorf("no %s", series)
		}
	}

	// The websocket waiter is granted when a disconnects.
	a.close()
	if got := ws.line(); got != "1 Lock Get Success: y\n" {
		t.Fatalf("gw: %q", got)
	}
	expectSamples(t, scrape(t, addr), map[string]float64{
		`glockd_wait_duration_seconds_count{outcome="granted"}`: 2,
		"glockd_waiters": 0,
		"glockd_locks":   1,
	})
}

// TestMetricsTwoServers: each server has its own registry and counters.
func TestMetricsTwoServers(t *testing.T) {
	a, b := startServer(t, nil), startServer(t, nil)
	dial(t, a, "tcp").expect("g x", "1 Lock Get Success: x\n")
	expectSamples(t, scrape(t, a.WSAddr().String()), map[string]float64{"glockd_locks": 1, `glockd_commands_total{verb="g"}`: 1})
	expectSamples(t, scrape(t, b.WSAddr().String()), map[string]float64{"glockd_locks": 0, `glockd_commands_total{verb="g"}`: 0})
}

func TestHealthz(t *testing.T) {
	srv := startServer(t, nil)
	resp, body := httpGet(t, "http://"+srv.WSAddr().String()+"/healthz")
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("/healthz: %s %q", resp.Status, body)
	}
}

// TestManagerDown: a stopped manager makes /healthz fail and /metrics say so.
func TestManagerDown(t *testing.T) {
	srv, err := NewServer(Config{})
	if err != nil {
		t.Fatal(err)
	}
	go srv.manager.run()
	srv.manager.send(request{kind: requestStop})
	<-srv.manager.stopped
	h := srv.httpHandler()

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with the manager stopped: %d %q", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, "\nglockd_manager_up 0\n") || strings.Contains(body, "glockd_locks") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics with the manager stopped: %d\n%s", rec.Code, body)
	}
}

// TestMetricsAddr: -metrics-addr serves /metrics and /healthz alone, also
// with the websocket port off, and stops with the server.
func TestMetricsAddr(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.WSAddr, c.MetricsAddr = "", "127.0.0.1:0" })
	if srv.WSAddr() != nil {
		t.Fatal("websocket listener open")
	}
	addr := srv.MetricsAddr().String()
	dial(t, srv, "tcp").expect("g x", "1 Lock Get Success: x\n")
	expectSamples(t, scrape(t, addr), map[string]float64{"glockd_locks": 1, `glockd_connections{transport="tcp"}`: 1})
	if resp, body := httpGet(t, "http://"+addr+"/healthz"); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("/healthz: %s %q", resp.Status, body)
	}
	if resp, _ := httpGet(t, "http://"+addr+"/"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/ on the metrics address: %s", resp.Status)
	}
	srv.Close()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := client.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatal("metrics address still serving after Close")
	}
}

func TestMetricsAddrFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"-metrics-addr", "127.0.0.1:9100"}, "127.0.0.1:9100"},
		{[]string{"--metrics-addr=:9100", "-ws", "0"}, ":9100"},
	} {
		cfg, _, err := parseFlags(tc.args, io.Discard)
		if err != nil || cfg.MetricsAddr != tc.want {
			t.Errorf("%q: MetricsAddr %q (%v), want %q", tc.args, cfg.MetricsAddr, err, tc.want)
		}
	}
}

// TestMetricsAddrInUse: Start fails cleanly when the metrics address is taken.
func TestMetricsAddrInUse(t *testing.T) {
	taken := startServer(t, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	srv, err := NewServer(Config{TCPAddr: "127.0.0.1:0", MetricsAddr: taken.MetricsAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err == nil || !strings.Contains(err.Error(), "metrics") {
		srv.Close()
		t.Fatalf("Start on a taken metrics address: %v", err)
	}
}

// TestConsoleHTTP: GET / is the console to a browser and the websocket to an
// upgrade, on the same port.
func TestConsoleHTTP(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.WSAddr().String()
	for _, tc := range []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<script type="module" src="/console/console.js"`},
		{"/console/console.js", "text/javascript; charset=utf-8", `from './glockd.js'`},
		{"/console/glockd.js", "text/javascript; charset=utf-8", "new WS(url)"},
		{"/console/console.css", "text/css; charset=utf-8", "font-family"},
	} {
		resp, body := httpGet(t, base+tc.path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != tc.contentType || !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: %s %q, body has %q: %v", tc.path, resp.Status, resp.Header.Get("Content-Type"), tc.contains, strings.Contains(body, tc.contains))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
	for _, path := range []string{"/console/", "/console/index.html", "/console/nope.js", "/nope"} {
		if resp, _ := httpGet(t, base+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
	// The websocket still answers on / next to the console.
	dial(t, srv, "websocket").expect("g x", "1 Lock Get Success: x\n")
}

// TestMetricsForAlerts: hold times are observed at release and orphaning,
// and the oldest hold and longest wait are gauges.
func TestMetricsForAlerts(t *testing.T) {
	srv := startServer(t, nil)
	addr := srv.WSAddr().String()
	a, b := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	a.expect("g X", "1 Lock Get Success: X\n")
	a.expect("sg S", "1 Shared Lock Get Success: S\n")
	b.send("gw -1 X\n")
	time.Sleep(50 * time.Millisecond)
	got := scrape(t, addr)
	for _, k := range []string{`glockd_oldest_hold_seconds{kind="exclusive"}`, `glockd_oldest_hold_seconds{kind="shared"}`, "glockd_oldest_wait_seconds"} {
		if got[k] < 0.04 || got[k] > 60 {
			t.Errorf("%s = %v, want the age of what the test holds", k, got[k])
		}
	}
	a.expect("sr S", "1 Shared Lock Release Success: S\n")
	a.close()
	if got := b.line(); got != "1 Lock Get Success: X\n" {
		t.Fatalf("waiter: %q", got)
	}
	eventually(t, "release and orphan observed", func() bool {
		got := scrape(t, addr)
		return got[`glockd_lock_hold_duration_seconds_count{kind="exclusive"}`] == 1 &&
			got[`glockd_lock_hold_duration_seconds_count{kind="shared"}`] == 1 &&
			got[`glockd_lock_hold_duration_seconds_bucket{kind="exclusive",le="0.01"}`] == 0 &&
			got[`glockd_lock_hold_duration_seconds_bucket{kind="exclusive",le="+Inf"}`] == 1 &&
			got["glockd_oldest_wait_seconds"] == 0 &&
			got[`glockd_oldest_hold_seconds{kind="shared"}`] == 0
	})
}

// TestOperatingMetricsTable: every metric family a server's /metrics
// lists (and a node with -etcd adds) is in docs/operating.md's metrics
// table, and every metric the table lists is exported. A row "go_*" covers
// a prefix.
func TestOperatingMetricsTable(t *testing.T) {
	srv := startServer(t, nil)
	exported := map[string]bool{}
	resp, body := httpGet(t, "http://"+srv.WSAddr().String()+"/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(body, -1) {
		exported[m[1]] = true
	}
	reg := prometheus.NewRegistry()
	isLeader, elections, stepDowns := ha.NewMetrics()
	reg.MustRegister(isLeader, elections, stepDowns)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	documented := map[string]bool{}
	var prefixes []string
	for _, cell := range markdownTable(t, "docs/operating.md", "## Metrics") {
		for _, m := range codeSpanRE.FindAllStringSubmatch(cell, -1) {
			if p, ok := strings.CutSuffix(m[1], "*"); ok {
				prefixes = append(prefixes, p)
			} else {
				documented[m[1]] = true
			}
		}
	}
	for _, name := range sortedKeys(exported) {
		covered := documented[name]
		for _, p := range prefixes {
			covered = covered || strings.HasPrefix(name, p)
		}
		if !covered {
			t.Errorf("metric %s: on /metrics, missing from docs/operating.md's metrics table", name)
		}
	}
	for _, name := range sortedKeys(documented) {
		if !exported[name] {
			t.Errorf("metric %s: in docs/operating.md's metrics table, but not on /metrics", name)
		}
	}
	for _, p := range prefixes {
		found := false
		for name := range exported {
			found = found || strings.HasPrefix(name, p)
		}
		if !found {
			t.Errorf("metrics %s*: in docs/operating.md's metrics table, but none on /metrics", p)
		}
	}
}

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
