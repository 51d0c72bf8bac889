package main

import (
	"bufio"
	"bytes"
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
)

// daemonBinary builds glockd once per test run.
var daemonBinary = sync.OnceValues(func() (string, error) {
	root, err := testBuildDir()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(root, "glockd-bin")
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
// and kills it when the test ends. Its log goes to d.stderr unless cmd has
// a Stderr of its own.
func runDaemon(t testing.TB, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{cmd: cmd, stderr: new(bytes.Buffer), done: make(chan struct{})}
	if d.cmd.Stderr == nil {
		d.cmd.Stderr = d.stderr
	}
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

// TestShutdownUnderLoad: SIGTERM to a daemon with waiters, pipelining
// clients and clients whose replies it cannot write: it exits 0 within 2 s,
// removes its pidfile and socket file, and every connection ends.
func TestShutdownUnderLoad(t *testing.T) {
	dir := t.TempDir()
	sock, pid := filepath.Join(dir, "g.sock"), filepath.Join(dir, "g.pid")
	port, wsPort := freePort(t), freePort(t)
	d := startDaemon(t, "-bind", "127.0.0.1", "-port", strconv.Itoa(port), "-ws", strconv.Itoa(wsPort), "-unix", sock, "-pidfile", pid)
	a := transportAddrs{tcp: "127.0.0.1:" + strconv.Itoa(port), unix: sock, ws: "127.0.0.1:" + strconv.Itoa(wsPort)}
	dialRetry(t, "tcp", a.tcp).Close()
	dialRetry(t, "tcp", a.ws).Close()
	l := startLoad(t, a)
	probe, err := dialLoad("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.nc.Close()
	waitQueued(t, probe, l.waiters)

	l.closing.Store(true)
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(t, 2*time.Second); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, d.stderr)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	for _, f := range []string{sock, pid} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s still exists after shutdown (%v)", f, err)
		}
	}
	l.finish(5 * time.Second)
}
