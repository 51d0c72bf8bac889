package main

import (
	"strings"
	"testing"
)

// TestOutOfBandDuringWait: !ping and !cancel are answered at once while a
// wait is pending, before the wait's reply and those queued behind it.
func TestOutOfBandDuringWait(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder := dial(t, srv, tr)
			holder.expect("g X", "1 Lock Get Success: X\n")
			holder.expect("sg S", "1 Shared Lock Get Success: S\n")
			c := dial(t, srv, tr)
			c.expect("g mine", "1 Lock Get Success: mine\n")

			c.send("gw 60000 X\n")
			c.send("i mine\n")
			c.send("!ping\n")
			if got := c.line(); got != "!pong\n" {
				t.Fatalf("!ping during a wait: %q", got)
			}
			c.send("!cancel other\n")
			if got := c.line(); got != "!cancel 0\n" {
				t.Fatalf("!cancel of a name not waited for: %q", got)
			}
			c.send("!cancel X\n")
			for _, want := range []string{"!cancel 1\n", "0 Lock Get Timeout: X\n", "1 Lock Is Locked: mine\n"} {
				if got := c.line(); got != want {
					t.Fatalf("after !cancel: %q, want %q", got, want)
				}
			}
			// The connection and its locks live on.
			c.expect("t mine", c.do("t mine"))
			holder.expect("i mine", "1 Lock Is Locked: mine\n")
			c.expect("!cancel", "!cancel 0\n")
			c.expect("!ping", "!pong\n")

			// In the same read as the wait, and for a semaphore.
			c.send("sgw 60000 1 S\n!cancel\n")
			for _, want := range []string{"!cancel 1\n", "0 Shared Lock Get Timeout: S\n"} {
				if got := c.line(); got != want {
					t.Fatalf("sgw then !cancel: %q, want %q", got, want)
				}
			}
			// A cancelled waiter is gone from the queue: the lock passes to
			// nobody, not to it.
			holder.expect("r X", "1 Lock Release Success: X\n")
			c.expect("i X", "0 Lock Not Locked: X\n")
			if q := c.do("q"); strings.Contains(q, "!") {
				t.Fatalf("q lists an out-of-band verb:\n%s", q)
			}
		})
	}
}

// TestCancelAfterGrant: a cancel that comes after the grant finds nothing
// to cancel, and the lock is held.
func TestCancelAfterGrant(t *testing.T) {
	srv := startServer(t, nil)
	holder, c := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g X", "1 Lock Get Success: X\n")
	c.send("gw -1 X\n")
	waitersQueued(t, srv, 1, "the gw waits")
	holder.expect("r X", "1 Lock Release Success: X\n")
	if got := c.line(); got != "1 Lock Get Success: X\n" {
		t.Fatalf("grant: %q", got)
	}
	c.expect("!cancel", "!cancel 0\n")
	holder.expect("i X", "1 Lock Is Locked: X\n")
}
