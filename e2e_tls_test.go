package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/transport"
	"golang.org/x/net/websocket"
)

func TestTLSLineProtocol(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	srv, _ := tlsServer(t, ca, nil)
	c := tlsClient(t, srv, ca.clientTLS())
	c.expect("me", "1 "+c.name+" "+c.name+"\n")
	c.expect("g over-tls", "1 Lock Get Success: over-tls\n")
	c.expect("sg s", "1 Shared Lock Get Success: s\n")

	// The plain port goes on serving, on the same tables.
	plain := dial(t, srv, "tcp")
	plain.expect("i over-tls", "1 Lock Is Locked: over-tls\n")
	plain.expect("d over-tls", "over-tls: "+c.name+"\n")
	if n := plain.stat("connections"); n != 2 {
		t.Errorf("connections %d, want 2", n)
	}

	// Pipelined commands and a wait over TLS.
	c.send("g a\ng b\nping\n")
	for _, want := range []string{"1 Lock Get Success: a\n", "1 Lock Get Success: b\n", "1 pong\n"} {
		if got := c.line(); got != want {
			t.Fatalf("pipelined: got %q, want %q", got, want)
		}
	}
	plain.expect("g w", "1 Lock Get Success: w\n")
	c.send("gw -1 w\n")
	plain.expect("r w", "1 Lock Release Success: w\n")
	if got := c.line(); got != "1 Lock Get Success: w\n" {
		t.Fatalf("gw over tls: %q", got)
	}

	// Its disconnect orphans its locks, as on TCP.
	before := plain.stat("orphans")
	c.close()
	eventually(t, "the TLS client's locks orphaned", func() bool { return plain.stat("orphans") == before+4 })
	plain.expect("i over-tls", "0 Lock Not Locked: over-tls\n")

	// TLS 1.1 is refused.
	old := ca.clientTLS()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := dialTLS(t, srv, old); err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
	// So is a client that does not trust the server's CA.
	if _, err := dialTLS(t, srv, newTestCA(t, "other").clientTLS()); err == nil {
		t.Error("a client with another CA accepted the server")
	}
}

func TestTLSWebsocketAndHTTPS(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	srv, _ := tlsServer(t, ca, nil)
	ws, err := wssClient(t, srv, ca.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	ws.expect("g over-wss", "1 Lock Get Success: over-wss\n")
	ws.expect("xx", "")
	dial(t, srv, "tcp").expect("d over-wss", "over-wss: "+ws.name+"\n")

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.clientTLS()}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": `glockd_connections{transport="websocket"} 1`, "/": "<title>glockd console</title>"} {
		resp, err := hc.Get("https://" + srv.WSAddr().String() + path)
		if err != nil {
			t.Fatalf("GET %s over https: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
		if resp.ProtoMajor != 1 {
			t.Errorf("GET %s: %s, want HTTP/1.1 (the websocket upgrade needs it)", path, resp.Proto)
		}
	}
	// Plain HTTP on the HTTPS port gets nothing useful.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + srv.WSAddr().String() + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on the -ws-tls port")
		}
	}
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	clients := newTestCA(t, "glockd-clients")
	srv, _ := tlsServer(t, ca, func(c *Config) { c.Security.ClientCAFile = clients.file })
	billing := clients.issue(certOpts{cn: "ignored-cn", dns: []string{"billing.example", "other.example"}, client: true})
	cnOnly := clients.issue(certOpts{cn: "reports", client: true})

	t.Run("accepted", func(t *testing.T) {
		c := tlsClient(t, srv, ca.clientTLS(billing.cert))
		// The first DNS name is the identity, shown as the owner.
		c.expect("me", "1 "+c.name+" billing.example\n")
		c.expect("g inv", "1 Lock Get Success: inv\n")
		c.expect("d inv", "inv: billing.example\n")
		c.expect("who", c.name+": billing.example\n")
		// Without an ACL file the identity may do anything, but not pass
		// for another.
		c.expect("iam someone-else", "0 Permission Denied\n")
		c.expect("auth x", "0 disabled\n")
		c.expect("perms", "0 disabled\n")
		r := tlsClient(t, srv, ca.clientTLS(cnOnly.cert))
		r.expect("me", "1 "+r.name+" reports\n")
	})
	t.Run("websocket accepted", func(t *testing.T) {
		ws, err := wssClient(t, srv, ca.clientTLS(billing.cert))
		if err != nil {
			t.Fatal(err)
		}
		ws.expect("me", "1 "+ws.name+" billing.example\n")
	})

	expired := clients.issue(certOpts{cn: "expired", client: true, expired: true})
	stranger := newTestCA(t, "stranger").issue(certOpts{cn: "billing.example", client: true})
	for _, tt := range []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no certificate", nil},
		{"expired", []tls.Certificate{expired.cert}},
		{"wrong CA", []tls.Certificate{stranger.cert}},
	} {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			expectRefused(t, srv, ca.clientTLS(tt.certs...))
			// TLS 1.2 refuses within the handshake, TLS 1.3 after it.
			tls12 := ca.clientTLS(tt.certs...)
			tls12.MaxVersion = tls.VersionTLS12
			expectRefused(t, srv, tls12)
			if ws, err := wssClient(t, srv, ca.clientTLS(tt.certs...)); err == nil {
				ws.send("g x")
				ws.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
				var msg string
				if err := websocket.Message.Receive(ws.ws, &msg); err == nil {
					t.Errorf("websocket without a valid certificate answered %q", msg)
				}
			}
		})
	}
	plain := dial(t, srv, "tcp")
	plain.expect("i refused", "0 Lock Not Locked: refused\n")
	plain.expect("i x", "0 Lock Not Locked: x\n")
}

// expectRefused checks that a TLS client is turned away: at the handshake,
// or (TLS 1.3, where the client's handshake ends before the server has
// checked its certificate) at its first read.
func expectRefused(t *testing.T, srv *Server, cfg *tls.Config) {
	t.Helper()
	tc, err := dialTLS(t, srv, cfg)
	if err != nil {
		return
	}
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	tc.Write([]byte("g refused\n"))
	buf := make([]byte, 100)
	n, err := tc.Read(buf)
	if err == nil {
		t.Fatalf("refused client got %q", buf[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("refused client: read timed out instead of an alert or close")
	}
}

// TestTLSHandshakeTimeout: a client that connects and says nothing is
// dropped once the handshake time is up, and frees its connection slot.
func TestTLSHandshakeTimeout(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	var logs logBuffer
	srv, _ := tlsServer(t, ca, func(c *Config) {
		c.Security.HandshakeTimeout = 200 * time.Millisecond
		c.MaxConns = 2
		c.Verbose = true
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	silent, err := net.Dial("tcp", srv.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); n != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent client: %d bytes, %v; want the connection closed", n, err)
	}
	// Its slot is free again: two TLS clients fit under -max-conns 2.
	eventually(t, "the silent client's slot freed", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 0
	})
	a := tlsClient(t, srv, ca.clientTLS())
	b := tlsClient(t, srv, ca.clientTLS())
	a.expect("ping", "1 pong\n")
	b.expect("ping", "1 pong\n")
	if !strings.Contains(logs.String(), "tls handshake failed") {
		t.Errorf("no log of the failed handshake:\n%s", logs.String())
	}
}

// TestTLSReloadInProcess: Reload swaps the certificate for new handshakes,
// leaves connections alone, and keeps the old one when the new files are
// bad.
func TestTLSReloadInProcess(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	var logs logBuffer
	first := ca.issue(certOpts{cn: "first"})
	certFile, keyFile := writeFile(t, "server.crt", string(first.certPEM)), writeFile(t, "server.key", string(first.keyPEM))
	srv := startServer(t, func(c *Config) {
		c.Security.TLSAddr = "127.0.0.1:0"
		c.Security.CertFile, c.Security.KeyFile = certFile, keyFile
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	servedSerial := func() int64 {
		t.Helper()
		tc, err := dialTLS(t, srv, ca.clientTLS())
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	holder := tlsClient(t, srv, ca.clientTLS())
	holder.expect("g kept", "1 Lock Get Success: kept\n")
	if s := servedSerial(); s != first.serial {
		t.Fatalf("serial %d, want %d", s, first.serial)
	}

	second := ca.issue(certOpts{cn: "second"})
	os.WriteFile(certFile, second.certPEM, 0o600)
	os.WriteFile(keyFile, second.keyPEM, 0o600)
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := servedSerial(); s != second.serial {
		t.Fatalf("after reload: serial %d, want %d", s, second.serial)
	}
	holder.expect("i kept", "1 Lock Is Locked: kept\n")

	// A key that does not match the certificate: the second stays.
	os.WriteFile(keyFile, first.keyPEM, 0o600)
	err := srv.Reload()
	if err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("reload with a mismatched key: %v", err)
	}
	if s := servedSerial(); s != second.serial {
		t.Fatalf("after a bad reload: serial %d, want %d", s, second.serial)
	}
	if !strings.Contains(logs.String(), "reload failed") {
		t.Errorf("bad reload not logged:\n%s", logs.String())
	}
	holder.expect("r kept", "1 Lock Release Success: kept\n")
}

func TestSecurityConfigErrors(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	cert := ca.issue(certOpts{cn: "server"})
	for _, tt := range []struct {
		name string
		sc   SecurityConfig
		want string
	}{
		{"tls port without cert", SecurityConfig{TLSAddr: "127.0.0.1:0"}, "need -tls-cert"},
		{"cert without a listener", SecurityConfig{CertFile: cert.certFile, KeyFile: cert.keyFile}, "need -tls-port or -ws-tls"},
		{"missing cert file", SecurityConfig{TLSAddr: "127.0.0.1:0", CertFile: "/nonexistent", KeyFile: cert.keyFile}, "no such file"},
		{"bad client CA", SecurityConfig{TLSAddr: "127.0.0.1:0", CertFile: cert.certFile, KeyFile: cert.keyFile, ClientCAFile: cert.keyFile}, "no PEM certificate"},
		{"admin with acl", SecurityConfig{Admin: true, ACLFile: "/x"}, "-admin is for servers without -acl-file"},
		{"missing acl", SecurityConfig{ACLFile: "/nonexistent"}, "no such file"},
	} {
		_, err := NewServer(Config{Security: tt.sc, UnixPath: "/tmp/x.sock"})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
	if _, err := NewServer(Config{Security: SecurityConfig{Admin: true}}); err == nil || !strings.Contains(err.Error(), "-unix") {
		t.Errorf("-admin without -unix: %v", err)
	}
	var stderr strings.Builder
	if code := run([]string{"-tls-port", "70000"}, &stderr); code == 0 {
		t.Errorf("-tls-port 70000: exit 0")
	}
}

// TestIdleTLSConnMemory reports what an idle TLS connection costs the
// server: its goroutine's stack (the clients here have none) once the
// collector has shrunk stacks, and the heap of both ends.
func TestIdleTLSConnMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measures memory")
	}
	ca := newTestCA(t, "glockd-test")
	srv, _ := tlsServer(t, ca, func(c *Config) { c.Security.WSTLS = false; c.WSAddr = "" })
	cfg := ca.clientTLS()
	const n = 300
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	buf := make([]byte, 256)
	conns := make([]*tls.Conn, n)
	for i := range n {
		tc, err := dialTLS(t, srv, cfg)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = tc
		for _, cmd := range []string{"g h" + strconv.Itoa(i), "sg s", "t h" + strconv.Itoa(i)} {
			if _, err := tc.Write([]byte(cmd + "\n")); err != nil {
				t.Fatal(err)
			}
			if _, err := tc.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	// After tlsRest, each connection waits on a fresh goroutine: its
	// stack is the 2 KiB it starts with (transport.TLSConn.waitInput). Collections
	// halve a stack that uses under a quarter of it, and free the old
	// goroutines' stacks. On a loaded machine the goroutines may take a
	// while to move: the check is tried until 10 s have passed. The race
	// detector doubles the stack guard (see TestIdleConnStack): under it,
	// the stack is only reported.
	deadline := time.Now().Add(10 * time.Second)
	var stack, heap int64
	for {
		time.Sleep(transport.TLSRest + 100*time.Millisecond)
		for range 5 {
			runtime.GC()
		}
		runtime.ReadMemStats(&after)
		stack = (int64(after.StackInuse) - int64(before.StackInuse)) / n
		heap = (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
		if stack < 3000 || raceBuild() || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("per idle TLS connection: server goroutine stack %d bytes; heap of server and client together %d bytes", stack, heap)
	if stack >= 3000 && !raceBuild() {
		t.Errorf("an idle TLS connection's goroutine stack is %d bytes, want the 2 KiB a goroutine starts with", stack)
	}
	// The fresh goroutines serve them: each still holds its lock.
	for i, tc := range conns {
		want := "1 Lock Release Success: h" + strconv.Itoa(i) + "\n"
		if _, err := tc.Write([]byte("r h" + strconv.Itoa(i) + "\n")); err != nil {
			t.Fatal(err)
		}
		tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := io.ReadAtLeast(tc, buf, len(want)); err != nil || string(buf[:n]) != want {
			t.Fatalf("connection %d after a rest: %q, %v", i, buf[:n], err)
		}
	}
}

// TestTLSRecordBoundaries: commands split across TLS records and records
// packed into one TCP segment, in writes of every size, all get their
// replies in order (the record reader hands crypto/tls one record at a
// time and must never leave input unseen while the connection waits).
func TestTLSRecordBoundaries(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	srv, _ := tlsServer(t, ca, nil)
	c := tlsClient(t, srv, ca.clientTLS())
	rng := rand.New(rand.NewPCG(1, 2))
	var all strings.Builder
	const n = 3000
	for i := range n {
		fmt.Fprintf(&all, "g k%d-%s\n", i, strings.Repeat("x", rng.IntN(40)))
	}
	data := all.String()
	done := make(chan error, 1)
	go func() {
		// Writes of 1 byte to 40 KB: tiny records, and records of 16 KB
		// split over many TCP segments.
		for len(data) > 0 {
			size := 1 + rng.IntN(64)
			if rng.IntN(10) == 0 {
				size = 1 + rng.IntN(40_000)
			}
			size = min(size, len(data))
			if _, err := c.nc.Write([]byte(data[:size])); err != nil {
				done <- err
				return
			}
			data = data[size:]
		}
		done <- nil
	}()
	for i := range n {
		got := c.line()
		if !strings.HasPrefix(got, fmt.Sprintf("1 Lock Get Success: k%d-", i)) {
			t.Fatalf("reply %d: %q", i, got)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Many records in one TCP segment: each command its own record.
	raw, err := net.Dial("tcp", srv.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	packed := &packingConn{Conn: raw}
	tc := tls.Client(packed, ca.clientTLS())
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	p := streamClient(t, tc)
	for round := range 20 {
		packed.hold = true
		for i := range 40 {
			p.send(fmt.Sprintf("i p%d-%d\n", round, i))
		}
		packed.flush()
		for i := range 40 {
			if got, want := p.line(), fmt.Sprintf("0 Lock Not Locked: p%d-%d\n", round, i); got != want {
				t.Fatalf("packed records: %q, want %q", got, want)
			}
		}
	}

	// A wait with commands behind it, arriving in separate records.
	other := dial(t, srv, "tcp")
	other.expect("g busy", "1 Lock Get Success: busy\n")
	c.send("gw -1 busy\n")
	c.send("i busy\n")
	c.send("!ping\n")
	if got := c.line(); got != "!pong\n" {
		t.Fatalf("!ping during a wait: %q", got)
	}
	other.close()
	for _, want := range []string{"1 Lock Get Success: busy\n", "1 Lock Is Locked: busy\n"} {
		if got := c.line(); got != want {
			t.Fatalf("after the wait: %q, want %q", got, want)
		}
	}
}

// packingConn holds what is written while hold is set, to send it in one
// write: the TLS records of many writes then arrive together.
type packingConn struct {
	net.Conn
	hold bool
	buf  []byte
}

func (c *packingConn) Write(p []byte) (int, error) {
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *packingConn) flush() {
	c.hold = false
	c.Conn.Write(c.buf)
	c.buf = nil
}

// TestTLSKillAndClose: a TLS connection idle in its wait for input, before
// and after it rests, and one still in its handshake, end at once on a kill
// and on Close.
func TestTLSKillAndClose(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	srv, _ := tlsServer(t, ca, func(c *Config) {
		c.Security.Admin = true
		c.Security.HandshakeTimeout = 30 * time.Second
		// "1 ok" once the victim's locks are released: under -race and a
		// loaded machine that took over the default second once.
		c.Security.KillBound = 10 * time.Second
	})
	victim := tlsClient(t, srv, ca.clientTLS())
	victim.expect("g v", "1 Lock Get Success: v\n")
	admin := dial(t, srv, "unix")
	admin.expect("kill "+victim.name, "1 ok\n")
	expectClosed(t, victim)
	eventually(t, "the TLS victim's lock orphaned", func() bool { return admin.do("i v") == "0 Lock Not Locked: v\n" })
	// One at rest, waiting on a fresh goroutine (transport.TLSConn.waitInput).
	rested := tlsClient(t, srv, ca.clientTLS())
	rested.expect("g w", "1 Lock Get Success: w\n")
	time.Sleep(transport.TLSRest + 500*time.Millisecond)
	admin.expect("kill "+rested.name, "1 ok\n")
	expectClosed(t, rested)
	eventually(t, "the rested victim's lock orphaned", func() bool { return admin.do("i w") == "0 Lock Not Locked: w\n" })

	silent, err := net.Dial("tcp", srv.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	idle := tlsClient(t, srv, ca.clientTLS())
	idle.expect("g i", "1 Lock Get Success: i\n")
	eventually(t, "the silent client in its handshake", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 2 && srv.sec.handshakes.list.Len() == 1
	})
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second): // the handshake timeout is 30 s
		t.Fatal("Close waits for a handshake")
	}
}
