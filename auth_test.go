package main

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/acl"
	"github.com/glockd/glockd/internal/wire"
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

// TestUnauthCannotCrowdOut: twice -max-conns connections that never
// authenticate do not keep out a client with a token.
func TestUnauthCannotCrowdOut(t *testing.T) {
	const maxConns = 50
	srv, _ := aclServer(t, "", func(c *Config) { c.MaxConns = maxConns })
	var strangers []net.Conn
	for range 2 * maxConns {
		nc, err := net.Dial("tcp", srv.TCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		strangers = append(strangers, nc)
	}
	t.Cleanup(func() {
		for _, nc := range strangers {
			nc.Close()
		}
	})
	// The strangers are all admitted (or turned away) before the client.
	eventually(t, "the strangers admitted", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.unauth.list.Len() > 0
	})
	time.Sleep(100 * time.Millisecond)
	c := rawClient(t, srv, "tcp")
	c.expectOne("auth "+billingToken, "1 ok\n")
	c.expectOne("g billing/in", "1 Lock Get Success: billing/in\n")
	// Another stranger now takes an unauthenticated one's place, not the
	// client's.
	s := rawClient(t, srv, "tcp")
	s.expectOne("ping", "1 pong\n")
	c.expectOne("i billing/in", "1 Lock Is Locked: billing/in\n")
}

// TestAuthTimeout: a connection that has not authenticated within
// -auth-timeout is closed; one that has is not.
func TestAuthTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv, _ := aclServer(t, "", func(c *Config) { c.Security.AuthTimeout = timeout })
	var wg sync.WaitGroup
	for _, tr := range []string{"tcp", "unix"} {
		stranger := rawClient(t, srv, tr)
		stranger.expectOne("ping", "1 pong\n")
		member := rawClient(t, srv, tr)
		member.expectOne("auth "+readerToken, "1 ok\n")
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			expectClosed(t, stranger)
			if d := time.Since(start); d < timeout/2 {
				t.Errorf("%s: closed after %v, before the timeout", tr, d)
			}
		}()
		defer func() {
			time.Sleep(2 * timeout)
			member.expectOne("ping", "1 pong\n")
		}()
	}
	wg.Wait()
}

// TestUnauthSmallBuffers: before it authenticates, a connection's lines and
// websocket messages are kept small; after, -max-line applies.
func TestUnauthSmallBuffers(t *testing.T) {
	srv, _ := aclServer(t, "", nil)
	long := "i " + strings.Repeat("n", 2<<10)
	c := rawClient(t, srv, "tcp")
	c.expectOne(long, "0 Line Too Long\n")
	c.expectOne("auth "+readerToken, "1 ok\n")
	c.expectOne(long, "0 Lock Not Locked: "+long[2:]+"\n")

	// Lines queued behind a failed auth: at most 4 KiB.
	q := rawClient(t, srv, "tcp")
	q.send(wrongAuths(1000))
	if got := q.line(); got != wire.QueueFull {
		t.Fatalf("1,000 lines behind a failed auth: %q, want %q", got, wire.QueueFull)
	}
	expectClosed(t, q)

	w := rawClient(t, srv, "websocket")
	msg := strings.Repeat("ping\n", 2000) // 10,000 bytes: 2,000 commands
	w.send(msg)
	w.expectOne("ping", "0 Line Too Long\n") // the message, refused whole
	if got := w.line(); got != "1 pong\n" {
		t.Fatalf("got %q", got)
	}
	w.expectOne("auth "+readerToken, "1 ok\n")
	w.send(msg)
	for range 2000 {
		if got := w.line(); got != "1 pong\n" {
			t.Fatalf("got %q", got)
		}
	}
}

// TestSilentTLSCannotCrowdOut: twice -max-conns connections to the TLS port
// that never send a ClientHello (client certificates required) keep out
// neither plain TCP clients nor a TLS client that completes its handshake.
func TestSilentTLSCannotCrowdOut(t *testing.T) {
	const maxConns = 50
	ca := newTestCA(t, "glockd-test")
	clients := newTestCA(t, "glockd-clients")
	srv, _ := tlsServer(t, ca, func(c *Config) {
		c.MaxConns = maxConns
		c.Security.ClientCAFile = clients.file
		c.Security.MaxHandshakes = maxConns
	})
	var silent []net.Conn
	for range 2 * maxConns {
		nc, err := net.Dial("tcp", srv.TLSAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, nc)
	}
	t.Cleanup(func() {
		for _, nc := range silent {
			nc.Close()
		}
	})
	time.Sleep(200 * time.Millisecond) // the silent ones accepted first
	c := dial(t, srv, "tcp")
	c.expect("g in", "1 Lock Get Success: in\n")
	tc := tlsClient(t, srv, ca.clientTLS(clients.issue(certOpts{cn: "svc", client: true}).cert))
	tc.expect("g tls-in", "1 Lock Get Success: tls-in\n")
}

// TestUnauthWebsocketMemory: websocket clients that never authenticate each
// start a message of almost 1 MiB and send 16 KiB of it. Before they
// authenticate a message may be 4 KiB: the server skips these as they
// arrive instead of holding a 1 MiB buffer for each.
func TestUnauthWebsocketMemory(t *testing.T) {
	const (
		clients = 300
		size    = 1<<20 - 64
		sent    = 16 << 10
		// The whole connection, both sides (this process is both):
		// goroutines, the HTTP server's buffers, socket state.
		perConn = 48 << 10
	)
	srv, _ := aclServer(t, "", nil)
	header := []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // FIN, text, 64-bit length, zero mask
	binary.BigEndian.PutUint64(header[2:], size)
	chunk := append(header, make([]byte, sent)...)
	rss := watchRSS(t)
	for i := range clients {
		status, nc, _ := upgrade(t, srv.WSAddr().String(), "")
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("client %d: status %d", i, status)
		}
		if _, err := nc.Write(chunk); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the server reads what was sent
	grew := rss.growth()
	t.Logf("%d unauthenticated websockets, each %d KiB into a message of 1 MiB: RSS grew %.1f MiB", clients, sent>>10, float64(grew)/(1<<20))
	if grew > clients*perConn && !raceEnabled() {
		t.Errorf("RSS grew by %.1f MiB, over %d KiB a connection", float64(grew)/(1<<20), perConn>>10)
	}
	w := rawClient(t, srv, "websocket")
	w.expectOne("auth "+readerToken, "1 ok\n")
}
