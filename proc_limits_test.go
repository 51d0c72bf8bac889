package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
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
