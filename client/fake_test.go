package client_test

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
)

// fakeServer is a small glockd for this package's tests and examples: the
// lock verbs (g r i t sg sr si gw sgw ping d), the asynchronous waits !gw
// and !sgw, and the out-of-band !ping and !cancel, which it answers at once
// while a wait is pending. It keeps
// one mutex over its tables, one goroutine per connection to run commands
// in order and one to read, so that it can see !ping behind a wait.
type fakeServer struct {
	ln     net.Listener
	frozen atomic.Bool // read, but answer nothing: a stopped server
	noOOB  atomic.Bool // ignore !ping and !cancel: a server without them

	mu      sync.Mutex
	holder  map[string]*fakeConn
	token   map[string]uint64
	last    uint64
	waiters map[string][]*fakeWaiter // exclusive
	shared  map[string][]*fakeConn
	sems    map[string][]*fakeWaiter
	conns   map[*fakeConn]bool
	wg      sync.WaitGroup
}

type fakeConn struct {
	nc   net.Conn
	w    *bufio.Writer
	name string

	// The asynchronous waits: owned by the connection's goroutine, which
	// writes their outcomes as they come.
	async    map[string]*fakeWaiter // by "!gw NAME" or "!sgw NAME"
	outcomes chan fakeOutcome
}

type fakeOutcome struct{ key, line string }

type fakeWaiter struct {
	c       *fakeConn
	name    string
	max     int // semaphores
	done    bool
	result  chan bool
	expires *time.Timer
}

func startFake(t testing.TB) *fakeServer {
	t.Helper()
	s, err := newFake()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

func newFake() (*fakeServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &fakeServer{ln: ln, holder: map[string]*fakeConn{}, token: map[string]uint64{},
		waiters: map[string][]*fakeWaiter{}, shared: map[string][]*fakeConn{},
		sems: map[string][]*fakeWaiter{}, conns: map[*fakeConn]bool{}}
	goWait(&s.wg, func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := &fakeConn{nc: nc, w: bufio.NewWriter(nc), name: nc.RemoteAddr().String(),
				async: map[string]*fakeWaiter{}, outcomes: make(chan fakeOutcome, 1024)}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			goWait(&s.wg, func() { s.serve(c) })
		}
	})
	return s, nil
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// dropAll closes every connection, as a server that restarts does.
func (s *fakeServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}

func (s *fakeServer) serve(c *fakeConn) {
	lines := make(chan string, 64)
	goWait(&s.wg, func() {
		defer close(lines)
		sc := bufio.NewScanner(c.nc)
		for sc.Scan() {
			lines <- sc.Text()
		}
	})
	defer func() {
		c.nc.Close()
		for range lines { // let the reader end
		}
		s.orphan(c)
	}()
	var wait *fakeWaiter
	var queued []string
	for {
		var result chan bool
		if wait != nil {
			result = wait.result
		}
		select {
		case o := <-c.outcomes:
			delete(c.async, o.key)
			c.w.WriteString(o.line)
		case granted := <-result:
			s.reply(c, wait, granted)
			wait = nil
		case line, ok := <-lines:
			if !ok {
				// The end of input ends the waits at once.
				for _, l := range append([]string{""}, queued...) {
					if l != "" {
						wait = s.run(c, l)
					}
					if wait != nil && s.expire(wait) {
						s.reply(c, wait, false)
					} else if wait != nil {
						s.reply(c, wait, <-wait.result)
					}
					wait = nil
				}
				for key, w := range c.async {
					if s.expire(w) {
						c.w.WriteString(asyncRefusal(key))
						w.result <- false // its goroutine ends
					}
				}
				c.w.Flush()
				return
			}
			if s.frozen.Load() {
				continue
			}
			verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			switch {
			case verb == "!ping" && !s.noOOB.Load():
				c.w.WriteString("!pong\n")
			case verb == "!cancel" && !s.noOOB.Load():
				cancelled := false
				if wait != nil && (arg == "" || arg == wait.name) && s.expire(wait) {
					s.reply(c, wait, false)
					wait = nil
					cancelled = true
				}
				for _, w := range c.async {
					if (arg == "" || w.name == arg) && s.expire(w) {
						w.result <- false // its goroutine reports the outcome
						cancelled = true
					}
				}
				if cancelled {
					c.w.WriteString("!cancel 1\n")
				} else {
					c.w.WriteString("!cancel 0\n")
				}
			case wait != nil:
				queued = append(queued, line)
				continue
			default:
				wait = s.run(c, line)
			}
		}
		for wait == nil && len(queued) > 0 {
			l := queued[0]
			queued = queued[1:]
			wait = s.run(c, l)
		}
		if c.w.Flush() != nil {
			return
		}
	}
}

// reply writes the answer to a wait that ended.
func (s *fakeServer) reply(c *fakeConn, w *fakeWaiter, granted bool) {
	switch {
	case w.max == 0 && granted:
		c.w.WriteString("1 Lock Get Success: " + w.name + "\n")
	case w.max == 0:
		c.w.WriteString("0 Lock Get Timeout: " + w.name + "\n")
	case granted:
		s.mu.Lock()
		n := len(s.shared[w.name])
		s.mu.Unlock()
		c.w.WriteString(strconv.Itoa(n) + " Shared Lock Get Success: " + w.name + "\n")
	default:
		c.w.WriteString("0 Shared Lock Get Timeout: " + w.name + "\n")
	}
}

// expire ends a wait that has not been granted, reporting whether it had
// not.
func (s *fakeServer) expire(w *fakeWaiter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.done {
		return false
	}
	w.done = true
	w.expires.Stop()
	s.dequeue(w)
	return true
}

func (s *fakeServer) dequeue(w *fakeWaiter) {
	table := s.waiters
	if w.max > 0 {
		table = s.sems
	}
	q := table[w.name]
	for i, x := range q {
		if x == w {
			table[w.name] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
}

// run runs one command, returning the wait it leaves pending, if any.
func (s *fakeServer) run(c *fakeConn, line string) *fakeWaiter {
	f := strings.Fields(line)
	if len(f) == 0 {
		return nil
	}
	verb, name := f[0], strings.Join(f[1:], " ")
	s.mu.Lock()
	defer s.mu.Unlock()
	out := func(format string, args ...any) { fmt.Fprintf(c.w, format+"\n", args...) }
	switch verb {
	case "g":
		if s.grab(c, name) {
			out("1 Lock Get Success: %s", name)
		} else {
			out("0 Lock Get Failure: %s", name)
		}
	case "r":
		if s.holder[name] == c {
			s.release(name)
			out("1 Lock Release Success: %s", name)
		} else {
			out("0 Lock Release Failure: %s", name)
		}
	case "i":
		if s.holder[name] != nil {
			out("1 Lock Is Locked: %s", name)
		} else {
			out("0 Lock Not Locked: %s", name)
		}
	case "t":
		if s.holder[name] != nil {
			out("%d Lock Token: %s", s.token[name], name)
		} else {
			out("0 Lock Not Locked: %s", name)
		}
	case "d":
		if h := s.holder[name]; h != nil {
			out("%s: %s", name, h.name)
		}
	case "ping":
		out("1 pong")
	case "sg":
		out("%d Shared Lock Get Success: %s", s.join(c, name), name)
	case "sr":
		if s.leaveShared(c, name) {
			out("1 Shared Lock Release Success: %s", name)
		} else {
			out("0 Shared Lock Release Failure: %s", name)
		}
	case "si":
		if n := len(s.shared[name]); n > 0 {
			out("%d Shared Lock Is Locked: %s", n, name)
		} else {
			out("0 Shared Lock Not Locked: %s", name)
		}
	case "gw":
		if len(f) < 2 {
			break
		}
		ms, _ := strconv.Atoi(f[1])
		name = strings.Join(f[2:], " ")
		switch {
		case s.grab(c, name):
			out("1 Lock Get Success: %s", name)
		case ms == 0:
			out("0 Lock Get Timeout: %s", name)
		default:
			return s.enqueue(c, s.waiters, name, 0, ms)
		}
	case "!gw", "!sgw":
		s.runAsync(c, verb, f)
	case "sgw":
		if len(f) < 3 {
			break
		}
		ms, _ := strconv.Atoi(f[1])
		most, _ := strconv.Atoi(f[2])
		name = strings.Join(f[3:], " ")
		switch {
		case s.holds(c, name) || len(s.shared[name]) < most && len(s.sems[name]) == 0:
			out("%d Shared Lock Get Success: %s", s.join(c, name), name)
		case ms == 0:
			out("0 Shared Lock Get Timeout: %s", name)
		default:
			return s.enqueue(c, s.sems, name, most, ms)
		}
	}
	return nil
}

// runAsync runs !gw or !sgw: an outcome line now, or a wait whose outcome
// a goroutine hands to the connection's. s.mu is held.
func (s *fakeServer) runAsync(c *fakeConn, verb string, f []string) {
	shared := verb == "!sgw"
	at := 2
	if shared {
		at = 3
	}
	if len(f) < at {
		return
	}
	ms, _ := strconv.Atoi(f[1])
	most := 0
	if shared {
		most, _ = strconv.Atoi(f[2])
	}
	name := strings.Join(f[at:], " ")
	key := verb + " " + name
	outcome := func() string {
		if shared {
			if n := len(s.shared[name]); s.holds(c, name) {
				return fmt.Sprintf("!sgw %d %s\n", n, name)
			}
			return asyncRefusal(key)
		}
		if s.holder[name] == c {
			return fmt.Sprintf("!gw 1 %d %s\n", s.token[name], name)
		}
		return asyncRefusal(key)
	}
	switch {
	case c.async[key] != nil:
		c.w.WriteString(asyncRefusal(key))
	case !shared && s.grab(c, name):
		c.w.WriteString(outcome())
	case shared && (s.holds(c, name) || len(s.shared[name]) < most && len(s.sems[name]) == 0):
		s.join(c, name)
		c.w.WriteString(outcome())
	case ms == 0:
		c.w.WriteString(asyncRefusal(key))
	default:
		table := s.waiters
		if shared {
			table = s.sems
		}
		w := s.enqueue(c, table, name, most, ms)
		c.async[key] = w
		goWait(&s.wg, func() {
			granted := <-w.result
			line := asyncRefusal(key)
			if granted {
				s.mu.Lock()
				line = outcome()
				s.mu.Unlock()
			}
			c.outcomes <- fakeOutcome{key, line}
		})
	}
}

// asyncRefusal is the 0 outcome of the wait key, "!gw NAME" or "!sgw NAME".
func asyncRefusal(key string) string {
	verb, name, _ := strings.Cut(key, " ")
	if verb == "!sgw" {
		return "!sgw 0 " + name + "\n"
	}
	return "!gw 0 0 " + name + "\n"
}

func (s *fakeServer) enqueue(c *fakeConn, table map[string][]*fakeWaiter, name string, most, ms int) *fakeWaiter {
	w := &fakeWaiter{c: c, name: name, max: most, result: make(chan bool, 1)}
	table[name] = append(table[name], w)
	if ms < 0 {
		ms = 1 << 30
	}
	w.expires = time.AfterFunc(time.Duration(ms)*time.Millisecond, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !w.done {
			w.done = true
			s.dequeue(w)
			w.result <- false
		}
	})
	return w
}

// grab takes an exclusive lock for c if it is free or c's. s.mu is held.
func (s *fakeServer) grab(c *fakeConn, name string) bool {
	switch s.holder[name] {
	case c:
		return true
	case nil:
		s.holder[name] = c
		s.last++
		s.token[name] = s.last
		return true
	}
	return false
}

// release hands an exclusive lock to its oldest waiter. s.mu is held.
func (s *fakeServer) release(name string) {
	delete(s.holder, name)
	if q := s.waiters[name]; len(q) > 0 {
		w := q[0]
		s.waiters[name] = q[1:]
		w.done = true
		w.expires.Stop()
		s.grab(w.c, name)
		w.result <- true
	}
}

func (s *fakeServer) holds(c *fakeConn, name string) bool {
	for _, h := range s.shared[name] {
		if h == c {
			return true
		}
	}
	return false
}

func (s *fakeServer) join(c *fakeConn, name string) int {
	if !s.holds(c, name) {
		s.shared[name] = append(s.shared[name], c)
	}
	return len(s.shared[name])
}

// leaveShared drops c from a shared lock and lets semaphore waiters in.
// s.mu is held.
func (s *fakeServer) leaveShared(c *fakeConn, name string) bool {
	hs := s.shared[name]
	for i, h := range hs {
		if h == c {
			s.shared[name] = append(hs[:i:i], hs[i+1:]...)
			for q := s.sems[name]; len(q) > 0 && len(s.shared[name]) < q[0].max; q = s.sems[name] {
				w := q[0]
				s.sems[name] = q[1:]
				w.done = true
				w.expires.Stop()
				s.join(w.c, name)
				w.result <- true
			}
			return true
		}
	}
	return false
}

// orphan releases what a connection that ended held or waited for.
func (s *fakeServer) orphan(c *fakeConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	for _, table := range []map[string][]*fakeWaiter{s.waiters, s.sems} {
		for _, q := range table {
			for _, w := range q {
				if w.c == c && !w.done {
					w.done = true
					w.expires.Stop()
					s.dequeue(w)
					w.result <- false // an asynchronous wait's goroutine ends
				}
			}
		}
	}
	for name, h := range s.holder {
		if h == c {
			s.release(name)
		}
	}
	for name := range s.shared {
		s.leaveShared(c, name)
	}
}
