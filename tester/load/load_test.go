package load_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/tester/internal/fake"
	"github.com/glockd/glockd/tester/load"
)

func startFake(t *testing.T, faults fake.Faults) *fake.Server {
	t.Helper()
	srv, err := fake.Start(fake.Config{Dump: true, Registry: true,
		UnixPath: filepath.Join(t.TempDir(), "s"), Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// TestCorrectFake runs every workload to an op count over each transport:
// every op is done and every reply checks out.
func TestCorrectFake(t *testing.T) {
	srv := startFake(t, fake.Faults{})
	targets := []struct{ network, addr string }{
		{"tcp", srv.TCPAddr()}, {"unix", srv.UnixPath()}, {"ws", srv.WSURL()},
	}
	for _, tg := range targets {
		for _, wl := range load.Workloads() {
			for _, depth := range []int{1, 7} {
				opts := load.Options{Network: tg.network, Addrs: []string{tg.addr}, Workload: wl,
					Conns: 4, Ops: 1001, Pipeline: depth, Keys: 3}
				res, err := load.Run(context.Background(), opts)
				if err != nil {
					t.Fatal(err)
				}
				if res.Ops != 1001 || res.Mismatches != 0 || res.ConnErrors != 0 {
					t.Errorf("%s %s pipeline %d: %+v", tg.network, wl, depth, res)
				}
				if wl == "contend" && res.Acquired == 0 {
					t.Errorf("%s contend pipeline %d: no g was granted", tg.network, depth)
				}
			}
		}
	}
}

func TestDuration(t *testing.T) {
	srv := startFake(t, fake.Faults{})
	var progress bytes.Buffer
	res, err := load.Run(context.Background(), load.Options{Network: "tcp", Addrs: []string{srv.TCPAddr()},
		Workload: "cycle", Conns: 2, Duration: 300 * time.Millisecond, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops == 0 || res.Mismatches != 0 || res.P50us <= 0 || res.MaxUs < res.P99us {
		t.Errorf("result %+v", res)
	}
	if !strings.Contains(progress.String(), "100%") {
		t.Errorf("progress %q does not end at 100%%", progress.String())
	}
}

// TestFaultyFakes checks that wrong and missing replies are counted and
// quoted.
func TestFaultyFakes(t *testing.T) {
	tests := []struct {
		name     string
		faults   fake.Faults
		workload string
		want     string // in the first errors
	}{
		{"sg count", fake.Faults{SharedCountOffByOne: true}, "shared", "2 holders with 1 connections"},
		{"dropped reply", fake.Faults{DropReply: 50}, "cycle", "connection:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFake(t, tt.faults)
			res, err := load.Run(context.Background(), load.Options{Network: "tcp", Addrs: []string{srv.TCPAddr()},
				Workload: tt.workload, Conns: 1, Ops: 200, Pipeline: 4, Timeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Mismatches+res.ConnErrors == 0 || len(res.FirstErrors) == 0 {
				t.Fatalf("no error counted: %+v", res)
			}
			if !strings.Contains(strings.Join(res.FirstErrors, "\n"), tt.want) {
				t.Errorf("first errors %q lack %q", res.FirstErrors, tt.want)
			}
		})
	}
}

func TestBadOptions(t *testing.T) {
	for _, opts := range []load.Options{
		{Network: "tcp", Addrs: []string{"127.0.0.1:1"}, Workload: "nope", Ops: 1},
		{Network: "tcp", Workload: "cycle", Ops: 1},
		{Network: "tcp", Addrs: []string{"127.0.0.1:1"}, Workload: "cycle"},
	} {
		if _, err := load.Run(context.Background(), opts); err == nil {
			t.Errorf("Run(%+v): no error", opts)
		}
	}
}

// TestSeveralAddresses: each connection takes the first address that
// accepts.
func TestSeveralAddresses(t *testing.T) {
	srv := startFake(t, fake.Faults{})
	down := filepath.Join(t.TempDir(), "nothing-here")
	res, err := load.Run(context.Background(), load.Options{Network: "unix", Addrs: []string{down, srv.UnixPath()},
		Workload: "cycle", Conns: 3, Ops: 300})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 300 || res.Mismatches != 0 || res.ConnErrors != 0 || res.SessionsLost != 0 {
		t.Errorf("result %+v", res)
	}
}
