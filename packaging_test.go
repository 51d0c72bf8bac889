package main

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

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
