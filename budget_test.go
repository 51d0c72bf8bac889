package main

import (
	"fmt"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/wire"
)

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return true
			}
		}
	}
	return false
}

// TestMaxBufferedMemory: 2,000 connections each queue 64 KiB of lines behind
// a wait (128 MiB in all, each under its own 1 MiB bound) against a budget
// of 8 MiB. The server's memory grows by at most the budget plus a stated
// overhead per connection; the connections past the budget are told and
// closed, the others are not; a bystander is served meanwhile.
func TestMaxBufferedMemory(t *testing.T) {
	const (
		conns  = 2000
		budget = 8 << 20
		each   = 64 << 10
		// What a connection costs outside the budget, client side
		// included (this process is both): goroutines, socket buffers,
		// the pooled 4 KiB read buffer.
		overheadPerConn = 24 << 10
	)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2*conns+200 {
		t.Skipf("needs %d open files", 2*conns+200)
	}
	srv := startServer(t, func(c *Config) {
		c.MaxBuffered = budget
	})
	holder := dial(t, srv, "tcp")
	holder.expect("g busy", "1 Lock Get Success: busy\n")
	line := "i " + strings.Repeat("x", 1000) + "\n"
	chunk := []byte("gw -1 busy\n" + strings.Repeat(line, each/len(line)))
	rss := watchRSS(t)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		open     []net.Conn
		failures atomic.Int32
	)
	sem := make(chan struct{}, 16)
	for range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			nc, err := net.Dial("tcp", srv.TCPAddr().String())
			if err != nil {
				failures.Add(1)
				return
			}
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			nc.Write(chunk) // an error: the server closed it, over the budget
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, nc := range open {
			nc.Close()
		}
	})
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d connections failed", n)
	}
	// Let the server read what was sent.
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	bystander := dial(t, srv, "tcp")
	bystander.expect("i x", "0 Lock Not Locked: x\n")
	took := time.Since(start)
	grew := rss.growth()
	resp, body := httpGet(t, "http://"+srv.WSAddr().String()+"/metrics")
	resp.Body.Close()
	used := metricValue(t, body, "glockd_buffered_bytes")
	closed := metricValue(t, body, "glockd_over_budget_closed_total")
	t.Logf("%d connections × %d KiB queued: RSS grew %.1f MiB (bound %.1f MiB); budget used %.1f MiB; %v closed over the budget; a bystander's i took %v",
		conns, each>>10, float64(grew)/(1<<20), float64(budget+conns*overheadPerConn)/(1<<20), used/(1<<20), closed, took)
	// The race detector's shadow memory and per-goroutine state swamp the
	// figure: scripts/test.sh runs this test without it as well.
	if grew > budget+conns*overheadPerConn && !raceEnabled() {
		t.Errorf("RSS grew by %d MiB, over the budget plus %d KiB a connection", grew>>20, overheadPerConn>>10)
	}
	if used > budget {
		t.Errorf("%v bytes charged, over the budget of %d", used, budget)
	}
	if closed == 0 || closed == conns {
		t.Errorf("%v connections closed over the budget, want some but not all", closed)
	}
	if took > time.Second {
		t.Errorf("a bystander's i took %v", took)
	}
}

// TestDumpOverBudget: a dump's steps count against -max-buffered as they
// are made. Over a websocket, whose reply is one message built step by
// step, a dump of a table bigger than the budget is refused once the budget
// is spent (the connection is told and closed), instead of being built
// whole and charged only at its end.
func TestDumpOverBudget(t *testing.T) {
	const (
		budget = 1 << 20
		locks  = 4000
		name   = 500 // bytes: the table lists about 2 MB
	)
	srv := startServer(t, func(c *Config) { c.MaxBuffered = budget })
	owner := dial(t, srv, "tcp")
	var b strings.Builder
	for i := range locks {
		fmt.Fprintf(&b, "g %0*d\n", name, i)
	}
	owner.send(b.String())
	eventually(t, "the locks taken", func() bool { return owner.stat("locks") == locks })
	c := dial(t, srv, "websocket")
	c.send("d")
	if got := c.line(); got != wire.QueueFull {
		t.Fatalf("d over a websocket: a reply of %d bytes (%d lines), want %q: the listing was built whole before the budget was applied",
			len(got), strings.Count(got, "\n"), wire.QueueFull)
	}
	expectClosed(t, c)
}
