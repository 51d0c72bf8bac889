package main

import (
	"strings"
	"testing"
)

// TestQueueChargedWithItsBatch: the lines that come in the same read as the
// gw they follow are queued behind it and charged to -max-buffered at once,
// not only when more is read during the wait.
func TestQueueChargedWithItsBatch(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	holder.expect("g busy", "1 Lock Get Success: busy\n")
	waiter := dial(t, srv, "tcp")
	waiter.send("gw -1 busy\n" + strings.Repeat("t queued\n", 50))
	want := int64(50 * (len("t queued") + queuedLineCost))
	eventually(t, "the queued lines charged", func() bool { return srv.budget.Used.Load() == want })
	holder.expect("r busy", "1 Lock Release Success: busy\n")
	if l := waiter.line(); !strings.HasPrefix(l, "1 Lock Get Success: busy") {
		t.Fatalf("the gw: %q", l)
	}
	for range 50 {
		if l := waiter.line(); !strings.Contains(l, "queued") {
			t.Fatalf("a queued line's reply: %q", l)
		}
	}
	eventually(t, "the charge released", func() bool { return srv.budget.Used.Load() == 0 })
}
