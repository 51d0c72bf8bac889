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
	reqs := [1]request{{line: cmd.line, multi: cmd.multi}}
	if _, err := c.roundTrip(ctx, reqs[:]); err != nil {
		return zero, fmt.Errorf("glockd %q: %w", cmd.line, err)
	}
	return cmd.parse(reqs[0].lines)
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

// Debug lists the exclusive locks and their holders (d), sorted by lock
// name; with a name, only that lock (so the lock named "" cannot be asked
// for alone).
func (c *Client) Debug(ctx context.Context, name string) ([]LockOwner, error) {
	return call(ctx, c, debugCmd("d", name))
}

// SharedDebug lists every holder of every shared lock (sd), sorted by lock
// name and, within a lock, in the order they took it; with a name, only
// that lock.
func (c *Client) SharedDebug(ctx context.Context, name string) ([]LockOwner, error) {
	return call(ctx, c, debugCmd("sd", name))
}

// Dump returns the exclusive lock table as the server prints it (dump),
// such as "map[bar:127.0.0.1:5 foo:unix:2]".
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
// served. It reports false when the wait ran out. If ctx ends first, the
// Client closes, which also withdraws the wait.
func (c *Client) GetWait(ctx context.Context, wait time.Duration, name string) (bool, error) {
	return call(ctx, c, getWaitCmd(wait, name))
}

// SharedGetWait takes the shared lock name while fewer than maxHolders connections
// hold it, waiting up to wait for that (sgw); a negative wait means no
// limit. It returns the number of holders after the call, or 0 when the
// wait ran out.
func (c *Client) SharedGetWait(ctx context.Context, wait time.Duration, maxHolders int, name string) (holders int, err error) {
	return call(ctx, c, sharedGetWaitCmd(wait, maxHolders, name))
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
