package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// startLoggedHANode is startHANode with -verbose and a log that can be read
// while the node runs.
func startLoggedHANode(t *testing.T, name, etcd string, extra ...string) (*haNodeProc, *logBuffer) {
	t.Helper()
	n := &haNodeProc{t: t, name: name, port: freePort(t), metricsPort: freePort(t)}
	n.args = append([]string{
		"-etcd", etcd, "-verbose",
		"-port", strconv.Itoa(n.port), "-bind", "127.0.0.1", "-ws", "0",
		"-metrics-addr", n.metricsAddr(),
		"-lease-ttl", haTTL.String(), "-takeover-delay", haTakeover.String(),
	}, extra...)
	var logs *logBuffer
	n.d, logs = loggedDaemon(t, n.args...)
	eventually(t, name+" serving /healthz", func() bool {
		c, err := net.Dial("tcp", n.metricsAddr())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return n, logs
}

// acquisitions counts the acquire lines of a -verbose log whose lock name
// starts with prefix.
func acquisitions(logs *logBuffer, prefix string) int {
	n := 0
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, " msg=acquire ") && strings.Contains(l, " lock="+prefix) {
			n++
		}
	}
	return n
}

// acquired reports whether a -verbose log shows name acquired.
func acquired(logs *logBuffer, name string) bool {
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, " msg=acquire ") && strings.HasSuffix(l, " lock="+name+"\n") {
			return true
		}
	}
	return false
}

// receivedLine is a reply line and when the client read it.
type receivedLine struct {
	at   time.Time
	line string
}

// rawReader reads every reply line of nc as it arrives, with its time, until
// the connection ends.
type rawReader struct {
	mu    sync.Mutex
	lines []receivedLine
	done  chan struct{}
}

func readReplies(nc net.Conn) *rawReader {
	r := &rawReader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		br := bufio.NewReader(nc)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			r.mu.Lock()
			r.lines = append(r.lines, receivedLine{time.Now(), l})
			r.mu.Unlock()
		}
	}()
	return r
}

// grantsAfter returns the grant replies read after t.
func (r *rawReader) grantsAfter(t time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var late []string
	for _, l := range r.lines {
		if l.at.After(t) && strings.Contains(l.line, "Success") {
			late = append(late, l.line)
		}
	}
	return late
}

// TestHAPausedMidBatch: the leader is stopped (SIGSTOP) while its manager is
// in the middle of one client's batch of pipelined g, which -verbose's
// acquire log shows; the other node takes over and grants the batch's last
// name. Once resumed, the old leader grants nothing more of the batch and
// its client receives no grant reply after the new leader's first grant.
func TestHAPausedMidBatch(t *testing.T) {
	etcd := startEtcd(t, 1)
	a, alog := startLoggedHANode(t, "a", endpoints(etcd))
	waitServing(t, 10*time.Second, a)
	b := startHANode(t, "b", endpoints(etcd))
	expectStandby(t, b, a)

	// Each attempt pipelines a batch of batchLen g on fresh names and
	// stops a at a random moment after, until the stop lands inside the batch:
	// some of its names acquired, not all. An attempt that misses resumes
	// a at once, well within its deadline.
	const batchLen, attempts = 1000, 100
	delay := time.Millisecond // from the write to the stop, adapted to this machine
	var (
		c        net.Conn
		replies  *rawReader
		prefix   string
		inFlight string // the command the stop may have caught
	)
	for attempt := 0; ; attempt++ {
		if attempt == attempts {
			t.Fatalf("no SIGSTOP landed inside a batch in %d attempts", attempts)
		}
		prefix = fmt.Sprintf("b%d-", attempt)
		var batch strings.Builder
		for i := range batchLen {
			fmt.Fprintf(&batch, "g %s%d\n", prefix, i)
		}
		nc, err := net.Dial("tcp", a.addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		r := readReplies(nc)
		if _, err := nc.Write([]byte(batch.String())); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay/2 + rand.N(delay))
		a.signal(syscall.SIGSTOP)
		a.waitStopped()
		// The log lines written before the stop may still be on their
		// way through the pipe: wait until their count holds still.
		n := acquisitions(alog, prefix)
		for range 100 {
			time.Sleep(50 * time.Millisecond)
			if m := acquisitions(alog, prefix); m == n {
				break
			} else {
				n = m
			}
		}
		r.mu.Lock()
		answered := len(r.lines) > 0
		r.mu.Unlock()
		switch {
		case n == 0:
			delay += delay / 2 // stopped before the batch began: later
		case n == batchLen || answered:
			delay = max(delay-delay/3, 50*time.Microsecond) // after it ended: sooner
		}
		if n > 0 && n < batchLen && !answered {
			t.Logf("attempt %d: stopped after %d of the batch's %d acquisitions", attempt, n, batchLen)
			inFlight = prefix + strconv.Itoa(n)
			c, replies = nc, r
			break
		}
		a.signal(syscall.SIGCONT)
		nc.Close()
		<-r.done
	}
	frozen := acquisitions(alog, "")

	_, took := waitServing(t, 3*haTTL, b)
	t.Logf("b serves %.2fs after a was stopped", took.Seconds())
	last := prefix + strconv.Itoa(batchLen-1)
	dialLine(t, b.addr()).lock(last)
	firstGrant := time.Now()

	a.signal(syscall.SIGCONT)
	select {
	case <-replies.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the old leader's client is still connected 10 s after SIGCONT")
	}
	c.Close()
	expectStandby(t, a, b)
	// The stop may have caught the manager between its check of the
	// deadline and the grant or its log line: that one command, already
	// past its check, can finish (its reply is never written). No other
	// may run.
	if n := acquisitions(alog, ""); n > frozen+1 || (n == frozen+1 && !acquired(alog, inFlight)) {
		t.Errorf("the old leader logged %d acquisitions after SIGCONT (at most %s may finish):\n%s", n-frozen, inFlight, alog)
	}
	if late := replies.grantsAfter(firstGrant); len(late) > 0 {
		t.Errorf("the old leader's client received %d grant replies after the new leader's first grant, from %q to %q",
			len(late), late[0], late[len(late)-1])
	}
}

// leaseFaults wraps the etcd client's lease API of an in-process node, to
// make one keep-alive path fail and not the other: KeepAlive (the loop a
// concurrency.Session runs) or KeepAliveOnce (the node's own renewals),
// and Revoke.
type leaseFaults struct {
	clientv3.Lease
	keepAlive, keepAliveOnce, revoke atomic.Bool // set: fails
}

func (l *leaseFaults) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	if l.keepAlive.Load() {
		ch := make(chan *clientv3.LeaseKeepAliveResponse)
		close(ch) // as the loop does when it gives up
		return ch, nil
	}
	return l.Lease.KeepAlive(ctx, id)
}

func (l *leaseFaults) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if l.keepAliveOnce.Load() {
		return nil, errors.New("test: renewal lost")
	}
	return l.Lease.KeepAliveOnce(ctx, id)
}

func (l *leaseFaults) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	if l.revoke.Load() {
		return nil, errors.New("test: revoke lost")
	}
	return l.Lease.Revoke(ctx, id)
}

// startFaultyLeaseNode runs an in-process HA node on etcd with TTL ttl and
// no takeover delay, its lease calls going through the returned faults.
func startFaultyLeaseNode(t *testing.T, etcd string, ttl time.Duration, edit func(*Config)) (*Server, *leaseFaults) {
	t.Helper()
	cfg := Config{
		TCPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Registry: true, Dump: true,
		HA: &ha.Config{Endpoints: []string{etcd}, Prefix: "/glockd/" + strings.ReplaceAll(t.Name(), "/", "-") + "/",
			LeaseTTL: ttl, Advertise: "127.0.0.1:1"},
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	faults := &leaseFaults{Lease: srv.ha.Client().Lease}
	srv.ha.Client().Lease = faults
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, faults
}

// electionKeys lists the keys of a node's election in etcd.
func electionKeys(t *testing.T, cli *clientv3.Client, srv *Server) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, srv.ha.ElectionPrefix()+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// TestHAOneKeepAlive: the term's lease has one keep-alive loop, the node's.
// When the library's loop (a concurrency.Session's) would fail and the
// node's renewals work, the node goes on serving. When the node's renewals
// fail and the library's would work, the node steps down at its deadline,
// and its election key goes when the lease expires, a TTL after the last
// renewal at most: nothing else keeps it alive, even though the revoke of
// the lease failed too.
func TestHAOneKeepAlive(t *testing.T) {
	etcd := endpoints(startEtcd(t, 1))
	// Long enough that a lease renewed by another loop until the step-down
	// would outlive the bound below.
	const ttl = 4 * time.Second
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	t.Run("library loop fails", func(t *testing.T) {
		srv, faults := startFaultyLeaseNode(t, etcd, haTTL, nil)
		faults.keepAlive.Store(true)
		eventually(t, "the node serving", func() bool { return srv.TCPAddr() != nil })
		time.Sleep(2 * haTTL)
		if srv.TCPAddr() == nil || !srv.manager.serving() {
			t.Fatal("the node stopped serving though its own renewals work")
		}
		if n := scrape(t, srv.MetricsAddr().String())["glockd_step_downs_total"]; n != 0 {
			t.Fatalf("%v step-downs", n)
		}
	})

	t.Run("node renewals fail", func(t *testing.T) {
		srv, faults := startFaultyLeaseNode(t, etcd, ttl, nil)
		eventually(t, "the node serving", func() bool { return srv.TCPAddr() != nil })
		keys := electionKeys(t, cli, srv)
		if len(keys) != 1 {
			t.Fatalf("election keys %q, want the node's", keys)
		}
		faults.keepAliveOnce.Store(true)
		faults.revoke.Store(true)
		lost := time.Now()
		deadline := srv.ha.Leadership().Current().Deadline()
		// It campaigns again at once, and wins: the step-down is in the
		// metrics rather than in the listener, which it opens again.
		eventually(t, "the node stepping down", func() bool {
			return scrape(t, srv.MetricsAddr().String())["glockd_step_downs_total"] >= 1
		})
		down := time.Now()
		if late := down.Sub(deadline); late > time.Second {
			t.Errorf("stepped down %v after its deadline", late)
		}
		// The last renewal was sent before lost; etcd expires leases in
		// rounds of half a second.
		for slices.Contains(electionKeys(t, cli, srv), keys[0]) {
			if time.Since(lost) > ttl+time.Second {
				t.Fatalf("the election key of the term that ended is still in etcd %v after the renewals stopped (stepped down after %v)",
					time.Since(lost).Round(time.Millisecond), down.Sub(lost).Round(time.Millisecond))
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("renewals lost: stepped down after %v, election key gone after %v", down.Sub(lost).Round(time.Millisecond), time.Since(lost).Round(time.Millisecond))
	})
}

// TestHATLSAddrRace: with -etcd and -tls-port, the TLS listener is opened
// again at each election while TLSAddr may be read; run with -race. The
// node's election key is deleted once, so that it steps down and is
// elected again.
func TestHATLSAddrRace(t *testing.T) {
	etcd := endpoints(startEtcd(t, 1))
	ca := newTestCA(t, "glockd test CA")
	cert := ca.issue(certOpts{cn: "glockd test server"})
	srv, _ := startFaultyLeaseNode(t, etcd, 2*time.Second, func(c *Config) {
		c.Security.TLSAddr = "127.0.0.1:0"
		c.Security.CertFile, c.Security.KeyFile = cert.certFile, cert.keyFile
	})
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				srv.TLSAddr()
			}
		}
	})
	defer func() {
		close(stop)
		readers.Wait()
	}()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for term := range 2 {
		eventually(t, "the node serving over TLS", func() bool {
			m := scrape(t, srv.MetricsAddr().String())
			return m["glockd_leader"] == 1 && m["glockd_elections_won_total"] == float64(term+1) && srv.TLSAddr() != nil
		})
		c := tlsClient(t, srv, ca.clientTLS())
		c.expect("g x", "1 Lock Get Success: x\n")
		if term == 0 {
			keys := electionKeys(t, cli, srv)
			if len(keys) != 1 {
				t.Fatalf("election keys %q", keys)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := cli.Delete(ctx, keys[0])
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the node stepping down", func() bool {
				return scrape(t, srv.MetricsAddr().String())["glockd_step_downs_total"] >= 1
			})
		}
	}
}

// tokenLine is the reply of t for a lock held with token.
func tokenLine(token uint64, name string) string {
	return strconv.FormatUint(token, 10) + " Lock Token: " + name + "\n"
}

// nsToken asks c for the token of name, which it holds.
func nsToken(t *testing.T, c *nsClient, name string) uint64 {
	t.Helper()
	c.send("t " + name)
	l := c.line(20 * time.Second)
	token, err := strconv.ParseUint(strings.Fields(l)[0], 10, 64)
	if err != nil || l != tokenLine(token, name) {
		t.Fatalf("%s: t %s: %q", c.name, name, l)
	}
	return token
}

// TestHALeaderRejoins: a leader cut off from etcd (and from the other
// node) steps down, the other takes over; when the partition heals, the
// cut-off node comes back as a standby, the new leader goes on serving the
// same connections, and tokens never go backwards: not when the other node
// takes over, nor when the node that was cut off leads again.
func TestHALeaderRejoins(t *testing.T) {
	p, clientA, startB := netnsLeaderA(t)
	tokenA := nsToken(t, clientA, "held")
	b := startB()
	time.Sleep(haTTL)

	p.cut(t)
	clientB := startNSClient(t, "client of b", p.srv, "127.0.0.1:"+netnsPort)
	clientB.expect("g held", "1 Lock Get Success: held\n")
	tokenB := nsToken(t, clientB, "held")
	if tokenB <= tokenA {
		t.Fatalf("b's token %d is not above a's %d", tokenB, tokenA)
	}
	for range clientA.lines { // a closed its client when it stepped down
	}

	if _, err := ipCmd("-n", p.cli, "link", "set", p.cliIf, "up"); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	// a reaches etcd again and campaigns; it must wait as a standby.
	var role string
	for role != "role: standby\n" {
		if time.Since(healed) > 10*haTTL {
			t.Fatalf("a's /healthz after the partition healed: %q, want a standby", role)
		}
		time.Sleep(haTTL / 2)
		h := startNSClient(t, "healthz of a", p.cli, "127.0.0.1:9101")
		h.send("GET /healthz HTTP/1.0\r")
		h.send("\r")
		for l := range h.lines {
			if strings.HasPrefix(l, "role: ") {
				role = l
			}
		}
	}
	t.Logf("a is a standby %.2fs after the partition healed", time.Since(healed).Seconds())
	// b went on serving, the same connection and lock, and its tokens go on
	// growing.
	if got := nsToken(t, clientB, "held"); got != tokenB {
		t.Fatalf("b's client: token %d, then %d", tokenB, got)
	}
	clientB.expect("g after-heal", "1 Lock Get Success: after-heal\n")
	tokenB2 := nsToken(t, clientB, "after-heal")
	if tokenB2 <= tokenB {
		t.Fatalf("b's token after the heal %d is not above %d", tokenB2, tokenB)
	}

	// b dies: a, back from the partition, leads again, above every token.
	b.cmd.Process.Kill()
	clientA2 := startNSClient(t, "client of a again", p.cli, "127.0.0.1:"+netnsPort)
	clientA2.expect("g held", "1 Lock Get Success: held\n")
	if tokenA2 := nsToken(t, clientA2, "held"); tokenA2 <= tokenB2 {
		t.Fatalf("a's token when it leads again %d is not above b's %d", tokenA2, tokenB2)
	}
}
