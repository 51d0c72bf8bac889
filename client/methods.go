package client

import (
	"context"
	"fmt"
	"time"
)

// call sends one command and parses its reply.
func call[T any](ctx context.Context, c *Client, cmd command[T]) (T, error) {
	var zero T
	if cmd.err != nil {
		return zero, cmd.err
	}
	reqs := [1]request{cmd.request()}
	_, interrupted, err := c.roundTrip(ctx, reqs[:])
	if err != nil {
		return zero, fmt.Errorf("glockd %q: %w", cmd.line, err)
	}
	v, err := cmd.parse(reqs[0].lines)
	if err == nil && interrupted {
		err = fmt.Errorf("glockd %q: wait cancelled: %w", cmd.line, ctx.Err())
	}
	return v, err
}

// waitCall sends a wait (gw, sgw), for no longer than until ctx's
// deadline. When ctx ends first, the wait is cancelled and the connection
// kept; if the lock was granted all the same, undo gives it back before any
// other command of the client is sent, and the result is ctx's error.
func waitCall[T any](ctx context.Context, c *Client, wait time.Duration, newCmd func(time.Duration) command[T],
	granted func(T) bool, undo command[bool]) (T, error) {
	var zero T
	wait, capped, err := untilDeadline(ctx, wait)
	if err != nil {
		return zero, err
	}
	cmd := newCmd(wait)
	if cmd.err != nil {
		return zero, cmd.err
	}
	if err := c.takeTurn(ctx); err != nil {
		return zero, fmt.Errorf("glockd %q: %w", cmd.line, err)
	}
	defer c.endTurn()
	v, interrupted, err := exchange(ctx, c, cmd, true)
	if err != nil {
		return zero, err
	}
	switch {
	case granted(v):
		if !interrupted {
			return v, nil
		}
		if err := c.undo(undo); err != nil {
			return zero, err
		}
	case !interrupted && !capped:
		return v, nil // the wait ran out
	}
	// The wait ended with ctx: cut short by the cancellation, or run out
	// at ctx's deadline, which became its limit.
	cause := ctx.Err()
	if cause == nil {
		cause = context.DeadlineExceeded
	}
	return zero, fmt.Errorf("glockd %q: %w", cmd.line, cause)
}

// exchange sends one command and parses its reply; the caller holds the
// turn. With finish, see Client.await.
func exchange[T any](ctx context.Context, c *Client, cmd command[T], finish bool) (v T, interrupted bool, err error) {
	reqs := [1]request{cmd.request()}
	cl, err := c.start(ctx, reqs[:])
	if err == nil {
		interrupted, err = c.await(ctx, cl, finish)
	}
	if err != nil {
		return v, interrupted, fmt.Errorf("glockd %q: %w", cmd.line, err)
	}
	v, err = cmd.parse(reqs[0].lines)
	return v, interrupted, err
}

// undo releases a lock granted to a wait that was being cancelled. The
// caller holds the turn, so nothing else of the client is sent between the
// grant and the release.
func (c *Client) undo(cmd command[bool]) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.grace)
	defer cancel()
	released, _, err := exchange(ctx, c, cmd, false)
	if err == nil && !released {
		err = fmt.Errorf("glockd %q: the lock granted to a cancelled wait was not held", cmd.line)
	}
	return err
}

// untilDeadline shortens wait to the time left before ctx's deadline, in
// whole milliseconds, and reports whether it did.
func untilDeadline(ctx context.Context, wait time.Duration) (time.Duration, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return wait, false, nil
	}
	left := time.Until(dl).Truncate(time.Millisecond)
	if left <= 0 {
		return 0, false, context.DeadlineExceeded
	}
	if wait < 0 || wait > left {
		return left, true, nil
	}
	return wait, false, nil
}

// Get tries to take the exclusive lock name (g) and reports whether the
// client holds it now. It does not wait; see [Client.GetWait].
func (c *Client) Get(ctx context.Context, name string) (bool, error) {
	return call(ctx, c, getCmd(name))
}

// Release releases the exclusive lock name (r); it reports false when the
// client did not hold it.
func (c *Client) Release(ctx context.Context, name string) (bool, error) {
	return call(ctx, c, releaseCmd(name))
}

// Inspect reports whether anyone holds the exclusive lock name (i).
func (c *Client) Inspect(ctx context.Context, name string) (bool, error) {
	return call(ctx, c, inspectCmd(name))
}

// SharedGet takes the shared lock name (sg), which always succeeds, and
// returns the number of holders after the call, the client included once.
func (c *Client) SharedGet(ctx context.Context, name string) (holders int, err error) {
	return call(ctx, c, sharedGetCmd(name))
}

// SharedRelease releases the client's hold on the shared lock name (sr); it
// reports false when the client did not hold it.
func (c *Client) SharedRelease(ctx context.Context, name string) (bool, error) {
	return call(ctx, c, sharedReleaseCmd(name))
}

// SharedInspect returns the number of holders of the shared lock name (si).
func (c *Client) SharedInspect(ctx context.Context, name string) (holders int, err error) {
	return call(ctx, c, sharedInspectCmd(name))
}

// Me returns the server's name for this connection and the name it
// registered with [Client.Iam] (conn again when it registered none).
func (c *Client) Me(ctx context.Context) (conn, name string, err error) {
	id, err := call(ctx, c, meCmd())
	return id.Conn, id.Name, err
}

// Iam registers name for this connection, to be shown in d and sd instead of
// the connection name; an empty name removes the registration. It returns
// [ErrDisabled] when the server runs with -registry=false.
func (c *Client) Iam(ctx context.Context, name string) error {
	_, err := call(ctx, c, iamCmd(name))
	return err
}

// Who lists the registered connections, oldest registration first; with a
// name, only those registered as name.
func (c *Client) Who(ctx context.Context, name string) ([]Registration, error) {
	return call(ctx, c, whoCmd(name))
}

// Debug lists the exclusive locks and their holders (d), in no particular
// order (the server walks its table in steps); with a name, only that lock (so the lock named "" cannot be asked
// for alone).
func (c *Client) Debug(ctx context.Context, name string) ([]LockOwner, error) {
	return call(ctx, c, debugCmd("d", name))
}

// SharedDebug lists every holder of every shared lock (sd), the locks in no
// particular order, the holders of one lock together in the order they
// took it; with a name, only that lock.
func (c *Client) SharedDebug(ctx context.Context, name string) ([]LockOwner, error) {
	return call(ctx, c, debugCmd("sd", name))
}

// Details lists every lock with its owner, hold time and waiters (dl): an
// entry per exclusive lock (with its token) and per holder of a shared
// lock, in no particular order (the holders of a shared lock together, in
// the order they took it); with a name, only that lock.
func (c *Client) Details(ctx context.Context, name string) ([]LockDetail, error) {
	return call(ctx, c, detailCmd(name))
}

// Dump returns the exclusive lock table as the server prints it (dump),
// such as "map[bar:127.0.0.1:5 foo:unix:2]", its entries in no particular
// order.
func (c *Client) Dump(ctx context.Context) (string, error) {
	return call(ctx, c, dumpCmd("dump"))
}

// DumpShared returns the shared lock table as the server prints it (dump
// shared), such as "map[foo:[127.0.0.1:5 unix:2]]".
func (c *Client) DumpShared(ctx context.Context) (string, error) {
	return call(ctx, c, dumpCmd("dump shared"))
}

// Stats returns the server's counters (q).
func (c *Client) Stats(ctx context.Context) (map[string]int64, error) {
	return call(ctx, c, statsCmd())
}

// GetWait takes the exclusive lock name, waiting up to wait for it (gw);
// a negative wait means no limit. Waiters are served first come, first
// served. It reports false when the wait ran out.
//
// The wait lasts no longer than ctx: its limit is at most the time left
// before ctx's deadline, and when ctx ends first the wait is cancelled
// (with "!cancel NAME") and GetWait returns ctx's error, with the
// connection and the client's other locks kept. A grant that crossed the
// cancellation is released before GetWait returns. While the wait is
// pending, other calls on c wait their turn: the server would run them
// only after it anyway.
func (c *Client) GetWait(ctx context.Context, wait time.Duration, name string) (bool, error) {
	return waitCall(ctx, c, wait, func(w time.Duration) command[bool] { return getWaitCmd(w, name) },
		func(got bool) bool { return got }, releaseCmd(name))
}

// SharedGetWait takes the shared lock name while fewer than maxHolders connections
// hold it, waiting up to wait for that (sgw); a negative wait means no
// limit. It returns the number of holders after the call, or 0 when the
// wait ran out. The context bounds the wait as for [Client.GetWait].
func (c *Client) SharedGetWait(ctx context.Context, wait time.Duration, maxHolders int, name string) (holders int, err error) {
	return waitCall(ctx, c, wait, func(w time.Duration) command[int] { return sharedGetWaitCmd(w, maxHolders, name) },
		func(n int) bool { return n > 0 }, sharedReleaseCmd(name))
}

// Token returns the fencing token of the current holder of the exclusive
// lock name (t), or 0 when it is not locked. Tokens strictly increase with
// every exclusive acquisition, so a guarded resource can reject a write that
// carries a token lower than one it has seen.
func (c *Client) Token(ctx context.Context, name string) (uint64, error) {
	return call(ctx, c, tokenCmd(name))
}

// Ping checks that the server answers (ping).
func (c *Client) Ping(ctx context.Context) error {
	_, err := call(ctx, c, pingCmd())
	return err
}

// Do sends a raw command line and returns its one-line reply, unchecked.
func (c *Client) Do(ctx context.Context, line string) (string, error) {
	return call(ctx, c, rawCmd(line))
}

// DoLines sends a raw command line whose reply may have any number of lines
// (d, sd, who, q, or an unknown command, which gets none) and returns them.
func (c *Client) DoLines(ctx context.Context, line string) ([]string, error) {
	return call(ctx, c, rawLinesCmd(line))
}
