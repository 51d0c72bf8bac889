package main

// Probes an attacker would try: input queued behind a wait, replies a client
// never reads, and connections that end in the middle of it all. Each test
// here failed on the code before the fix it guards.

import (
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// flood sends n bytes of blank lines in pieces a transport accepts: for a
// websocket, messages under the message limit. A write that fails because
// the server has already closed the connection ends the flood.
func flood(c *client, n int) {
	const piece = 256 << 10
	chunk := strings.Repeat("\n", piece)
	for sent := 0; sent < n; sent += piece {
		if c.write(chunk) != nil {
			return
		}
	}
}

// TestEndWhileQueueFull: a connection that queues more than the limit behind
// a wait and then ends loses its locks, and the lock it waited for is never
// granted to it.
func TestEndWhileQueueFull(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder := dial(t, srv, tr)
			holder.expect("g X", "1 Lock Get Success: X\n")
			attacker := dial(t, srv, tr)
			attacker.expect("g L1", "1 Lock Get Success: L1\n")
			attacker.send("gw -1 X\n")
			flood(attacker, 2<<20)
			attacker.close()

			probe := dial(t, srv, tr)
			eventually(t, "L1 released", func() bool { return probe.do("i L1") == "0 Lock Not Locked: L1\n" })
			holder.expect("r X", "1 Lock Release Success: X\n")
			probe.expect("i X", "0 Lock Not Locked: X\n")
		})
	}
}

// TestEndOfInputWhileWaiting: a client that stops sending (close or
// shutdown of its write side) while a wait is pending gets the wait ended at
// once, with its reply and the replies of what it queued behind it, and
// then its connection ends and its locks are released.
func TestEndOfInputWhileWaiting(t *testing.T) {
	for _, tr := range []string{"tcp", "unix"} {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder := dial(t, srv, tr)
			holder.expect("g X", "1 Lock Get Success: X\n")
			c := dial(t, srv, tr)
			c.expect("g L1", "1 Lock Get Success: L1\n")
			c.send("gw 300 X\ni A\ngw -1 X\nt L1\n")
			c.nc.(interface{ CloseWrite() error }).CloseWrite()
			c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			rest, err := io.ReadAll(c.r)
			if err != nil {
				t.Fatalf("read after half-close: %v", err)
			}
			want := "0 Lock Get Timeout: X\n0 Lock Not Locked: A\n0 Lock Get Timeout: X\n"
			if got := string(rest); !strings.HasPrefix(got, want) || !strings.Contains(got, " Lock Token: L1\n") {
				t.Fatalf("after half-close: got %q, want %q and L1's token", got, want)
			}
			eventually(t, "L1 released", func() bool { return holder.do("i L1") == "0 Lock Not Locked: L1\n" })
			holder.expect("r X", "1 Lock Release Success: X\n")
			holder.expect("i X", "0 Lock Not Locked: X\n")
		})
	}
}

// TestCloseWithDeadlockedWaiters: two clients that wait for each other's
// locks with a full queue behind each wait do not hold up a shutdown.
func TestCloseWithDeadlockedWaiters(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			a, b := dial(t, srv, tr), dial(t, srv, tr)
			a.expect("g A", "1 Lock Get Success: A\n")
			b.expect("g B", "1 Lock Get Success: B\n")
			a.send("gw -1 B\n")
			b.send("gw -1 A\n")
			flood(a, 2<<20)
			flood(b, 2<<20)
			t.Logf("closed in %v", closeWithin(t, srv, 2*time.Second))
		})
	}
}

// allocatedWhile reports how many bytes the process allocated while fn ran
// and the server had a moment to go on after it.
func allocatedWhile(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	time.Sleep(time.Second)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestRepliesBounded: a client that sends many dumps and never reads costs
// the server a bounded amount, with and without a wait in front of them.
func TestRepliesBounded(t *testing.T) {
	const bound = 48 << 20
	for _, tr := range []string{"tcp", "websocket"} {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			owner := dial(t, srv, "tcp")
			var locks strings.Builder
			for i := range 2000 {
				locks.WriteString("g lock-with-a-longish-name-" + strings.Repeat("x", i%7) + strconv.Itoa(i) + "\n")
			}
			owner.do(strings.TrimSuffix(locks.String(), "\n"))
			eventually(t, "2000 locks", func() bool { return owner.stat("locks") == 2000 })

			// A lock name per round: the first round's holder may not be
			// released yet when the second begins.
			for i, prefix := range []string{"", "gw 300 X1\n"} {
				holder := dial(t, srv, tr)
				x := "X" + strconv.Itoa(i)
				holder.expect("g "+x, "1 Lock Get Success: "+x+"\n")
				c := dial(t, srv, tr)
				n := allocatedWhile(func() {
					c.send(prefix + strings.Repeat("d\n", 8000))
				})
				t.Logf("%q + 8000 d: %d MB allocated", prefix, n>>20)
				if n > bound {
					t.Errorf("%q + 8000 d unread: %d MB allocated, want at most %d MB", prefix, n>>20, bound>>20)
				}
				c.close()
				holder.close()
			}
		})
	}
}

// TestMemoryComesBack: after a wait with much queued behind it, an idle
// connection goes back to its normal cost.
func TestMemoryComesBack(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	holder.expect("g X", "1 Lock Get Success: X\n")
	const conns = 40
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = dial(t, srv, "tcp")
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	queued := strings.Repeat("i x\n", 8192) // 32 KiB
	for _, c := range clients {
		c.send("gw 50 X\n" + queued)
	}
	for _, c := range clients {
		if got := c.line(); got != "0 Lock Get Timeout: X\n" {
			t.Fatalf("wait: %q", got)
		}
		for range 8192 {
			c.line()
		}
		c.expect("ping", "1 pong\n")
	}
	after := heap()
	perConn := (int64(after) - int64(before)) / conns
	t.Logf("heap kept per connection after a wait with 32 KiB queued: %d bytes", perConn)
	if perConn > 8<<10 {
		t.Errorf("heap kept per connection: %d bytes, want at most 8 KiB", perConn)
	}
}

// TestAnswersAfterFinish: a connection reset while it waits ends still
// waiting (no end of input ends the wait first). A shutdown that listed it
// just before it was untracked must find nothing to wait for that never
// closes: answerWaiters' goroutine for a busy connection has no timeout.
func TestAnswersAfterFinish(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	holder.do("g x")
	w := dial(t, srv, "tcp")
	queue(t, srv, w, "gw -1 x")
	var c *conn
	for _, x := range srv.connList() {
		if x.state.name == w.name {
			c = x
		}
	}
	w.nc.(*net.TCPConn).SetLinger(0) // a reset, not an end of input
	w.nc.Close()
	eventually(t, "the connection finished", func() bool { return !slices.Contains(srv.connList(), c) })
	c.mu.Lock()
	done := c.answersLocked()
	c.mu.Unlock()
	for _, d := range done {
		select {
		case <-d:
		case <-time.After(5 * time.Second):
			t.Fatal("a finished connection's pending waits never end")
		}
	}
}
