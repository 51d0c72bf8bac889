package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// startServer runs a server on ephemeral loopback ports and a unix socket in
// a temporary directory, closed when the test ends. edit may change the
// config first.
func startServer(t testing.TB, edit func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		TCPAddr:  "127.0.0.1:0",
		WSAddr:   "127.0.0.1:0",
		UnixPath: filepath.Join(t.TempDir(), "glockd.sock"),
		Registry: true,
		Dump:     true,
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

var transports = []string{"tcp", "unix", "websocket"}

// client is a test's connection to the server, over any transport.
type client struct {
	t    testing.TB
	nc   net.Conn        // the stream (for websocket, the one under it)
	r    *bufio.Reader   // stream transports
	ws   *websocket.Conn // websocket only
	name string          // what the server calls this connection
}

// fence is a command sent after each command on a stream, so that the end of
// a reply of any number of lines (or none) is the fence's reply. It counts in
// command_i, which tests that check counters allow for.
const (
	fence      = "i glockd-test-fence"
	fenceReply = "0 Lock Not Locked: glockd-test-fence\n"
)

func dial(t testing.TB, srv *Server, transport string) *client {
	t.Helper()
	nc, ws := rawDial(t, srv, transport)
	c := &client{t: t, nc: nc, ws: ws}
	t.Cleanup(func() { c.close() })
	if ws == nil {
		c.r = bufio.NewReader(nc)
	}
	c.name = strings.Fields(c.do("me"))[1]
	if transport != "unix" && c.name != nc.LocalAddr().String() {
		t.Fatalf("connection name %q, want its address %s", c.name, nc.LocalAddr())
	}
	return c
}

// transportAddrs are where a server listens, by transport.
type transportAddrs struct{ tcp, unix, ws string }

func addrsOf(srv *Server) transportAddrs {
	a := transportAddrs{unix: srv.cfg.UnixPath}
	if addr := srv.TCPAddr(); addr != nil {
		a.tcp = addr.String()
	}
	if addr := srv.WSAddr(); addr != nil {
		a.ws = addr.String()
	}
	return a
}

// dialTransport connects over one transport. For websocket it also makes
// the handshake (without an Origin header, as a program would) and returns
// the websocket; nc is then the stream under it. Every test that connects
// goes through here.
func dialTransport(tr string, a transportAddrs) (nc net.Conn, ws *websocket.Conn, err error) {
	switch tr {
	case "tcp":
		nc, err = net.Dial("tcp", a.tcp)
	case "unix":
		nc, err = net.Dial("unix", a.unix)
	case "websocket":
		nc, err = net.Dial("tcp", a.ws)
	default:
		return nil, nil, fmt.Errorf("unknown transport %q", tr)
	}
	if err != nil || tr != "websocket" {
		return nc, nil, err
	}
	cfg, err := websocket.NewConfig("ws://"+a.ws+"/", "http://localhost/")
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	cfg.Header.Del("Origin")
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if ws, err = websocket.NewClient(cfg, nc); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("websocket handshake: %w", err)
	}
	nc.SetDeadline(time.Time{})
	return nc, ws, nil
}

// rawDial connects to a transport without the handshake dial does (which
// runs a command); for websocket it returns the handshaken connection.
func rawDial(t testing.TB, srv *Server, tr string) (net.Conn, *websocket.Conn) {
	t.Helper()
	nc, ws, err := dialTransport(tr, addrsOf(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc, ws
}

// closeWithin closes srv and fails the test unless Close returns within d.
func closeWithin(t testing.TB, srv *Server, d time.Duration) time.Duration {
	t.Helper()
	closed := make(chan struct{})
	start := time.Now()
	go func() {
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("Close did not return within %v", d)
		return d
	}
}

// send writes raw bytes: a stream gets them as they are, a websocket as one
// message.
func (c *client) send(data string) {
	c.t.Helper()
	if err := c.write(data); err != nil {
		c.t.Fatalf("send %q: %v", data, err)
	}
}

// write is send that returns the error, for tests that expect the server to
// close the connection.
func (c *client) write(data string) error {
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	var err error
	if c.ws != nil {
		_, err = c.ws.Write([]byte(data))
	} else {
		_, err = c.nc.Write([]byte(data))
	}
	return err
}

// line reads one reply line from a stream, or one message from a websocket.
func (c *client) line() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if c.ws != nil {
		var msg string
		if err := websocket.Message.Receive(c.ws, &msg); err != nil {
			c.t.Fatalf("receive: %v", err)
		}
		return msg
	}
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, s)
	}
	return s
}

// do sends one command and returns its whole reply: every line of it, or ""
// when the protocol answers with nothing.
func (c *client) do(cmd string) string {
	c.t.Helper()
	if c.ws != nil {
		c.send(cmd)
		return c.line()
	}
	c.send(cmd + "\n" + fence + "\n")
	var reply strings.Builder
	for {
		l := c.line()
		if l == fenceReply {
			return reply.String()
		}
		reply.WriteString(l)
	}
}

// expect runs cmd and checks its reply; that of a listing of the lock
// tables (d, sd, dump, dl) with its locks in any order (tableOrderFree).
func (c *client) expect(cmd, want string) {
	c.t.Helper()
	got := c.do(cmd)
	if verb, _, _ := strings.Cut(cmd, " "); verb == "d" || verb == "sd" || verb == "dump" || verb == "dl" {
		if tableOrderFree(got) == tableOrderFree(want) {
			return
		}
	}
	if got != want {
		c.t.Fatalf("%s: %q: got %q, want %q", c.name, cmd, got, want)
	}
}

func (c *client) close() {
	if c.ws != nil {
		c.ws.Close()
	}
	c.nc.Close()
}

// eventually retries cond until it holds or a generous deadline passes: for
// what the server does after a connection ends, which it learns of a moment
// later.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitersQueued waits until n connections wait in gw or sgw on srv.
func waitersQueued(t testing.TB, srv *Server, n int, what string) {
	t.Helper()
	eventually(t, what, func() bool {
		s, _ := srv.manager.askStats(time.Second)
		return s.waiters == n
	})
}

// stat returns one counter of q.
func (c *client) stat(key string) int {
	c.t.Helper()
	for _, l := range strings.Split(c.do("q"), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && k == key {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	c.t.Fatalf("q has no %s", key)
	return 0
}

var codeSpanRE = regexp.MustCompile("`([^`]+)`")

// markdownTable returns the first cell of each row of the table that
// follows the heading in a markdown file.
func markdownTable(t *testing.T, file, heading string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s: no %q", file, heading)
	}
	var cells []string
	inTable := false
	for line := range strings.SplitSeq(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cell := strings.TrimSpace(strings.Split(line, "|")[1])
		if cell == "" || strings.Trim(cell, "-") == "" {
			continue
		}
		cells = append(cells, cell)
	}
	if len(cells) < 2 {
		t.Fatalf("%s: no table under %q", file, heading)
	}
	return cells[1:] // the header row
}
