package main

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// TestBind: with -bind 127.0.0.1 both listeners are on that address alone;
// another loopback address (127.0.0.2, still this host) is refused, where
// without -bind it is served.
func TestBind(t *testing.T) {
	if c, err := net.Dial("tcp", "127.0.0.2:1"); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
		t.Skipf("127.0.0.2 is not a loopback address here: %v", err)
	} else if err == nil {
		c.Close()
	}
	for _, tt := range []struct {
		bind      string
		otherAddr bool // 127.0.0.2 reaches it
	}{
		{"127.0.0.1", false},
		{"", true},
	} {
		port, wsPort := freePort(t), freePort(t)
		args := []string{"-port", strconv.Itoa(port), "-ws", strconv.Itoa(wsPort)}
		if tt.bind != "" {
			args = append(args, "-bind", tt.bind)
		}
		cfg, _, err := parseFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		srv := startServer(t, func(c *Config) { c.TCPAddr, c.WSAddr, c.UnixPath = cfg.TCPAddr, cfg.WSAddr, "" })
		for _, a := range []net.Addr{srv.TCPAddr(), srv.WSAddr()} {
			ip := a.(*net.TCPAddr).IP
			if tt.bind != "" && !ip.Equal(net.ParseIP(tt.bind)) || tt.bind == "" && !ip.IsUnspecified() {
				t.Errorf("-bind %q: listening on %v", tt.bind, a)
			}
		}
		for _, p := range []int{port, wsPort} {
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				t.Fatalf("-bind %q: 127.0.0.1:%d: %v", tt.bind, p, err)
			}
			c.Close()
			c, err = net.Dial("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(p)))
			if err == nil {
				c.Close()
			}
			if (err == nil) != tt.otherAddr {
				t.Errorf("-bind %q: 127.0.0.2:%d: %v", tt.bind, p, err)
			}
		}
		srv.Close()
	}
}

func TestUnixSocketFile(t *testing.T) {
	dir := t.TempDir()
	t.Run("stale socket is replaced", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close() // as if the daemon died: the file stays, nobody listens
		srv := startServer(t, func(c *Config) { c.UnixPath = path })
		dial(t, srv, "unix").expect("g a", "1 Lock Get Success: a\n")
	})
	t.Run("live socket is not stolen", func(t *testing.T) {
		path := filepath.Join(dir, "live.sock")
		live := startServer(t, func(c *Config) { c.UnixPath = path })
		srv, _ := NewServer(Config{UnixPath: path})
		err := srv.Start()
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second server on a live socket: %v", err)
		}
		if err := srv.Close(); err != nil { // never started: nothing to stop
			t.Fatal(err)
		}
		dial(t, live, "unix").expect("g a", "1 Lock Get Success: a\n")
	})
	t.Run("other file is left alone", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		os.WriteFile(path, []byte("data"), 0o600)
		srv, _ := NewServer(Config{UnixPath: path})
		if err := srv.Start(); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("server on a regular file: %v", err)
		}
		if got, _ := os.ReadFile(path); string(got) != "data" {
			t.Fatal("file was touched")
		}
	})
	t.Run("mode", func(t *testing.T) {
		path := filepath.Join(dir, "mode.sock")
		startServer(t, func(c *Config) { c.UnixPath, c.UnixMode = path, 0o600 })
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
	})
}

// TestTwoServers: no package-level state, so two servers run side by side.
func TestTwoServers(t *testing.T) {
	a, b := startServer(t, nil), startServer(t, nil)
	dial(t, a, "tcp").expect("g x", "1 Lock Get Success: x\n")
	dial(t, b, "tcp").expect("g x", "1 Lock Get Success: x\n")
}

// TestCloseWithClients closes a server with connections, a waiter and held
// locks: Close returns and nothing is left running (goleak checks at exit).
func TestCloseWithClients(t *testing.T) {
	srv := startServer(t, nil)
	var cs []*client
	for _, tr := range transports {
		c := dial(t, srv, tr)
		c.expect("g busy-"+tr, "1 Lock Get Success: busy-"+tr+"\n")
		cs = append(cs, c)
	}
	cs[0].send("gw -1 busy-unix\n")
	waitersQueued(t, srv, 1, "the wait queued")
	closeWithin(t, srv, 5*time.Second)
	// The waiter was answered, then every client saw its connection end.
	if got := cs[0].line(); got != "0 Lock Get Timeout: busy-unix\n" {
		t.Errorf("waiter at shutdown: %q", got)
	}
	for _, c := range cs {
		c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var err error
		if c.ws != nil {
			var msg string
			err = websocket.Message.Receive(c.ws, &msg)
		} else {
			_, err = c.r.ReadString('\n')
		}
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: connection still open after Close: %v", c.name, err)
		}
	}
}
