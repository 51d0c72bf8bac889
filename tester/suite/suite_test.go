package suite_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/tester/internal/fake"
	"github.com/glockd/glockd/tester/suite"
)

// startFake starts a fake glockd for one test.
func startFake(t *testing.T, cfg fake.Config) *fake.Server {
	t.Helper()
	cfg.UnixPath = filepath.Join(t.TempDir(), "glockd.sock")
	srv, err := fake.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func target(srv *fake.Server, network string) string {
	switch network {
	case "unix":
		return srv.UnixPath()
	case "ws":
		return srv.WSURL()
	}
	return srv.TCPAddr()
}

func run(t *testing.T, opts suite.Options) (out string, passed, failed int) {
	t.Helper()
	var buf bytes.Buffer
	opts.Out = &buf
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	passed, failed = suite.Run(context.Background(), opts)
	return buf.String(), passed, failed
}

// TestCorrectFake runs the whole suite against a fake that follows the
// protocol, in every mode and over every transport: every check passes.
func TestCorrectFake(t *testing.T) {
	for _, network := range []string{"tcp", "unix", "ws"} {
		for _, mode := range []struct {
			name           string
			dump, registry bool
		}{
			{"default", true, true},
			{"no-dump", false, true},
			{"no-registry", true, false},
			{"neither", false, false},
		} {
			t.Run(network+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				srv := startFake(t, fake.Config{Dump: mode.dump, Registry: mode.registry})
				out, passed, failed := run(t, suite.Options{
					Network: network, Addr: target(srv, network),
					Dump: mode.dump, Registry: mode.registry, Ext: true, Fresh: true,
				})
				if failed != 0 || passed == 0 {
					t.Errorf("%d passed, %d failed:\n%s", passed, failed, out)
				}
			})
		}
	}
}

// TestFaultyFakes runs the suite against fakes with one fault each: the
// check that covers the fault must fail, by name.
func TestFaultyFakes(t *testing.T) {
	tests := []struct {
		name   string
		faults fake.Faults
		run    string // the checks to run, to keep the test short
		fails  []string
	}{
		{"sg-count-off-by-one", fake.Faults{SharedCountOffByOne: true}, "shared/", []string{"FAIL shared/counts: A sg: got 2, want 1"}},
		{"no-orphan-release", fake.Faults{NoOrphans: true}, "orphan/", []string{"FAIL orphan/exclusive:", "FAIL orphan/shared:"}},
		{"dropped-pipelined-reply", fake.Faults{DropReply: 5000}, "pipeline/10000", []string{"FAIL pipeline/10000: reply 5000 of 10000:"}},
		{"out-of-band-queued", fake.Faults{QueueOutOfBand: true}, "ext/oob-", []string{
			"FAIL ext/oob-ping: B: !ping while B's gw -1 waits (answered at once): no reply within 1s",
			"FAIL ext/oob-cancel: B: !cancel of a name B does not wait for: no reply within 1s"}},
		{"cancel-reply-late", fake.Faults{CancelReplyLate: true}, "ext/oob-cancel", []string{
			`FAIL ext/oob-cancel: B: !cancel NAME of B's gw -1 (answered at once): got "0 Lock Get Timeout: `}},
		{"end-of-input-drops-replies", fake.Faults{EOFDropsReplies: true}, "ext/gw-end-of-input", []string{
			`FAIL ext/gw-end-of-input: B gw -1, i, g, then end of input: got "" before the close`}},
		{"dl-no-waiters", fake.Faults{DetailNoWaiters: true}, "ext/dl", []string{"FAIL ext/dl: dl: line 1 is "}},
		{"async-in-order", fake.Faults{AsyncInOrder: true}, "ext/async-gw", []string{
			"FAIL ext/async-gw: B: i sent after B's !gw 60000 on A's lock (answered at once, not after the wait): no reply within 1s"}},
		{"async-cancel-quiet", fake.Faults{AsyncCancelQuiet: true}, "ext/async-cancel", []string{
			`FAIL ext/async-cancel: B: the cancelled !gw's 0 line, after "!cancel 1": no reply within 1s`}},
		{"async-wrong-token", fake.Faults{AsyncWrongToken: true}, "ext/async-gw", []string{
			"FAIL ext/async-gw: B: B t after the grant of its !gw (the token the grant said): got "}},
		{"async-one-at-a-time", fake.Faults{AsyncOneAtATime: true}, "ext/async-many", []string{
			`FAIL ext/async-many: B: i after B's three !gw -1 (all three pending, none answered): got "!gw 0 0 `}},
		{"no-deadlocks", fake.Faults{NoDeadlocks: true}, "ext/deadlock", []string{
			`FAIL ext/deadlock: B: "gw -1 `,
			`FAIL ext/deadlock-semaphore: C: "sgw -1 2 `,
			`FAIL ext/deadlock-async: B: B !gw -1 `}},
		{"dw-newest-first", fake.Faults{WaitersNewestFirst: true}, "ext/dw", []string{"FAIL ext/dw: dw "}},
		{"async-deadlock-as-timeout", fake.Faults{AsyncDeadlockAsTimeout: true}, "ext/deadlock-async", []string{
			`FAIL ext/deadlock-async: B: B !gw -1 `}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startFake(t, fake.Config{Dump: true, Registry: true, Faults: tt.faults})
			out, _, failed := run(t, suite.Options{
				Network: "tcp", Addr: srv.TCPAddr(), Dump: true, Registry: true, Ext: true,
				Run: tt.run, Timeout: 2 * time.Second,
			})
			t.Logf("the suite's output:\n%s", out)
			if failed == 0 {
				t.Fatal("no check failed")
			}
			for _, want := range tt.fails {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestServerDown: when the first check cannot connect, RunChecks stops with
// a ConnectError naming the address once, and Run reports one failure.
func TestServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	opts := suite.Options{Network: "tcp", Addr: down, Dump: true, Registry: true, Ext: true, Timeout: 2 * time.Second}

	passed, failed, err := suite.RunChecks(context.Background(), opts)
	var ce *suite.ConnectError
	if !errors.As(err, &ce) || passed != 0 || failed != 0 {
		t.Fatalf("RunChecks: %d passed, %d failed, error %v; want 0, 0 and a *ConnectError", passed, failed, err)
	}
	if want := "cannot connect to " + down + ": connect: connection refused"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	out, passed, failed := run(t, opts)
	if want := "FAIL connect: cannot connect to " + down + ": connect: connection refused\n"; out != want || passed != 0 || failed != 1 {
		t.Errorf("Run: %d passed, %d failed, output %q; want 0, 1 and %q", passed, failed, out, want)
	}
}
