package main

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	lockclient "github.com/glockd/glockd/client"
	loadgen "github.com/glockd/glockd/tester/load"
)

// End-to-end tests of package client against the daemon: sessions,
// heartbeats during waits, cancelled waits, failover across addresses.

func dialClient(t *testing.T, network, addr string) *lockclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := lockclient.Dial(ctx, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newSession(t *testing.T, network string, addrs []string, opts lockclient.SessionOptions) *lockclient.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := lockclient.NewSession(ctx, network, addrs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// holderOf returns who holds the exclusive lock name, "" for no one.
func holderOf(t *testing.T, c *lockclient.Client, name string) string {
	t.Helper()
	owners, err := c.Debug(bg(t), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) == 0 {
		return ""
	}
	return owners[0].Owner
}

// TestClientWaitContext: a GetWait whose context ends first gives up that
// wait only. Before the fix the client closed its connection, so the other
// lock it held was released.
func TestClientWaitContext(t *testing.T) {
	srv := startServer(t, nil)
	for _, tr := range []struct{ network, addr string }{
		{"tcp", srv.TCPAddr().String()},
		{"unix", srv.cfg.UnixPath},
		{"ws", "ws://" + srv.WSAddr().String() + "/"},
	} {
		t.Run(tr.network, func(t *testing.T) {
			a, b, watcher := dialClient(t, tr.network, tr.addr), dialClient(t, tr.network, tr.addr), dialClient(t, "tcp", srv.TCPAddr().String())
			x, y := "wait-ctx-x-"+tr.network, "wait-ctx-y-"+tr.network
			if got, err := a.Get(bg(t), x); err != nil || !got {
				t.Fatalf("A g x: %v, %v", got, err)
			}
			if got, err := b.Get(bg(t), y); err != nil || !got {
				t.Fatalf("B g y: %v, %v", got, err)
			}
			bName := b.LocalAddr().String()
			if tr.network == "unix" {
				bName = holderOf(t, watcher, y)
			}

			// A deadline: its time left becomes the wait's limit.
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			got, err := b.GetWait(ctx, 5*time.Second, x)
			cancel()
			if got || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("B gw with a 200 ms context: %v, %v; want a deadline error", got, err)
			}
			if h := holderOf(t, watcher, y); h != bName {
				t.Fatalf("y held by %q after B's wait ended with its context, want B (%s)", h, bName)
			}
			// A cancellation: "!cancel NAME" ends the wait.
			sem := "wait-ctx-s-" + tr.network
			if n, err := a.SharedGetWait(bg(t), 0, 1, sem); err != nil || n != 1 {
				t.Fatalf("A sgw 0 1: %v, %v", n, err)
			}
			ctx, cancel = context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			if n, err := b.SharedGetWait(ctx, -1, 1, sem); n != 0 || !errors.Is(err, context.Canceled) {
				t.Fatalf("B sgw -1 1 on a full semaphore, cancelled: %v, %v; want context.Canceled", n, err)
			}
			ctx, cancel = context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			got, err = b.GetWait(ctx, -1, x)
			if got || !errors.Is(err, context.Canceled) {
				t.Fatalf("B gw -1 cancelled: %v, %v; want context.Canceled", got, err)
			}
			if h := holderOf(t, watcher, y); h != bName {
				t.Fatalf("y held by %q after B's waits ended with their contexts, want B (%s)", h, bName)
			}
			if got, err := b.Inspect(bg(t), x); err != nil || !got {
				t.Fatalf("B i x after the waits: %v, %v", got, err)
			}
			// B's connection is in step: a wait it makes now gets x.
			if _, err := a.Release(bg(t), x); err != nil {
				t.Fatal(err)
			}
			if got, err := b.GetWait(bg(t), 5*time.Second, x); err != nil || !got {
				t.Fatalf("B gw x once free: %v, %v", got, err)
			}
		})
	}
}

// TestSessionHeartbeatDuringWait: a Lock waiting far longer than the
// session timeout keeps the session, since the server answers "!ping" at
// once while the wait is pending.
func TestSessionHeartbeatDuringWait(t *testing.T) {
	srv := startServer(t, nil)
	addr := []string{srv.TCPAddr().String()}
	holder := newSession(t, "tcp", addr, lockclient.SessionOptions{})
	l, err := holder.Lock(bg(t), "hb")
	if err != nil {
		t.Fatal(err)
	}
	waiter := newSession(t, "tcp", addr, lockclient.SessionOptions{Interval: 50 * time.Millisecond, Timeout: 700 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := waiter.Lock(ctx, "hb"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock on a held lock: %v, want a deadline error", err)
	}
	if err := waiter.Err(); err != nil {
		t.Fatalf("session lost during a wait of 4 timeouts: %v", err)
	}
	// The wait is over at the server too: a release hands the lock to no one.
	if err := l.Unlock(bg(t)); err != nil {
		t.Fatal(err)
	}
	w, err := waiter.TryLock(bg(t), "hb")
	if err != nil {
		t.Fatalf("TryLock after the holder's Unlock: %v", err)
	}
	if w.Token() <= l.Token() {
		t.Errorf("token %d after %d: want it higher", w.Token(), l.Token())
	}
}

// TestSessionLocks goes through the handles over each transport.
func TestSessionLocks(t *testing.T) {
	srv := startServer(t, nil)
	for _, tr := range []struct{ network, addr string }{
		{"tcp", srv.TCPAddr().String()},
		{"unix", srv.cfg.UnixPath},
		{"ws", "ws://" + srv.WSAddr().String() + "/"},
	} {
		t.Run(tr.network, func(t *testing.T) {
			opts := lockclient.SessionOptions{Interval: 5 * time.Millisecond}
			a := newSession(t, tr.network, []string{tr.addr}, opts)
			b := newSession(t, tr.network, []string{tr.addr}, opts)
			ctx := bg(t)
			n := "locks-" + tr.network
			la, err := a.Lock(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.TryLock(ctx, n); !errors.Is(err, lockclient.ErrLocked) {
				t.Fatalf("B TryLock on A's lock: %v, want ErrLocked", err)
			}
			// A second handle in the same session waits for the first.
			second := make(chan error, 1)
			go func() {
				l, err := a.Lock(ctx, n)
				if err == nil {
					err = l.Unlock(ctx)
				}
				second <- err
			}()
			if _, err := a.TryLock(ctx, n); !errors.Is(err, lockclient.ErrLocked) {
				t.Fatalf("A TryLock on its own held lock: %v, want ErrLocked", err)
			}
			granted := make(chan *lockclient.Lock, 1)
			go func() {
				l, err := b.Lock(ctx, n)
				if err != nil {
					t.Error(err)
				}
				granted <- l
			}()
			// B waits at the server; A's second handle waits in A, and
			// reaches the server's queue only once A's first is unlocked.
			time.Sleep(50 * time.Millisecond)
			if err := la.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if err := la.Unlock(ctx); !errors.Is(err, lockclient.ErrNotHeld) {
				t.Errorf("second Unlock: %v, want ErrNotHeld", err)
			}
			lb := <-granted
			if lb == nil {
				t.FailNow()
			}
			if lb.Token() <= la.Token() {
				t.Errorf("B's token %d after A's %d", lb.Token(), la.Token())
			}
			if err := lb.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-second; err != nil {
				t.Fatalf("A's second handle: %v", err)
			}
			// Multi-line replies between heartbeats.
			if _, err := a.TryLock(ctx, n); err != nil {
				t.Fatal(err)
			}
			for range 20 {
				owners, err := a.Client().Debug(ctx, n)
				if err != nil || len(owners) != 1 {
					t.Fatalf("d %s: %v, %v", n, owners, err)
				}
				if _, err := a.Client().Stats(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// A semaphore of 2: A twice (counted once), B, then C is refused.
			sem := "sem-" + tr.network
			s1, err := a.Acquire(ctx, sem, 2)
			if err != nil || s1.Holders() != 1 {
				t.Fatalf("A Acquire: %v, %v", s1, err)
			}
			s2, err := a.Acquire(ctx, sem, 2)
			if err != nil {
				t.Fatal(err)
			}
			s3, err := b.TryAcquire(ctx, sem, 2)
			if err != nil || s3.Holders() != 2 {
				t.Fatalf("B TryAcquire: %v, %v", s3, err)
			}
			c := newSession(t, tr.network, []string{tr.addr}, opts)
			if _, err := c.TryAcquire(ctx, sem, 2); !errors.Is(err, lockclient.ErrLocked) {
				t.Fatalf("C TryAcquire on a full semaphore: %v", err)
			}
			if err := s1.Unlock(ctx); err != nil { // A still holds it through s2
				t.Fatal(err)
			}
			if _, err := c.TryAcquire(ctx, sem, 2); !errors.Is(err, lockclient.ErrLocked) {
				t.Fatalf("C TryAcquire with A's second handle held: %v", err)
			}
			if err := s2.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			s4, err := c.Acquire(wctx, sem, 2)
			if err != nil || s4.Holders() != 2 {
				t.Fatalf("C Acquire once A let go: %v, %v", s4, err)
			}
			sh, err := c.LockShared(ctx, "shared-"+tr.network)
			if err != nil || sh.Holders() != 1 || sh.Token() != 0 {
				t.Fatalf("LockShared: %v, %v", sh, err)
			}
		})
	}
}

// freezer is a TCP proxy that can stop forwarding, as a server that is
// stopped or a network that is cut would.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, thaw: make(chan struct{})}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, s)
			f.mu.Unlock()
			f.wg.Go(func() { f.pipe(s, c) })
			f.wg.Go(func() { f.pipe(c, s) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		if f.frozen {
			close(f.thaw)
			f.frozen = false
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

func (f *freezer) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			thaw, frozen := f.thaw, f.frozen
			f.mu.Unlock()
			if frozen {
				<-thaw
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
}

// TestSessionLostWhenFrozen: when the server stops answering, the session
// is declared lost within its timeout of the last answer, every handle's
// Lost is closed then, and the handles are not re-taken.
func TestSessionLostWhenFrozen(t *testing.T) {
	srv := startServer(t, nil)
	fz := startFreezer(t, srv.TCPAddr().String())
	const interval, timeout = 50 * time.Millisecond, 400 * time.Millisecond
	s := newSession(t, "tcp", []string{fz.addr()}, lockclient.SessionOptions{Interval: interval, Timeout: timeout})
	ctx := bg(t)
	l1, err := s.Lock(ctx, "frozen-a")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := s.LockShared(ctx, "frozen-b")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * interval)
	fz.freeze()
	select {
	case <-l1.Lost():
	case <-time.After(20 * timeout):
		t.Fatal("session not lost after 20 timeouts of silence")
	}
	select {
	case <-l2.Lost():
	default:
		t.Fatal("the shared lock's Lost is not closed with the exclusive one's")
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed")
	}
	if err := s.Err(); !errors.Is(err, lockclient.ErrSessionLost) {
		t.Errorf("Err: %v, want ErrSessionLost", err)
	}
	if err := l1.Unlock(ctx); !errors.Is(err, lockclient.ErrSessionLost) {
		t.Errorf("Unlock after the loss: %v, want ErrSessionLost", err)
	}
	if _, err := s.TryLock(ctx, "frozen-c"); !errors.Is(err, lockclient.ErrSessionLost) {
		t.Errorf("TryLock after the loss: %v, want ErrSessionLost", err)
	}
	// The client closed its connection: once the server sees it, the
	// locks are released (here, when the proxy passes the close on).
	watcher := dialClient(t, "tcp", srv.TCPAddr().String())
	fz.mu.Lock()
	for _, c := range fz.conns {
		c.Close()
	}
	fz.mu.Unlock()
	eventually(t, "the lost session's lock released", func() bool { return holderOf(t, watcher, "frozen-a") == "" })
}

// TestSessionLostWhenServerGoes: a connection that fails loses the session
// at once; a new session dialled with both addresses gets the other server.
func TestSessionLostWhenServerGoes(t *testing.T) {
	first, second := startServer(t, nil), startServer(t, nil)
	addrs := []string{first.TCPAddr().String(), second.TCPAddr().String()}
	s := newSession(t, "tcp", addrs, lockclient.SessionOptions{Timeout: 30 * time.Second})
	if got := s.Client().RemoteAddr().String(); got != addrs[0] {
		t.Fatalf("connected to %s, want the first address %s", got, addrs[0])
	}
	l, err := s.Lock(bg(t), "goes")
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	select {
	case <-l.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("lock not reported lost 10 s after its server closed (session timeout 30 s)")
	}
	if err := s.Err(); !errors.Is(err, lockclient.ErrSessionLost) {
		t.Fatalf("Err: %v", err)
	}
	again := newSession(t, "tcp", addrs, lockclient.SessionOptions{})
	if got := again.Client().RemoteAddr().String(); got != addrs[1] {
		t.Fatalf("new session connected to %s, want the second address %s", got, addrs[1])
	}
	if _, err := again.Lock(bg(t), "goes"); err != nil {
		t.Fatal(err)
	}
}

// TestSessionSkipsSilentServer: an address that accepts connections but
// never answers (a stopped server's kernel still accepts) is passed over
// after the session timeout.
func TestSessionSkipsSilentServer(t *testing.T) {
	srv := startServer(t, nil)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var held []net.Conn
	var mu sync.Mutex
	wg.Go(func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			wg.Go(func() { io.Copy(io.Discard, c) })
		}
	})
	t.Cleanup(func() {
		silent.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	s := newSession(t, "tcp", []string{silent.Addr().String(), srv.TCPAddr().String()},
		lockclient.SessionOptions{Timeout: time.Second})
	if got := s.Client().RemoteAddr().String(); got != srv.TCPAddr().String() {
		t.Fatalf("connected to %s, want the answering server", got)
	}
}

// TestSessionCancelRace cancels waits at about the moment the lock is
// handed over, so that some grants cross their cancellation: whatever the
// order, a Lock that fails leaves the lock unheld by its session, and one
// that succeeds holds it.
func TestSessionCancelRace(t *testing.T) {
	srv := startServer(t, nil)
	addr := []string{srv.TCPAddr().String()}
	holder := newSession(t, "tcp", addr, lockclient.SessionOptions{})
	waiter := newSession(t, "tcp", addr, lockclient.SessionOptions{})
	watcher := dialClient(t, "tcp", srv.TCPAddr().String())
	waiterName := waiter.Client().LocalAddr().String()
	const name = "race"
	// About one round in fifty crosses the grant and the cancellation.
	for i := range 300 {
		l, err := holder.Lock(bg(t), name)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		result := make(chan error, 1)
		var got *lockclient.Lock
		go func() {
			var err error
			got, err = waiter.Lock(ctx, name)
			result <- err
		}()
		time.Sleep(time.Millisecond)
		// Release and cancel together, skewed a little each round.
		skew := time.Duration(i%10) * 20 * time.Microsecond
		go func() { time.Sleep(skew); cancel() }()
		if err := l.Unlock(bg(t)); err != nil {
			t.Fatal(err)
		}
		err = <-result
		cancel()
		switch h := holderOf(t, watcher, name); {
		case err == nil && h != waiterName:
			t.Fatalf("round %d: Lock succeeded but the lock is held by %q", i, h)
		case err != nil && h == waiterName:
			t.Fatalf("round %d: Lock failed (%v) but the waiter holds the lock", i, err)
		case err != nil && !errors.Is(err, context.Canceled):
			t.Fatalf("round %d: Lock: %v", i, err)
		}
		if err == nil {
			if err := got.Unlock(bg(t)); err != nil {
				t.Fatal(err)
			}
		}
		if err := waiter.Err(); err != nil {
			t.Fatalf("round %d: session lost: %v", i, err)
		}
	}
}

// TestClientConcurrentCalls pipelines calls of many goroutines on one
// connection, with heartbeats and multi-line replies among them.
func TestClientConcurrentCalls(t *testing.T) {
	srv := startServer(t, nil)
	s := newSession(t, "tcp", []string{srv.TCPAddr().String()}, lockclient.SessionOptions{Interval: time.Millisecond})
	c := s.Client()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			ctx := bg(t)
			name := "conc-" + strings.Repeat("x", g)
			for range 200 {
				if got, err := c.Get(ctx, name); err != nil || !got {
					t.Errorf("g %s: %v, %v", name, got, err)
					return
				}
				if owners, err := c.Debug(ctx, name); err != nil || len(owners) != 1 {
					t.Errorf("d %s: %v, %v", name, owners, err)
					return
				}
				if ok, err := c.Release(ctx, name); err != nil || !ok {
					t.Errorf("r %s: %v, %v", name, ok, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestLoadReconnect runs the load generator with two addresses and takes
// the first server away, by closing it and by freezing it: each connection
// loses its session once, reconnects to the second server, and reports the
// time from the loss to its next grant.
func TestLoadReconnect(t *testing.T) {
	for _, tt := range []struct {
		how, workload string
		run           time.Duration
	}{
		{"close", "cycle", 2 * time.Second},
		{"freeze", "contend", 4 * time.Second},
	} {
		t.Run(tt.how+"/"+tt.workload, func(t *testing.T) {
			first, second := startServer(t, nil), startServer(t, nil)
			addr := first.TCPAddr().String()
			var fz *freezer
			if tt.how == "freeze" {
				fz = startFreezer(t, addr)
				addr = fz.addr()
			}
			const conns = 4
			const timeout = time.Second
			opts := loadgen.Options{Network: "tcp", Addrs: []string{addr, second.TCPAddr().String()},
				Workload: tt.workload, Conns: conns, Duration: tt.run, Keys: 2,
				Reconnect: true, Interval: 50 * time.Millisecond, SessionTimeout: timeout}
			time.AfterFunc(500*time.Millisecond, func() {
				if fz != nil {
					fz.freeze()
				} else {
					first.Close()
				}
			})
			res, err := loadgen.Run(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d ops, %d sessions lost, loss to next grant p50 %.1f ms, max %.1f ms", res.Ops, res.SessionsLost, res.RecoveryP50ms, res.RecoveryMaxMs)
			// Each connection loses its session at the fault (a loaded
			// machine may lose one more now and then) and recovers on the
			// second server.
			if res.SessionsLost < conns || res.Recoveries < conns || res.Mismatches != 0 || res.ConnErrors != 0 {
				t.Fatalf("want at least %d sessions lost and recovered, no errors: %+v", conns, res)
			}
			if res.RecoveryP50ms > res.RecoveryMaxMs || res.Ops == 0 {
				t.Errorf("recovery times: %+v", res)
			}
			if tt.how == "freeze" && res.RecoveryP50ms < float64(timeout/time.Millisecond) {
				// The frozen address accepts, so each new session first
				// waits a session timeout for its heartbeat there.
				t.Errorf("recovery p50 %.1f ms, under the session timeout spent on the frozen address", res.RecoveryP50ms)
			}
		})
	}
}

// TestSessionBangNames: lock names that look like out-of-band replies do
// not confuse the reader: in d they come as "NAME: OWNER".
func TestSessionBangNames(t *testing.T) {
	// A server per transport: the first one's locks are released only
	// once that server has read the end of its connection.
	for _, network := range []string{"tcp", "ws"} {
		t.Run(network, func(t *testing.T) {
			srv := startServer(t, nil)
			addr := srv.TCPAddr().String()
			if network == "ws" {
				addr = "ws://" + srv.WSAddr().String() + "/"
			}
			s := newSession(t, network, []string{addr}, lockclient.SessionOptions{Interval: time.Millisecond})
			ctx := bg(t)
			names := []string{"!pong", "!cancel 0", "!cancel 1"}
			for _, n := range names {
				if _, err := s.TryLock(ctx, n); err != nil {
					t.Fatalf("TryLock %q: %v", n, err)
				}
			}
			for range 50 {
				owners, err := s.Client().Debug(ctx, "")
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, o := range owners {
					got = append(got, o.Lock)
				}
				slices.Sort(got) // d lists them in any order
				if strings.Join(got, "|") != "!cancel 0|!cancel 1|!pong" {
					t.Fatalf("d: %q", got)
				}
			}
			if _, err := s.TryAcquire(ctx, "x", 0); err == nil {
				t.Error("TryAcquire with at most 0 holders: no error")
			}
		})
	}
}

// TestClientDetails: the client reads dl from the daemon.
func TestClientDetails(t *testing.T) {
	srv := startServer(t, nil)
	c := dialClient(t, "tcp", srv.TCPAddr().String())
	if ok, err := c.Get(bg(t), "job"); !ok || err != nil {
		t.Fatalf("g: %v %v", ok, err)
	}
	token, err := c.Token(bg(t), "job")
	if err != nil {
		t.Fatal(err)
	}
	details, err := c.Details(bg(t), "job")
	if err != nil {
		t.Fatal(err)
	}
	if len(details) != 1 || details[0].Lock != "job" || details[0].Token != token || details[0].Shared {
		t.Fatalf("dl job: %+v, want job with token %d", details, token)
	}
}

// TestSessionManyWaiters: one session serves many goroutines at once. 100
// goroutines each Lock one of 10 contended names for 10 ms and unlock it;
// meanwhile a TryLock of a free name returns at once, and a TryLock of a
// name behind another goroutine's Lock is not held back by that wait.
// Before !gw, a Lock's wait held back every later call of its session.
func TestSessionManyWaiters(t *testing.T) {
	for _, tr := range []string{"tcp", "websocket"} {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			network, addr := "tcp", srv.TCPAddr().String()
			if tr == "websocket" {
				network, addr = "ws", "ws://"+srv.WSAddr().String()+"/"
			}
			s := newSession(t, network, []string{addr}, lockclient.SessionOptions{})
			other := newSession(t, network, []string{addr}, lockclient.SessionOptions{})
			held, err := other.Lock(bg(t), "held")
			if err != nil {
				t.Fatal(err)
			}
			waitCtx, cancelWait := context.WithCancel(bg(t))
			waitDone := make(chan error, 1)
			go func() {
				_, err := s.Lock(waitCtx, "held")
				waitDone <- err
			}()

			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for i := range 100 {
				wg.Go(func() {
					name := "hot" + string(rune('0'+i%10))
					l, err := s.Lock(bg(t), name)
					if err != nil {
						errs <- err
						return
					}
					time.Sleep(10 * time.Millisecond)
					errs <- l.Unlock(bg(t))
				})
			}
			time.Sleep(20 * time.Millisecond) // the waits are queued
			start := time.Now()
			free, err := s.TryLock(bg(t), "free")
			took := time.Since(start)
			if err != nil {
				t.Fatalf("TryLock of a free name: %v", err)
			}
			t.Logf("TryLock of a free name during the waits: %v", took)
			// The issue asks under 50 ms; generous here for a loaded machine.
			if took > time.Second {
				t.Fatalf("TryLock took %v behind the session's waits", took)
			}
			if _, err := s.TryLock(bg(t), "held"); !errors.Is(err, lockclient.ErrLocked) {
				// The session's own Lock of "held" has the name's turn.
				t.Fatalf("TryLock of a name the session waits for: %v, want ErrLocked", err)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := free.Unlock(bg(t)); err != nil {
				t.Fatal(err)
			}
			cancelWait()
			if err := <-waitDone; !errors.Is(err, context.Canceled) {
				t.Fatalf("the cancelled Lock: %v", err)
			}
			if err := s.Err(); err != nil {
				t.Fatalf("session: %v", err)
			}
			// The cancelled wait is gone at the server: the release hands
			// "held" to no one.
			if err := held.Unlock(bg(t)); err != nil {
				t.Fatal(err)
			}
			waitersQueued(t, srv, 0, "no waiter left")
			if l, err := s.TryLock(bg(t), "held"); err != nil {
				t.Fatalf("TryLock after the release: %v", err)
			} else if l.Token() <= held.Token() {
				t.Fatalf("token %d after %d", l.Token(), held.Token())
			}
		})
	}
}

// TestClientDeadlock: the client reads dw from the daemon, and a wait the
// daemon refuses as a deadlock is an ErrDeadlock, the client's locks kept.
func TestClientDeadlock(t *testing.T) {
	srv := startServer(t, nil)
	a := dialClient(t, "tcp", srv.TCPAddr().String())
	b := dialClient(t, "unix", srv.cfg.UnixPath)
	for c, name := range map[*lockclient.Client]string{a: "x", b: "y"} {
		if ok, err := c.Get(bg(t), name); !ok || err != nil {
			t.Fatalf("g %s: %v %v", name, ok, err)
		}
	}
	granted := make(chan error, 1)
	go func() {
		ok, err := a.GetWait(bg(t), -1, "y")
		if err == nil && !ok {
			err = errors.New("not granted")
		}
		granted <- err
	}()
	waitersQueued(t, srv, 1, "a waits for y")
	waiting, err := b.Waiters(bg(t), "")
	if err != nil || len(waiting) != 1 || waiting[0].Lock != "y" || waiting[0].Shared {
		t.Fatalf("dw: %+v %v", waiting, err)
	}
	if _, err := b.GetWait(bg(t), -1, "x"); !errors.Is(err, lockclient.ErrDeadlock) {
		t.Fatalf("b's gw x: %v, want ErrDeadlock", err)
	}
	if ok, err := b.Release(bg(t), "y"); !ok || err != nil {
		t.Fatalf("r y: %v %v", ok, err)
	}
	if err := <-granted; err != nil {
		t.Fatalf("a's gw y: %v", err)
	}
}

// TestSessionDeadlock: a Session waits with !gw and !sgw; a wait of its
// that the daemon refuses as a deadlock ("!gw 0 deadlock NAME", "!sgw
// deadlock NAME") is an ErrDeadlock, the session and its locks kept.
func TestSessionDeadlock(t *testing.T) {
	srv := startServer(t, nil)
	addr := srv.TCPAddr().String()
	s := newSession(t, "tcp", []string{addr}, lockclient.SessionOptions{})
	b := dialClient(t, "unix", srv.cfg.UnixPath)
	x, err := s.Lock(bg(t), "x")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Get(bg(t), "y"); !ok || err != nil {
		t.Fatalf("g y: %v %v", ok, err)
	}
	if n, err := b.SharedGet(bg(t), "s"); n != 1 || err != nil {
		t.Fatalf("sg s: %v %v", n, err)
	}
	granted := make(chan error, 1)
	go func() {
		ok, err := b.GetWait(bg(t), -1, "x") // b waits for the session
		if err == nil && !ok {
			err = errors.New("not granted")
		}
		granted <- err
	}()
	waitersQueued(t, srv, 1, "b waits for x")
	if _, err := s.Lock(bg(t), "y"); !errors.Is(err, lockclient.ErrDeadlock) {
		t.Fatalf("the session's Lock of y: %v, want ErrDeadlock", err)
	}
	if _, err := s.Acquire(bg(t), "s", 1); !errors.Is(err, lockclient.ErrDeadlock) {
		t.Fatalf("the session's Acquire of s: %v, want ErrDeadlock", err)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("session: %v", err)
	}
	if err := x.Unlock(bg(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-granted; err != nil {
		t.Fatalf("b's gw x: %v", err)
	}
}
