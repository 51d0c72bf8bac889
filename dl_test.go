package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDetailedListing: dl shows owner, token, hold time and waiters of each
// exclusive lock, and each shared holder with its hold time, holders and
// waiters, sorted by lock; dl NAME filters; -dump=false disables it.
func TestDetailedListing(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			a, b, w := dial(t, srv, tr), dial(t, srv, tr), dial(t, srv, tr)
			a.expect("iam alice smith", "1 ok\n")
			a.expect("g X", "1 Lock Get Success: X\n")
			tok := strings.Fields(a.do("t X"))[0]
			a.expect("sg S", "1 Shared Lock Get Success: S\n")
			b.expect("sg S", "2 Shared Lock Get Success: S\n")
			w.send("gw -1 X\n")
			eventually(t, "the waiter queued", func() bool {
				s, _ := srv.manager.statsSnapshot(time.Second)
				return s.waiters == 1
			})
			time.Sleep(30 * time.Millisecond)
			got := a.do("dl")
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("dl: %q", got)
			}
			re := regexp.MustCompile(`^X: alice smith token=` + tok + ` held_ms=(\d+) waiters=1$`)
			m := re.FindStringSubmatch(lines[2])
			if m == nil {
				t.Fatalf("dl exclusive line %q", lines[2])
			}
			if ms, _ := strconv.Atoi(m[1]); ms < 30 || ms > 60_000 {
				t.Fatalf("held_ms %d", ms)
			}
			if !regexp.MustCompile(`^S: alice smith shared held_ms=\d+ holders=2 waiters=0$`).MatchString(lines[0]) ||
				!regexp.MustCompile(`^S: `+regexp.QuoteMeta(b.name)+` shared held_ms=\d+ holders=2 waiters=0$`).MatchString(lines[1]) {
				t.Fatalf("dl shared lines %q", lines[:2])
			}
			if got := a.do("dl S"); strings.Count(got, "\n") != 2 || strings.Contains(got, "X:") {
				t.Fatalf("dl S: %q", got)
			}
			a.expect("dl nothing", "")
			a.expect("r X", "1 Lock Release Success: X\n")
			if got := w.line(); got != "1 Lock Get Success: X\n" {
				t.Fatalf("waiter: %q", got)
			}
		})
	}
	srv := startServer(t, func(c *Config) { c.Dump = false })
	dial(t, srv, "tcp").expect("dl", "0 disabled\n")
}
