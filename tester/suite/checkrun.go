package suite

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/glockd/glockd/client"
)

// checkRun is the state of one running check. Like testing.T, Fatalf ends the
// check's goroutine; the connections it opened are closed then.
type checkRun struct {
	ctx     context.Context
	opts    Options
	prefix  string // of every lock and registered name this check uses
	conns   []*conn
	failure string
	// connectErr is set when the check failed because it could not connect.
	connectErr *ConnectError
}

// Fatalf fails the check and ends it. Only the check's own goroutine may
// call it.
func (t *checkRun) Fatalf(format string, args ...any) {
	t.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// name returns a lock or registered name unique to this check and run, so
// that the suite can share a server with other clients.
func (t *checkRun) name(s string) string { return t.prefix + s }

// exclusive reports whether the server is used by this run alone, so that
// counters must change by exactly what the check did.
func (t *checkRun) exclusive() bool { return t.opts.Exclusive || t.opts.Fresh }

// ws reports whether the check speaks over a websocket.
func (t *checkRun) ws() bool { return t.opts.Network == "ws" }

// fence is how many "i" commands a line-protocol client adds to each
// multi-line command (see package client).
func (t *checkRun) fence() int64 {
	if t.ws() {
		return 0
	}
	return 1
}

// conn is a client connection whose calls fail the check on any error.
type conn struct {
	t     *checkRun
	c     *client.Client
	label string // A, B, ... in failure messages
}

func (t *checkRun) dial(label string) *conn {
	c, err := client.Dial(t.ctx, t.opts.Network, t.opts.Addr)
	if err != nil {
		t.cannotConnect(label, err)
	}
	cn := &conn{t: t, c: c, label: label}
	t.conns = append(t.conns, cn)
	return cn
}

// cannotConnect fails the check because connection label could not be
// opened.
func (t *checkRun) cannotConnect(label string, err error) {
	t.connectErr = &ConnectError{Addr: t.opts.Addr, Err: err}
	t.Fatalf("%s: %v", label, t.connectErr)
}

func (t *checkRun) closeAll() {
	for _, c := range t.conns {
		c.c.Close()
	}
}

// try fails the check when err is not nil and returns v otherwise.
func try[V any](c *conn, cmd string, v V, err error) V {
	if err != nil {
		c.t.Fatalf("%s: %s: %v", c.label, cmd, err)
	}
	return v
}

func (c *conn) close() { c.c.Close() }

func (c *conn) get(n string) bool {
	v, err := c.c.Get(c.t.ctx, n)
	return try(c, "g "+n, v, err)
}

func (c *conn) release(n string) bool {
	v, err := c.c.Release(c.t.ctx, n)
	return try(c, "r "+n, v, err)
}

func (c *conn) inspect(n string) bool {
	v, err := c.c.Inspect(c.t.ctx, n)
	return try(c, "i "+n, v, err)
}

func (c *conn) sg(n string) int {
	v, err := c.c.SharedGet(c.t.ctx, n)
	return try(c, "sg "+n, v, err)
}

func (c *conn) sr(n string) bool {
	v, err := c.c.SharedRelease(c.t.ctx, n)
	return try(c, "sr "+n, v, err)
}

func (c *conn) si(n string) int {
	v, err := c.c.SharedInspect(c.t.ctx, n)
	return try(c, "si "+n, v, err)
}

func (c *conn) me() (connName, regName string) {
	cn, reg, err := c.c.Me(c.t.ctx)
	try(c, "me", 0, err)
	return cn, reg
}

// connName returns the server's name for the connection, checked against
// what the client knows of it.
func (c *conn) connName() string {
	name, _ := c.me()
	switch c.t.opts.Network {
	case "unix":
		var n int
		if _, err := fmt.Sscanf(name, "unix:%d", &n); err != nil || n < 1 || name != fmt.Sprintf("unix:%d", n) {
			c.t.Fatalf("%s: me: connection name %q, want unix:N with N ≥ 1", c.label, name)
		}
	default: // the peer address, as seen from our end
		if want := c.c.LocalAddr().String(); name != want {
			c.t.Fatalf("%s: me: connection name %q, want the client's address %q", c.label, name, want)
		}
	}
	return name
}

func (c *conn) iam(n string) {
	try(c, "iam "+n, 0, c.c.Iam(c.t.ctx, n))
}

func (c *conn) who(n string) []client.Registration {
	v, err := c.c.Who(c.t.ctx, n)
	return try(c, "who "+n, v, err)
}

func (c *conn) debug(n string) []client.LockOwner {
	v, err := c.c.Debug(c.t.ctx, n)
	return try(c, "d "+n, v, err)
}

func (c *conn) sharedDebug(n string) []client.LockOwner {
	v, err := c.c.SharedDebug(c.t.ctx, n)
	return try(c, "sd "+n, v, err)
}

func (c *conn) dump() string {
	v, err := c.c.Dump(c.t.ctx)
	return try(c, "dump", v, err)
}

func (c *conn) dumpShared() string {
	v, err := c.c.DumpShared(c.t.ctx)
	return try(c, "dump shared", v, err)
}

func (c *conn) stats() map[string]int64 {
	v, err := c.c.Stats(c.t.ctx)
	return try(c, "q", v, err)
}

func (c *conn) do(line string) string {
	v, err := c.c.Do(c.t.ctx, line)
	return try(c, fmt.Sprintf("%q", line), v, err)
}

func (c *conn) doLines(line string) []string {
	v, err := c.c.DoLines(c.t.ctx, line)
	return try(c, fmt.Sprintf("%q", line), v, err)
}

// disabled checks that call, a command needing a mode the server runs
// without, gets "0 disabled".
func (c *conn) disabled(cmd string, err error) {
	if !errors.Is(err, client.ErrDisabled) {
		c.t.Fatalf("%s: %s: got error %v, want the reply \"0 disabled\"", c.label, cmd, err)
	}
}

// equal fails the check unless got == want.
func equal[V comparable](t *checkRun, what string, got, want V) {
	if got != want {
		t.Fatalf("%s: got %#v, want %#v", what, got, want)
	}
}

// equalSlices fails the check unless got and want hold the same elements.
func equalSlices[V comparable](t *checkRun, what string, got, want []V) {
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %+v, want %+v", what, got, want)
	}
}

// eventually polls cond until it holds, failing the check if it does not
// before most of the check's time is spent.
func (t *checkRun) eventually(what string, cond func() bool) {
	deadline, _ := t.ctx.Deadline()
	deadline = deadline.Add(-t.opts.Timeout / 5)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %v", what, t.opts.Timeout*4/5)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quiet returns a connection for reading counters. On a server the run has
// to itself, it first waits until that connection is the only one, so that no earlier
// check's disconnect moves a counter during this one.
func (t *checkRun) quiet() *conn {
	admin := t.dial("Q")
	if t.exclusive() {
		t.eventually("connections: 1 once earlier checks' connections are gone", func() bool {
			return admin.stats()["connections"] == 1
		})
	}
	return admin
}

// delta checks that counter key went up by want between two q replies:
// exactly on a fresh server used by the suite alone, at least otherwise.
func (t *checkRun) delta(before, after map[string]int64, key string, want int64) {
	got := after[key] - before[key]
	if t.exclusive() && got != want || got < want {
		rel := "at least "
		if t.exclusive() {
			rel = ""
		}
		t.Fatalf("q: %s went from %d to %d, up %d; want up %s%d", key, before[key], after[key], got, rel, want)
	}
}

// level checks a counter that is a level (connections, locks): exactly on a
// server the run has to itself, at least otherwise.
func (t *checkRun) level(stats map[string]int64, key string, want int64) {
	got, ok := stats[key]
	if !ok || t.exclusive() && got != want || got < want {
		t.Fatalf("q: %s: %d (present: %v), want %d", key, got, ok, want)
	}
}

// async runs f on another goroutine; its result comes on the channel.
func async[V any](f func() (V, error)) <-chan result[V] {
	ch := make(chan result[V], 1)
	go func() {
		v, err := f()
		ch <- result[V]{v, err}
	}()
	return ch
}

type result[V any] struct {
	v   V
	err error
}

// await waits for an async result, failing the check if none comes.
func await[V any](t *checkRun, what string, ch <-chan result[V]) V {
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r.v
	case <-t.ctx.Done():
		t.Fatalf("%s: no reply before the check's time ran out", what)
	}
	panic("unreachable")
}

// filterLocks keeps the entries on this check's names.
func (t *checkRun) filterLocks(entries []client.LockOwner) []client.LockOwner {
	return slices.DeleteFunc(slices.Clone(entries), func(e client.LockOwner) bool {
		return !strings.HasPrefix(e.Lock, t.prefix)
	})
}
