package main

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
)

// asyncToken parses "!gw 1 TOKEN NAME\n" for name and returns TOKEN.
func asyncToken(t testing.TB, line, name string) uint64 {
	t.Helper()
	f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
	if len(f) != 4 || f[0] != "!gw" || f[1] != "1" || f[3] != name {
		t.Fatalf("got %q, want a grant of %q", line, name)
	}
	n, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("token in %q", line)
	}
	return n
}

// TestAsyncWait: the commands after a !gw are answered at once; the release
// of the lock delivers the grant, out of band, with the lock's token.
func TestAsyncWait(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder, c := dial(t, srv, tr), dial(t, srv, tr)
			holder.expect("g A", "1 Lock Get Success: A\n")

			start := time.Now()
			c.send("!gw 3000 A\n")
			c.send("i B\n")
			if got := c.line(); got != "0 Lock Not Locked: B\n" {
				t.Fatalf("after !gw: %q", got)
			}
			// "At once": well before the wait's 3 s, with room for a loaded
			// machine.
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Fatalf("i answered after %v behind a !gw", d)
			}
			t.Logf("i B answered %v after !gw 3000 A", time.Since(start))
			waitersQueued(t, srv, 1, "the !gw waits")
			holder.expect("r A", "1 Lock Release Success: A\n")
			token := asyncToken(t, c.line(), "A")
			if got := tokenOf(t, c, "A"); got != token {
				t.Fatalf("t A says %d, the grant said %d", got, token)
			}
			holder.expect("i A", "1 Lock Is Locked: A\n")
		})
	}
}

// TestAsyncWaitTimeout: a wait on a held lock ends with the 0 line after
// its MS.
func TestAsyncWaitTimeout(t *testing.T) {
	srv := startServer(t, nil)
	holder, c := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g A", "1 Lock Get Success: A\n")
	holder.expect("sg S", "1 Shared Lock Get Success: S\n")
	start := time.Now()
	c.send("!gw 300 A\n")
	if got := c.line(); got != "!gw 0 0 A\n" {
		t.Fatalf("timeout: %q", got)
	}
	d := time.Since(start)
	t.Logf("!gw 300 A timed out after %v", d)
	// The issue asks 300 ± 50 ms; the bound here is wider for a loaded CI
	// machine, and the measured figure is logged.
	if d < 290*time.Millisecond || d > 2*time.Second {
		t.Fatalf("!gw 300 ended after %v", d)
	}
	c.send("!sgw 100 1 S\n")
	if got := c.line(); got != "!sgw 0 S\n" {
		t.Fatalf("sgw timeout: %q", got)
	}
	if n := waiters(t, srv); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
	holder.expect("r A", "1 Lock Release Success: A\n")
	holder.expect("i A", "0 Lock Not Locked: A\n")
}

// TestAsyncWaitCancel: !cancel NAME answers !cancel 1, then the wait's 0
// line; the cancelled waiter is gone from the queue.
func TestAsyncWaitCancel(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder, c := dial(t, srv, tr), dial(t, srv, tr)
			holder.expect("g A", "1 Lock Get Success: A\n")
			holder.expect("sg S", "1 Shared Lock Get Success: S\n")
			c.send("!gw -1 A\n")
			c.send("!sgw -1 1 S\n")
			waitersQueued(t, srv, 2, "both wait")
			c.send("!cancel A\n")
			for _, want := range []string{"!cancel 1\n", "!gw 0 0 A\n"} {
				if got := c.line(); got != want {
					t.Fatalf("after !cancel A: %q, want %q", got, want)
				}
			}
			holder.expect("r A", "1 Lock Release Success: A\n")
			holder.expect("i A", "0 Lock Not Locked: A\n")
			// !cancel alone gives up every wait.
			c.send("!cancel\n")
			for _, want := range []string{"!cancel 1\n", "!sgw 0 S\n"} {
				if got := c.line(); got != want {
					t.Fatalf("after !cancel: %q, want %q", got, want)
				}
			}
			c.expect("!cancel S", "!cancel 0\n")
			if n := waiters(t, srv); n != 0 {
				t.Fatalf("%d waiters left", n)
			}
		})
	}
}

// TestAsyncWaitAtOnce: a free lock is granted at once with the same line;
// a lock already held is granted again; a malformed or MS 0 wait on a held
// lock is refused with the 0 line. On a websocket, each outcome is one
// message, and a queued wait sends none.
func TestAsyncWaitAtOnce(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder, c := dial(t, srv, tr), dial(t, srv, tr)
			c.send("!gw 0 A\n")
			token := asyncToken(t, c.line(), "A")
			c.send("!gw -1 A\n")
			if again := asyncToken(t, c.line(), "A"); again != token {
				t.Fatalf("a held lock again: token %d, was %d", again, token)
			}
			holder.expect("d A", "A: "+c.name+"\n")
			c.send("!sgw 0 2 S\n")
			if got := c.line(); got != "!sgw 1 S\n" {
				t.Fatalf("free semaphore: %q", got)
			}
			holder.send("!sgw 0 2 S\n")
			if got := holder.line(); got != "!sgw 2 S\n" {
				t.Fatalf("second holder: %q", got)
			}
			c.expect("g two sp", "1 Lock Get Success: two sp\n")
			for _, step := range []struct{ cmd, want string }{
				{"!gw 0 A", "!gw 0 0 A\n"},
				{"!gw x A", "!gw 0 0 A\n"},
				{"!gw -2 A", "!gw 0 0 A\n"},
				{"!sgw 0 2 S", "!sgw 2 S\n"}, // already held
				{"!sgw 0 0 T", "!sgw 0 T\n"}, // MAX below 1
				{"!sgw 50 2 S2", "!sgw 1 S2\n"},
				{"!gw 0 two  sp", "!gw 0 0 two sp\n"},
			} {
				holder.send(step.cmd + "\n")
				if got := holder.line(); got != step.want {
					t.Fatalf("%s: %q, want %q", step.cmd, got, step.want)
				}
			}
			// A queued wait answers nothing at once: the next reply is i's.
			holder.send("!gw -1 A\n")
			holder.send("i A\n")
			if got := holder.line(); got != "1 Lock Is Locked: A\n" {
				t.Fatalf("after a queued !gw: %q", got)
			}
			c.expect("r A", "1 Lock Release Success: A\n")
			asyncToken(t, holder.line(), "A")
		})
	}
}

// TestAsyncWaitLimits: many waits pending on one connection, up to
// -max-waits-per-conn; past it, and for a second wait on the same name, the
// 0 line at once. FIFO with the other waiters holds.
func TestAsyncWaitLimits(t *testing.T) {
	srv := startServer(t, func(cfg *Config) { cfg.MaxWaitsPerConn = 3 })
	holder, c, other := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	for _, n := range []string{"A", "B", "C", "D"} {
		holder.expect("g "+n, "1 Lock Get Success: "+n+"\n")
	}
	// other queues on A first, with a gw in order.
	other.send("gw -1 A\n")
	waitersQueued(t, srv, 1, "other waits for A")
	c.send("!gw -1 A\n!gw -1 B\n!gw -1 C\n")
	waitersQueued(t, srv, 4, "c's three waits")
	c.send("!gw -1 D\n")
	if got := c.line(); got != "!gw 0 0 D\n" {
		t.Fatalf("past the limit: %q", got)
	}
	c.send("!gw -1 A\n")
	if got := c.line(); got != "!gw 0 0 A\n" {
		t.Fatalf("a second wait on A: %q", got)
	}
	// A gw in order on a name c waits for asynchronously is refused too.
	c.send("gw 10000 B\n")
	if got := c.line(); got != "0 Lock Get Timeout: B\n" {
		t.Fatalf("gw behind !gw on B: %q", got)
	}
	if dl := c.do("dl A"); !strings.HasPrefix(dl, "A: "+holder.name+" ") || !strings.HasSuffix(dl, " waiters=2\n") {
		t.Fatalf("dl A: %q, want A's two waiters", dl)
	}
	holder.expect("r A", "1 Lock Release Success: A\n")
	if got := other.line(); got != "1 Lock Get Success: A\n" {
		t.Fatalf("the older waiter: %q", got)
	}
	other.expect("r A", "1 Lock Release Success: A\n")
	asyncToken(t, c.line(), "A")
	holder.expect("r B", "1 Lock Release Success: B\n")
	asyncToken(t, c.line(), "B")
	// Room again: D queues now.
	c.send("!gw -1 D\n")
	waitersQueued(t, srv, 2, "C and D wait")
	holder.expect("r D", "1 Lock Release Success: D\n")
	asyncToken(t, c.line(), "D")
}

// TestAsyncWaitEnd: the waits end with the connection: on a close they
// leave the queue at once; on the end of input their 0 lines are written
// before the connection closes.
func TestAsyncWaitEnd(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	holder.expect("g A", "1 Lock Get Success: A\n")
	holder.expect("g B", "1 Lock Get Success: B\n")
	holder.expect("sgw 0 1 B", "1 Shared Lock Get Success: B\n")

	c := dial(t, srv, "tcp")
	c.send("!gw -1 A\n!gw -1 B\n")
	waitersQueued(t, srv, 2, "c waits")
	c.close()
	waitersQueued(t, srv, 0, "c's waits gone with it")
	holder.expect("r A", "1 Lock Release Success: A\n")
	holder.expect("i A", "0 Lock Not Locked: A\n")

	d := dial(t, srv, "tcp")
	d.send("!gw -1 B\n!sgw -1 1 B\n!gw 0 free\n")
	asyncToken(t, d.line(), "free")
	d.nc.(*net.TCPConn).CloseWrite()
	d.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(d.r)
	if err != nil || string(rest) != "!gw 0 0 B\n!sgw 0 B\n" {
		t.Fatalf("after the end of input: %q, %v", rest, err)
	}
	waitersQueued(t, srv, 0, "d's waits gone")
	holder.expect("r B", "1 Lock Release Success: B\n")
	holder.expect("i B", "0 Lock Not Locked: B\n")
}

// TestAsyncWaitSemaphore: !sgw queues in FIFO order with sgw, and reports
// the holders including itself.
func TestAsyncWaitSemaphore(t *testing.T) {
	srv := startServer(t, nil)
	a, b, c := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	a.expect("sgw 0 2 S", "1 Shared Lock Get Success: S\n")
	b.expect("sgw 0 2 S", "2 Shared Lock Get Success: S\n")
	c.send("!sgw -1 2 S\n")
	waitersQueued(t, srv, 1, "c waits")
	a.send("sgw -1 2 S\n") // held already: at once
	if got := a.line(); got != "2 Shared Lock Get Success: S\n" {
		t.Fatalf("a again: %q", got)
	}
	a.expect("sr S", "1 Shared Lock Release Success: S\n")
	if got := c.line(); got != "!sgw 2 S\n" {
		t.Fatalf("c's grant: %q", got)
	}
	// A connection that takes the lock with sg while its !sgw waits ends
	// that wait as granted.
	b.expect("sr S", "1 Shared Lock Release Success: S\n")
	a.expect("sgw 0 1 T", "1 Shared Lock Get Success: T\n")
	b.send("!sgw -1 1 T\n")
	waitersQueued(t, srv, 1, "b waits for T")
	b.expect("sg T", "2 Shared Lock Get Success: T\n")
	if got := b.line(); got != "!sgw 2 T\n" {
		t.Fatalf("b's grant: %q", got)
	}
	waitersQueued(t, srv, 0, "b's !sgw ended")
	a.expect("sr T", "1 Shared Lock Release Success: T\n")
	a.expect("sd T", "T: "+b.name+"\n")
}

// TestAsyncWaitBehindGW: a !gw after a gw in order waits its turn, like
// any command; a gw after a pending !gw is not held back by it.
func TestAsyncWaitBehindGW(t *testing.T) {
	srv := startServer(t, nil)
	holder, c := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g A", "1 Lock Get Success: A\n")
	holder.expect("g B", "1 Lock Get Success: B\n")
	c.send("!gw -1 A\ngw -1 B\ni A\n")
	waitersQueued(t, srv, 2, "both wait")
	holder.expect("r B", "1 Lock Release Success: B\n")
	for _, want := range []string{"1 Lock Get Success: B\n", "1 Lock Is Locked: A\n"} {
		if got := c.line(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	holder.expect("r A", "1 Lock Release Success: A\n")
	asyncToken(t, c.line(), "A")

	c.send("gw -1 A\n!gw -1 X\n")
	if got := c.line(); got != "1 Lock Get Success: A\n" {
		t.Fatalf("gw of a held lock: %q", got)
	}
	asyncToken(t, c.line(), "X")
}

// TestAsyncWaitStats: q counts !gw and !sgw under their own keys, and the
// original's keys stay exact; dl counts the asynchronous waiters.
func TestAsyncWaitStats(t *testing.T) {
	srv := startServer(t, nil)
	holder, c := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g A", "1 Lock Get Success: A\n")
	c.send("!gw -1 A\n!sgw 0 1 S\n")
	if got := c.line(); got != "!sgw 1 S\n" {
		t.Fatalf("!sgw: %q", got)
	}
	q := c.do("q")
	for _, want := range []string{"command_!gw: 1\n", "command_!sgw: 1\n", "command_g: 1\n", "command_sg: 0\n"} {
		if !strings.Contains(q, want) {
			t.Fatalf("q lacks %q:\n%s", want, q)
		}
	}
	for _, unwanted := range []string{"command_gw", "command_sgw:", "!cancel", "!ping"} {
		if strings.Contains(q, unwanted) {
			t.Fatalf("q has %q:\n%s", unwanted, q)
		}
	}
	// The original's 16, !gw's and !sgw's, and me's (the test's dial).
	if got := strings.Count(q, "\n"); got != 19 {
		t.Fatalf("q has %d lines, want 19:\n%s", got, q)
	}
	if dl := c.do("dl A"); !strings.HasSuffix(dl, " waiters=1\n") {
		t.Fatalf("dl A: %q", dl)
	}
}

// TestAsyncWaitTooManyLocks: a connection at -max-locks-per-conn is refused
// at once, and a waiter that reached it meanwhile is passed over.
func TestAsyncWaitTooManyLocks(t *testing.T) {
	srv := startServer(t, func(cfg *Config) { cfg.MaxLocksPerConn = 1 })
	holder, c, other := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g A", "1 Lock Get Success: A\n")
	other.expect("g B", "1 Lock Get Success: B\n")
	c.send("!gw -1 A\n!gw -1 B\n")
	waitersQueued(t, srv, 2, "c waits twice")
	holder.expect("r A", "1 Lock Release Success: A\n")
	asyncToken(t, c.line(), "A")
	// c is at its limit: B passes it over, to nobody.
	other.expect("r B", "1 Lock Release Success: B\n")
	if got := c.line(); got != "!gw 0 0 B\n" {
		t.Fatalf("over the limit: %q", got)
	}
	other.expect("i B", "0 Lock Not Locked: B\n")
	c.send("!gw -1 C\n")
	if got := c.line(); got != "!gw 0 0 C\n" {
		t.Fatalf("at the limit: %q", got)
	}
}

// TestAsyncGrantAfterLeadership: a grant decided before the node's term
// ended is not written after it (as for gw): the connection closes.
func TestAsyncGrantAfterLeadership(t *testing.T) {
	l := ha.NewLeadership()
	tm := testTerm(l, 1<<40)
	l.Publish(tm)
	srv := startLeaderServer(t, l)
	holder, w := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g x", "1 Lock Get Success: x\n")
	w.send("!gw -1 x\n")
	waitersQueued(t, srv, 1, "w waits")

	// Hold w's connection, as a pause between the grant and its write.
	var wc *conn
	srv.mu.Lock()
	for c := range srv.conns {
		if c.state.name == w.name {
			wc = c
		}
	}
	srv.mu.Unlock()
	wc.mu.Lock()
	holder.expect("r x", "1 Lock Release Success: x\n")
	eventually(t, "x granted to w", func() bool {
		s, _ := srv.manager.askStats(time.Second)
		return s.waiters == 0 && s.locks == 1
	})
	tm.SetDeadline(time.Time{})
	wc.mu.Unlock()
	w.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(w.r); err != nil || len(rest) > 0 {
		t.Fatalf("after the term: %q, %v; want the connection closed with nothing", rest, err)
	}
}
