package suite

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/glockd/glockd/internal/wire"
)

// The asynchronous waits, !gw and !sgw, checked with Options.Ext. A
// connection with one pending is driven with raw lines only (send, expect):
// the client would take an outcome line no typed call waits for as the
// reply of the next typed call.

// grantToken reads the next reply of c, which must be "!gw 1 TOKEN NAME",
// and returns TOKEN.
func (c *conn) grantToken(what string, wait time.Duration, name string) uint64 {
	ctx, cancel := context.WithTimeout(c.t.ctx, wait)
	defer cancel()
	got, err := c.c.Recv(ctx)
	if err != nil {
		c.t.Fatalf("%s: %s: no reply within %v (%v); want \"!gw 1 TOKEN %s\"", c.label, what, wait, err, name)
	}
	f := strings.SplitN(got, " ", 4)
	if len(f) != 4 || f[0] != wire.AsyncGW || f[1] != "1" || f[3] != name {
		c.t.Fatalf("%s: %s: got %q, want \"!gw 1 TOKEN %s\"", c.label, what, got, name)
	}
	token, ok := parseCount(f[2])
	if !ok || token == 0 {
		c.t.Fatalf("%s: %s: %q: TOKEN is not a positive number", c.label, what, got)
	}
	return token
}

// expectBoth reads the next two replies, which must be want1 and want2 in
// either order: an outcome line may come before or after the replies of the
// commands sent with its wait.
func (c *conn) expectBoth(what string, wait time.Duration, want1, want2 string) {
	ctx, cancel := context.WithTimeout(c.t.ctx, wait)
	defer cancel()
	var got []string
	for range 2 {
		r, err := c.c.Recv(ctx)
		if err != nil {
			c.t.Fatalf("%s: %s: got %q, then no reply within %v (%v); want %q and %q", c.label, what, got, wait, err, want1, want2)
		}
		got = append(got, r)
	}
	if !(got[0] == want1 && got[1] == want2) && !(got[0] == want2 && got[1] == want1) {
		c.t.Fatalf("%s: %s: got %q, want %q and %q in either order", c.label, what, got, want1, want2)
	}
}

// expectToken checks, with raw lines, that t NAME says token.
func (c *conn) expectToken(what, name string, token uint64) {
	c.send("t " + name)
	c.expect(what, 0, wire.ReplyLine(token, wire.Token, name))
}

// checkAsyncWait checks !gw and !sgw: the commands after them are answered
// at once; the grant comes out of band, with the token t reports; a free
// lock is granted at once; MS runs out with the 0 line, not before; q counts
// them under their own keys.
func checkAsyncWait(t *checkRun) {
	admin := t.quiet()
	a, b := t.dial("A"), t.dial("B")
	n, other, free, short, s := t.name("x"), t.name("other"), t.name("free"), t.name("short"), t.name("sem")
	before := admin.stats()
	equal(t, "A g", a.get(n), true)
	b.send("!gw 60000 "+n, "i "+other)
	b.expect("i sent after B's !gw 60000 on A's lock (answered at once, not after the wait)", t.soon(), wire.ReplyLine(0, wire.NotLocked, other))
	t.waiting(admin, "!gw", before, 1)
	equal(t, "A r", a.release(n), true)
	token := b.grantToken("B's !gw after A r", t.soon(), n)
	b.expectToken("B t after the grant of its !gw (the token the grant said)", n, token)

	b.send("!gw 0 " + free)
	freeToken := b.grantToken("B !gw 0 on a free lock (granted at once)", t.soon(), free)
	b.expectToken("B t after !gw 0 on a free lock", free, freeToken)
	if freeToken <= token {
		t.Fatalf("B !gw 0 %s: token %d, not above the earlier grant's %d", free, freeToken, token)
	}

	equal(t, "A g "+short, a.get(short), true)
	const ms = 200
	start := time.Now()
	b.send("!gw " + strconv.Itoa(ms) + " " + short)
	b.expect("B !gw 200 on A's lock", t.soon(), wire.Line(wire.AsyncGWOutcome(false, 0, short)))
	if d := time.Since(start); d < ms*time.Millisecond*9/10 {
		t.Fatalf("B !gw %d: the 0 line came after %v, before the wait ran out", ms, d)
	}

	equal(t, "A sgw 0 1", a.sharedGetWait(0, 1, s), 1)
	b.send("!sgw -1 1 "+s, "si "+s)
	b.expect("si sent after B's !sgw -1 1 on a full semaphore (answered at once)", t.soon(), wire.ReplyLine(1, wire.SharedIsLocked, s))
	t.waiting(admin, "!sgw", before, 1)
	equal(t, "A sr", a.sr(s), true)
	b.expect("B's !sgw after A sr", t.soon(), wire.Line(wire.AsyncSGWOutcome(1, s)))

	after := admin.stats()
	t.delta(before, after, "command_!gw", 3)
	t.delta(before, after, "command_!sgw", 1)
	if t.exclusive() {
		t.delta(before, after, "command_gw", 0)
		t.delta(before, after, "command_sgw", 1) // A's
	}
}

// checkAsyncCancel checks that !cancel NAME and !cancel end asynchronous
// waits: "!cancel 1", then the wait's 0 line, and the waiter is gone from
// the queue.
func checkAsyncCancel(t *checkRun) {
	admin := t.quiet()
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	n, s := t.name("x"), t.name("sem")
	before := admin.stats()
	equal(t, "A g", a.get(n), true)
	b.send("!gw -1 " + n)
	t.waiting(admin, "!gw", before, 1)
	b.send("!cancel " + n)
	b.expect("!cancel NAME of B's !gw -1", t.soon(), wire.Line(wire.Cancelled))
	b.expect("the cancelled !gw's 0 line, after \"!cancel 1\"", t.soon(), wire.Line(wire.AsyncGWOutcome(false, 0, n)))
	equal(t, "A r", a.release(n), true)
	equal(t, "C i "+n+" after A r (B's cancelled !gw is not granted)", c.inspect(n), false)

	equal(t, "A sgw 0 1", a.sharedGetWait(0, 1, s), 1)
	b.send("!sgw -1 1 " + s)
	t.waiting(admin, "!sgw", before, 1)
	b.send("!cancel")
	b.expect("a bare !cancel with B's !sgw pending", t.soon(), wire.Line(wire.Cancelled))
	b.expect("the cancelled !sgw's 0 line, after \"!cancel 1\"", t.soon(), wire.Line(wire.AsyncSGWOutcome(0, s)))
	equal(t, "A sr", a.sr(s), true)
	equal(t, "C si after A sr (B's cancelled !sgw is not granted)", c.si(s), 0)
	b.send("!cancel " + n)
	b.expect("!cancel NAME with nothing pending", t.soon(), wire.Line(wire.NothingPending))
}

// checkAsyncMany checks that one connection may have many asynchronous
// waits pending, one per name: a second on the same name is refused at
// once; they queue first come, first served with the others.
func checkAsyncMany(t *checkRun) {
	admin := t.quiet()
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	x1, x2, x3, probe := t.name("x1"), t.name("x2"), t.name("x3"), t.name("probe")
	for _, n := range []string{x1, x2, x3} {
		equal(t, "A g "+n, a.get(n), true)
	}
	before := admin.stats()
	cGot := async(func() (bool, error) { return c.c.GetWait(t.ctx, -1, x1) })
	t.waiting(admin, "gw", before, 1)
	b.send("!gw -1 "+x1, "!gw -1 "+x2, "!gw -1 "+x3, "i "+probe)
	b.expect("i after B's three !gw -1 (all three pending, none answered)", t.soon(), wire.ReplyLine(0, wire.NotLocked, probe))
	t.waiting(admin, "!gw", before, 3)
	b.send("!gw -1 "+x2, "i "+probe)
	b.expectBoth("a second !gw on "+x2+", which B waits for (refused at once), and an i", t.soon(),
		wire.Line(wire.AsyncGWOutcome(false, 0, x2)), wire.ReplyLine(0, wire.NotLocked, probe))
	if t.opts.Dump {
		lines := a.doLines("dl " + x1)
		if len(lines) != 1 || !strings.HasSuffix(lines[0], " waiters=2") {
			t.Fatalf("dl %s: %q; want one line ending \"waiters=2\" (C's gw and B's !gw)", x1, lines)
		}
	}
	equal(t, "A r "+x1, a.release(x1), true)
	equal(t, "C gw -1 after A r (queued before B's !gw)", await(t, "C gw -1", cGot), true)
	equal(t, "C r "+x1, c.release(x1), true)
	b.grantToken("B's !gw on "+x1+" after C r", t.soon(), x1)
	equal(t, "A r "+x3, a.release(x3), true)
	b.grantToken("B's !gw on "+x3+" after A r", t.soon(), x3)
	equal(t, "A r "+x2, a.release(x2), true)
	b.grantToken("B's !gw on "+x2+" after A r", t.soon(), x2)
}
