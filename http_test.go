package main

import (
	"bufio"
	"bytes"
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
