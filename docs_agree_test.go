package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/glockd/glockd/internal/ha"
)

// markdownTable returns the first cell of each row of the table that
// follows the heading in a markdown file.
func markdownTable(t *testing.T, file, heading string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s: no %q", file, heading)
	}
	var cells []string
	inTable := false
	for line := range strings.SplitSeq(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cell := strings.TrimSpace(strings.Split(line, "|")[1])
		if cell == "" || strings.Trim(cell, "-") == "" {
			continue
		}
		cells = append(cells, cell)
	}
	if len(cells) < 2 {
		t.Fatalf("%s: no table under %q", file, heading)
	}
	return cells[1:] // the header row
}

var codeSpanRE = regexp.MustCompile("`([^`]+)`")

// TestREADMEFlagTable: every flag glockd -h lists is in the README's flag
// table, and every flag the table lists is one glockd has.
func TestREADMEFlagTable(t *testing.T) {
	var help bytes.Buffer
	if code := run([]string{"-h"}, &help); code != 0 {
		t.Fatalf("glockd -h: exit %d", code)
	}
	inHelp := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		inHelp[m[1]] = true
	}
	if len(inHelp) < 10 {
		t.Fatalf("glockd -h lists %d flags:\n%s", len(inHelp), help.String())
	}
	inTable := map[string]bool{}
	for _, cell := range markdownTable(t, "README.md", "## Flags") {
		for _, m := range codeSpanRE.FindAllStringSubmatch(cell, -1) {
			inTable[strings.TrimPrefix(m[1], "-")] = true
		}
	}
	for _, f := range sortedKeys(inHelp) {
		if !inTable[f] {
			t.Errorf("flag -%s: in glockd -h, missing from the README's flag table", f)
		}
	}
	for _, f := range sortedKeys(inTable) {
		if !inHelp[f] {
			t.Errorf("flag -%s: in the README's flag table, but glockd has no such flag", f)
		}
	}
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

// TestNoDocSaysSIGHUPKills: glockd reloads on SIGHUP (TestReloadOnSIGHUP),
// so no sentence of the docs, the unit or the Dockerfile may say that it
// stops, kills or is not handled.
func TestNoDocSaysSIGHUPKills(t *testing.T) {
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	contrib, _ := filepath.Glob("contrib/*")
	files = append(append(files, contrib...), "README.md", "CHANGELOG.md", "tester/README.md", "Dockerfile")
	wrong := regexp.MustCompile(`(?i)\b(kills?|exits?|stops?|not handled|does not handle|no reload)\b`)
	sentenceEnd := regexp.MustCompile(`[.;:]\s|\n\s*\n|\|\s*\n`) // a table row ends one too
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sentenceEnd.Split(string(data), -1) {
			if strings.Contains(s, "SIGHUP") && wrong.MatchString(s) {
				t.Errorf("%s: %q says SIGHUP stops glockd; it reloads", f, strings.Join(strings.Fields(s), " "))
			}
		}
	}
}
