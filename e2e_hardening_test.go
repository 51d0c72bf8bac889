package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// liveHeap is the heap in use after a collection: what is still referenced.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestWebsocketIdleMemory: a websocket connection that once received a
// 1 MiB message goes back to its small cost when idle; before, it kept a
// buffer the size of its largest message for as long as it lived.
func TestWebsocketIdleMemory(t *testing.T) {
	const (
		conns   = 20
		msgSize = 1<<20 - 16 // within transport.MaxMessage, so buffered whole
	)
	srv := startServer(t, nil)
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = dial(t, srv, "websocket")
		clients[i].expect("ping", "1 pong\n")
	}
	before := liveHeap()
	sendBig(t, clients, msgSize)
	grew := liveHeap() - before
	t.Logf("live heap grew by %.1f MiB for %d idle connections that each received 1 MiB", float64(grew)/(1<<20), conns)
	if grew > conns*msgSize/4 {
		t.Fatalf("live heap grew by %d MiB: idle connections keep their biggest message", grew>>20)
	}
	for _, c := range clients {
		c.expect("ping", "1 pong\n")
	}
}

// sendBig sends each client one message of size bytes in one frame, built
// by hand with a zero masking key: one line longer than -max-line, so one
// short reply.
func sendBig(t *testing.T, clients []*client, size int) {
	frame := []byte{0x81, 0x80 | 127}
	frame = binary.BigEndian.AppendUint64(frame, uint64(size))
	frame = append(frame, 0, 0, 0, 0)
	frame = append(frame, bytes.Repeat([]byte("x"), size)...)
	for _, c := range clients {
		writeAll(t, c.nc, frame)
		if got := c.line(); got != "0 Line Too Long\n" {
			t.Fatalf("big message: %q", got)
		}
		c.expect("ping", "1 pong\n")
	}
}

// TestLimitFlagsMustBePositive: a zero or negative limit is a mistake to
// report at start, not a request for the default; and a daemon with no
// listener for lock clients has nothing to serve.
func TestLimitFlagsMustBePositive(t *testing.T) {
	for _, args := range [][]string{
		{"-max-line", "0"},
		{"-max-line", "-1"},
		{"-max-conns", "0"},
		{"-max-conns", "-100"},
		{"-max-locks-per-conn", "0"},
		{"-max-locks-per-conn", "-1"},
		{"-max-http-conns", "0"},
		{"-max-http-conns", "-1"},
		{"-http-idle-timeout", "0s"},
		{"-http-idle-timeout", "-1s"},
		{"-port", "0", "-ws", "0"},
		{"-port", "0", "-ws", "0", "-metrics-addr", "127.0.0.1:0"},
	} {
		if _, _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: accepted", args)
		} else {
			t.Logf("%q: %v", args, err)
		}
	}
	for _, args := range [][]string{
		{"-port", "0", "-ws", "0", "-unix", "/run/glockd.sock"},
		{"-ws", "0"},
		{"-port", "0"},
		{"-max-line", "1", "-max-conns", "1", "-max-locks-per-conn", "1", "-max-http-conns", "1"},
	} {
		if _, _, err := parseFlags(args, io.Discard); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	for i, edit := range []func(*Config){
		func(c *Config) { c.MaxLine = -1 },
		func(c *Config) { c.MaxConns = -1 },
		func(c *Config) { c.MaxLocksPerConn = -1 },
		func(c *Config) { c.MaxHTTPConns = -1 },
		func(c *Config) { c.HTTPIdleTimeout = -1 },
	} {
		cfg := Config{TCPAddr: "127.0.0.1:0"}
		edit(&cfg)
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("NewServer with negative limit %d: accepted", i)
		}
	}
}

// TestPidfileSymlink: -pidfile never follows a symbolic link, which would
// let whoever can write the pidfile's directory have the daemon (often
// root) truncate and overwrite any file, or create one anywhere.
func TestPidfileSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "glockd.pid")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if pf, err := lockPidfile(link); err == nil {
		pf.remove()
		t.Fatal("a pidfile that is a symlink was accepted")
	} else if !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("unclear error: %v", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
		t.Fatalf("the link's target was written: %q", got)
	}
	dangling := filepath.Join(dir, "dangling.pid")
	created := filepath.Join(dir, "created")
	if err := os.Symlink(created, dangling); err != nil {
		t.Fatal(err)
	}
	if pf, err := lockPidfile(dangling); err == nil {
		pf.remove()
		t.Fatal("a dangling symlink was accepted")
	}
	if _, err := os.Lstat(created); err == nil {
		t.Fatal("the dangling link's target was created")
	}
	// A plain path still works, and the file is removed at the end.
	plain := filepath.Join(dir, "plain.pid")
	pf, err := lockPidfile(plain)
	if err != nil {
		t.Fatal(err)
	}
	pf.remove()
	if _, err := os.Lstat(plain); err == nil {
		t.Fatal("pidfile left behind")
	}
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

// TestRaiseFileLimit: a soft limit on open files below what the limits
// need is raised to the hard limit; one that is enough is left alone.
func TestRaiseFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Skip(err)
	}
	if orig.Max < 2048 || orig.Max > 1<<30 {
		t.Skipf("hard limit %d: nothing to raise to", orig.Max)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	low := orig
	low.Cur = 1024
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	if got, err := raiseFileLimit(512); err != nil || got != 1024 {
		t.Fatalf("enough already: limit %d (%v), want it left at 1024", got, err)
	}
	got, err := raiseFileLimit(orig.Max + 1)
	if err != nil || got != orig.Max {
		t.Fatalf("raised to %d (%v), want the hard limit %d", got, err, orig.Max)
	}
	var now syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now)
	if now.Cur != orig.Max {
		t.Fatalf("soft limit %d, want %d", now.Cur, orig.Max)
	}
}

// TestFileLimitFlood runs the daemon with a limit of 256 open files. With
// -max-conns too high for it, the daemon says so at start. With limits that
// fit, a flood of 400 idle HTTP connections cannot use up its descriptors:
// a TCP and a websocket lock client still get in and are served (before,
// the flood took every descriptor and lock clients were never accepted).
func TestFileLimitFlood(t *testing.T) {
	bin, err := daemonBinary()
	if err != nil {
		t.Fatal(err)
	}
	limited := func(args ...string) *daemon {
		return runDaemon(t, exec.Command("sh", append([]string{"-c", `ulimit -n 256 && exec "$0" "$@"`, bin}, args...)...))
	}

	port := strconv.Itoa(freePort(t))
	d := limited("-bind", "127.0.0.1", "-port", port, "-ws", "0", "-max-conns", "100000")
	dialRetry(t, "tcp", "127.0.0.1:"+port)
	d.cmd.Process.Kill()
	<-d.done // stderr is written until the process ends
	if msg := d.stderr.String(); !strings.Contains(msg, "RLIMIT_NOFILE") || !strings.Contains(msg, "nofile=256") {
		t.Fatalf("no warning about the file limit: %q", msg)
	}

	port, wsPort := strconv.Itoa(freePort(t)), strconv.Itoa(freePort(t))
	d = limited("-bind", "127.0.0.1", "-port", port, "-ws", wsPort, "-max-conns", "100", "-max-http-conns", "32")
	dialRetry(t, "tcp", "127.0.0.1:"+wsPort).Close()
	// Each sends a request and then idles, which the old daemon let do
	// for ever; replies are not read, so that a connection the daemon
	// cannot accept does not hold up the flood.
	for i := range 400 {
		nc, err := net.Dial("tcp", "127.0.0.1:"+wsPort)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		fmt.Fprint(nc, "GET /healthz HTTP/1.1\r\nHost: glockd\r\n\r\n")
	}

	tcp := dialRetry(t, "tcp", "127.0.0.1:"+port)
	tcp.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(tcp, "ping\n")
	if reply, err := bufio.NewReader(tcp).ReadString('\n'); reply != "1 pong\n" {
		t.Fatalf("TCP lock client after the flood: %q, %v", reply, err)
	}
	status, nc, r := upgrade(t, "127.0.0.1:"+wsPort, "")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("websocket after the flood: status %d", status)
	}
	if got := wsCommand(t, nc, r, "ping"); got != "1 pong\n" {
		t.Fatalf("websocket lock client after the flood: %q", got)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d: %s", code, d.stderr)
	}
	if msg := d.stderr.String(); strings.Contains(msg, "RLIMIT_NOFILE") {
		t.Fatalf("warning although the limits fit: %q", msg)
	}
}
