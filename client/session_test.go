package client_test

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/glockd/glockd/client"
)

// cancelScript answers gw and sgw only when they are cancelled, with the
// given replies, as a server does when a grant crosses the cancellation
// ("!cancel 0" then the grant) or when the cancellation ends the wait
// ("!cancel 1" then the timeout).
func cancelScript(onCancel func(name string) string) script {
	return fenced(func(line string) string {
		verb, rest, _ := strings.Cut(line, " ")
		switch verb {
		case "!cancel":
			return onCancel(rest)
		case "r":
			return "1 Lock Release Success: " + rest + "\n"
		case "sr":
			return "1 Shared Lock Release Success: " + rest + "\n"
		case "g":
			return "1 Lock Get Success: " + rest + "\n"
		case "!ping":
			return "!pong\n"
		}
		return ""
	})
}

// TestWaitGrantCrossesCancel: the server granted the wait before it read
// the cancellation. The client gives the lock back before anything else is
// sent, and reports ctx's error.
func TestWaitGrantCrossesCancel(t *testing.T) {
	srv := serveLines(t, cancelScript(func(name string) string {
		return "!cancel 0\n1 Lock Get Success: " + name + "\n"
	}))
	c := dial(t, srv.ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	got, err := c.GetWait(ctx, -1, "x")
	if got || !errors.Is(err, context.Canceled) {
		t.Fatalf("GetWait: %v, %v; want context.Canceled", got, err)
	}
	if ok, err := c.Get(context.Background(), "y"); err != nil || !ok {
		t.Fatalf("g after the cancelled wait: %v, %v", ok, err)
	}
	want := []string{"gw -1 x", "!cancel x", "r x", "g y"}
	if got := srv.received(); !reflect.DeepEqual(got, want) {
		t.Errorf("server received %q, want %q", got, want)
	}
}

// TestWaitCancelled: the cancellation ended the wait; nothing to undo.
func TestWaitCancelled(t *testing.T) {
	srv := serveLines(t, cancelScript(func(name string) string {
		return "!cancel 1\n0 Shared Lock Get Timeout: " + name + "\n"
	}))
	c := dial(t, srv.ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	n, err := c.SharedGetWait(ctx, -1, 2, "s  t")
	if n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("SharedGetWait: %v, %v; want context.Canceled", n, err)
	}
	if ok, err := c.Get(context.Background(), "y"); err != nil || !ok {
		t.Fatalf("g after the cancelled wait: %v, %v", ok, err)
	}
	want := []string{"sgw -1 2 s  t", "!cancel s t", "g y"}
	if got := srv.received(); !reflect.DeepEqual(got, want) {
		t.Errorf("server received %q, want %q", got, want)
	}
}

// TestSessionLockGrantCrossesCancel is TestWaitGrantCrossesCancel for a
// session's Lock, which waits with !gw: the grant, out of band, comes after
// the cancellation's "!cancel 0".
func TestSessionLockGrantCrossesCancel(t *testing.T) {
	base := cancelScript(func(name string) string {
		return "!cancel 0\n!gw 1 7 " + name + "\n"
	})
	srv := serveLines(t, func(line string) string {
		verb, name, _ := strings.Cut(line, " ")
		if verb == "t" {
			return "8 Lock Token: " + name + "\n"
		}
		return base(line)
	})
	s, err := client.NewSession(context.Background(), "tcp", []string{srv.ln.Addr().String()}, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if l, err := s.Lock(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock: %v, %v; want context.Canceled", l, err)
	}
	l, err := s.TryLock(ctxTimeout(t, 5*time.Second), "x")
	if err != nil || l.Token() != 8 {
		t.Fatalf("TryLock after the cancelled Lock: %v, %v", l, err)
	}
	var got []string
	for _, line := range srv.received() {
		if line != "!ping" {
			got = append(got, line)
		}
	}
	want := []string{"!gw -1 x", "!cancel x", "r x", "g x", "t x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("server received %q, want %q", got, want)
	}
}

// TestOneWaitAtATime: while a wait is pending, other calls are not sent
// (the server would run them after the wait), and give up with their
// context.
func TestOneWaitAtATime(t *testing.T) {
	srv := serveLines(t, cancelScript(func(name string) string {
		return "!cancel 1\n0 Lock Get Timeout: " + name + "\n"
	}))
	c := dial(t, srv.ln.Addr().String())
	waitCtx, cancelWait := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.GetWait(waitCtx, -1, "x")
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Get(ctxTimeout(t, 50*time.Millisecond), "y"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("g during the wait: %v, want a deadline error", err)
	}
	cancelWait()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("GetWait: %v", err)
	}
	if ok, err := c.Get(ctxTimeout(t, 5*time.Second), "z"); err != nil || !ok {
		t.Fatalf("g after the wait: %v, %v", ok, err)
	}
	want := []string{"gw -1 x", "!cancel x", "g z"}
	if got := srv.received(); !reflect.DeepEqual(got, want) {
		t.Errorf("server received %q, want %q", got, want)
	}
}

// TestPipelineWaitsCancelled: each wait of a pipeline is cancelled when
// its turn comes; the replies are all read.
func TestPipelineWaitsCancelled(t *testing.T) {
	srv := startFake(t)
	ctx := ctxTimeout(t, 10*time.Second)
	holder := dial(t, srv.addr())
	holder.Get(ctx, "px")
	holder.Get(ctx, "py")
	c := dial(t, srv.addr())
	p := c.Pipeline()
	a, b, tok := p.GetWait(-1, "px"), p.GetWait(-1, "py"), p.Token("px")
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := p.Exec(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec: %v, want context.Canceled", err)
	}
	if a.Val() || b.Val() || a.Err() != nil || b.Err() != nil || tok.Err() != nil || tok.Val() == 0 {
		t.Fatalf("replies: %v %v, %v %v, %v %v", a.Val(), a.Err(), b.Val(), b.Err(), tok.Val(), tok.Err())
	}
	if ok, err := c.Get(ctx, "pz"); err != nil || !ok {
		t.Fatalf("g after the pipeline: %v, %v", ok, err)
	}
}

// TestSessionLostWhenFrozenFake: a server that stops answering loses the
// session within its timeout, and the locks with it.
func TestSessionLostWhenFrozenFake(t *testing.T) {
	srv := startFake(t)
	const interval, timeout = 50 * time.Millisecond, 500 * time.Millisecond
	s, err := client.NewSession(ctxTimeout(t, 5*time.Second), "tcp", []string{srv.addr()},
		client.SessionOptions{Interval: interval, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := s.Lock(ctxTimeout(t, 5*time.Second), "frozen")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * interval)
	srv.frozen.Store(true)
	defer srv.frozen.Store(false)
	select {
	case <-l.Lost():
	case <-time.After(30 * timeout):
		t.Fatal("not lost")
	}
	if !errors.Is(s.Err(), client.ErrSessionLost) || !strings.Contains(s.Err().Error(), "no answer") {
		t.Errorf("Err: %v", s.Err())
	}
}

// TestSessionNeedsOutOfBand: a server without !ping cannot hold a session.
func TestSessionNeedsOutOfBand(t *testing.T) {
	srv := startFake(t)
	srv.noOOB.Store(true)
	_, err := client.NewSession(ctxTimeout(t, 5*time.Second), "tcp", []string{srv.addr()},
		client.SessionOptions{Timeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "!ping") {
		t.Fatalf("NewSession: %v, want no answer to !ping", err)
	}
}

// TestSessionConnectionEnds: a connection that ends loses the session at
// once, not after the timeout.
func TestSessionConnectionEnds(t *testing.T) {
	srv := startFake(t)
	s, err := client.NewSession(ctxTimeout(t, 5*time.Second), "tcp", []string{srv.addr()},
		client.SessionOptions{Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv.dropAll()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("not lost 10 s after the connection ended (timeout 1 h)")
	}
	if !errors.Is(s.Err(), client.ErrSessionLost) {
		t.Errorf("Err: %v", s.Err())
	}
}

// TestRecvOutOfBand: an out-of-band reply no session asked for is the
// stream's, for Recv.
func TestRecvOutOfBand(t *testing.T) {
	srv := startFake(t)
	c := dial(t, srv.addr())
	if err := c.Send(context.Background(), "!ping", "!cancel"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"!pong", "!cancel 0"} {
		if got, err := c.Recv(ctxTimeout(t, 5*time.Second)); err != nil || got != want {
			t.Fatalf("Recv: %q, %v; want %q", got, err, want)
		}
	}
}

// TestDialAllDown names every address that failed.
func TestDialAllDown(t *testing.T) {
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	_, err := client.Dial(ctxTimeout(t, 5*time.Second), "tcp", addrs...)
	if err == nil || !strings.Contains(err.Error(), addrs[0]) || !strings.Contains(err.Error(), addrs[1]) {
		t.Fatalf("Dial: %v, want both addresses named", err)
	}
	if _, err := client.Dial(context.Background(), "tcp"); err == nil {
		t.Fatal("Dial with no address: no error")
	}
}

// serveDNS answers A queries for any name with addrs, and AAAA with none,
// on a loopback UDP port.
func serveDNS(t *testing.T, addrs ...[4]byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	goWait(&wg, func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.EnableCompression()
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			if q.Type == dnsmessage.TypeA {
				for _, a := range addrs {
					_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
						dnsmessage.AResource{A: a})
				}
			}
			msg, err := b.Finish()
			if err == nil {
				_, _ = pc.WriteTo(msg, from)
			}
		}
	})
	return pc.LocalAddr().String()
}

// TestSessionDNSName: a name with several A records is tried address by
// address: here the first refuses, the second is the server.
func TestSessionDNSName(t *testing.T) {
	srv := startFake(t)
	_, port, _ := net.SplitHostPort(srv.addr())
	dns := serveDNS(t, [4]byte{127, 0, 0, 2}, [4]byte{127, 0, 0, 1})
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dns)
	}}
	s, err := client.NewSession(ctxTimeout(t, 10*time.Second), "tcp", []string{"glockd.test.:" + port},
		client.SessionOptions{Dialer: &net.Dialer{Resolver: resolver}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Client().RemoteAddr().String(); got != srv.addr() {
		t.Fatalf("connected to %s, want %s", got, srv.addr())
	}
	if _, err := s.Lock(ctxTimeout(t, 5*time.Second), "dns"); err != nil {
		t.Fatal(err)
	}
}

// TestSessionUndoWhileOthersCall: a grant that crossed a Lock's
// cancellation is given back while other goroutines use the session. The
// release takes its turn like any call (before, it wrote without it, and
// the race detector caught two writers of the same buffer).
func TestSessionUndoWhileOthersCall(t *testing.T) {
	base := cancelScript(func(name string) string {
		return "!cancel 0\n!gw 1 7 " + name + "\n"
	})
	srv := serveLines(t, func(line string) string {
		verb, name, _ := strings.Cut(line, " ")
		if verb == "t" {
			return "8 Lock Token: " + name + "\n"
		}
		return base(line)
	})
	s, err := client.NewSession(context.Background(), "tcp", []string{srv.ln.Addr().String()}, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	goWait(&wg, func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			l, err := s.TryLock(ctxTimeout(t, 5*time.Second), "y")
			if err != nil {
				t.Errorf("TryLock: %v", err)
				return
			}
			if err := l.Unlock(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Errorf("Unlock: %v", err)
				return
			}
		}
	})
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		if _, err := s.Lock(ctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock: %v, want a deadline error", err)
		}
		cancel()
	}
	close(stop)
	wg.Wait()
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}
