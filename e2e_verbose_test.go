package main

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer the manager may write while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestVerboseLogging(t *testing.T) {
	for _, verbose := range []bool{true, false} {
		var logs syncBuffer
		srv := startServer(t, func(c *Config) {
			c.Verbose = verbose
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		a := dial(t, srv, "tcp")
		b := dial(t, srv, "tcp")
		a.expect("g kept", "1 Lock Get Success: kept\n")
		a.expect("g dropped", "1 Lock Get Success: dropped\n")
		a.expect("r dropped", "1 Lock Release Success: dropped\n")
		a.expect("sg s", "1 Shared Lock Get Success: s\n")
		a.close()
		eventually(t, "orphaned", func() bool { return b.stat("locks") == 0 })
		events := []string{
			`msg=connect conn=` + a.name,
			`msg=acquire conn=` + a.name + ` lock=kept`,
			`msg=release conn=` + a.name + ` lock=dropped`,
			`msg="acquire shared" conn=` + a.name + ` lock=s holders=1`,
			`msg=disconnect conn=` + a.name + ` locks=1 shared_locks=1`,
			`msg=orphan conn=` + a.name + ` lock=kept`,
			`msg="orphan shared" conn=` + a.name + ` lock=s`,
		}
		got := logs.String()
		for _, e := range events {
			if strings.Contains(got, e) != verbose {
				t.Errorf("verbose=%v: log has %q: %v; log:\n%s", verbose, e, !verbose, got)
			}
		}
	}
}

// TestVerboseLogsRegisteredName: once a connection has registered a name
// with iam, -verbose logs it beside the address, in text and in JSON.
func TestVerboseLogsRegisteredName(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var logs syncBuffer
		cfg, _, err := parseFlags([]string{"-verbose", "-log-format", format}, &logs)
		if err != nil {
			t.Fatal(err)
		}
		srv := startServer(t, func(c *Config) { c.Verbose, c.Logger = true, cfg.Logger })
		a := dial(t, srv, "tcp")
		a.expect("iam worker-1", "1 ok\n")
		a.expect("g job", "1 Lock Get Success: job\n")
		a.close()
		want := `msg=acquire conn=` + a.name + ` name=worker-1 lock=job`
		if format == "json" {
			want = `"msg":"acquire","conn":"` + a.name + `","name":"worker-1","lock":"job"`
		}
		eventually(t, "disconnect logged", func() bool { return strings.Contains(logs.String(), "disconnect") })
		if got := logs.String(); !strings.Contains(got, want) {
			t.Errorf("-log-format %s: log lacks %s:\n%s", format, want, got)
		}
	}
}
