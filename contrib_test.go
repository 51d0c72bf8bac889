package main

import (
	"bufio"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
)

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
