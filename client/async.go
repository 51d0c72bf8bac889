package client

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Asynchronous waits, "!gw MS NAME" and "!sgw MS MAX NAME": the server runs
// the commands after them at once and reports each wait's outcome later, on
// one out-of-band line ("!gw 1 TOKEN NAME" / "!gw 0 0 NAME", "!sgw N NAME" /
// "!sgw 0 NAME"; "!gw 0 deadlock NAME" / "!sgw deadlock NAME" for a wait
// refused because it would close a cycle of waiters). Sessions wait this way, so that one goroutine's wait does
// not hold back the others' calls.

// asyncKey names a pending asynchronous wait: the server allows one per
// name and kind on a connection.
type asyncKey struct {
	name   string // normalised
	shared bool
}

// asyncWait is a wait sent and not yet answered. The reader fills it in and
// closes done.
type asyncWait struct {
	done     chan struct{}
	granted  bool
	deadlock bool   // refused: it would close a cycle of waiters
	n        uint64 // !gw: the fencing token; !sgw: the holders
}

// waitAsync sends !gw (maxHolders 0) or !sgw and waits for its outcome. The
// call does not hold the connection's turn: other calls go on meanwhile.
// When ctx ends first, the wait is cancelled ("!cancel NAME") and its
// outcome still awaited, up to c.grace; interrupted is then true, and a
// grant that crossed the cancellation is reported, for the caller to give
// back. A wait the server refuses as a deadlock returns an error wrapping
// ErrDeadlock.
func (c *Client) waitAsync(ctx context.Context, wait time.Duration, maxHolders int, name string) (granted bool, n uint64, interrupted bool, err error) {
	key := asyncKey{Normalize(name), maxHolders > 0}
	line := "!gw " + millis(wait) + " " + name
	if key.shared {
		line = "!sgw " + millis(wait) + " " + strconv.Itoa(maxHolders) + " " + name
	}
	if err := checkLine(line); err != nil {
		return false, 0, false, err
	}
	w := &asyncWait{done: make(chan struct{})}
	c.mu.Lock()
	if err := c.usable(); err != nil {
		c.mu.Unlock()
		return false, 0, false, err
	}
	if c.waits[key] != nil {
		c.mu.Unlock()
		return false, 0, false, fmt.Errorf("glockd client: %q: a wait on this name is pending on the connection", line)
	}
	if c.waits == nil {
		c.waits = make(map[asyncKey]*asyncWait)
	}
	c.waits[key] = w
	c.mu.Unlock()

	c.wmu.Lock()
	sent, err := c.write(ctx, []byte(line+"\n"))
	c.wmu.Unlock()
	if err != nil {
		err = contextError(ctx, err)
		if sent == 0 && ctx.Err() != nil {
			// Nothing went out: the stream is still in step.
			c.mu.Lock()
			if c.waits[key] == w {
				delete(c.waits, key)
			}
			c.mu.Unlock()
			return false, 0, false, err
		}
		c.fail(err)
		return false, 0, false, err
	}

	select {
	case <-w.done:
		if w.deadlock {
			return false, 0, false, fmt.Errorf("%s: %w", line, ErrDeadlock)
		}
		return w.granted, w.n, false, nil
	case <-c.dead:
		return false, 0, false, c.deadErr()
	case <-ctx.Done():
	}
	c.mu.Lock()
	c.cancels++
	c.mu.Unlock()
	go c.cancelWait(key.name) // a server that stopped reading must not block us past the timer
	t := time.NewTimer(c.grace)
	defer t.Stop()
	select {
	case <-w.done:
		return w.granted, w.n, true, nil
	case <-c.dead:
		return false, 0, true, c.deadErr()
	case <-t.C:
		err := fmt.Errorf("glockd client: no outcome within %v of cancelling %q: %w", c.grace, line, ctx.Err())
		c.fail(err)
		return false, 0, true, err
	}
}

// asyncOutcome takes the outcome line of a pending asynchronous wait; one
// no call is waiting for (sent with Send) is left to the stream. c.mu is
// held.
func (c *Client) asyncOutcome(reply string) bool {
	var key asyncKey
	var flag, num string
	if rest, ok := strings.CutPrefix(reply, "!gw "); ok {
		f := strings.SplitN(rest, " ", 3)
		if len(f) != 3 {
			return false
		}
		flag, num, key.name = f[0], f[1], f[2]
	} else if rest, ok := strings.CutPrefix(reply, "!sgw "); ok {
		f := strings.SplitN(rest, " ", 2)
		if len(f) != 2 {
			return false
		}
		num, key.name, key.shared = f[0], f[1], true
		flag = "1"
		if num == "0" || num == "deadlock" {
			flag = "0"
		}
	} else {
		return false
	}
	w := c.waits[key]
	if w == nil {
		return false
	}
	deadlock := num == "deadlock" && flag == "0"
	n, err := strconv.ParseUint(num, 10, 64)
	if (err != nil && !deadlock) || (flag != "0" && flag != "1") {
		return false
	}
	delete(c.waits, key)
	w.granted, w.n, w.deadlock = flag == "1", n, deadlock
	close(w.done)
	return true
}

// undoAsync releases a lock granted to an asynchronous wait that was being
// cancelled. Unlike undo, its caller does not hold the turn: it takes it,
// waiting at most c.grace, as the wait's other calls would.
func (c *Client) undoAsync(cmd command[bool]) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.grace)
	defer cancel()
	if err := c.takeTurn(ctx); err != nil {
		return fmt.Errorf("glockd %q: %w", cmd.line, err)
	}
	defer c.endTurn()
	return c.undo(cmd)
}
