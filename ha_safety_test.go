package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
	// stops a a random moment later, until the stop lands inside the batch:
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
			delay -= delay / 3 // after it ended: sooner
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
