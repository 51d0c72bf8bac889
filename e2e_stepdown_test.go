package main

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/tokens"
	"go.uber.org/goleak"
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
