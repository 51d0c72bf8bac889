package main

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/tokens"
)

// startLeaderServer runs an in-process server whose manager obeys l, as
// with -etcd, but without etcd: the test plays the node's part, publishing
// terms and moving their deadlines.
func startLeaderServer(t *testing.T, l *ha.Leadership) *Server {
	t.Helper()
	srv, err := NewServer(Config{TCPAddr: "127.0.0.1:0", Registry: true, Dump: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.manager.leader = &leadership{node: l}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// testTerm is a term with tokens from start, its deadline an hour ahead.
func testTerm(l *ha.Leadership, start uint64) *ha.Term {
	return ha.NewTerm(l, tokens.Block{Start: start, End: start + tokens.BlockSize}, time.Now().Add(time.Hour))
}

// expectSilence checks that nothing arrives on nc for a while. It cannot
// prove that nothing ever will; the manager has already refused the batch
// when this is called, so a reply would be on its way.
func expectSilence(t *testing.T, c *client) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	got, err := c.r.ReadString('\n')
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %q (%v), want no reply", got, err)
	}
}

// TestDeadlineBeforeEveryBatch: once the leader's deadline has passed, the
// manager runs no batch (even one already read), hands no orphaned lock to
// a waiter, and ends the term so that the node steps down. A new term
// starts its tokens from its own block.
func TestDeadlineBeforeEveryBatch(t *testing.T) {
	l := ha.NewLeadership()
	tm := testTerm(l, 1<<40)
	l.Publish(tm)
	srv := startLeaderServer(t, l)

	holder, waiter, other := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g x", "1 Lock Get Success: x\n")
	if token := tokenOf(t, holder, "x"); token != 1<<40 {
		t.Fatalf("first token %d, want the block's start %d", token, uint64(1<<40))
	}
	waiter.send("gw -1 x\n")
	waitersQueued(t, srv, 1, "the waiter queued")

	// As for a process paused past its deadline.
	tm.SetDeadline(time.Time{})
	other.send("g y\nt y\n")
	select {
	case <-tm.Over():
	case <-time.After(10 * time.Second):
		t.Fatal("the term did not end")
	}
	if s, _ := srv.manager.askStats(time.Second); s.locks != 1 {
		t.Fatalf("%d locks after the refused batch, want 1", s.locks)
	}
	// The connection finds the term over and closes without a reply.
	expectClosedUnanswered(t, other)

	holder.close()
	eventually(t, "x orphaned", func() bool {
		s, _ := srv.manager.askStats(time.Second)
		return s.locks == 0 && s.waiters == 0
	})
	expectSilence(t, waiter)

	// A client that stops sending while its wait was dropped is let go: its
	// connection ends, with no grant.
	waiter.nc.(*net.TCPConn).CloseWrite()
	waiter.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(waiter.r); err != nil || strings.Contains(string(rest), "Success") {
		t.Fatalf("waiter after its end of input: %q, %v", rest, err)
	}

	// A deadline that moves again does not revive the term.
	tm.SetDeadline(time.Now().Add(time.Hour))
	nc, _ := rawDial(t, srv, "tcp")
	other = streamClient(t, nc)
	other.send("g z\n")
	expectSilence(t, other)

	// Nor do the tokens of a new term start from the old block.
	l.Publish(testTerm(l, 1<<41))
	c := dial(t, srv, "tcp")
	c.expect("g x", "1 Lock Get Success: x\n")
	if token := tokenOf(t, c, "x"); token != 1<<41 {
		t.Fatalf("first token of the new term %d, want %d", token, uint64(1<<41))
	}
}

// TestStandbyRefusesConnections: an HA server opens no lock listener until
// elected; its /healthz on -metrics-addr says so.
func TestStandbyRefusesConnections(t *testing.T) {
	srv, err := NewServer(Config{
		TCPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		// Nothing listens there: this node never gets elected.
		HA: &ha.Config{Endpoints: []string{"127.0.0.1:1"}, Prefix: ha.DefaultEtcdPrefix, LeaseTTL: time.Second, Advertise: "127.0.0.1:9999"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if a := srv.TCPAddr(); a != nil {
		t.Fatalf("a standby listens on %v", a)
	}
	resp, body := httpGet(t, "http://"+srv.MetricsAddr().String()+"/healthz")
	if resp.StatusCode != 503 || !strings.HasPrefix(body, "role: standby\n") {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
	if got := scrape(t, srv.MetricsAddr().String())["glockd_leader"]; got != 0 {
		t.Fatalf("glockd_leader %v", got)
	}
}

func TestHAFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		err  string // "" for success
	}{
		{[]string{"-lease-ttl", "3s"}, "-lease-ttl needs -etcd"},
		{[]string{"-etcd", "127.0.0.1:2379"}, "-etcd needs -metrics-addr"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-lease-ttl", "1500ms"}, "whole seconds"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-etcd-cert", "c.pem"}, "go together"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-advertise", "nohostport"}, "-advertise"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-port", "0"}, "needs -advertise"},
		{[]string{"-etcd", "127.0.0.1:2379", "-metrics-addr", ":0", "-bind", "10.1.2.3"}, ""},
	} {
		cfg, _, err := parseFlags(tt.args, io.Discard)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want one saying %q", tt.args, err, tt.err)
		}
		if tt.err == "" && err == nil {
			hc := cfg.HA
			if hc == nil || hc.Advertise != "10.1.2.3:9999" || hc.Prefix != ha.DefaultEtcdPrefix || hc.LeaseTTL != ha.DefaultLeaseTTL || hc.TakeoverDelay != ha.DefaultTakeoverDelay {
				t.Errorf("%q: %+v", tt.args, hc)
			}
		}
	}
	cfg, _, err := parseFlags(nil, io.Discard)
	if err != nil || cfg.HA != nil {
		t.Errorf("no -etcd: HA %+v, %v", cfg.HA, err)
	}
}

// TestStepDownAnswersWaiters: a leader that stops while it leads tells its
// waiters, synchronous and asynchronous, that they did not get their lock,
// as a single node's Close does, before the step-down closes them.
func TestStepDownAnswersWaiters(t *testing.T) {
	l := ha.NewLeadership()
	l.Publish(testTerm(l, 1<<40))
	srv := startLeaderServer(t, l)
	holder, w, aw := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g x", "1 Lock Get Success: x\n")
	w.send("gw -1 x\n")
	aw.send("!gw -1 x\n")
	waitersQueued(t, srv, 2, "both waits queued")

	h := haHooks{srv}
	h.AnswerWaiters()
	l.Publish(nil)
	if !h.StepDown() {
		t.Error("StepDown: the listeners were not open")
	}
	if got := w.line(); got != "0 Lock Get Timeout: x\n" {
		t.Errorf("waiter: %q", got)
	}
	if got := aw.line(); got != "!gw 0 0 x\n" {
		t.Errorf("asynchronous waiter: %q", got)
	}
	expectClosedUnanswered(t, holder)
}

// TestStepDownUnderLoad: a leader that stops while it leads, as internal/ha
// calls its hooks, with waiters, pipelining clients and clients whose
// replies cannot be written: the step-down closes the listeners and every
// connection and returns once all have ended, leaving no goroutine behind.
// (Whether each waiter's reply fits in the grace under such load is not
// asserted; TestStepDownAnswersWaiters checks the replies.)
func TestStepDownUnderLoad(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	l := ha.NewLeadership()
	l.Publish(testTerm(l, 1<<40))
	srv, err := NewServer(Config{TCPAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", UnixPath: filepath.Join(t.TempDir(), "g.sock")})
	if err != nil {
		t.Fatal(err)
	}
	srv.manager.leader = &leadership{node: l}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	a := addrsOf(srv)
	load := startLoad(t, a)
	eventually(t, "waiters queued", func() bool {
		s, _ := srv.manager.askStats(5 * time.Second)
		return s.waiters == load.waiters
	})

	load.closing.Store(true)
	h := haHooks{srv}
	stepped := make(chan bool)
	go func() {
		h.AnswerWaiters()
		l.Publish(nil)
		stepped <- h.StepDown()
	}()
	select {
	case wasOpen := <-stepped:
		if !wasOpen {
			t.Error("StepDown: the listeners were not open")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the step-down did not return")
	}
	srv.mu.Lock()
	open, conns := srv.lockOpen, len(srv.conns)
	srv.mu.Unlock()
	if open || conns > 0 {
		t.Errorf("after the step-down: listeners open %v, %d connections", open, conns)
	}
	if _, err := net.Dial("tcp", a.tcp); err == nil {
		t.Error("the TCP listener accepts after the step-down")
	}
	load.finish(5 * time.Second)
	closeWithin(t, srv, 5*time.Second)
	goleak.VerifyNone(t, ignore)
}
