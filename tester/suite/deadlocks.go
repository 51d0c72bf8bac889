package suite

import (
	"errors"
	"time"

	"github.com/glockd/glockd/client"
	"github.com/glockd/glockd/internal/wire"
)

// Deadlocks and who waits (dw), checked with Options.Ext.

// deadlockPromptly bounds the reply to a wait that closes a cycle: the
// server answers it at once, so this only allows for a loaded machine.
const deadlockPromptly = time.Second

// refused sends a wait that closes a cycle and checks that the reply is
// want, in time.
func refused(t *checkRun, c *conn, what, line, want string) {
	start := time.Now()
	equal(t, what, c.do(line), want)
	if took := time.Since(start); took > deadlockPromptly {
		t.Fatalf("%s: the Deadlock reply came after %v; want it at once", what, took)
	}
}

// stillWaiting fails the check if a wait has ended.
func stillWaiting[V any](t *checkRun, what string, ch <-chan result[V]) {
	select {
	case r := <-ch:
		t.Fatalf("%s ended (%v, %v) when another wait was refused", what, r.v, r.err)
	case <-time.After(50 * time.Millisecond):
	}
}

// checkDeadlock: A holds x and waits for y, B holds y; B's gw for x would
// close the cycle, and is refused at once; A goes on waiting, B keeps y,
// and A gets y when B lets go.
func checkDeadlock(t *checkRun) {
	admin := t.quiet()
	a, b := t.dial("A"), t.dial("B")
	x, y := t.name("x"), t.name("y")
	equal(t, "A g "+x, a.get(x), true)
	equal(t, "B g "+y, b.get(y), true)
	before := admin.stats()
	aGot := async(func() (bool, error) { return a.c.GetWait(t.ctx, -1, y) })
	t.waiting(admin, "gw", before, 1)
	refused(t, b, "B gw -1 "+x+" (A waits for B's "+y+")", "gw -1 "+x, wire.ReplyLine(0, wire.GetDeadlock, x))
	stillWaiting(t, "A gw -1 "+y, aGot)
	equal(t, "B r "+y+" (B kept it)", b.release(y), true)
	equal(t, "A gw -1 "+y+" after B r", await(t, "A gw -1 "+y, aGot), true)
	// The other way round, through the client: the refusal is its
	// ErrDeadlock.
	w := t.name("w")
	equal(t, "B g "+w, b.get(w), true)
	bGot := async(func() (bool, error) { return b.c.GetWait(t.ctx, -1, x) })
	t.waiting(admin, "gw", before, 3)
	if _, err := a.c.GetWait(t.ctx, -1, w); !errors.Is(err, client.ErrDeadlock) {
		t.Fatalf("A gw -1 %s (B waits for A's %s): %v, want the client's ErrDeadlock", w, x, err)
	}
	equal(t, "A r "+x, a.release(x), true)
	equal(t, "B gw -1 "+x+" after A r", await(t, "B gw -1 "+x, bGot), true)
}

// checkDeadlockSemaphore: A and B fill a semaphore and both wait for z,
// which C holds; C's sgw for the semaphore would wait for them, and is
// refused at once with the shared Deadlock reply.
func checkDeadlockSemaphore(t *checkRun) {
	admin := t.quiet()
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	s, z := t.name("sem"), t.name("z")
	equal(t, "A sgw 0 2 "+s, a.sharedGetWait(0, 2, s), 1)
	equal(t, "B sgw 0 2 "+s, b.sharedGetWait(0, 2, s), 2)
	equal(t, "C g "+z, c.get(z), true)
	before := admin.stats()
	aGot := async(func() (bool, error) { return a.c.GetWait(t.ctx, -1, z) })
	t.waiting(admin, "gw", before, 1)
	bGot := async(func() (bool, error) { return b.c.GetWait(t.ctx, -1, z) })
	t.waiting(admin, "gw", before, 2)
	refused(t, c, "C sgw -1 2 "+s+" (both holders wait for C's "+z+")", "sgw -1 2 "+s, wire.ReplyLine(0, wire.SharedGetDeadlock, s))
	stillWaiting(t, "A gw -1 "+z, aGot)
	equal(t, "C r "+z, c.release(z), true)
	equal(t, "A gw -1 "+z+" after C r", await(t, "A gw -1 "+z, aGot), true)
	equal(t, "A r "+z, a.release(z), true)
	equal(t, "B gw -1 "+z+" after A r", await(t, "B gw -1 "+z, bGot), true)
}

// checkWaiters checks dw: every waiter, the exclusive queue before the
// shared one, each in the order it is served; "0 disabled" without -dump.
func checkWaiters(t *checkRun) {
	admin := t.quiet()
	a := t.dial("A")
	x := t.name("x")
	if !t.opts.Dump {
		for _, line := range []string{"dw", "dw " + x} {
			equal(t, "A "+quote(line), a.do(line), wire.Line(wire.Disabled))
		}
		return
	}
	b, c, d := t.dial("B"), t.dial("C"), t.dial("D")
	want := []client.Waiter{{Lock: x, Waiter: b.connName()}, {Lock: x, Waiter: d.connName()}, {Lock: x, Waiter: c.connName(), Shared: true}}
	equal(t, "A g "+x, a.get(x), true)
	equal(t, "A sgw 0 1 "+x, a.sharedGetWait(0, 1, x), 1)
	before := admin.stats()
	async(func() (bool, error) { return b.c.GetWait(t.ctx, -1, x) })
	t.waiting(admin, "gw", before, 1)
	async(func() (int, error) { return c.c.SharedGetWait(t.ctx, -1, 1, x) })
	t.waiting(admin, "sgw", before, 1)
	async(func() (bool, error) { return d.c.GetWait(t.ctx, -1, x) })
	t.waiting(admin, "gw", before, 2)
	got, err := a.c.Waiters(t.ctx, x)
	try(a, "dw "+x, got, err)
	if len(got) != len(want) {
		t.Fatalf("dw %s: %+v, want %+v in this order", x, got, want)
	}
	for i := range got {
		got[i].Queued = 0
		equal(t, "dw "+x+": waiter "+string(rune('1'+i)), got[i], want[i])
	}
	none, err := a.c.Waiters(t.ctx, t.name("free"))
	equal(t, "dw on a lock nobody waits for: waiters", len(try(a, "dw NAME", none, err)), 0)
}

// checkDeadlockAsync: the same cycles through asynchronous waits. A holds x
// and a full semaphore s, and waits for y with !gw; B holds y. B's !gw for
// x and !sgw for s would each close the cycle: their outcome lines are
// "!gw 0 deadlock x" and "!sgw deadlock s", at once, and A still waits.
// When B lets y go, A's !gw is granted.
func checkDeadlockAsync(t *checkRun) {
	admin := t.quiet()
	a, b := t.dial("A"), t.dial("B")
	x, y, s := t.name("x"), t.name("y"), t.name("sem")
	equal(t, "A g "+x, a.get(x), true)
	equal(t, "A sgw 0 1 "+s, a.sharedGetWait(0, 1, s), 1)
	equal(t, "B g "+y, b.get(y), true)
	before := admin.stats()
	a.send("!gw -1 " + y)
	t.waiting(admin, "!gw", before, 1)
	start := time.Now()
	b.send("!gw -1 " + x)
	b.expect("B !gw -1 "+x+" (A waits for B's "+y+")", deadlockPromptly, wire.Line(wire.AsyncGWDeadlock(x)))
	b.send("!sgw -1 1 " + s)
	b.expect("B !sgw -1 1 "+s+" (A, its holder, waits for B's "+y+")", deadlockPromptly, wire.Line(wire.AsyncSGWDeadlock(s)))
	if took := time.Since(start); took > 2*deadlockPromptly {
		t.Fatalf("the two deadlock outcomes came after %v; want them at once", took)
	}
	a.send("i " + x)
	a.expect("A i "+x+" (its !gw still pending, no outcome before this reply)", t.soon(), wire.ReplyLine(1, wire.IsLocked, x))
	b.send("r " + y)
	b.expect("B r "+y+" (B kept it)", t.soon(), wire.ReplyLine(1, wire.ReleaseSuccess, y))
	a.grantToken("A's !gw after B r", t.soon(), y)
}
