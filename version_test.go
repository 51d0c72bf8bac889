package main

import (
	"bytes"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestVersion: glockd -version, the glockd_build_info metric and the
// console's footer say the same build.
func TestVersion(t *testing.T) {
	b := readBuildInfo()
	if b.Version == "" || b.Revision == "" || b.GoVersion != runtime.Version() {
		t.Fatalf("build info %+v", b)
	}
	var stdout, stderr bytes.Buffer
	if code := runTo([]string{"-version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("glockd -version: exit %d: %s", code, stderr.String())
	}
	if want := "glockd " + b.Version + "\nrevision " + b.Revision + "\n" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"; stdout.String() != want {
		t.Errorf("glockd -version printed %q, want %q", stdout.String(), want)
	}

	srv := startServer(t, nil)
	series := `glockd_build_info{goversion="` + b.GoVersion + `",revision="` + b.Revision + `",version="` + b.Version + `"}`
	if v, ok := scrape(t, srv.WSAddr().String())[series]; !ok || v != 1 {
		t.Errorf("/metrics: %s = %v, %v; want 1", series, v, ok)
	}
	_, page := httpGet(t, "http://"+srv.WSAddr().String()+"/")
	if want := "glockd " + b.Version + " · revision " + b.Revision + " · " + b.GoVersion; !strings.Contains(page, want) {
		t.Errorf("console footer: page lacks %q", want)
	}
}

// TestHealthcheckFlag: glockd -healthcheck exits 0 only when the URL
// answers 200.
func TestHealthcheckFlag(t *testing.T) {
	srv := startServer(t, nil)
	base := "http://" + srv.WSAddr().String()
	for url, want := range map[string]int{
		base + "/healthz": 0,
		base + "/nowhere": 1,
		"http://127.0.0.1:" + strconv.Itoa(freePort(t)) + "/healthz": 1,
	} {
		var stdout, stderr bytes.Buffer
		if code := runTo([]string{"-healthcheck", url}, &stdout, &stderr); code != want {
			t.Errorf("-healthcheck %s: exit %d, want %d; %s", url, code, want, stderr.String())
		}
	}
}
