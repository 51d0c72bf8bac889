package main

import (
	"encoding/binary"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/wire"
)

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
