package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// waiters is how many connections the manager has queued now.
func waiters(t testing.TB, srv *Server) int {
	s, ok := srv.manager.askStats(5 * time.Second)
	if !ok {
		t.Fatal("manager does not answer")
	}
	return s.waiters
}

// queue sends a waiting command and returns once the manager has queued it,
// so that the order of a test's waiters is the order of its calls.
func queue(t testing.TB, srv *Server, c *client, cmd string) {
	t.Helper()
	before := waiters(t, srv)
	c.send(cmd + "\n")
	eventually(t, "queued: "+cmd, func() bool { return waiters(t, srv) == before+1 })
}

func TestWaitFIFO(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder := dial(t, srv, tr)
			holder.expect("g hot", "1 Lock Get Success: hot\n")
			ws := make([]*client, 100)
			for i := range ws {
				ws[i] = dial(t, srv, tr)
				queue(t, srv, ws[i], "gw -1 hot")
			}
			// A later g does not barge in front of the queue.
			latecomer := dial(t, srv, tr)
			lastToken := tokenOf(t, latecomer, "hot")
			holder.expect("r hot", "1 Lock Release Success: hot\n")
			for i, w := range ws {
				if got := w.line(); got != "1 Lock Get Success: hot\n" {
					t.Fatalf("waiter %d: %q", i, got)
				}
				latecomer.expect("g hot", "0 Lock Get Failure: hot\n")
				latecomer.expect("d hot", "hot: "+w.name+"\n")
				token := tokenOf(t, latecomer, "hot")
				if token <= lastToken {
					t.Fatalf("token %d after %d", token, lastToken)
				}
				lastToken = token
				w.expect("r hot", "1 Lock Release Success: hot\n")
			}
			latecomer.expect("i hot", "0 Lock Not Locked: hot\n")
			if n := waiters(t, srv); n != 0 {
				t.Fatalf("%d waiters left", n)
			}
		})
	}
}

func tokenOf(t testing.TB, c *client, name string) uint64 {
	t.Helper()
	reply := c.do("t " + name)
	n, err := strconv.ParseUint(strings.Fields(reply)[0], 10, 64)
	if err != nil {
		t.Fatalf("t %s: %q", name, reply)
	}
	return n
}

func TestWaitTimeout(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	w := dial(t, srv, "tcp")
	holder.expect("g hot", "1 Lock Get Success: hot\n")
	w.expect("gw 0 hot", "0 Lock Get Timeout: hot\n") // 0 is g
	start := time.Now()
	w.expect("gw 100 hot", "0 Lock Get Timeout: hot\n")
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("timed out after %v, before its 100 ms", waited)
	}
	holder.expect("r hot", "1 Lock Release Success: hot\n")
	// The timed-out waiter was not given the lock on release.
	holder.expect("i hot", "0 Lock Not Locked: hot\n")
	w.expect("gw 100 hot", "1 Lock Get Success: hot\n")
}

// TestWaitTimeoutRace releases locks while waits time out around the same
// moment: whoever was told "Timeout" must never hold the lock.
func TestWaitTimeoutRace(t *testing.T) {
	srv := startServer(t, nil)
	const clients, rounds = 20, 30
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		c := dial(t, srv, "tcp")
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for range rounds {
				reply := c.do(fmt.Sprintf("gw %d race", rng.IntN(5)))
				switch reply {
				case "1 Lock Get Success: race\n":
					time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
					if got := c.do("r race"); got != "1 Lock Release Success: race\n" {
						errs <- fmt.Errorf("granted, then r: %q", got)
						return
					}
				case "0 Lock Get Timeout: race\n":
					if got := c.do("r race"); got != "0 Lock Release Failure: race\n" {
						errs <- fmt.Errorf("timed out yet holds the lock: %q", got)
						return
					}
				default:
					errs <- fmt.Errorf("gw: %q", reply)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestWaiterDisconnects(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	gone := dial(t, srv, "unix")
	next := dial(t, srv, "websocket")
	holder.expect("g hot", "1 Lock Get Success: hot\n")
	queue(t, srv, gone, "gw -1 hot")
	queue(t, srv, next, "gw -1 hot")
	gone.close()
	// Reading goes on during a wait, so the disconnect is seen at once.
	eventually(t, "waiter left the queue", func() bool { return waiters(t, srv) == 1 })
	holder.expect("r hot", "1 Lock Release Success: hot\n")
	if got := next.line(); got != "1 Lock Get Success: hot\n" {
		t.Fatalf("next waiter: %q", got)
	}
	if n := holder.stat("orphans"); n != 0 {
		t.Fatalf("the gone waiter was granted the lock (orphans %d)", n)
	}
}

func TestHolderDisconnectHandsOver(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	w := dial(t, srv, "tcp")
	holder.expect("g hot", "1 Lock Get Success: hot\n")
	queue(t, srv, w, "gw 60000 hot")
	holder.close()
	if got := w.line(); got != "1 Lock Get Success: hot\n" {
		t.Fatalf("waiter: %q", got)
	}
	w.expect("d hot", "hot: "+w.name+"\n")
}

// TestPipelineAroundWait: commands after a gw run after it resolves, in order.
func TestPipelineAroundWait(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			holder := dial(t, srv, tr)
			c := dial(t, srv, tr)
			holder.expect("g hot", "1 Lock Get Success: hot\n")
			c.send("g a\ngw -1 hot\ni hot\nr a\ngw 10 other\nsgw 0 1 s\nping\n")
			if got := c.line(); got != "1 Lock Get Success: a\n" {
				t.Fatalf("before the wait: %q", got)
			}
			eventually(t, "queued", func() bool { return waiters(t, srv) == 1 })
			holder.expect("i a", "1 Lock Is Locked: a\n") // "r a" has not run
			c.send("r hot\nping\n")                       // read, queued behind the wait
			holder.expect("r hot", "1 Lock Release Success: hot\n")
			for _, want := range []string{
				"1 Lock Get Success: hot\n",
				"1 Lock Is Locked: hot\n",
				"1 Lock Release Success: a\n",
				"1 Lock Get Success: other\n",
				"1 Shared Lock Get Success: s\n",
				"1 pong\n",
				"1 Lock Release Success: hot\n",
				"1 pong\n",
			} {
				if got := c.line(); got != want {
					t.Fatalf("got %q, want %q", got, want)
				}
			}
		})
	}
}

// TestWaitsInQueuedCommands: a wait among the commands queued behind a wait.
func TestWaitsInQueuedCommands(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	c := dial(t, srv, "tcp")
	holder.expect("g one", "1 Lock Get Success: one\n")
	holder.expect("g two", "1 Lock Get Success: two\n")
	c.send("gw -1 one\ngw -1 two\ni two\n")
	eventually(t, "queued on one", func() bool { return waiters(t, srv) == 1 })
	holder.expect("r one", "1 Lock Release Success: one\n")
	if got := c.line(); got != "1 Lock Get Success: one\n" {
		t.Fatal(got)
	}
	eventually(t, "queued on two", func() bool { return waiters(t, srv) == 1 })
	holder.expect("r two", "1 Lock Release Success: two\n")
	for _, want := range []string{"1 Lock Get Success: two\n", "1 Lock Is Locked: two\n"} {
		if got := c.line(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestWaitArguments(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, "tcp")
	for _, tt := range []struct{ cmd, want string }{
		{"gw", "0 Invalid Argument: gw\n"},
		{"gw x foo", "0 Invalid Argument: gw x foo\n"},
		{"gw -2 foo", "0 Invalid Argument: gw -2 foo\n"},
		{"gw 1.5 foo", "0 Invalid Argument: gw 1.5 foo\n"},
		{"gw 99999999999999999999 foo", "0 Invalid Argument: gw 99999999999999999999 foo\n"},
		{"sgw 10 foo", "0 Invalid Argument: sgw 10 foo\n"},
		{"sgw 10 0 foo", "0 Invalid Argument: sgw 10 0 foo\n"},
		{"sgw x 1 foo", "0 Invalid Argument: sgw x 1 foo\n"},
		{"gw   5    a  b ", "1 Lock Get Success: a b\n"},
		{"gw 5", "1 Lock Get Success: \n"},
		{"sgw 5 2 s e", "1 Shared Lock Get Success: s e\n"},
		{"sgw -1 2 s e", "1 Shared Lock Get Success: s e\n"}, // already held: not counted twice
		{"gw 0 a b", "1 Lock Get Success: a b\n"},            // re-entrant
	} {
		c.expect(tt.cmd, tt.want)
	}
	if got := c.do("t a b"); !strings.HasSuffix(got, " Lock Token: a b\n") || tokenOf(t, c, "a b") == 0 {
		t.Errorf("t a b: %q", got)
	}
	c.expect("t nothing", "0 Lock Not Locked: nothing\n")
	c.expect("ping", "1 pong\n")
}

func TestSemaphore(t *testing.T) {
	srv := startServer(t, nil)
	a, b, c, d := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	a.expect("sgw 0 2 sem", "1 Shared Lock Get Success: sem\n")
	b.expect("sgw 0 2 sem", "2 Shared Lock Get Success: sem\n")
	c.expect("sgw 0 2 sem", "0 Shared Lock Get Timeout: sem\n")
	c.expect("sgw 50 2 sem", "0 Shared Lock Get Timeout: sem\n")
	queue(t, srv, c, "sgw -1 2 sem")
	queue(t, srv, d, "sgw -1 3 sem") // could fit, but waits its turn behind c
	a.expect("sg sem", "2 Shared Lock Get Success: sem\n")
	a.expect("sr sem", "1 Shared Lock Release Success: sem\n")
	for _, w := range []struct {
		c    *client
		want string
	}{{c, "2 Shared Lock Get Success: sem\n"}, {d, "3 Shared Lock Get Success: sem\n"}} {
		if got := w.c.line(); got != w.want {
			t.Fatalf("got %q, want %q", got, w.want)
		}
	}
	a.expect("sg sem", "4 Shared Lock Get Success: sem\n") // plain sg ignores MAX
	a.expect("si sem", "4 Shared Lock Is Locked: sem\n")
}

// TestSemaphoreStress: 200 clients take and give back a semaphore of 5 at
// random; the holder count never exceeds 5.
func TestSemaphoreStress(t *testing.T) {
	srv := startServer(t, nil)
	const clients, maxHolders = 200, 5
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		holding int
		granted int
	)
	errs := make(chan error, clients+1)
	stop := make(chan struct{})
	checker := dial(t, srv, "tcp")
	go func() {
		for {
			select {
			case <-stop:
				errs <- nil
				return
			default:
			}
			reply := checker.do("si sem")
			n, _ := strconv.Atoi(strings.Fields(reply)[0])
			if n > maxHolders {
				errs <- fmt.Errorf("si: %d holders", n)
				return
			}
		}
	}()
	for i := range clients {
		tr := transports[i%len(transports)]
		c := dial(t, srv, tr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 2))
			for range rounds {
				reply := c.do(fmt.Sprintf("sgw %d %d sem", rng.IntN(20), maxHolders))
				if strings.HasPrefix(reply, "0 Shared Lock Get Timeout") {
					continue
				}
				n, err := strconv.Atoi(strings.Fields(reply)[0])
				if err != nil || n < 1 || n > maxHolders || !strings.HasSuffix(reply, " Shared Lock Get Success: sem\n") {
					errs <- fmt.Errorf("sgw: %q", reply)
					return
				}
				mu.Lock()
				holding++
				granted++
				if holding > maxHolders {
					errs <- fmt.Errorf("%d holders at once", holding)
				}
				mu.Unlock()
				time.Sleep(time.Duration(rng.IntN(2)) * time.Millisecond)
				mu.Lock()
				holding--
				mu.Unlock()
				if got := c.do("sr sem"); got != "1 Shared Lock Release Success: sem\n" {
					errs <- fmt.Errorf("sr: %q", got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if granted < clients {
		t.Fatalf("only %d grants: the stress did not stress", granted)
	}
	t.Logf("%d grants", granted)
}

func TestTokensIncreaseAcrossRestart(t *testing.T) {
	var last uint64
	for range 2 {
		srv := startServer(t, nil)
		c := dial(t, srv, "tcp")
		for range 3 {
			c.expect("g x", "1 Lock Get Success: x\n")
			token := tokenOf(t, c, "x")
			if token <= last {
				t.Fatalf("token %d after %d", token, last)
			}
			c.expect("g x", "1 Lock Get Success: x\n") // re-entrant: same acquisition
			if again := tokenOf(t, c, "x"); again != token {
				t.Fatalf("re-entrant g changed the token: %d, %d", token, again)
			}
			last = token
			c.expect("r x", "1 Lock Release Success: x\n")
		}
		c.close()
		srv.Close()
	}
}

// chain is conns raw TCP connections queued on the lock "hot", one holding
// it. Its clients read into a fixed buffer and allocate nothing per reply,
// nor does a hand-over, so that the process's allocations are the server's.
type chain struct {
	clients []net.Conn
	granted chan int // the index of each client granted the lock
	holder  int
	release []byte // the holder's release, and its wait again
	timeout *time.Timer
}

// handoverChain queues conns connections on "hot" with wait (gw or !gw),
// the first holding it.
func handoverChain(t testing.TB, srv *Server, conns int, wait string) *chain {
	grant := []byte("1 Lock Get Success: hot\n")
	asyncGrant, asyncName := []byte("!gw 1 "), []byte(" hot\n")
	granted := make(chan int, conns)
	clients := make([]net.Conn, conns)
	for i := range clients {
		nc, _ := rawDial(t, srv, "tcp")
		clients[i] = nc
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := nc.Read(buf)
				if err != nil {
					return
				}
				for off := 0; off < n; {
					end := off + bytes.IndexByte(buf[off:n], '\n') + 1
					if end <= off {
						break
					}
					line := buf[off:end]
					if bytes.Equal(line, grant) || bytes.HasPrefix(line, asyncGrant) && bytes.HasSuffix(line, asyncName) {
						granted <- i
					}
					off = end
				}
			}
		}()
		cmd := wait + " -1 hot\n"
		if i == 0 {
			cmd = "g hot\n"
		}
		if _, err := nc.Write([]byte(cmd)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-granted
		}
	}
	eventually(t, "all queued", func() bool { return waiters(t, srv) == conns-1 })
	timeout := time.NewTimer(time.Hour)
	t.Cleanup(func() { timeout.Stop() })
	return &chain{clients: clients, granted: granted, release: []byte("r hot\n" + wait + " -1 hot\n"), timeout: timeout}
}

// handOver has the holder release the lock and queue again, and waits for
// the next one to be granted it.
func (ch *chain) handOver(t testing.TB) {
	if _, err := ch.clients[ch.holder].Write(ch.release); err != nil {
		t.Fatal(err)
	}
	ch.timeout.Reset(10 * time.Second)
	select {
	case ch.holder = <-ch.granted:
	case <-ch.timeout.C:
		t.Fatal("no hand-over within 10 s")
	}
}

// TestHandoverAllocatesNothing: a lock handed down a queue of waiters, gw
// or !gw, allocates nothing in the steady state (waiterPool; the wait
// goroutine and the delivery goroutine start from func values made once,
// and their done channels are made only when asked for), so that no
// collection runs while it goes on.
func TestHandoverAllocatesNothing(t *testing.T) {
	for _, wait := range []string{"gw", "!gw"} {
		t.Run(wait, func(t *testing.T) {
			srv := startServer(t, nil)
			ch := handoverChain(t, srv, 50, wait)
			for range 200 { // warm up: pools, buffers, the queue's own growth
				ch.handOver(t)
			}
			const n = 2000
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range n {
				ch.handOver(t)
			}
			runtime.ReadMemStats(&after)
			// Before: 9 allocations (354 B) per hand-over with gw. The
			// bound leaves room for the runtime's own (timers, the
			// poller) and the test's.
			if per := float64(after.Mallocs-before.Mallocs) / n; per > 1 {
				t.Fatalf("%.2f allocations per hand-over (%.0f B), want about 0", per, float64(after.TotalAlloc-before.TotalAlloc)/n)
			}
		})
	}
}

// BenchmarkWaitHandover hands one lock down a queue of 100 connections
// waiting with gw (or !gw), in-process over TCP: each op is one "r hot" from
// the holder, the next waiter's grant and the holder's "gw -1 hot" behind it.
// The clients read into a fixed buffer, so allocs/op are the server's: what
// a steady stream of hand-overs leaves for the collector (docs/performance.md,
// "Hand-over").
//
//	go test -run '^$' -bench WaitHandover -benchmem .
func BenchmarkWaitHandover(b *testing.B) {
	for _, wait := range []string{"gw", "!gw"} {
		b.Run(wait, func(b *testing.B) {
			ch := handoverChain(b, startServer(b, nil), 100, wait)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				ch.handOver(b)
			}
		})
	}
}

// TestHandoverChainResets hands a lock down a queue of gw waiters while
// waiters, and at times the holder, are reset at random instants, as a
// client that crashes does: ended waiters are reused (waiterPool), so a
// waiter reused while its queue still held it would grant the lock to the
// wrong connection, twice, or to none. Each live connection must be granted
// in turn, and at the end every live one but the holder must be queued.
func TestHandoverChainResets(t *testing.T) {
	srv := startServer(t, nil)
	const conns = 40
	ch := handoverChain(t, srv, conns, "gw")
	alive := make([]bool, conns)
	for i := range alive {
		alive[i] = true
	}
	live := conns
	reset := func(i int) {
		ch.clients[i].(*net.TCPConn).SetLinger(0)
		ch.clients[i].Close()
		alive[i] = false
		live--
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 400 && live > 3; round++ {
		switch r := rng.IntN(100); {
		case r < 8: // a waiter resets
			i := rng.IntN(conns)
			if alive[i] && i != ch.holder {
				reset(i)
			}
		case r < 12: // the holder resets: the lock passes on as an orphan
			reset(ch.holder)
			ch.timeout.Reset(10 * time.Second)
			select {
			case ch.holder = <-ch.granted:
			case <-ch.timeout.C:
				t.Fatal("no waiter was granted the lock of a holder that reset")
			}
		default:
			ch.handOver(t)
		}
		if !alive[ch.holder] {
			t.Fatalf("round %d: the lock went to connection %d, which had reset", round, ch.holder)
		}
	}
	eventually(t, "every live connection but the holder queued", func() bool { return waiters(t, srv) == live-1 })
}
