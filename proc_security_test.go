package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// needTool finds a program a test drives, or skips the test when there is
// none and it is not running in CI, where a missing tool is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but %s is not installed (.ci/run installs it)", name)
	}
	t.Skipf("%s not installed", name)
	return ""
}

// makeCerts runs scripts/make-certs.sh, the worked setup of
// docs/security.md, into a temporary directory.
func makeCerts(t *testing.T) string {
	t.Helper()
	needTool(t, "openssl")
	dir := t.TempDir()
	out, err := exec.Command("sh", "scripts/make-certs.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("make-certs.sh: %v\n%s", err, out)
	}
	return dir
}

// lineProcess is a program whose standard input and output carry the line
// protocol (openssl s_client -quiet).
type lineProcess struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	err   bytes.Buffer
}

func startLineProcess(t *testing.T, name string, args ...string) *lineProcess {
	t.Helper()
	p := &lineProcess{t: t, cmd: exec.Command(name, args...), lines: make(chan string, 100)}
	p.cmd.Stderr = &p.err
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.lines)
		r := bufio.NewReader(out)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			p.lines <- l
		}
	}()
	t.Cleanup(func() {
		p.in.Close()
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
	return p
}

func (p *lineProcess) expect(cmd, want string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		p.t.Fatalf("%s: write: %v (stderr %s)", cmd, err, p.err.String())
	}
	select {
	case got, ok := <-p.lines:
		if !ok {
			p.cmd.Wait()
			p.t.Fatalf("%q: the client ended; stderr:\n%s", cmd, p.err.String())
		}
		if got != want {
			p.t.Fatalf("%q: got %q, want %q", cmd, got, want)
		}
	case <-time.After(20 * time.Second):
		p.t.Fatalf("%q: no reply; stderr:\n%s", cmd, p.err.String())
	}
}

// pythonClient speaks the line protocol over Python's ssl module: one
// command per argument, one reply line printed per command, then the TLS
// version.
const pythonClient = `
import socket, ssl, sys
host, port, ca, cert, key = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
if cert:
    ctx.load_cert_chain(cert, key)
with socket.create_connection((host, int(port)), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as s:
        f = s.makefile("rwb")
        for cmd in sys.argv[6:]:
            f.write(cmd.encode() + b"\n")
            f.flush()
            sys.stdout.write(f.readline().decode())
        sys.stdout.write(s.version() + "\n")
`

// TestWorkedSetup runs docs/security.md's worked setup for real: the CA and
// certificates made by openssl, the daemon with the documented flags, an
// openssl s_client session for each identity and a Python ssl client.
func TestWorkedSetup(t *testing.T) {
	dir := makeCerts(t)
	openssl := needTool(t, "openssl")
	acl := writeFile(t, "glockd.acl", "# identity  secret  permissions  patterns\n"+
		"billing  cert  lock,inspect  billing/*\n"+
		"monitor  cert  inspect\n")
	tlsPort := freePort(t)
	d, logs := loggedDaemon(t, "-bind", "127.0.0.1", "-port", "0", "-ws", "0", "-tls-port", strconv.Itoa(tlsPort),
		"-tls-cert", filepath.Join(dir, "server.crt"), "-tls-key", filepath.Join(dir, "server.key"),
		"-tls-client-ca", filepath.Join(dir, "ca.crt"), "-acl-file", acl)
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	dialRetry(t, "tcp", addr)

	sClient := func(identity string) *lineProcess {
		return startLineProcess(t, openssl, "s_client", "-connect", addr, "-quiet", "-nocommands",
			"-CAfile", filepath.Join(dir, "ca.crt"), "-verify_return_error", "-verify_ip", "127.0.0.1",
			"-cert", filepath.Join(dir, identity+".crt"), "-key", filepath.Join(dir, identity+".key"))
	}
	billing := sClient("billing")
	billing.expect("g billing/report", "1 Lock Get Success: billing/report\n")
	billing.expect("g payroll", "0 Permission Denied: payroll\n")
	billing.expect("perms", "1 billing lock,inspect billing/*\n")
	monitor := sClient("monitor")
	monitor.expect("d", "billing/report: billing\n")
	monitor.expect("g billing/report", "0 Permission Denied: billing/report\n")
	monitor.expect("kill-holder billing/report", "0 Permission Denied\n")

	python := needTool(t, "python3")
	out, err := exec.Command(python, "-c", pythonClient, "127.0.0.1", strconv.Itoa(tlsPort),
		filepath.Join(dir, "ca.crt"), filepath.Join(dir, "billing.crt"), filepath.Join(dir, "billing.key"),
		"i billing/report", "g billing/py", "me", "ping").CombinedOutput()
	if err != nil {
		t.Fatalf("python ssl client: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 5 || lines[0] != "1 Lock Is Locked: billing/report" || lines[1] != "1 Lock Get Success: billing/py" ||
		!strings.HasSuffix(lines[2], " billing") || lines[3] != "1 pong" || !strings.HasPrefix(lines[4], "TLSv1.") {
		t.Fatalf("python ssl client:\n%s", out)
	}
	// A Python client without a certificate is refused.
	out, err = exec.Command(python, "-c", pythonClient, "127.0.0.1", strconv.Itoa(tlsPort),
		filepath.Join(dir, "ca.crt"), "", "", "ping").CombinedOutput()
	if err == nil {
		t.Fatalf("python client without a certificate served:\n%s", out)
	}
	// The python client's lock went with its connection; billing's stays.
	monitor.expect("i billing/py", "0 Lock Not Locked: billing/py\n")
	monitor.expect("i billing/report", "1 Lock Is Locked: billing/report\n")
	expectRunning(t, d, logs)
}

// TestReloadOnSIGHUP: the real daemon reloads its certificate, key, client
// CA and ACL file on SIGHUP while clients keep working: none loses its
// connection or its locks, new handshakes get the new certificate, and bad
// files keep the old ones.
func TestReloadOnSIGHUP(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	clients := newTestCA(t, "clients")
	first := ca.issue(certOpts{cn: "first"})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	clientCA, aclFile := filepath.Join(dir, "clients.pem"), filepath.Join(dir, "acl")
	os.WriteFile(certFile, first.certPEM, 0o600)
	os.WriteFile(keyFile, first.keyPEM, 0o600)
	caPEM, _ := os.ReadFile(clients.file)
	os.WriteFile(clientCA, caPEM, 0o600)
	os.WriteFile(aclFile, []byte("worker cert lock w/*\nholder "+tokenHash("holder-token")+" lock kept\n"), 0o600)

	tlsPort := freePort(t)
	d, logs := loggedDaemon(t, "-bind", "127.0.0.1", "-port", "0", "-ws", "0", "-tls-port", strconv.Itoa(tlsPort),
		"-tls-cert", certFile, "-tls-key", keyFile, "-tls-client-ca", clientCA, "-acl-file", aclFile)
	addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
	dialRetry(t, "tcp", addr)
	workerCert := clients.issue(certOpts{dns: []string{"worker"}, client: true}).cert
	clientCfg := ca.clientTLS(workerCert)
	dialDaemon := func(cfg *tls.Config) (*client, *tls.Conn) {
		t.Helper()
		tc, err := tls.DialWithDialer(&netDialer, "tcp", addr, cfg)
		if err != nil {
			t.Fatalf("tls dial: %v; daemon log:\n%s", err, logs)
		}
		t.Cleanup(func() { tc.Close() })
		return streamClient(t, tc), tc
	}

	holder, _ := dialDaemon(clientCfg)
	holder.expectOne("auth holder-token", "1 ok\n")
	holder.expectOne("g kept", "1 Lock Get Success: kept\n")

	// Clients under load: each takes and releases its own lock, over and
	// over, through the reloads.
	const workers = 4
	var ops atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, workers)
	for i := range workers {
		c, tc := dialDaemon(clientCfg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := bufio.NewReader(tc)
			name := fmt.Sprintf("w/%d", i)
			for {
				select {
				case <-stop:
					return
				default:
				}
				tc.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := tc.Write([]byte("g " + name + "\nr " + name + "\n")); err != nil {
					errs <- fmt.Errorf("%s: %v", c.name, err)
					return
				}
				for _, want := range []string{"1 Lock Get Success: " + name + "\n", "1 Lock Release Success: " + name + "\n"} {
					if got, err := r.ReadString('\n'); err != nil || got != want {
						errs <- fmt.Errorf("%s: got %q (%v), want %q", c.name, got, err, want)
						return
					}
				}
				ops.Add(1)
			}
		}()
	}
	servedSerial := func() int64 {
		t.Helper()
		_, tc := dialDaemon(clientCfg)
		defer tc.Close()
		return tc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	hangup := func() {
		t.Helper()
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	waitLog := func(what string, n int) {
		t.Helper()
		eventually(t, fmt.Sprintf("%d× %q in the daemon's log", n, what), func() bool {
			return strings.Count(logs.String(), what) >= n
		})
	}

	// A new certificate, key and ACL file.
	second := ca.issue(certOpts{cn: "second"})
	os.WriteFile(certFile, second.certPEM, 0o600)
	os.WriteFile(keyFile, second.keyPEM, 0o600)
	os.WriteFile(aclFile, []byte("worker cert lock w/*\nholder "+tokenHash("holder-token")+" lock kept\n"+
		"late "+tokenHash("late-token")+" lock late\n"), 0o600)
	hangup()
	waitLog("tls certificate reloaded", 1)
	if s := servedSerial(); s != second.serial {
		t.Fatalf("after SIGHUP: serial %d, want %d", s, second.serial)
	}
	late, _ := dialDaemon(clientCfg)
	late.expectOne("auth late-token", "1 ok\n")

	// Broken files: a truncated certificate and a bad ACL line. The
	// daemon logs why and keeps serving the second certificate.
	os.WriteFile(certFile, second.certPEM[:len(second.certPEM)/2], 0o600)
	os.WriteFile(aclFile, []byte("worker cert lock,fly w/*\n"), 0o600)
	hangup()
	waitLog("reload failed", 1)
	if s := servedSerial(); s != second.serial {
		t.Fatalf("after a bad SIGHUP: serial %d, want %d", s, second.serial)
	}
	late2, _ := dialDaemon(clientCfg)
	late2.expectOne("auth late-token", "1 ok\n")

	// A new client CA: the workers' certificates are no longer valid for
	// new connections, but the connections they have stay.
	others := newTestCA(t, "other clients")
	otherPEM, _ := os.ReadFile(others.file)
	os.WriteFile(certFile, second.certPEM, 0o600)
	os.WriteFile(clientCA, otherPEM, 0o600)
	os.WriteFile(aclFile, []byte("worker cert lock w/*\nholder "+tokenHash("holder-token")+" lock kept\n"), 0o600)
	hangup()
	waitLog("tls certificate reloaded", 2)
	if tc, err := tls.DialWithDialer(&netDialer, "tcp", addr, clientCfg); err == nil {
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		tc.Write([]byte("ping\n"))
		if _, err := tc.Read(make([]byte, 10)); err == nil {
			t.Error("a certificate of the old client CA was accepted after the reload")
		}
		tc.Close()
	}
	fresh, _ := dialDaemon(ca.clientTLS(others.issue(certOpts{dns: []string{"worker"}, client: true}).cert))
	fresh.expectOne("g w/fresh", "1 Lock Get Success: w/fresh\n")

	before := ops.Load()
	eventually(t, "the workers going on after the reloads", func() bool { return ops.Load() > before+10 })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("worker: %v", err)
	}
	holder.expectOne("i kept", "1 Lock Is Locked: kept\n")
	holder.expectOne("r kept", "1 Lock Release Success: kept\n")
	t.Logf("%d g/r rounds by %d workers across 3 reloads", ops.Load(), workers)
	expectRunning(t, d, logs)
}

// TestSIGHUPWithoutSecurity: SIGHUP no longer kills a daemon that has
// nothing to reload.
func TestSIGHUPWithoutSecurity(t *testing.T) {
	port := freePort(t)
	d, logs := loggedDaemon(t, "-bind", "127.0.0.1", "-port", strconv.Itoa(port), "-ws", "0")
	nc := dialRetry(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
	c := streamClient(t, nc)
	c.expectOne("g a", "1 Lock Get Success: a\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, "SIGHUP logged", func() bool { return strings.Contains(logs.String(), "SIGHUP") })
	c.expectOne("i a", "1 Lock Is Locked: a\n")
	expectRunning(t, d, logs)
}

var netDialer = net.Dialer{Timeout: 10 * time.Second}

// loggedDaemon is startDaemon with a log that can be read while the daemon
// runs.
func loggedDaemon(t *testing.T, args ...string) (*daemon, *logBuffer) {
	t.Helper()
	bin, err := daemonBinary()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logs
	return runDaemon(t, cmd), logs
}

// expectRunning fails the test if the daemon has exited.
func expectRunning(t *testing.T, d *daemon, logs *logBuffer) {
	t.Helper()
	select {
	case <-d.done:
		t.Fatalf("daemon exited; log:\n%s", logs)
	default:
	}
}

// TestAuthFailureSIGTERM: a daemon with a pipeline of 1,000 wrong auths of
// an authenticated client pending stops on SIGTERM within 3 s.
func TestAuthFailureSIGTERM(t *testing.T) {
	port := freePort(t)
	acl := writeFile(t, "acl", testACL)
	d, logs := loggedDaemon(t, "-bind", "127.0.0.1", "-port", strconv.Itoa(port), "-ws", "0", "-acl-file", acl)
	nc := dialRetry(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
	c := streamClient(t, nc)
	// Authenticated: its queue may hold the 1,000 lines (one that is not
	// may queue only 4 KiB, and is closed past it).
	c.expectOne("auth "+billingToken, "1 ok\n")
	c.send(wrongAuths(1000))
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		t.Logf("stopped %v after SIGTERM", time.Since(start))
	case <-time.After(3 * time.Second):
		t.Fatalf("still running 3s after SIGTERM; log:\n%s", logs)
	}
}
