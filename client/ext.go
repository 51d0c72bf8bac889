package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrDeadlock is returned (wrapped) for a wait (gw, sgw, and a Session's
// !gw, !sgw) that the server refused because it would have closed a cycle
// of waiters: each waiting for a lock that the next one holds. The connection keeps every lock it holds;
// the usual remedy is to release them and start over.
var ErrDeadlock = errors.New("glockd: deadlock")

// These are glockd's extension verbs (gw, sgw, t, ping). The original
// glockd does not know them and sends no reply, so against it a call waits
// until its context ends.

// millis converts a wait to the protocol's milliseconds: a negative wait
// means no limit (-1), and a positive one is rounded up, so that it never
// becomes 0, which means "do not wait".
func millis(wait time.Duration) string {
	if wait < 0 {
		return "-1"
	}
	return strconv.FormatInt(int64((wait+time.Millisecond-1)/time.Millisecond), 10)
}

func getWaitCmd(wait time.Duration, name string) command[bool] {
	cmd := flagCommand("gw "+millis(wait), name, getSuccess, getTimeout)
	cmd.wait, cmd.name = true, Normalize(name)
	return refusesDeadlock(cmd, getDeadlock)
}

func sharedGetWaitCmd(wait time.Duration, maxHolders int, name string) command[int] {
	cmd := countCommand("sgw "+millis(wait)+" "+strconv.Itoa(maxHolders), name, sharedGetSuccess, sharedGetTimeout)
	cmd.wait, cmd.name = true, Normalize(name)
	return asInt(refusesDeadlock(cmd, sharedGetDeadlock))
}

// refusesDeadlock makes a wait's reply text+name, the server's refusal of a
// wait that would close a cycle of waiters, an [ErrDeadlock].
func refusesDeadlock[T any](cmd command[T], text string) command[T] {
	parse := cmd.parse
	cmd.parse = func(lines []string) (T, error) {
		if line, ok := single(lines); ok && line == text+cmd.name {
			var zero T
			return zero, fmt.Errorf("%s: %w", cmd.line, ErrDeadlock)
		}
		return parse(lines)
	}
	return cmd
}

// Waiters lists the connections queued for locks (dw): each lock's waiters
// together and in queue order, the exclusive queues before the shared ones,
// the locks in no particular order; with a name, only that lock's.
func (c *Client) Waiters(ctx context.Context, name string) ([]Waiter, error) {
	return call(ctx, c, waitersCmd(name))
}

// Waiter is one line of a dw reply: a connection queued for a lock.
type Waiter struct {
	Lock   string
	Waiter string        // its registered name, or its connection name
	Shared bool          // queued by sgw or !sgw
	Queued time.Duration // how long it has waited, to the millisecond
	// Deadlock is the number of the deadlock the wait is in, found and
	// left unbroken by a server run with -deadlocks report; 0 when none.
	Deadlock uint64
}

// waitersCmd is dw: "LOCK: WAITER [shared ]queued_ms=MS[ deadlock=N]". A
// waiter's name may hold spaces, so the fields are read from the end.
func waitersCmd(name string) command[[]Waiter] {
	cmd, norm := nameCommand[[]Waiter]("dw", name)
	cmd.multi = true
	cmd.parse = func(lines []string) ([]Waiter, error) {
		if isDisabled(lines) {
			return nil, fmt.Errorf("%s: %w", cmd.line, ErrDisabled)
		}
		list := make([]Waiter, 0, len(lines))
		for _, l := range lines {
			var w Waiter
			var rest string
			var ok bool
			if norm != "" {
				w.Lock = norm
				rest, ok = strings.CutPrefix(l, norm+": ")
			} else {
				w.Lock, rest, ok = strings.Cut(l, ": ")
			}
			f := strings.Split(rest, " ")
			if v, found := strings.CutPrefix(f[len(f)-1], "deadlock="); found && ok {
				w.Deadlock, ok = parseCount(v)
				f = f[:len(f)-1]
			}
			v, found := strings.CutPrefix(f[len(f)-1], "queued_ms=")
			ms, good := parseCount(v)
			if !ok || !found || !good {
				return nil, cmd.replyError(lines)
			}
			w.Queued, f = time.Duration(ms)*time.Millisecond, f[:len(f)-1]
			if len(f) > 1 && f[len(f)-1] == "shared" {
				w.Shared, f = true, f[:len(f)-1]
			}
			if w.Waiter = strings.Join(f, " "); w.Waiter == "" {
				return nil, cmd.replyError(lines)
			}
			list = append(list, w)
		}
		return list, nil
	}
	return cmd
}

func tokenCmd(name string) command[uint64] {
	return countCommand("t", name, tokenText, notLocked)
}

func pingCmd() command[struct{}] {
	return exactCommand("ping", "1 pong", false)
}
