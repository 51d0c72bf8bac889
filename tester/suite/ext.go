package suite

import (
	"time"

	"github.com/glockd/glockd/client"
	"github.com/glockd/glockd/internal/wire"
)

// The extension verbs (gw, sgw, t, ping), checked with Options.Ext.

func checkPing(t *checkRun) {
	a := t.dial("A")
	equal(t, "A ping", a.do("ping"), wire.Line(wire.Pong))
}

func (c *conn) token(n string) uint64 {
	v, err := c.c.Token(c.t.ctx, n)
	return try(c, "t "+n, v, err)
}

func (c *conn) getWait(wait time.Duration, n string) bool {
	v, err := c.c.GetWait(c.t.ctx, wait, n)
	return try(c, "gw "+n, v, err)
}

func (c *conn) sharedGetWait(wait time.Duration, maxHolders int, n string) int {
	v, err := c.c.SharedGetWait(c.t.ctx, wait, maxHolders, n)
	return try(c, "sgw "+n, v, err)
}

// waiting waits until the server has counted n more commands of verb than
// in before: a gw or sgw sent on another goroutine has then reached it.
func (t *checkRun) waiting(admin *conn, verb string, before map[string]int64, n int64) {
	key := "command_" + verb
	t.eventually("q: "+key+" counts the waiting command", func() bool {
		return admin.stats()[key] >= before[key]+n
	})
	// A server may count a command a moment before it queues the waiter.
	time.Sleep(20 * time.Millisecond)
}

// checkToken checks that fencing tokens grow with every acquisition and
// stay within 2^53 − 1, which JavaScript and JSON clients read exactly.
func checkToken(t *checkRun) {
	a, b := t.dial("A"), t.dial("B")
	n := t.name("x")
	equal(t, "A t on a free lock", a.token(n), 0)
	equal(t, "A g", a.get(n), true)
	t1 := a.token(n)
	equal(t, "B t while A holds (anyone may ask)", b.token(n), t1)
	if t1 > 1<<53-1 {
		t.Fatalf("A t: token %d; want at most 2^53 − 1", t1)
	}
	equal(t, "A r", a.release(n), true)
	equal(t, "A t after A r", a.token(n), 0)
	equal(t, "B g", b.get(n), true)
	if t2 := a.token(n); t2 <= t1 {
		t.Fatalf("t after B took the lock: token %d, want more than A's %d", t2, t1)
	}
}

// checkGetWait checks gw on a free lock, gw 0 and a gw that times out.
func checkGetWait(t *checkRun) {
	a, b := t.dial("A"), t.dial("B")
	n := t.name("x")
	equal(t, "B gw 0 on a free lock", b.getWait(0, n), true)
	equal(t, "B r", b.release(n), true)
	equal(t, "B gw 100 on a free lock", b.getWait(100*time.Millisecond, n), true)
	equal(t, "B r", b.release(n), true)
	equal(t, "A g", a.get(n), true)
	equal(t, "A gw -1 on a lock A holds", a.getWait(-1, n), true)
	equal(t, "B gw 0 while A holds", b.getWait(0, n), false)
	start := time.Now()
	equal(t, "B gw 150 while A holds", b.getWait(150*time.Millisecond, n), false)
	// A lower bound only: the server must have waited, however slow it is.
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("B gw 150 timed out after %v; want about 150ms", waited)
	}
	equal(t, "B i", b.inspect(n), true)
}

// checkGetWaitFIFO checks that a release hands the lock to the oldest
// waiter, then to the next.
func checkGetWaitFIFO(t *checkRun) {
	admin := t.quiet()
	a, b, c, d := t.dial("A"), t.dial("B"), t.dial("C"), t.dial("D")
	n := t.name("x")
	equal(t, "A g", a.get(n), true)
	before := admin.stats()
	bGot := async(func() (bool, error) { return b.c.GetWait(t.ctx, -1, n) })
	t.waiting(admin, "gw", before, 1)
	cGot := async(func() (bool, error) { return c.c.GetWait(t.ctx, -1, n) })
	t.waiting(admin, "gw", before, 2)
	equal(t, "D g while A holds and B, C wait", d.get(n), false)
	equal(t, "A r", a.release(n), true)
	equal(t, "B gw -1 (the oldest waiter) after A r", await(t, "B gw -1", bGot), true)
	equal(t, "D i", d.inspect(n), true)
	if t.opts.Dump {
		equalSlicesOwner(t, "d after the hand-over to B", d, n, b)
	}
	select {
	case r := <-cGot:
		t.Fatalf("C gw -1: got %v, %v while B holds the lock", r.v, r.err)
	default:
	}
	equal(t, "B r", b.release(n), true)
	equal(t, "C gw -1 (the next waiter) after B r", await(t, "C gw -1", cGot), true)
	equal(t, "C r", c.release(n), true)
	equal(t, "D i after C r", d.inspect(n), false)
}

// equalSlicesOwner checks that d NAME shows who as the holder.
func equalSlicesOwner(t *checkRun, what string, asker *conn, n string, who *conn) {
	equalSlices(t, what, asker.debug(n), []client.LockOwner{{Lock: n, Owner: who.connName()}})
}

// checkGetWaitPipelined checks that a command pipelined after a gw runs only
// once the gw is resolved.
func checkGetWaitPipelined(t *checkRun) {
	admin := t.quiet()
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	n, m := t.name("x"), t.name("after")
	equal(t, "A g", a.get(n), true)
	before := admin.stats()
	p := b.c.Pipeline()
	gw, g := p.GetWait(-1, n), p.Get(m)
	done := async(func() (struct{}, error) { return struct{}{}, p.Exec(t.ctx) })
	t.waiting(admin, "gw", before, 1)
	equal(t, "C i "+m+" while B's gw waits (B's g "+m+" must wait too)", c.inspect(m), false)
	equal(t, "A r", a.release(n), true)
	await(t, "B gw -1, g (pipelined)", done)
	equal(t, "B gw -1", gw.Val(), true)
	equal(t, "B g after the gw", g.Val(), true)
	equal(t, "C i "+m, c.inspect(m), true)
}

// checkGetWaitDisconnect checks that a waiter that disconnects leaves the
// queue: the lock goes to the next waiter and never to the gone one.
func checkGetWaitDisconnect(t *checkRun) {
	admin := t.quiet()
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	n := t.name("x")
	equal(t, "A g", a.get(n), true)
	before := admin.stats()
	bGot := async(func() (bool, error) { return b.c.GetWait(t.ctx, -1, n) })
	t.waiting(admin, "gw", before, 1)
	b.close()
	// B may see an error, or a timeout sent as B went; never a grant.
	if r := <-bGot; r.err == nil && r.v {
		t.Fatalf("B gw -1: granted after B closed")
	}
	if t.exclusive() {
		t.eventually("q: connections: 3 after B disconnected", func() bool {
			return admin.stats()["connections"] == 3
		})
	} else {
		time.Sleep(100 * time.Millisecond) // let the server see B go
	}
	cGot := async(func() (bool, error) { return c.c.GetWait(t.ctx, -1, n) })
	t.waiting(admin, "gw", before, 2)
	equal(t, "A r", a.release(n), true)
	equal(t, "C gw -1 after B, ahead of it, disconnected", await(t, "C gw -1", cGot), true)
	after := admin.stats()
	t.delta(before, after, "orphans", 0) // B was never granted, so nothing was orphaned
}

// checkGetWaitOrphan checks that orphaning hands the lock to a waiter.
func checkGetWaitOrphan(t *checkRun) {
	admin := t.quiet()
	a, b := t.dial("A"), t.dial("B")
	n := t.name("x")
	equal(t, "A g", a.get(n), true)
	before := admin.stats()
	bGot := async(func() (bool, error) { return b.c.GetWait(t.ctx, -1, n) })
	t.waiting(admin, "gw", before, 1)
	a.close()
	equal(t, "B gw -1 after A disconnected", await(t, "B gw -1", bGot), true)
	equal(t, "B r", b.release(n), true)
	t.delta(before, admin.stats(), "orphans", 1)
}

// checkSharedGetWait checks sgw as a counting semaphore.
func checkSharedGetWait(t *checkRun) {
	admin := t.quiet()
	a, b, c, d := t.dial("A"), t.dial("B"), t.dial("C"), t.dial("D")
	s := t.name("sem")
	equal(t, "A sgw 0 2", a.sharedGetWait(0, 2, s), 1)
	equal(t, "B sgw 0 2", b.sharedGetWait(0, 2, s), 2)
	equal(t, "C sgw 0 2 with 2 holders", c.sharedGetWait(0, 2, s), 0)
	start := time.Now()
	equal(t, "C sgw 100 2 with 2 holders", c.sharedGetWait(100*time.Millisecond, 2, s), 0)
	if waited := time.Since(start); waited < 60*time.Millisecond {
		t.Fatalf("C sgw 100 timed out after %v; want about 100ms", waited)
	}
	before := admin.stats()
	cGot := async(func() (int, error) { return c.c.SharedGetWait(t.ctx, -1, 2, s) })
	t.waiting(admin, "sgw", before, 1)
	equal(t, "D sg (ignores MAX)", d.sg(s), 3)
	equal(t, "D sr", d.sr(s), true)
	equal(t, "D si with 2 holders and C waiting", d.si(s), 2)
	equal(t, "A sr", a.sr(s), true)
	equal(t, "C sgw -1 2 after A sr", await(t, "C sgw -1 2", cGot), 2)
	equal(t, "D si", d.si(s), 2)
}

// checkInvalidArgument checks the reply to an extension whose MS or MAX is
// not an integer.
func checkInvalidArgument(t *checkRun) {
	a := t.dial("A")
	n := t.name("x")
	for _, line := range []string{"gw abc " + n, "gw", "sgw 10 x " + n, "sgw x 1 " + n} {
		equal(t, "A "+quote(line), a.do(line), wire.ReplyLine(0, wire.InvalidArgument, line))
	}
}
