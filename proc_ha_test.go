package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/tokens"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The tests here run a real etcd (the etcd binary, from Debian's
// etcd-server package, which .ci/run installs) and two glockd processes
// with short lease and takeover settings, and break things: kill or pause
// the leader, stop etcd, cut the leader off from etcd.

const (
	haTTL      = 2 * time.Second
	haTakeover = 1 * time.Second
	// The failover bound the issue sets: a dead leader's lease runs out
	// within a TTL, then the takeover delay, and a second of slack.
	haFailover = haTTL + haTakeover + time.Second
)

// etcdBinary finds etcd, or skips the test.
func etcdBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (apt-get install -y --no-install-recommends etcd-server); .ci/run installs it")
	}
	return bin
}

// etcdMember is one etcd process on loopback ports with a temporary data
// directory, restartable on the same ones.
type etcdMember struct {
	t       *testing.T
	name    string
	client  string   // client URL
	cmd     []string // the command line, for restarts
	proc    *daemon
	healthy string // URL of its /health, "" when the test cannot reach it
}

// startEtcd runs an etcd cluster of n members on loopback.
func startEtcd(t *testing.T, n int) []*etcdMember {
	t.Helper()
	bin := etcdBinary(t)
	members := make([]*etcdMember, n)
	var initial []string
	peers := make([]string, n)
	for i := range members {
		name := fmt.Sprintf("e%d", i)
		peers[i] = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		initial = append(initial, name+"="+peers[i])
		members[i] = &etcdMember{t: t, name: name, client: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
	}
	for i, m := range members {
		m.cmd = append([]string{bin}, etcdArgs(m.name, t.TempDir(), m.client, m.client, peers[i], strings.Join(initial, ","))...)
		m.healthy = m.client + "/health"
		m.start()
	}
	for _, m := range members {
		m.waitHealthy()
	}
	return members
}

func etcdArgs(name, dataDir, listenClient, advertiseClient, peer, initial string) []string {
	return []string{
		"--name", name, "--data-dir", dataDir,
		"--listen-client-urls", listenClient, "--advertise-client-urls", advertiseClient,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", initial, "--initial-cluster-state", "new",
		"--initial-cluster-token", "glockd-test",
		// A lost etcd leader is replaced in about half a second.
		"--heartbeat-interval", "50", "--election-timeout", "500",
	}
}

func (m *etcdMember) start() {
	m.proc = runDaemon(m.t, exec.Command(m.cmd[0], m.cmd[1:]...))
}

func (m *etcdMember) kill() {
	m.proc.cmd.Process.Kill()
	<-m.proc.done
}

func (m *etcdMember) waitHealthy() {
	m.t.Helper()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	eventually(m.t, "etcd "+m.name+" healthy", func() bool {
		resp, err := client.Get(m.healthy)
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "true")
	})
}

func endpoints(members []*etcdMember) string {
	var eps []string
	for _, m := range members {
		eps = append(eps, m.client)
	}
	return strings.Join(eps, ",")
}

// haNodeProc is a glockd process with -etcd on loopback ports.
type haNodeProc struct {
	t           *testing.T
	name        string
	port        int
	metricsPort int
	args        []string
	d           *daemon
}

func startHANode(t *testing.T, name, etcd string, extra ...string) *haNodeProc {
	t.Helper()
	n := &haNodeProc{t: t, name: name, port: freePort(t), metricsPort: freePort(t)}
	n.args = append([]string{
		"-etcd", etcd,
		"-port", strconv.Itoa(n.port), "-bind", "127.0.0.1", "-ws", "0",
		"-metrics-addr", n.metricsAddr(),
		"-lease-ttl", haTTL.String(), "-takeover-delay", haTakeover.String(),
	}, extra...)
	n.start()
	return n
}

func (n *haNodeProc) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }
func (n *haNodeProc) metricsAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.metricsPort))
}

func (n *haNodeProc) start() {
	n.t.Helper()
	n.d = startDaemon(n.t, n.args...)
	eventually(n.t, n.name+" serving /healthz", func() bool {
		c, err := net.Dial("tcp", n.metricsAddr())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (n *haNodeProc) kill() {
	n.d.cmd.Process.Kill()
	<-n.d.done
}

func (n *haNodeProc) signal(sig syscall.Signal) {
	n.t.Helper()
	if err := n.d.cmd.Process.Signal(sig); err != nil {
		n.t.Fatal(err)
	}
}

// serving reports whether the node accepts connections for the line
// protocol; a standby refuses them at once.
func (n *haNodeProc) serving() bool {
	c, err := net.DialTimeout("tcp", n.addr(), time.Second)
	if err != nil {
		if !errors.Is(err, syscall.ECONNREFUSED) {
			n.t.Logf("%s: dial: %v", n.name, err)
		}
		return false
	}
	c.Close()
	return true
}

// waitStopped waits until every thread of the process is stopped: kill(2)
// returns before a SIGSTOP has taken effect.
func (n *haNodeProc) waitStopped() {
	n.t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", n.d.cmd.Process.Pid)
	eventually(n.t, n.name+" stopped", func() bool {
		tasks, err := os.ReadDir(dir)
		if err != nil {
			n.t.Fatal(err)
		}
		for _, task := range tasks {
			stat, err := os.ReadFile(filepath.Join(dir, task.Name(), "stat"))
			if err != nil {
				return false
			}
			// pid (comm) STATE ...: comm may hold spaces, so after the last ")".
			fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			if len(fields) == 0 || fields[0] != "T" {
				return false
			}
		}
		return true
	})
}

func (n *haNodeProc) healthz() (int, string) {
	n.t.Helper()
	resp, body := httpGet(n.t, "http://"+n.metricsAddr()+"/healthz")
	return resp.StatusCode, body
}

func (n *haNodeProc) metric(name string) float64 {
	n.t.Helper()
	return scrape(n.t, n.metricsAddr())[name]
}

// waitServing waits until one of nodes serves and returns it, and how long
// that took.
func waitServing(t *testing.T, within time.Duration, nodes ...*haNodeProc) (*haNodeProc, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		for _, n := range nodes {
			if n.serving() {
				return n, time.Since(start)
			}
		}
		if time.Since(start) > within {
			t.Fatalf("no node serving after %v", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectStandby checks that n refuses clients and names leader on /healthz.
func expectStandby(t *testing.T, n, leader *haNodeProc) {
	t.Helper()
	// A node that has just stepped down closes its connections before its
	// listeners: give it the moment that takes.
	eventually(t, n.name+" not accepting connections", func() bool { return !n.serving() })
	eventually(t, n.name+" /healthz naming the leader", func() bool {
		code, body := n.healthz()
		return code == http.StatusServiceUnavailable && body == "role: standby\nleader: "+leader.addr()+"\n"
	})
	if v := n.metric("glockd_leader"); v != 0 {
		t.Fatalf("standby %s: glockd_leader %v", n.name, v)
	}
}

func expectLeader(t *testing.T, n *haNodeProc) {
	t.Helper()
	if code, body := n.healthz(); code != http.StatusOK {
		t.Fatalf("leader %s: /healthz %d %q", n.name, code, body)
	}
	if v := n.metric("glockd_leader"); v != 1 {
		t.Fatalf("leader %s: glockd_leader %v", n.name, v)
	}
}

// lineConn is a plain TCP client of the line protocol.
type lineConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialLine(t *testing.T, addr string) *lineConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &lineConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *lineConn) send(lines string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write([]byte(lines)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *lineConn) do(cmd string) string {
	c.t.Helper()
	c.send(cmd + "\n")
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("%q: %v", cmd, err)
	}
	return l
}

// lock takes name and returns its token.
func (c *lineConn) lock(name string) uint64 {
	c.t.Helper()
	if got := c.do("g " + name); got != "1 Lock Get Success: "+name+"\n" {
		c.t.Fatalf("g %s: %q", name, got)
	}
	reply := c.do("t " + name)
	token, err := strconv.ParseUint(strings.Fields(reply)[0], 10, 64)
	if err != nil || token == 0 || token > tokens.Max {
		c.t.Fatalf("t %s: %q", name, reply)
	}
	return token
}

// expectClosedSilently reads until the server closes the connection, and
// fails if anything arrives first.
func (c *lineConn) expectClosedSilently(within time.Duration) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(within))
	got, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after %v (read %q)", within, got)
	}
	if len(got) > 0 {
		c.t.Fatalf("the deposed leader answered %q", got)
	}
}

// TestHAFailover: one node serves, the other refuses and names it; kill -9
// the leader and the other serves within TTL + takeover delay + 1 s, with
// tokens above every earlier one; twice, the killed node coming back as a
// standby each time.
func TestHAFailover(t *testing.T) {
	etcd := startEtcd(t, 1)
	a := startHANode(t, "a", endpoints(etcd))
	b := startHANode(t, "b", endpoints(etcd))
	leader, _ := waitServing(t, 10*time.Second, a, b)
	standby := map[*haNodeProc]*haNodeProc{a: b, b: a}[leader]
	expectLeader(t, leader)
	expectStandby(t, standby, leader)

	var highest uint64
	for round := range 2 {
		c := dialLine(t, leader.addr())
		for i := range 3 {
			token := c.lock(fmt.Sprintf("r%d-x%d", round, i))
			if token <= highest {
				t.Fatalf("token %d after %d", token, highest)
			}
			highest = token
		}
		leader.kill()
		killed := time.Now()
		next, took := waitServing(t, haFailover, standby)
		t.Logf("round %d: %s serves %.2fs after %s was killed (-lease-ttl %v -takeover-delay %v)", round, next.name, took.Seconds(), leader.name, haTTL, haTakeover)
		if took > haFailover {
			t.Fatalf("failover took %v, want at most %v", time.Since(killed), haFailover)
		}
		token := dialLine(t, next.addr()).lock(fmt.Sprintf("r%d-x0", round))
		if token <= highest {
			t.Fatalf("new leader's token %d is not above %d", token, highest)
		}
		highest = token
		expectLeader(t, next)
		leader.start()
		expectStandby(t, leader, next)
		leader, standby = next, leader
	}
	if won := leader.metric("glockd_elections_won_total"); won < 1 {
		t.Fatalf("glockd_elections_won_total %v", won)
	}
}

// TestHAPausedLeader: a leader paused past its deadline (SIGSTOP) answers
// nothing once resumed, not even the commands that were waiting in its
// socket, and closes their connection; meanwhile the other node took over.
func TestHAPausedLeader(t *testing.T) {
	etcd := startEtcd(t, 1)
	a := startHANode(t, "a", endpoints(etcd))
	waitServing(t, 10*time.Second, a)
	b := startHANode(t, "b", endpoints(etcd))
	expectStandby(t, b, a)

	c := dialLine(t, a.addr())
	before := c.lock("held")
	a.signal(syscall.SIGSTOP)
	paused := time.Now()
	a.waitStopped()
	// Into the socket of a process that cannot read it.
	c.send("g p1\ng p2\ng held\nt held\n")
	_, took := waitServing(t, 3*haTTL, b)
	t.Logf("b serves %.2fs after a was paused", took.Seconds())
	if token := dialLine(t, b.addr()).lock("p1"); token <= before {
		t.Fatalf("new leader's token %d is not above %d", token, before)
	}
	time.Sleep(time.Until(paused.Add(3 * haTTL)))
	a.signal(syscall.SIGCONT)
	c.expectClosedSilently(10 * time.Second)
	expectStandby(t, a, b)
	if v := a.metric("glockd_step_downs_total"); v != 1 {
		t.Fatalf("a: glockd_step_downs_total %v, want 1", v)
	}
	expectLeader(t, b)
}

// TestHAEtcdDown: with etcd gone, the leader closes its clients within its
// deadline and nobody serves; once etcd is back, a leader serves again.
func TestHAEtcdDown(t *testing.T) {
	etcd := startEtcd(t, 1)
	a := startHANode(t, "a", endpoints(etcd))
	b := startHANode(t, "b", endpoints(etcd))
	leader, _ := waitServing(t, 10*time.Second, a, b)
	c := dialLine(t, leader.addr())
	before := c.lock("held")

	etcd[0].kill()
	killed := time.Now()
	c.expectClosedSilently(haTTL + time.Second)
	closed := time.Since(killed)
	t.Logf("the leader closed its clients %.2fs after etcd was killed (-lease-ttl %v)", closed.Seconds(), haTTL)
	// The deadline is at most TTL − margin after the last renewal, sent
	// before the kill.
	if closed > haTTL {
		t.Fatalf("the leader closed its clients only %v after etcd went", closed)
	}
	for end := time.Now().Add(2*haTTL + haTakeover); time.Now().Before(end); {
		for _, n := range []*haNodeProc{a, b} {
			if n.serving() {
				t.Fatalf("%s serves without etcd", n.name)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range []*haNodeProc{a, b} {
		if code, body := n.healthz(); code != http.StatusServiceUnavailable {
			t.Fatalf("%s without etcd: /healthz %d %q", n.name, code, body)
		}
	}

	etcd[0].start()
	back := time.Now()
	next, _ := waitServing(t, 30*time.Second, a, b)
	t.Logf("%s serves %.2fs after etcd was started again", next.name, time.Since(back).Seconds())
	if token := dialLine(t, next.addr()).lock("held"); token <= before {
		t.Fatalf("token %d after etcd's return is not above %d", token, before)
	}
}

// TestHAEtcdMemberLost: in a three-member etcd cluster, killing one member
// (the etcd leader, the worse case) changes nothing for glockd: the same
// node goes on serving the same connection.
func TestHAEtcdMemberLost(t *testing.T) {
	etcd := startEtcd(t, 3)
	// The default TTL: renewals stop while etcd elects a new leader, and
	// with a 2 s TTL the deadline (at most 1.6 s ahead) can pass meanwhile
	// on a loaded machine. The lease TTL must span etcd's elections.
	const ttl = ha.DefaultLeaseTTL
	a := startHANode(t, "a", endpoints(etcd), "-lease-ttl", ttl.String())
	waitServing(t, 10*time.Second, a)
	b := startHANode(t, "b", endpoints(etcd), "-lease-ttl", ttl.String())
	expectStandby(t, b, a)
	c := dialLine(t, a.addr())
	c.lock("held")

	etcdLeader := findEtcdLeader(t, etcd)
	etcdLeader.kill()
	t.Logf("killed etcd member %s, the etcd leader", etcdLeader.name)
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); {
		if got := c.do("i held"); got != "1 Lock Is Locked: held\n" {
			t.Fatalf("i held: %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.serving() {
		t.Fatal("b serves")
	}
	if v := a.metric("glockd_step_downs_total"); v != 0 {
		t.Fatalf("a stepped down %v times", v)
	}
	expectLeader(t, a)
}

func findEtcdLeader(t *testing.T, members []*etcdMember) *etcdMember {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(endpoints(members), ","), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range members {
		st, err := cli.Status(ctx, m.client)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader == st.Header.MemberId {
			return m
		}
	}
	t.Fatal("no etcd member is the leader")
	return nil
}

// netnsLeaderA starts etcd and, as the leader, node a with a client holding
// "held": etcd in the server namespace, a and its client in the client
// namespace, reaching etcd over the veth pair. startB starts node b in the
// server namespace. No takeover delay: a must step down on its own
// deadline, which comes before etcd lets its lease expire, with nothing
// else to cover for it.
func netnsLeaderA(t *testing.T) (p *netnsPair, clientA *nsClient, startB func() *daemon) {
	p = makeNetns(t)
	bin := etcdBinary(t)
	// The clients are this test binary; built with -race, it would sleep a
	// second on exit, and a's client exits when a closes its connection.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	etcdURL := "http://" + netnsServerIP + ":2379"
	etcdCmd := append([]string{"netns", "exec", p.srv, bin}, etcdArgs("e0", t.TempDir(),
		etcdURL+",http://127.0.0.1:2379", etcdURL, "http://127.0.0.1:2380", "e0=http://127.0.0.1:2380")...)
	runDaemon(t, exec.Command("ip", etcdCmd...))
	haArgs := []string{"-bind", "127.0.0.1", "-metrics-addr", "127.0.0.1:9101",
		"-lease-ttl", haTTL.String(), "-takeover-delay", "0s", "-advertise", "127.0.0.1:" + netnsPort}
	startNetnsDaemon(t, p.cli, append([]string{"-etcd", etcdURL}, haArgs...)...)
	clientA = startNSClient(t, "client of a", p.cli, "127.0.0.1:"+netnsPort)
	clientA.expect("g held", "1 Lock Get Success: held\n")
	startB = func() *daemon {
		return startNetnsDaemon(t, p.srv, append([]string{"-etcd", "http://127.0.0.1:2379"}, haArgs...)...)
	}
	return p, clientA, startB
}

// TestHALeaderCutOff: the leader loses etcd but not its clients (a network
// namespace whose link to etcd goes down, while its clients talk to it over
// its loopback). It must close their connections before the other node
// grants its first lock, even without a takeover delay.
func TestHALeaderCutOff(t *testing.T) {
	p, clientA, startB := netnsLeaderA(t)
	startB()
	// b is a standby by now or soon; either way a stays leader.
	time.Sleep(haTTL)
	clientA.expect("i held", "1 Lock Is Locked: held\n")

	p.cut(t)
	cut := time.Now()
	clientB := startNSClient(t, "client of b", p.srv, "127.0.0.1:"+netnsPort)
	clientB.send("g held")
	closedA, grantedB := make(chan time.Time, 1), make(chan time.Time, 1)
	go func() {
		for range clientA.lines {
		}
		closedA <- time.Now()
	}()
	go func() {
		if l, ok := <-clientB.lines; ok && l == "1 Lock Get Success: held\n" {
			grantedB <- time.Now()
		}
		close(grantedB)
	}()
	var tA, tB time.Time
	select {
	case tA = <-closedA:
	case <-time.After(haFailover + 5*time.Second):
		t.Fatal("a's client still connected")
	}
	select {
	case tB = <-grantedB:
	case <-time.After(haFailover + 5*time.Second):
		t.Fatal("b granted nothing")
	}
	if tB.IsZero() {
		t.Fatal("b's client: no grant")
	}
	t.Logf("after the cut: a closed its client at %.2fs, b granted the lock at %.2fs", tA.Sub(cut).Seconds(), tB.Sub(cut).Seconds())
	if !tA.Before(tB) {
		t.Fatal("b granted the lock before a closed its client")
	}
}

// TestHAEtcdTLS: etcd that requires client certificates; the node connects
// with -etcd-cert, -etcd-key and -etcd-ca and leads.
func TestHAEtcdTLS(t *testing.T) {
	bin := etcdBinary(t)
	dir := t.TempDir()
	writeTestPKI(t, dir)
	client := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	args := append(etcdArgs("e0", t.TempDir(), client, client, peer, "e0="+peer),
		"--cert-file", filepath.Join(dir, "server.pem"), "--key-file", filepath.Join(dir, "server-key.pem"),
		"--client-cert-auth", "--trusted-ca-file", filepath.Join(dir, "ca.pem"))
	runDaemon(t, exec.Command(bin, args...))
	tlsFlags := []string{"-etcd-ca", filepath.Join(dir, "ca.pem"),
		"-etcd-cert", filepath.Join(dir, "client.pem"), "-etcd-key", filepath.Join(dir, "client-key.pem")}
	a := startHANode(t, "a", client, tlsFlags...)
	waitServing(t, 20*time.Second, a)
	dialLine(t, a.addr()).lock("x")
	// Without a client certificate etcd refuses the node: it never serves.
	b := startHANode(t, "b", client, tlsFlags[:2]...)
	time.Sleep(haTTL)
	if code, body := b.healthz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "leader: unknown") {
		t.Fatalf("b without a client certificate: /healthz %d %q", code, body)
	}
}

// writeTestPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, in PEM, into dir.
func writeTestPKI(t *testing.T, dir string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(name, "PRIVATE KEY", der)
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "glockd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.pem", "CERTIFICATE", caDER)
	for i, name := range []string{"server", "client"} {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".pem", "CERTIFICATE", der)
		writeKey(name+"-key.pem", key)
	}
}
