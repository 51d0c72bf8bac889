package main

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/acl"
)

// wrongAuths is a pipeline of n auth lines with wrong tokens.
func wrongAuths(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("auth wrong-" + strconv.Itoa(i) + "\n")
	}
	return b.String()
}

// sendWrongAuths sends n wrong auths on c and returns once the server has
// tried the first: its failure's delay has begun.
func sendWrongAuths(t *testing.T, srv *Server, c *client, n int) {
	t.Helper()
	tried := func() float64 {
		_, body := httpGet(t, "http://"+srv.WSAddr().String()+"/metrics")
		return metricValue(t, body, "glockd_auth_failures_total")
	}
	before := tried()
	c.send(wrongAuths(n))
	eventually(t, "the first wrong auth tried", func() bool { return tried() > before })
}

// TestAuthFailurePipelineBlocksNothing: a holder that pipelines 1,000 wrong
// auths, at the default delay of a second, neither keeps its locks after it
// closes nor survives kill-holder; the failure's delay runs on a timer, not
// on the reader.
func TestAuthFailurePipelineBlocksNothing(t *testing.T) {
	srv, _ := aclServer(t, "", func(c *Config) { c.Security.AuthFailureDelay = DefaultAuthFailureDelay })
	ops := rawClient(t, srv, "tcp")
	ops.expectOne("auth "+opsToken, "1 ok\n")

	t.Run("close", func(t *testing.T) {
		h := rawClient(t, srv, "tcp")
		h.expectOne("auth "+billingToken, "1 ok\n")
		h.expectOne("g billing/closed", "1 Lock Get Success: billing/closed\n")
		sendWrongAuths(t, srv, h, 1000)
		start := time.Now()
		h.close()
		eventually(t, "the lock released", func() bool { return ops.one("i billing/closed") == "0 Lock Not Locked: billing/closed\n" })
		d := time.Since(start)
		t.Logf("lock released %v after its holder closed", d)
		if d > time.Second {
			t.Errorf("lock released %v after its holder closed, want under 1s", d)
		}
	})
	t.Run("kill-holder", func(t *testing.T) {
		h := rawClient(t, srv, "tcp")
		h.expectOne("auth "+billingToken, "1 ok\n")
		h.expectOne("g billing/killed", "1 Lock Get Success: billing/killed\n")
		sendWrongAuths(t, srv, h, 1000)
		start := time.Now()
		ops.expectOne("kill-holder billing/killed", "1 ok\n")
		eventually(t, "the lock released", func() bool { return ops.one("i billing/killed") == "0 Lock Not Locked: billing/killed\n" })
		d := time.Since(start)
		t.Logf("lock released %v after kill-holder", d)
		if d > time.Second {
			t.Errorf("lock released %v after kill-holder, want under 1s", d)
		}
	})
	t.Run("close server", func(t *testing.T) {
		h := rawClient(t, srv, "tcp")
		h.expectOne("auth "+billingToken, "1 ok\n")
		sendWrongAuths(t, srv, h, 1000)
		time.Sleep(50 * time.Millisecond) // more of the lines read, as a rule
		t.Logf("server closed in %v", closeWithin(t, srv, 3*time.Second))
		// The pending failure is answered, and the lines read behind it
		// (all of them, unless the machine is so slow that the connection
		// was still busy reading them when Close's grace of 250 ms ended:
		// then it is closed without its replies). Nothing else is written.
		h.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		rest, _ := io.ReadAll(h.r) // to the server's close
		got := string(rest)
		replies := strings.Count(got, "\n")
		if strings.Repeat("0 Auth Failure\n", replies) != got {
			t.Fatalf("after the close: %d lines, %q...", replies, got[:min(len(got), 200)])
		}
		t.Logf("%d of the 1000 answered", replies)
	})
}

// TestAuthFailurePipelineRefused: after a failure, the auth lines that came
// with it are refused untried (even a right token), other commands run; the
// third failure closes the connection after its reply.
func TestAuthFailurePipelineRefused(t *testing.T) {
	srv, _ := aclServer(t, "", nil)
	c := rawClient(t, srv, "tcp")
	c.send("auth wrong\nauth " + billingToken + "\nping\n")
	for _, want := range []string{"0 Auth Failure\n", "0 Auth Failure\n", "1 pong\n"} {
		if got := c.line(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	c.expectOne("auth wrong-2", "0 Auth Failure\n")
	c.expectOne("auth wrong-3", "0 Auth Failure\n")
	expectClosed(t, c)
	resp, body := httpGet(t, "http://"+srv.WSAddr().String()+"/metrics")
	resp.Body.Close()
	for _, want := range []string{"glockd_auth_failures_total 3\n", "glockd_auth_refused_total 1\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestAuthFailureSIGTERM: a daemon with a pipeline of 1,000 wrong auths of
// an authenticated client pending stops on SIGTERM within 3 s.
func TestAuthFailureSIGTERM(t *testing.T) {
	port := freePort(t)
	acl := writeFile(t, "acl", testACL)
	d, logs := loggedDaemon(t, "-bind", "127.0.0.1", "-port", strconv.Itoa(port), "-ws", "0", "-acl-file", acl)
	nc := dialRetry(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
	c := streamClient(t, nc)
	// Authenticated: its queue may hold the 1,000 lines (one that is not
	// may queue only 4 KiB, and is closed past it).
	c.expectOne("auth "+billingToken, "1 ok\n")
	c.send(wrongAuths(1000))
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		t.Logf("stopped %v after SIGTERM", time.Since(start))
	case <-time.After(3 * time.Second):
		t.Fatalf("still running 3s after SIGTERM; log:\n%s", logs)
	}
}

// TestAuthFailureRate: guesses from 1,000 connections stay under the
// server-wide failure rate, and the log stays small.
func TestAuthFailureRate(t *testing.T) {
	var logs logBuffer
	const conns = 1000
	const perSecond = 100
	srv, _ := aclServer(t, "", func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.MaxConns = 2 * conns
		c.Security.MaxUnauthConns = 2 * conns
	})
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := 0
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each from an address of its own: the global limit, not
			// the per-address one, is under test.
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(1+i%250))}}
			nc, err := d.Dial("tcp", srv.TCPAddr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(30 * time.Second))
			if _, err := nc.Write([]byte(wrongAuths(3))); err != nil {
				t.Error(err)
				return
			}
			buf := make([]byte, 64)
			n := 0
			for err == nil && strings.Count(string(buf[:n]), "\n") < 1 {
				var k int
				k, err = nc.Read(buf[n:])
				n += k
			}
			if !strings.HasPrefix(string(buf[:n]), "0 Auth Failure\n") {
				t.Errorf("guess %d: %q, %v", i, buf[:n], err)
			}
			mu.Lock()
			failures++
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	resp, body := httpGet(t, "http://"+srv.WSAddr().String()+"/metrics")
	resp.Body.Close()
	tried := metricValue(t, body, "glockd_auth_failures_total")
	// The bucket holds half a second's worth; the rest come at its rate.
	limit := perSecond*acl.BurstSeconds + perSecond*elapsed.Seconds() + 1
	t.Logf("%d connections answered in %v; tokens tried %v (limit %v), refused %v; log %d bytes",
		failures, elapsed, tried, limit, metricValue(t, body, "glockd_auth_refused_total"), len(logs.String()))
	if tried > limit {
		t.Errorf("%v tokens tried in %v, over the global limit %v", tried, elapsed, limit)
	}
	if n := len(logs.String()); n > 8<<10 {
		t.Errorf("%d bytes of log for %d connections' failures", n, conns)
	}
}

// metricValue is the value of an unlabelled metric in an exposition.
func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Errorf("no %s in metrics", name)
	return 0
}
