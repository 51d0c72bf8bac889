package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/glockd/glockd/tester/internal/fake"
	"github.com/glockd/glockd/tester/load"
)

func startFake(t *testing.T, cfg fake.Config) *fake.Server {
	t.Helper()
	cfg.UnixPath = filepath.Join(t.TempDir(), "s")
	srv, err := fake.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func TestRun(t *testing.T) {
	good := startFake(t, fake.Config{Dump: true, Registry: true})
	bare := startFake(t, fake.Config{})
	faulty := startFake(t, fake.Config{Dump: true, Registry: true, Faults: fake.Faults{SharedCountOffByOne: true}})
	tests := []struct {
		name   string
		args   []string
		status int
		out    string // a regexp the output must match
	}{
		{"every transport", []string{"-host", good.TCPAddr(), "-unix", good.UnixPath(), "-ws", good.WSURL(), "-ext"},
			0, `(?m)^# ws .*\n(.*\n)*ok  transport/ws-one-message-per-line\n(.*\n)*^\d+ passed, 0 failed\n\z`},
		{"disabled modes", []string{"-host", bare.TCPAddr(), "-dump=false", "-registry=false"},
			0, `(?m)^ok  dump/disabled\n(.*\n)*^\d+ passed, 0 failed\n\z`},
		{"wrong modes", []string{"-host", bare.TCPAddr(), "-run", "registry/me-iam"},
			1, `(?m)^FAIL registry/me-iam: .*\n0 passed, 1 failed\n\z`},
		{"faulty server", []string{"-host", faulty.TCPAddr(), "-run", "shared/"},
			1, `FAIL shared/counts: A sg: got 2, want 1\n(.*\n)*0 passed, 2 failed\n\z`},
		{"bad flag", []string{"-nope"}, 2, `^\z`},
		{"bad regexp", []string{"-host", good.TCPAddr(), "-run", "("}, 1, `FAIL options`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(context.Background(), tt.args, &stdout, &stderr)
			if status != tt.status {
				t.Errorf("status %d, want %d; stderr:\n%s", status, tt.status, stderr.String())
			}
			if !regexp.MustCompile(tt.out).MatchString(stdout.String()) {
				t.Errorf("output does not match %q:\n%s", tt.out, stdout.String())
			}
		})
	}
}

func TestRunLoad(t *testing.T) {
	srv := startFake(t, fake.Config{Dump: true, Registry: true})
	var stdout, stderr bytes.Buffer
	args := []string{"load", "-host", srv.TCPAddr(), "-c", "3", "-n", "300", "-workload", "contend", "-pipeline", "4", "-json"}
	if status := run(context.Background(), args, &stdout, &stderr); status != 0 {
		t.Fatalf("status %d; stderr:\n%s", status, stderr.String())
	}
	var res load.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("output is not a JSON result: %v\n%s", err, stdout.String())
	}
	if res.Ops != 300 || res.Mismatches != 0 || res.Workload != "contend" {
		t.Errorf("result %+v", res)
	}

	stdout.Reset()
	args = []string{"load", "-ws", srv.WSURL(), "-c", "2", "-n", "100"}
	if status := run(context.Background(), args, &stdout, &stderr); status != 0 {
		t.Fatalf("status %d; stderr:\n%s", status, stderr.String())
	}
	if !strings.Contains(stdout.String(), "mismatches   0, connection errors 0") {
		t.Errorf("text output:\n%s", stdout.String())
	}
	if status := run(context.Background(), []string{"load", "-workload", "nope", "-host", srv.TCPAddr()}, &stdout, &stderr); status != 1 {
		t.Errorf("unknown workload: status %d, want 1", status)
	}
}

// TestServerDown: a server that cannot be reached gets one line naming the
// address and exit status 2, not a failure per check.
func TestServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	downSock := filepath.Join(t.TempDir(), "none.sock")
	good := startFake(t, fake.Config{Dump: true, Registry: true})
	tests := []struct {
		name string
		args []string
		want string // all of stderr
	}{
		{"tcp", []string{"-host", down}, "tester: cannot connect to " + down + ": connect: connection refused\n"},
		{"fresh", []string{"-host", down, "-fresh", "-ext"}, "tester: cannot connect to " + down + ": connect: connection refused\n"},
		{"unix", []string{"-unix", downSock}, "tester: cannot connect to " + downSock + ": connect: no such file or directory\n"},
		{"ws", []string{"-ws", "ws://" + down + "/", "-run", "transport/"}, "tester: cannot connect to ws://" + down + "/: connect: connection refused\n"},
		{"second target", []string{"-host", good.TCPAddr(), "-unix", downSock, "-run", "exclusive/get"}, "tester: cannot connect to " + downSock + ": connect: no such file or directory\n"},
		{"load", []string{"load", "-host", down, "-n", "10"}, "tester load: cannot connect to " + down + ": connect: connection refused\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if status := run(context.Background(), tt.args, &stdout, &stderr); status != 2 {
				t.Errorf("status %d, want 2", status)
			}
			if stderr.String() != tt.want {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.want)
			}
			if strings.Contains(stdout.String(), "FAIL") {
				t.Errorf("stdout reports failed checks:\n%s", stdout.String())
			}
		})
	}
}
