package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// daemonBinary builds glockd once per test run.
var daemonBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "glockd-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "glockd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{out}
	}
	return bin, nil
})

type buildError struct{ out []byte }

func (e *buildError) Error() string { return "go build: " + string(e.out) }

// daemon is the glockd binary running as a child process.
type daemon struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan struct{}
}

func startDaemon(t testing.TB, args ...string) *daemon {
	t.Helper()
	bin, err := daemonBinary()
	if err != nil {
		t.Fatal(err)
	}
	return runDaemon(t, exec.Command(bin, args...))
}

// runDaemon starts cmd, a glockd (possibly wrapped, as by "ip netns exec"),
// and kills it when the test ends.
func runDaemon(t testing.TB, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{cmd: cmd, stderr: new(bytes.Buffer), done: make(chan struct{})}
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

// exitCode waits for the daemon to exit, failing the test after timeout.
func (d *daemon) exitCode(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("daemon still running after %v; stderr:\n%s", timeout, d.stderr)
		return -1
	}
}

// freePort finds a TCP port that is free now.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func dialRetry(t testing.TB, network, addr string) net.Conn {
	t.Helper()
	var nc net.Conn
	eventually(t, "daemon listening on "+addr, func() bool {
		var err error
		nc, err = net.Dial(network, addr)
		return err == nil
	})
	t.Cleanup(func() { nc.Close() })
	return nc
}

func TestSignalShutdown(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			sock, pid := filepath.Join(dir, "g.sock"), filepath.Join(dir, "g.pid")
			port := freePort(t)
			d := startDaemon(t, "-port", strconv.Itoa(port), "-bind", "127.0.0.1", "-ws", "0", "-unix", sock, "-pidfile", pid)
			tcp := dialRetry(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
			unix := dialRetry(t, "unix", sock)
			for _, nc := range []net.Conn{tcp, unix} {
				nc.Write([]byte("g held\nsg s\n"))
				r := bufio.NewReader(nc)
				r.ReadString('\n')
				r.ReadString('\n')
			}
			got, err := os.ReadFile(pid)
			if err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(d.cmd.Process.Pid) {
				t.Fatalf("pidfile holds %q (%v), want %d", got, err, d.cmd.Process.Pid)
			}
			d.cmd.Process.Signal(sig)
			if code := d.exitCode(t, 2*time.Second); code != 0 {
				t.Fatalf("exit code %d; stderr:\n%s", code, d.stderr)
			}
			for _, f := range []string{sock, pid} {
				if _, err := os.Stat(f); !os.IsNotExist(err) {
					t.Errorf("%s still exists after shutdown (%v)", f, err)
				}
			}
			for _, nc := range []net.Conn{tcp, unix} {
				nc.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, err := nc.Read(make([]byte, 1)); n != 0 || err == nil {
					t.Errorf("connection still open after shutdown: %d, %v", n, err)
				}
			}
		})
	}
}

func TestPidfileConflict(t *testing.T) {
	pid := filepath.Join(t.TempDir(), "g.pid")
	sock := filepath.Join(t.TempDir(), "g.sock")
	first := startDaemon(t, "-port", "0", "-ws", "0", "-unix", sock, "-pidfile", pid)
	dialRetry(t, "unix", sock)
	second := startDaemon(t, "-port", "0", "-ws", "0", "-unix", filepath.Join(t.TempDir(), "g2.sock"), "-pidfile", pid)
	if code := second.exitCode(t, 5*time.Second); code == 0 {
		t.Fatal("a second daemon on the same pidfile started")
	}
	if msg := second.stderr.String(); !strings.Contains(msg, "locked") || !strings.Contains(msg, strconv.Itoa(first.cmd.Process.Pid)) {
		t.Fatalf("unclear message: %q", msg)
	}
	// The first daemon keeps its pidfile.
	if got, _ := os.ReadFile(pid); strings.TrimSpace(string(got)) != strconv.Itoa(first.cmd.Process.Pid) {
		t.Fatalf("pidfile now holds %q", got)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-port", "70000"},
		{"-unix-mode", "999"},
		{"-ws-origin", "example.com"},
		{"stray"},
		{"-nosuchflag"},
	} {
		var stderr bytes.Buffer
		if code := run(args, &stderr); code == 0 {
			t.Errorf("%q: exit 0", args)
		}
		if stderr.Len() == 0 {
			t.Errorf("%q: no message", args)
		}
	}
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

func TestUserTimeoutDefault(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 30 * time.Second},
		{[]string{"-keepalive-idle", "1s", "-keepalive-interval", "1s", "-keepalive-count", "2"}, 3 * time.Second},
		{[]string{"-keepalive-idle", "1s", "-user-timeout", "10s"}, 10 * time.Second},
		{[]string{"-user-timeout", "0"}, 0},
	} {
		cfg, _, err := parseFlags(tt.args, io.Discard)
		if err != nil || cfg.UserTimeout != tt.want {
			t.Errorf("%q: user timeout %v (%v), want %v", tt.args, cfg.UserTimeout, err, tt.want)
		}
	}
}
