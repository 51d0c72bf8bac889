package main

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/websocket"
)

// loadConn is one connection of the load, on any transport.
type loadConn struct {
	nc net.Conn
	ws *websocket.Conn
	r  *bufio.Reader
}

func dialLoad(tr string, a transportAddrs) (*loadConn, error) {
	nc, ws, err := dialTransport(tr, a)
	if err != nil {
		return nil, err
	}
	c := &loadConn{nc: nc, ws: ws}
	if ws == nil {
		c.r = bufio.NewReader(nc)
	}
	return c, nil
}

// write sends lines: as they are on a stream, as one message on a websocket.
func (c *loadConn) write(lines string) error {
	if c.ws != nil {
		return websocket.Message.Send(c.ws, strings.TrimSuffix(lines, "\n"))
	}
	_, err := c.nc.Write([]byte(lines))
	return err
}

// read returns one reply line (stream) or message (websocket).
func (c *loadConn) read() (string, error) {
	if c.ws != nil {
		var msg string
		err := websocket.Message.Receive(c.ws, &msg)
		return msg, err
	}
	return c.r.ReadString('\n')
}

// load keeps a server busy: a holder of "hot", waiters queued for it for
// ever, clients pipelining as fast as they can, clients that send without
// ever reading (so the server's writes to them block), and idle holders.
type load struct {
	t       *testing.T
	wg      sync.WaitGroup
	closing atomic.Bool // errors are expected from now on
	replies atomic.Int64
	waiters int
}

func startLoad(t *testing.T, a transportAddrs) *load {
	l := &load{t: t}
	dial := func(tr string) *loadConn {
		c, err := dialLoad(tr, a)
		if err != nil {
			t.Fatalf("load: dial %s: %v", tr, err)
		}
		t.Cleanup(func() { c.nc.Close() })
		return c
	}
	expect := func(c *loadConn, cmd, want string) {
		if err := c.write(cmd + "\n"); err != nil {
			t.Fatal(err)
		}
		if got, err := c.read(); got != want {
			t.Fatalf("load: %q: %q, %v", cmd, got, err)
		}
	}
	// run runs f in a goroutine; an error before the shutdown is a failure.
	run := func(what string, f func() error) {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := f(); !l.closing.Load() {
				l.t.Errorf("load %s: %v before the shutdown", what, err)
			}
		}()
	}
	expect(dial("tcp"), "g hot", "1 Lock Get Success: hot\n")
	for i := range 30 {
		tr := transports[i%len(transports)]
		c := dial(tr)
		expect(c, "g idle"+strconv.Itoa(i), "1 Lock Get Success: idle"+strconv.Itoa(i)+"\n")
		expect(c, "sg shared", fmt.Sprintf("%d Shared Lock Get Success: shared\n", i+1))
		run("idle holder", func() error {
			reply, err := c.read()
			return fmt.Errorf("got %q, %v", reply, err)
		})

		w := dial(tr)
		if err := w.write("gw -1 hot\n"); err != nil {
			t.Fatal(err)
		}
		l.waiters++
		run("waiter", func() error {
			reply, err := w.read()
			return fmt.Errorf("got %q, %v", reply, err)
		})
	}
	for i := range 15 {
		c := dial(transports[i%len(transports)])
		name := "p" + strconv.Itoa(i)
		batch := "g " + name + "\nsg s\ni " + name + "\nsr s\nr " + name + "\n"
		done := make(chan struct{})
		run("pipeline writer", func() error {
			defer close(done)
			for {
				if err := c.write(batch); err != nil {
					return err
				}
			}
		})
		run("pipeline reader", func() error {
			for {
				if _, err := c.read(); err != nil {
					return err
				}
				l.replies.Add(1)
			}
		})
	}
	for i := range 6 {
		c := dial(transports[i%len(transports)])
		junk := strings.Repeat("d\nq\n", 1000)
		run("non-reader", func() error {
			for {
				c.nc.SetWriteDeadline(time.Now().Add(time.Minute))
				if err := c.write(junk); err != nil {
					return err
				}
			}
		})
	}
	// Busy for real: pipelined replies flowing.
	for start := l.replies.Load(); l.replies.Load() < start+1000; {
		time.Sleep(time.Millisecond)
	}
	return l
}

// finish waits until every load goroutine has seen its connection end.
func (l *load) finish(timeout time.Duration) {
	l.t.Helper()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		l.t.Fatalf("load connections still open %v after the shutdown", timeout)
	}
}

// waitQueued waits until the manager has queued the waiters: command_gw,
// counted when a gw runs, reaches n.
func waitQueued(t *testing.T, probe *loadConn, n int) {
	t.Helper()
	eventually(t, "waiters queued", func() bool {
		if err := probe.write("q\nping\n"); err != nil {
			t.Fatal(err)
		}
		queued := false
		for {
			l, err := probe.read()
			if err != nil {
				t.Fatal(err)
			}
			if l == "1 pong\n" {
				return queued
			}
			if k, v, _ := strings.Cut(strings.TrimSpace(l), ": "); k == "command_gw" {
				got, _ := strconv.Atoi(v)
				queued = got >= n
			}
		}
	})
}

// TestCloseUnderLoad: Server.Close with the same load returns, ends every
// connection, and leaves no goroutine behind.
func TestCloseUnderLoad(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	srv := startServer(t, nil)
	a := addrsOf(srv)
	l := startLoad(t, a)
	if s, ok := srv.manager.askStats(5 * time.Second); ok && s.waiters != l.waiters {
		eventually(t, "waiters queued", func() bool {
			s, _ := srv.manager.askStats(5 * time.Second)
			return s.waiters == l.waiters
		})
	}
	l.closing.Store(true)
	closeWithin(t, srv, 5*time.Second)
	l.finish(5 * time.Second)
	goleak.VerifyNone(t, ignore)
}
