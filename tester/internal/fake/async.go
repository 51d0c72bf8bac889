package fake

import (
	"slices"
	"strings"
	"time"

	"github.com/glockd/glockd/internal/wire"
)

// Asynchronous waits, !gw and !sgw: no reply in order, one outcome line out
// of band, written by a goroutine per queued wait (through input.now, which
// orders it with the connection's other writes).

// asyncWait is a queued !gw or !sgw of a connection.
type asyncWait struct {
	w      *waiter
	shared bool
	name   string
	done   chan struct{} // closed when it ended other than by its grant or timer
}

func asyncRefusal(shared bool, name string) string {
	if shared {
		return wire.AsyncSGWOutcome(0, name)
	}
	return wire.AsyncGWOutcome(false, 0, name)
}

// asyncWait runs !gw (shared false) or !sgw. st.mu is held.
func (st *state) asyncWait(c *conn, shared bool, arg string) {
	n := 1
	if shared {
		n = 2
	}
	nums, name, ok := waitArgs(arg, n)
	key := asyncKey(shared, name)
	switch {
	case !ok || nums[0] < -1 || shared && nums[1] < 1 || c.async[key] != nil:
		c.in.now(asyncRefusal(shared, name))
		return
	case !shared && st.acquire(c, name):
		c.in.now(wire.AsyncGWOutcome(true, st.asyncToken(name), name))
		return
	case shared:
		l := st.shared[name]
		if c.shared[name] || l == nil || len(l.waiters) == 0 && len(l.holders) < nums[1] {
			c.in.now(wire.AsyncSGWOutcome(st.sharedAcquire(c, name), name))
			return
		}
	}
	if nums[0] == 0 || st.cfg.AsyncOneAtATime && len(c.async) > 0 {
		c.in.now(asyncRefusal(shared, name))
		return
	}
	w := &waiter{c: c, name: name, shared: shared, since: time.Now(), granted: make(chan struct{})}
	var queue *[]*waiter
	if shared {
		w.max = nums[1]
		queue = &st.shared[name].waiters
	} else {
		queue = &st.excl[name].waiters
	}
	*queue = append(*queue, w)
	aw := &asyncWait{w: w, shared: shared, name: name, done: make(chan struct{})}
	c.async[key] = aw
	if st.deadlocked(w, queue, true) {
		delete(c.async, key)
		if st.cfg.AsyncDeadlockAsTimeout {
			c.in.now(asyncRefusal(shared, name))
		} else if shared {
			c.in.now(wire.AsyncSGWDeadlock(name))
		} else {
			c.in.now(wire.AsyncGWDeadlock(name))
		}
		return
	}
	timer := waitUntil(nums[0])
	in := c.in
	go func() {
		select {
		case <-w.granted:
		case <-timer:
		case <-aw.done:
			return
		}
		st.mu.Lock()
		line := asyncRefusal(shared, name)
		select {
		case <-aw.done: // ended meanwhile, its line written
			st.mu.Unlock()
			return
		case <-w.granted:
			line = st.grantLine(aw)
		default:
			st.dequeue(aw)
		}
		delete(c.async, key)
		st.mu.Unlock()
		in.now(line)
	}()
}

func asyncKey(shared bool, name string) string {
	if shared {
		return "!sgw " + name
	}
	return "!gw " + name
}

// asyncToken is the token a grant of name reports. st.mu is held.
func (st *state) asyncToken(name string) uint64 {
	l := st.excl[name]
	if l == nil {
		// Released again before the grant's line was made (its
		// connection ended): the line goes nowhere.
		return 0
	}
	t := l.token
	if st.cfg.AsyncWrongToken {
		t++
	}
	return t
}

func (st *state) grantLine(aw *asyncWait) string {
	if aw.shared {
		return wire.AsyncSGWOutcome(aw.w.holders, aw.name)
	}
	return wire.AsyncGWOutcome(true, st.asyncToken(aw.name), aw.name)
}

// dequeue takes a queued asynchronous waiter out of its queue. st.mu is held.
func (st *state) dequeue(aw *asyncWait) {
	if aw.shared {
		if l := st.shared[aw.name]; l != nil {
			l.waiters = slices.DeleteFunc(l.waiters, func(x *waiter) bool { return x == aw.w })
			if len(l.holders) == 0 && len(l.waiters) == 0 {
				delete(st.shared, aw.name)
			}
		}
		return
	}
	if l := st.excl[aw.name]; l != nil {
		l.waiters = slices.DeleteFunc(l.waiters, func(x *waiter) bool { return x == aw.w })
	}
}

// endAsync ends c's asynchronous waits on name (every one when name is
// "") as timeouts, returning their outcome lines (a grant that came first
// stands), and reports whether there was any. st.mu is held.
func (st *state) endAsync(c *conn, name string) (lines []string, any bool) {
	keys := make([]string, 0, len(c.async))
	for key, aw := range c.async {
		if name == "" || aw.name == name {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		_, na, _ := strings.Cut(a, " ")
		_, nb, _ := strings.Cut(b, " ")
		if na != nb {
			return strings.Compare(na, nb)
		}
		return strings.Compare(a, b) // "!gw" before "!sgw"
	})
	for _, key := range keys {
		aw := c.async[key]
		delete(c.async, key)
		close(aw.done)
		select {
		case <-aw.w.granted:
			lines = append(lines, st.grantLine(aw))
		default:
			st.dequeue(aw)
			lines = append(lines, asyncRefusal(aw.shared, aw.name))
		}
	}
	return lines, len(keys) > 0
}

// asyncInOrder is the AsyncInOrder fault: the wait runs as a gw or sgw,
// holding back what follows, and answers its outcome line in order.
func (st *state) asyncInOrder(c *conn, shared bool, line, arg string) (string, bool) {
	_, name, ok := waitArgs(arg, map[bool]int{false: 1, true: 2}[shared])
	if !ok {
		return asyncRefusal(shared, name), true
	}
	if shared {
		reply := st.sharedGetWait(c, line, arg)
		if n, _, _ := strings.Cut(reply, " "); n != "0" && strings.Contains(reply, wire.SharedGetSuccess) {
			return "!sgw " + n + " " + name + "\n", true
		}
		return asyncRefusal(true, name), true
	}
	if reply := st.getWait(c, line, arg); strings.HasPrefix(reply, "1 ") {
		return wire.AsyncGWOutcome(true, st.asyncToken(name), name), true
	}
	return asyncRefusal(false, name), true
}
