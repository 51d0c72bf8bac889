package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// upgrade sends a browser-like websocket upgrade request with the given
// Origin ("" sends none) and returns the response status and the connection
// (positioned after the response headers).
func upgrade(t *testing.T, addr, origin string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	req.WriteString("GET / HTTP/1.1\r\nHost: " + addr + "\r\n" +
		"Upgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) glockd-test\r\n")
	if origin != "" {
		req.WriteString("Origin: " + origin + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := nc.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(nc)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("origin %q: %v", origin, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp.StatusCode, nc, r
}

// wsCommand sends one command as a masked text frame and reads the reply
// frame, by hand, so that the test needs nothing but a socket.
func wsCommand(t *testing.T, nc net.Conn, r *bufio.Reader, cmd string) string {
	t.Helper()
	frame := []byte{0x81, 0x80 | byte(len(cmd)), 0, 0, 0, 0} // zero mask
	frame = append(frame, cmd...)
	if _, err := nc.Write(frame); err != nil {
		t.Fatal(err)
	}
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		t.Fatalf("reply to %q: %v", cmd, err)
	}
	if head[0] != 0x81 || head[1] >= 126 {
		t.Fatalf("reply to %q: frame header % x", cmd, head)
	}
	payload := make([]byte, head[1])
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatal(err)
	}
	return string(payload)
}

// TestWebsocketOrigin: with -ws-origin set, a browser page from another
// site (cross-site websocket hijacking: any page a user visits can open a
// websocket to a daemon it can reach) gets 403 and no websocket; the listed
// origins, and programs that send no Origin, get in. "*" lets every origin in.
func TestWebsocketOrigin(t *testing.T) {
	for _, tt := range []struct {
		name     string
		origins  []string
		accepted []string
		refused  []string
	}{
		{
			name:     "list",
			origins:  []string{"https://app.example.com", "http://localhost:8080"},
			accepted: []string{"", "https://app.example.com", "HTTPS://APP.EXAMPLE.COM", "http://localhost:8080"},
			refused: []string{"https://evil.example", "http://app.example.com", "https://app.example.com:8443",
				"https://app.example.com.evil.example", "http://localhost", "http://localhost:8081", "null", "file://"},
		},
		{
			name:     "any",
			origins:  []string{"*"},
			accepted: []string{"", "https://evil.example", "null"},
		},
		{
			name:     "unset",
			accepted: []string{"", "https://evil.example"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, func(c *Config) { c.WSOrigins = tt.origins })
			addr := srv.WSAddr().String()
			for _, origin := range tt.accepted {
				status, nc, r := upgrade(t, addr, origin)
				if status != http.StatusSwitchingProtocols {
					t.Fatalf("origin %q: status %d, want 101", origin, status)
				}
				if got, want := wsCommand(t, nc, r, "g from "+origin), "1 Lock Get Success: "+strings.Join(strings.Fields("from "+origin), " ")+"\n"; got != want {
					t.Fatalf("origin %q: %q", origin, got)
				}
				nc.Close()
			}
			for _, origin := range tt.refused {
				status, nc, r := upgrade(t, addr, origin)
				if status != http.StatusForbidden {
					t.Fatalf("origin %q: status %d, want 403", origin, status)
				}
				// No websocket behind the refusal: a frame sent anyway runs
				// no command, and the server ends the connection.
				nc.Write([]byte{0x81, 0x80 | 5, 0, 0, 0, 0, 'g', ' ', 'e', 'v', 'l'})
				rest, _ := io.ReadAll(r)
				if bytes.Contains(rest, []byte("Lock")) {
					t.Fatalf("origin %q: refused, yet a command ran: %q", origin, rest)
				}
			}
			c := dial(t, srv, "tcp")
			c.expect("i evl", "0 Lock Not Locked: evl\n")
			eventually(t, "only the last client connected: refused websockets do not count", func() bool {
				return c.stat("connections") == 1
			})
		})
	}
}

func TestWebsocketOriginFlag(t *testing.T) {
	for _, tt := range []struct {
		flag string
		want []string
	}{
		{"*", []string{"*"}},
		{"https://a.example, http://b.example:8080", []string{"https://a.example", "http://b.example:8080"}},
		{"https://a.example,,", []string{"https://a.example"}},
	} {
		cfg, _, err := parseFlags([]string{"-ws-origin", tt.flag}, io.Discard)
		if err != nil || !slices.Equal(cfg.WSOrigins, tt.want) {
			t.Errorf("-ws-origin %q: %q, %v; want %q", tt.flag, cfg.WSOrigins, err, tt.want)
		}
	}
	for _, bad := range []string{"example.com", "https://a.example/path", "https://a.example/", "https://a.example?x", "https://user@a.example", "https://a.example,evil"} {
		var stderr bytes.Buffer
		if code := run([]string{"-port", "0", "-ws", "0", "-ws-origin", bad}, &stderr); code == 0 || !strings.Contains(stderr.String(), "origin") {
			t.Errorf("-ws-origin %q: exit %d, %q", bad, code, stderr.String())
		}
	}
	// The default lets any origin in: say so, so that changing it is a
	// decision.
	cfg, _, err := parseFlags(nil, io.Discard)
	if err != nil || !slices.Equal(cfg.WSOrigins, []string{"*"}) {
		t.Errorf("default -ws-origin: %q, %v", cfg.WSOrigins, err)
	}
}

// TestWebsocketOriginConsole: the web console glockd serves on the
// websocket port opens its websocket with its own origin, which is not
// allowed implicitly (a Host-based same-origin rule would let DNS-rebinding
// pages in): with a -ws-origin list, the console works only if its origin
// is listed.
func TestWebsocketOriginConsole(t *testing.T) {
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for _, tt := range []struct {
		origins []string
		want    int
	}{
		{[]string{"https://app.example.com"}, http.StatusForbidden},
		{[]string{"https://app.example.com", "http://" + addr}, http.StatusSwitchingProtocols},
	} {
		srv := startServer(t, func(c *Config) { c.WSAddr, c.WSOrigins = addr, tt.origins })
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /: %d", resp.StatusCode)
		}
		if status, _, _ := upgrade(t, addr, "http://"+addr); status != tt.want {
			t.Errorf("-ws-origin %q: the console's own origin gets %d, want %d", tt.origins, status, tt.want)
		}
		srv.Close()
	}
}

// httpFlood opens n connections to addr: half send nothing, half send a
// keep-alive request, read the answer and then stay idle.
func httpFlood(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	flood := make([]net.Conn, n)
	for i := range flood {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		flood[i] = nc
		if i%2 == 1 {
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
			// An evicted connection may be closed before it is answered.
			if resp, err := http.ReadResponse(bufio.NewReader(nc), nil); err == nil {
				resp.Body.Close()
			}
		}
	}
	return flood
}

// TestHTTPBudget: idle HTTP connections on the -ws port beyond the HTTP
// budget are closed, oldest first, instead of piling up until the process
// runs out of file descriptors; lock clients on TCP and websocket still get
// in and are served, and websockets do not count in the HTTP budget.
func TestHTTPBudget(t *testing.T) {
	const budget, floodSize = 16, 200
	srv := startServer(t, func(c *Config) { c.MaxHTTPConns = budget })
	addr := srv.WSAddr().String()
	flood := httpFlood(t, addr, floodSize)
	eventually(t, "the server closes the connections over the budget", func() bool {
		closed := 0
		for _, nc := range flood {
			if isClosed(nc) {
				closed++
			}
		}
		return closed >= floodSize-budget
	})
	if n := srv.httpConns.Open(); n > budget {
		t.Fatalf("%d HTTP connections counted, budget %d", n, budget)
	}
	// More websockets than the HTTP budget, all open at once.
	var ws []*client
	for range 2 * budget {
		c := dial(t, srv, "websocket")
		c.expect("ping", "1 pong\n")
		ws = append(ws, c)
	}
	tcp := dial(t, srv, "tcp")
	tcp.expect("g x", "1 Lock Get Success: x\n")
	for _, c := range ws {
		c.expect("i x", "1 Lock Is Locked: x\n")
	}
	// And HTTP itself still answers.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}
}

// TestHTTPIdleTimeout: an HTTP connection that sends nothing, or nothing
// more after a request, is closed after -http-idle-timeout; a websocket is
// not, however long it is quiet.
func TestHTTPIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	srv := startServer(t, func(c *Config) { c.HTTPIdleTimeout = idle })
	ws := dial(t, srv, "websocket")
	flood := httpFlood(t, srv.WSAddr().String(), 4)
	for i, nc := range flood {
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(nc); err != nil {
			t.Fatalf("connection %d not closed when idle: %v", i, err)
		}
	}
	time.Sleep(2 * idle)
	ws.expect("ping", "1 pong\n")
}

// isClosed reports whether the server has closed nc: a read returns at
// once with an error other than a timeout.
func isClosed(nc net.Conn) bool {
	nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := nc.Read(b[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
