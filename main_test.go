package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any leaves a goroutine behind,
// and removes the binaries the tests built (testBuildDir).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if dir, err := testBuildDir(); err == nil {
			os.RemoveAll(dir)
		}
		os.Exit(code)
	}))
}

// testBuildDir is where the tests build glockd binaries (daemonBinary,
// buildGlockd): one directory per test run, removed when it ends.
var testBuildDir = sync.OnceValues(func() (string, error) {
	return os.MkdirTemp("", "glockd-test-builds")
})

// TestLimitFlagsMustBePositive: a zero or negative limit is a mistake to
// report at start, not a request for the default; and a daemon with no
// listener for lock clients has nothing to serve.
func TestLimitFlagsMustBePositive(t *testing.T) {
	for _, args := range [][]string{
		{"-max-line", "0"},
		{"-max-line", "-1"},
		{"-max-conns", "0"},
		{"-max-conns", "-100"},
		{"-max-locks-per-conn", "0"},
		{"-max-locks-per-conn", "-1"},
		{"-max-http-conns", "0"},
		{"-max-http-conns", "-1"},
		{"-http-idle-timeout", "0s"},
		{"-http-idle-timeout", "-1s"},
		{"-port", "0", "-ws", "0"},
		{"-port", "0", "-ws", "0", "-metrics-addr", "127.0.0.1:0"},
	} {
		if _, _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: accepted", args)
		} else {
			t.Logf("%q: %v", args, err)
		}
	}
	for _, args := range [][]string{
		{"-port", "0", "-ws", "0", "-unix", "/run/glockd.sock"},
		{"-ws", "0"},
		{"-port", "0"},
		{"-max-line", "1", "-max-conns", "1", "-max-locks-per-conn", "1", "-max-http-conns", "1"},
	} {
		if _, _, err := parseFlags(args, io.Discard); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	for i, edit := range []func(*Config){
		func(c *Config) { c.MaxLine = -1 },
		func(c *Config) { c.MaxConns = -1 },
		func(c *Config) { c.MaxLocksPerConn = -1 },
		func(c *Config) { c.MaxHTTPConns = -1 },
		func(c *Config) { c.HTTPIdleTimeout = -1 },
	} {
		cfg := Config{TCPAddr: "127.0.0.1:0"}
		edit(&cfg)
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("NewServer with negative limit %d: accepted", i)
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-port", "70000"},
		{"-unix-mode", "999"},
		{"-ws-origin", "example.com"},
		{"stray"},
		{"-nosuchflag"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code == 0 {
			t.Errorf("%q: exit 0", args)
		}
		if stderr.Len() == 0 {
			t.Errorf("%q: no message", args)
		}
	}
}

func TestUserTimeoutDefault(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 30 * time.Second},
		{[]string{"-keepalive-idle", "1s", "-keepalive-interval", "1s", "-keepalive-count", "2"}, 3 * time.Second},
		{[]string{"-keepalive-idle", "1s", "-user-timeout", "10s"}, 10 * time.Second},
		{[]string{"-user-timeout", "0"}, 0},
	} {
		cfg, _, err := parseFlags(tt.args, io.Discard)
		if err != nil || cfg.UserTimeout != tt.want {
			t.Errorf("%q: user timeout %v (%v), want %v", tt.args, cfg.UserTimeout, err, tt.want)
		}
	}
}

func TestHAFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		err  string // "" for success
	}{
		{[]string{"-lease-ttl", "3s"}, "-lease-ttl needs -etcd"},
		{[]string{"-etcd", "127.0.0.1:2379"}, "-etcd needs -metrics-addr"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-lease-ttl", "1500ms"}, "whole seconds"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-etcd-cert", "c.pem"}, "go together"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-advertise", "nohostport"}, "-advertise"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-port", "0"}, "needs -advertise"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-bind", "10.1.2.3"}, ""},
	} {
		cfg, _, err := parseFlags(tt.args, io.Discard)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want one saying %q", tt.args, err, tt.err)
		}
		if tt.err == "" && err == nil {
			hc := cfg.HA
			if hc == nil || hc.Advertise != "10.1.2.3:9999" || hc.Prefix != ha.DefaultEtcdPrefix || hc.LeaseTTL != ha.DefaultLeaseTTL || hc.TakeoverDelay != ha.DefaultTakeoverDelay {
				t.Errorf("%q: %+v", tt.args, hc)
			}
		}
	}
	cfg, _, err := parseFlags(nil, io.Discard)
	if err != nil || cfg.HA != nil {
		t.Errorf("no -etcd: HA %+v, %v", cfg.HA, err)
	}
}

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

// unitFile is a systemd unit: its sections, each a list of key=value
// settings in file order (a key may repeat, as ExecStart= or
// SystemCallFilter= do).
type unitFile map[string][]unitSetting

type unitSetting struct{ key, value string }

// parseUnit reads the subset of the systemd unit syntax that a hand-written
// unit uses: [Section] headers, Key=Value lines, comments starting with # or
// ;, and lines continued by a trailing backslash.
func parseUnit(t *testing.T, r io.Reader) unitFile {
	t.Helper()
	unit := unitFile{}
	section := ""
	sc := bufio.NewScanner(r)
	n, pending := 0, ""
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				t.Fatalf("line %d: bad section header %q", n, line)
			}
			section = line[1 : len(line)-1]
			if _, ok := unit[section]; !ok {
				unit[section] = nil
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("line %d: %q is not Key=Value inside a section", n, line)
		}
		unit[section] = append(unit[section], unitSetting{strings.TrimSpace(key), strings.TrimSpace(value)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if pending != "" {
		t.Fatal("the last line ends in a backslash")
	}
	return unit
}

// values returns every value of key in section, in order.
func (u unitFile) values(section, key string) []string {
	var vs []string
	for _, s := range u[section] {
		if s.key == key {
			vs = append(vs, s.value)
		}
	}
	return vs
}

// TestSystemdUnit checks contrib/glockd.service: it is confined, restarts on
// failure, has room for -max-conns file descriptors, and starts glockd with
// flags that glockd accepts, keeping its files in its runtime directory.
// (CI also runs systemd-analyze verify on it where systemd is installed.)
func TestSystemdUnit(t *testing.T) {
	f, err := os.Open("contrib/glockd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit := parseUnit(t, f)
	for _, s := range []string{"Unit", "Service", "Install"} {
		if _, ok := unit[s]; !ok {
			t.Errorf("no [%s] section", s)
		}
	}
	one := func(key string) string {
		vs := unit.values("Service", key)
		if len(vs) != 1 {
			t.Errorf("[Service] %s is set %d times, want once", key, len(vs))
			return ""
		}
		return vs[0]
	}

	want := map[string]string{
		"NoNewPrivileges":  "yes",
		"ProtectSystem":    "strict",
		"ProtectHome":      "yes",
		"PrivateTmp":       "yes",
		"Restart":          "on-failure",
		"RuntimeDirectory": "glockd",
	}
	for key, v := range want {
		if got := one(key); got != v {
			t.Errorf("[Service] %s=%s, want %s", key, got, v)
		}
	}
	if unit.values("Service", "DynamicUser") == nil && unit.values("Service", "User") == nil {
		t.Error("[Service] neither DynamicUser= nor User=: glockd would run as root")
	} else if vs := unit.values("Service", "DynamicUser"); vs != nil && vs[len(vs)-1] != "yes" {
		t.Errorf("[Service] DynamicUser=%s, want yes", vs[len(vs)-1])
	}
	// glockd reloads on SIGHUP (docs/operating.md, "Signals").
	if got := one("ExecReload"); got != "/bin/kill -HUP $MAINPID" {
		t.Errorf("[Service] ExecReload=%s, want /bin/kill -HUP $MAINPID", got)
	}

	exec := strings.Fields(one("ExecStart"))
	if len(exec) == 0 || !path.IsAbs(exec[0]) || path.Base(exec[0]) != "glockd" {
		t.Fatalf("ExecStart=%q: want the absolute path of glockd, then its flags", exec)
	}
	cfg, opts, err := parseFlags(exec[1:], io.Discard)
	if err != nil {
		t.Fatalf("glockd does not accept ExecStart's flags %q: %v", exec[1:], err)
	}
	runDir := "/run/" + one("RuntimeDirectory") + "/"
	for flag, file := range map[string]string{"-unix": cfg.UnixPath, "-pidfile": opts.pidfile} {
		if file != "" && !strings.HasPrefix(file, runDir) {
			t.Errorf("ExecStart: %s %s is outside %s, the only place the service may write", flag, file, runDir)
		}
	}

	const headroom = 1000 // listeners, the pidfile, connections being refused
	nofile, err := strconv.Atoi(one("LimitNOFILE"))
	if err != nil {
		t.Errorf("LimitNOFILE: %v", err)
	} else if nofile < cfg.MaxConns+headroom {
		t.Errorf("LimitNOFILE=%d, want at least -max-conns (%d) + %d", nofile, cfg.MaxConns, headroom)
	}
}

// TestPackagedDefaults: the packages' /etc/default/glockd gives glockd
// flags it accepts, the same as contrib/glockd.service's ExecStart (the
// packaged unit is made from it by scripts/release.sh), and the packaged
// unit reads it.
func TestPackagedDefaults(t *testing.T) {
	data, err := os.ReadFile("packaging/default")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GLOCKD_OPTS="([^"]*)"$`).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal(`packaging/default: no GLOCKD_OPTS="..." line`)
	}
	opts := strings.Fields(m[1])
	if _, _, err := parseFlags(opts, io.Discard); err != nil {
		t.Errorf("packaging/default: glockd does not accept %q: %v", opts, err)
	}
	f, err := os.Open("contrib/glockd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exec := strings.Fields(parseUnit(t, f).values("Service", "ExecStart")[0])
	if !slices.Equal(exec[1:], opts) {
		t.Errorf("packaging/default's flags %q differ from contrib/glockd.service's %q", opts, exec[1:])
	}
	script, err := os.ReadFile("scripts/release.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"EnvironmentFile=-/etc/default/glockd", "ExecStart=/usr/bin/glockd $GLOCKD_OPTS", "User=glockd"} {
		if !strings.Contains(string(script), want) {
			t.Errorf("scripts/release.sh does not make the packaged unit with %s", want)
		}
	}
}

// TestDesignFileTable: the file tables of docs/design.md name every root
// source file and every internal package, and nothing that is gone; and
// every root test file is named after the root file whose code it tests, or
// after how it runs (e2e_*: in process over real sockets; proc_*: the
// binary, etcd or network namespaces), or holds helpers (helpers*).
func TestDesignFileTable(t *testing.T) {
	data, err := os.ReadFile("docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Files\n")
	if !ok {
		t.Fatal(`docs/design.md: no "## Files"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	named := map[string]bool{}
	for line := range strings.SplitSeq(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, m := range codeSpanRE.FindAllStringSubmatch(strings.Split(line, "|")[1], -1) {
			if name := m[1]; strings.HasSuffix(name, ".go") || strings.HasPrefix(name, "internal/") {
				named[name] = true
			}
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := os.ReadDir("internal")
	if err != nil {
		t.Fatal(err)
	}
	var exist []string
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			exist = append(exist, f)
		}
	}
	for _, d := range dirs {
		if d.IsDir() {
			exist = append(exist, "internal/"+d.Name())
		}
	}
	for _, f := range exist {
		if !named[f] {
			t.Errorf("docs/design.md's file tables do not name %s", f)
		}
		delete(named, f)
	}
	for f := range named {
		t.Errorf("docs/design.md's file tables name %s, which does not exist", f)
	}

	for _, f := range files {
		stem, ok := strings.CutSuffix(f, "_test.go")
		switch {
		case !ok, strings.HasPrefix(stem, "e2e_"), strings.HasPrefix(stem, "proc_"), strings.HasPrefix(stem, "helpers"):
		default:
			if _, err := os.Stat(stem + ".go"); err != nil {
				t.Errorf("%s tests no root file and is named neither e2e_* nor proc_* (docs/design.md, \"Files\")", f)
			}
		}
	}
}
