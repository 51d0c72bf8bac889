package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"golang.org/x/net/websocket"
)

// The deadline within a request: with -etcd, every grant is checked against
// the term's deadline at the moment it is made, and replies are not written
// once the term has ended (fence.go). These tests pause the "process" at
// an exact point by ending the term from the manager's own -verbose log: a
// log handler that runs in the manager goroutine, at the event it logs.

// eventLog is a slog handler that records the manager's events and runs
// onEvent on each, in the goroutine that logs it.
type eventLog struct {
	mu      sync.Mutex
	events  []string // "acquire|LOCK", "release|LOCK", ...
	onEvent func(event, lock string)
}

func (h *eventLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *eventLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *eventLog) WithGroup(string) slog.Handler            { return h }

func (h *eventLog) Handle(_ context.Context, r slog.Record) error {
	lock := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "lock" {
			lock = a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	h.events = append(h.events, r.Message+"|"+lock)
	fn := h.onEvent
	h.mu.Unlock()
	if fn != nil {
		fn(r.Message, lock)
	}
	return nil
}

// count is how many events of a kind were logged.
func (h *eventLog) count(event string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.events {
		if msg, _, _ := strings.Cut(e, "|"); msg == event {
			n++
		}
	}
	return n
}

func (h *eventLog) logged(event, lock string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.events, event+"|"+lock)
}

// startLoggedLeader runs a server that serves under a term the test holds,
// as startLeaderServer, on every transport (TLS too when ca is given), with
// -verbose events going to the returned log.
func startLoggedLeader(t *testing.T, ca *testCA) (*Server, *ha.Term, *eventLog) {
	t.Helper()
	l := ha.NewLeadership()
	tm := testTerm(l, 1<<40)
	l.Publish(tm)
	log := &eventLog{}
	cfg := Config{
		TCPAddr:  "127.0.0.1:0",
		WSAddr:   "127.0.0.1:0",
		UnixPath: filepath.Join(t.TempDir(), "glockd.sock"),
		Registry: true,
		Dump:     true,
		Verbose:  true,
		Logger:   slog.New(log),
	}
	if ca != nil {
		cert := ca.issue(certOpts{cn: "glockd test server"})
		cfg.Security.TLSAddr = "127.0.0.1:0"
		cfg.Security.CertFile, cfg.Security.KeyFile = cert.certFile, cert.keyFile
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.manager.leader = &leadership{node: l}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, tm, log
}

// pauseAt ends the term's deadline (as a process stopped there and resumed
// past it) the first time the manager logs event on lock.
func pauseAt(log *eventLog, tm *ha.Term, event, lock string) {
	var once sync.Once
	log.mu.Lock()
	log.onEvent = func(e, l string) {
		if e == event && l == lock {
			once.Do(func() { tm.SetDeadline(time.Time{}) })
		}
	}
	log.mu.Unlock()
}

// expectClosedUnanswered reads c until the server closes it, and fails if
// any reply came first.
func expectClosedUnanswered(t *testing.T, c *client) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	var err error
	if c.ws != nil {
		for err == nil {
			var msg []byte
			if err = websocket.Message.Receive(c.ws, &msg); err == nil {
				got = append(got, msg...)
			}
		}
	} else {
		got, err = io.ReadAll(c.r)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection stayed open (got %q)", got)
	}
	if len(got) > 0 {
		t.Fatalf("got %q after the term ended, want no reply", got)
	}
}

// TestDeadlineWithinBatch: the leader's deadline passes in the middle of a
// pipelined batch, right after its first grant. No granting command after
// that point runs, whatever its kind, and the batch gets no reply at all.
func TestDeadlineWithinBatch(t *testing.T) {
	for _, next := range []string{"g b", "sg b", "gw 1000 b", "sgw 1000 5 b"} {
		t.Run(strings.Fields(next)[0], func(t *testing.T) {
			srv, tm, log := startLoggedLeader(t, nil)
			c := dial(t, srv, "tcp")
			pauseAt(log, tm, "acquire", "a")
			var batch strings.Builder
			batch.WriteString("g a\ni a\n" + next + "\n")
			for i := range 100 {
				batch.WriteString("g z-" + strconv.Itoa(i) + "\n")
			}
			c.send(batch.String())
			expectClosedUnanswered(t, c)
			if !tm.Ended() {
				t.Error("the term did not end")
			}
			if n := log.count("acquire") + log.count("acquire shared"); n != 1 {
				t.Errorf("%d acquisitions logged, want only the one before the deadline passed", n)
			}
		})
	}
}

// TestDeadlineAtHandOver: the deadline passes as a lock is released or
// orphaned, in the same request: the lock is not handed to its waiter.
func TestDeadlineAtHandOver(t *testing.T) {
	for _, tt := range []struct {
		name, take, wait, event, end string
	}{
		{"release", "g x", "gw -1 x", "release", "r x"},
		{"orphan", "g x", "gw -1 x", "orphan", ""},
		{"shared release", "sg x", "sgw -1 1 x", "release shared", "sr x"},
		{"shared orphan", "sg x", "sgw -1 1 x", "orphan shared", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, tm, log := startLoggedLeader(t, nil)
			holder, waiter := dial(t, srv, "tcp"), dial(t, srv, "tcp")
			if got := holder.do(tt.take); !strings.Contains(got, "Success") {
				t.Fatalf("%s: %q", tt.take, got)
			}
			waiter.send(tt.wait + "\n")
			waitersQueued(t, srv, 1, "the waiter queued")
			acquired := log.count("acquire") + log.count("acquire shared")

			pauseAt(log, tm, tt.event, "x")
			if tt.end == "" {
				holder.close()
			} else {
				holder.send(tt.end + "\n")
			}
			select {
			case <-tm.Over():
			case <-time.After(10 * time.Second):
				t.Fatal("the term did not end")
			}
			if !log.logged(tt.event, "x") {
				t.Fatalf("no %q logged", tt.event)
			}
			if n := log.count("acquire") + log.count("acquire shared"); n != acquired {
				t.Errorf("the lock was handed to its waiter after the deadline (%d acquisitions, want %d)", n, acquired)
			}
			expectSilence(t, waiter)
			if s, _ := srv.manager.askStats(time.Second); s.locks != 0 || s.sharedLocks != 0 || s.waiters != 0 {
				t.Errorf("%d locks, %d shared locks, %d waiters, want none", s.locks, s.sharedLocks, s.waiters)
			}
		})
	}
}

// TestDeadlineAtWrite: the deadline passes after the batch's last grant, so
// the manager runs the whole batch; the connection, on every transport,
// then finds the term over and closes instead of writing the grants.
func TestDeadlineAtWrite(t *testing.T) {
	ca := newTestCA(t, "glockd test CA")
	for _, tr := range []string{"tcp", "tls", "unix", "websocket"} {
		t.Run(tr, func(t *testing.T) {
			srv, tm, log := startLoggedLeader(t, ca)
			var c *client
			if tr == "tls" {
				c = tlsClient(t, srv, ca.clientTLS())
			} else {
				c = dial(t, srv, tr)
			}
			pauseAt(log, tm, "acquire", "last")
			c.send("g a\nsg b\ng last\nt last\ni a\n")
			expectClosedUnanswered(t, c)
			if n := log.count("acquire") + log.count("acquire shared"); n != 3 {
				t.Errorf("%d acquisitions, want the batch's 3: the deadline passed after them", n)
			}
		})
	}
}

// BenchmarkMayGrant is the deadline check made before each grant with
// -etcd (fence.go): a read of the monotonic clock and a comparison.
func BenchmarkMayGrant(b *testing.B) {
	m := newManager(Config{}.withDefaults())
	benchLeader(m)
	for b.Loop() {
		if !m.mayGrant() {
			b.Fatal("the term ended")
		}
	}
}

// TestDeadlineBeforeEveryBatch: once the leader's deadline has passed, the
// manager runs no batch (even one already read), hands no orphaned lock to
// a waiter, and ends the term so that the node steps down. A new term
// starts its tokens from its own block.
func TestDeadlineBeforeEveryBatch(t *testing.T) {
	l := ha.NewLeadership()
	tm := testTerm(l, 1<<40)
	l.Publish(tm)
	srv := startLeaderServer(t, l)

	holder, waiter, other := dial(t, srv, "tcp"), dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g x", "1 Lock Get Success: x\n")
	if token := tokenOf(t, holder, "x"); token != 1<<40 {
		t.Fatalf("first token %d, want the block's start %d", token, uint64(1<<40))
	}
	waiter.send("gw -1 x\n")
	waitersQueued(t, srv, 1, "the waiter queued")

	// As for a process paused past its deadline.
	tm.SetDeadline(time.Time{})
	other.send("g y\nt y\n")
	select {
	case <-tm.Over():
	case <-time.After(10 * time.Second):
		t.Fatal("the term did not end")
	}
	if s, _ := srv.manager.askStats(time.Second); s.locks != 1 {
		t.Fatalf("%d locks after the refused batch, want 1", s.locks)
	}
	// The connection finds the term over and closes without a reply.
	expectClosedUnanswered(t, other)

	holder.close()
	eventually(t, "x orphaned", func() bool {
		s, _ := srv.manager.askStats(time.Second)
		return s.locks == 0 && s.waiters == 0
	})
	expectSilence(t, waiter)

	// A client that stops sending while its wait was dropped is let go: its
	// connection ends, with no grant.
	waiter.nc.(*net.TCPConn).CloseWrite()
	waiter.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(waiter.r); err != nil || strings.Contains(string(rest), "Success") {
		t.Fatalf("waiter after its end of input: %q, %v", rest, err)
	}

	// A deadline that moves again does not revive the term.
	tm.SetDeadline(time.Now().Add(time.Hour))
	nc, _ := rawDial(t, srv, "tcp")
	other = streamClient(t, nc)
	other.send("g z\n")
	expectSilence(t, other)

	// Nor do the tokens of a new term start from the old block.
	l.Publish(testTerm(l, 1<<41))
	c := dial(t, srv, "tcp")
	c.expect("g x", "1 Lock Get Success: x\n")
	if token := tokenOf(t, c, "x"); token != 1<<41 {
		t.Fatalf("first token of the new term %d, want %d", token, uint64(1<<41))
	}
}
