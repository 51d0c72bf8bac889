package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/wire"
)

// TestMaxConnectionsUnderFileLimit: with a limit of 256 open files and
// -max-conns 100000, glockd_max_connections reports the cap the daemon
// enforces (256 - 32 HTTP - 64 reserved = 160), the start logs it once, and
// the connection past it is told so rather than failing in accept.
func TestMaxConnectionsUnderFileLimit(t *testing.T) {
	bin, err := daemonBinary()
	if err != nil {
		t.Fatal(err)
	}
	port, metricsPort := strconv.Itoa(freePort(t)), strconv.Itoa(freePort(t))
	d := runDaemon(t, exec.Command("sh", "-c", `ulimit -n 256 && exec "$0" "$@"`, bin,
		"-bind", "127.0.0.1", "-port", port, "-ws", "0", "-metrics-addr", "127.0.0.1:"+metricsPort,
		"-max-conns", "100000", "-max-http-conns", "32"))
	dialRetry(t, "tcp", "127.0.0.1:"+metricsPort).Close()
	resp, err := http.Get("http://127.0.0.1:" + metricsPort + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&body)
	resp.Body.Close()
	if got := metricValue(t, body.String(), "glockd_max_connections"); got != 160 {
		t.Errorf("glockd_max_connections %v, want 160", got)
	}
	served, refused := 0, 0
	for i := range 161 {
		nc, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(nc, "ping\n")
		reply, err := bufio.NewReader(nc).ReadString('\n')
		switch reply {
		case "1 pong\n":
			served++
		case wire.TooManyConns:
			refused++
		default:
			t.Fatalf("connection %d: %q, %v", i, reply, err)
		}
	}
	if served != 160 || refused != 1 {
		t.Errorf("%d served and %d refused, want 160 and 1", served, refused)
	}
	d.cmd.Process.Kill()
	<-d.done
	if n := strings.Count(d.stderr.String(), "RLIMIT_NOFILE"); n != 1 || !strings.Contains(d.stderr.String(), "conns_allowed=160") {
		t.Errorf("the cap logged %d times, want once with conns_allowed=160:\n%s", n, d.stderr)
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
