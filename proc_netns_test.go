package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The tests here cut a client off the server without a FIN or RST reaching
// it, as a power cut or a pulled cable does, and measure how long the
// server keeps the client's locks. The server (the glockd binary) runs in
// one network namespace and the client in another, joined by a veth pair
// with addresses in 10.250.0.0/30, which exists only inside the two
// namespaces; cutting the link is "ip link set … down" on the client's end.
// Probes talk to the server over the server namespace's loopback.
//
// Processes join a namespace whole, so the clients are this test binary run
// again under "ip netns exec" as TestNetnsHelper, a netcat of sorts.

const (
	netnsServerIP = "10.250.0.1"
	netnsClientIP = "10.250.0.2"
	netnsPort     = "9999" // the namespaces are new: nothing else listens there
	netnsDialEnv  = "GLOCKD_NETNS_DIAL"
	// Fail only far past the configured bounds: this is about the lock
	// being released at all, within the operator's order of magnitude.
	netnsMaxRelease = 15 * time.Second
)

// TestNetnsHelper is not a test of its own: run with GLOCKD_NETNS_DIAL set, it
// dials that address and copies its stdin to the connection and the
// connection to its stdout, until either ends.
func TestNetnsHelper(t *testing.T) {
	addr := os.Getenv(netnsDialEnv)
	if addr == "" {
		t.Skip("the netns tests' client; runs only as their child process")
	}
	var nc net.Conn
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if nc, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "netns helper:", err)
			os.Exit(3)
		}
		time.Sleep(20 * time.Millisecond)
	}
	go func() {
		io.Copy(nc, os.Stdin)
		os.Exit(0)
	}()
	io.Copy(os.Stdout, nc)
	os.Exit(0)
}

var netnsSeq atomic.Int32

// netnsPair is a server namespace and a client namespace joined by a veth
// pair.
type netnsPair struct {
	srv, cli     string // namespace names
	srvIf, cliIf string // the veth ends
}

// ipCmd runs ip(8) with args and returns its combined output.
func ipCmd(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// makeNetns builds the namespaces, removed when the test ends, or skips the
// test where they cannot be made.
func makeNetns(t *testing.T) *netnsPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8): apt-get install -y iproute2")
	}
	id := fmt.Sprintf("%d%02d", os.Getpid()%100000, netnsSeq.Add(1)%100)
	p := &netnsPair{
		srv: "glockd-srv-" + id, cli: "glockd-cli-" + id,
		srvIf: "glks" + id, cliIf: "glkc" + id, // at most 15 bytes
	}
	if _, err := ipCmd("netns", "add", p.srv); err != nil {
		t.Skipf("cannot make a network namespace: %v", err)
	}
	t.Cleanup(func() { ipCmd("netns", "del", p.srv) })
	if _, err := ipCmd("netns", "add", p.cli); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ipCmd("netns", "del", p.cli) })
	// Made inside the namespaces: the pair never appears in ours.
	if _, err := ipCmd("link", "add", p.srvIf, "netns", p.srv, "type", "veth", "peer", "name", p.cliIf, "netns", p.cli); err != nil {
		t.Fatal(err)
	}
	for _, step := range [][]string{
		{"-n", p.srv, "addr", "add", netnsServerIP + "/30", "dev", p.srvIf},
		{"-n", p.cli, "addr", "add", netnsClientIP + "/30", "dev", p.cliIf},
		{"-n", p.srv, "link", "set", "lo", "up"},
		{"-n", p.cli, "link", "set", "lo", "up"},
		{"-n", p.srv, "link", "set", p.srvIf, "up"},
		{"-n", p.cli, "link", "set", p.cliIf, "up"},
	} {
		if _, err := ipCmd(step...); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// cut takes the client's end of the link down: from then on nothing the
// server sends reaches the client and nothing comes back, not even a RST.
func (p *netnsPair) cut(t *testing.T) {
	t.Helper()
	if _, err := ipCmd("-n", p.cli, "link", "set", p.cliIf, "down"); err != nil {
		t.Fatal(err)
	}
}

// startNetnsDaemon runs the glockd binary in namespace ns.
func startNetnsDaemon(t *testing.T, ns string, args ...string) *daemon {
	t.Helper()
	bin, err := daemonBinary()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"netns", "exec", ns, bin, "-port", netnsPort, "-ws", "0"}, args...)
	return runDaemon(t, exec.Command("ip", args...))
}

// nsClient is a TestNetnsHelper child: a line client in some namespace.
type nsClient struct {
	t     *testing.T
	name  string
	in    io.WriteCloser
	lines chan string
	cmd   *exec.Cmd
}

func startNSClient(t *testing.T, name, ns, addr string) *nsClient {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNetnsHelper$")
	cmd.Env = append(os.Environ(), netnsDialEnv+"="+addr)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &nsClient{t: t, name: name, in: in, lines: make(chan string, 100), cmd: cmd}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.lines)
		r := bufio.NewReader(out)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			c.lines <- l
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	return c
}

func (c *nsClient) send(cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		c.t.Fatalf("%s: send %q: %v", c.name, cmd, err)
	}
}

// line waits for the next reply line.
func (c *nsClient) line(timeout time.Duration) string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("%s: connection ended", c.name)
		}
		return l
	case <-time.After(timeout):
		c.t.Fatalf("%s: no reply within %v", c.name, timeout)
		return ""
	}
}

func (c *nsClient) expect(cmd, want string) {
	c.t.Helper()
	c.send(cmd)
	if got := c.line(20 * time.Second); got != want {
		c.t.Fatalf("%s: %q: got %q, want %q", c.name, cmd, got, want)
	}
}

// waitRelease has probe wait for lock (gw) and returns how long after since
// the lock came to it.
func waitRelease(t *testing.T, probe *nsClient, lock string, since time.Time) time.Duration {
	t.Helper()
	probe.send(fmt.Sprintf("gw %d %s", (2 * netnsMaxRelease).Milliseconds(), lock))
	select {
	case l, ok := <-probe.lines:
		took := time.Since(since)
		if !ok || l != "1 Lock Get Success: "+lock+"\n" {
			t.Fatalf("probe waiting for %s: got %q (connection open: %v) after %v", lock, l, ok, took)
		}
		return took
	case <-time.After(netnsMaxRelease):
		t.Fatalf("%s still held %v after the client vanished", lock, netnsMaxRelease)
		return 0
	}
}

// TestVanishedClient: a client holding a lock vanishes while idle. TCP
// keepalive (idle 1s, then 2 probes 1s apart) must find it dead and the
// lock must go to a waiter within about idle + interval × count = 3 s.
func TestVanishedClient(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		bound time.Duration // what the kernel should take, for the log
	}{
		{"keepalive", []string{"-keepalive-idle", "1s", "-keepalive-interval", "1s", "-keepalive-count", "2", "-user-timeout", "3s"}, 3 * time.Second},
		// TCP_USER_TIMEOUT, when set, also decides when keepalive gives up:
		// the connection ends at the first probe once it has been silent
		// that long, whatever the count.
		{"user timeout overrides count", []string{"-keepalive-idle", "1s", "-keepalive-interval", "1s", "-keepalive-count", "2", "-user-timeout", "6s"}, 6 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := makeNetns(t)
			startNetnsDaemon(t, p.srv, tt.args...)
			client := startNSClient(t, "client", p.cli, net.JoinHostPort(netnsServerIP, netnsPort))
			probe := startNSClient(t, "probe", p.srv, net.JoinHostPort("127.0.0.1", netnsPort))
			client.expect("g held", "1 Lock Get Success: held\n")
			client.expect("sg shared", "1 Shared Lock Get Success: shared\n")
			probe.expect("i held", "1 Lock Is Locked: held\n")

			p.cut(t)
			cut := time.Now()
			// Not released by the cut itself: the server has heard nothing.
			probe.expect("i held", "1 Lock Is Locked: held\n")
			probe.expect("si shared", "1 Shared Lock Is Locked: shared\n")
			took := waitRelease(t, probe, "held", cut)
			t.Logf("lock released %.2fs after the link was cut (configured bound %v: %s)", took.Seconds(), tt.bound, strings.Join(tt.args, " "))
			probe.expect("si shared", "0 Shared Lock Not Locked: shared\n")
		})
	}
}

// TestVanishedClientUnackedData: the client vanishes with a reply on its
// way to it (a gw granted after the cut), so the server retransmits and
// keepalive does not run; TCP_USER_TIMEOUT (3 s) must end the connection.
// Keepalive is set far beyond the test's patience, so only the user
// timeout can release the lock in time.
func TestVanishedClientUnackedData(t *testing.T) {
	p := makeNetns(t)
	startNetnsDaemon(t, p.srv, "-keepalive-idle", "1h", "-keepalive-interval", "1h", "-user-timeout", "3s")
	client := startNSClient(t, "client", p.cli, net.JoinHostPort(netnsServerIP, netnsPort))
	probe := startNSClient(t, "probe", p.srv, net.JoinHostPort("127.0.0.1", netnsPort))
	probe.expect("g handed", "1 Lock Get Success: handed\n")
	client.expect("g held", "1 Lock Get Success: held\n")
	client.send("gw -1 handed")
	// The server has queued the client once it reports a waiter; q lists
	// no waiters, so wait for the gw to show in command_gw.
	deadline := time.Now().Add(20 * time.Second)
	for {
		probe.send("q")
		queued := false
		for {
			l := probe.line(20 * time.Second)
			if l == "command_gw: 1\n" {
				queued = true
			}
			if strings.HasPrefix(l, "shared_orphans:") {
				break
			}
		}
		if queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's gw never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}

	p.cut(t)
	cut := time.Now()
	// The hand-over: the server writes the grant to a client that is gone.
	probe.expect("r handed", "1 Lock Release Success: handed\n")
	probe.expect("i handed", "1 Lock Is Locked: handed\n")
	took := waitRelease(t, probe, "held", cut)
	t.Logf("locks released %.2fs after the link was cut and the grant was sent (-user-timeout 3s, keepalive 1h)", took.Seconds())
	probe.expect("i handed", "0 Lock Not Locked: handed\n")
}
