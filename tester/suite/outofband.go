package suite

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/glockd/glockd/internal/wire"
)

// The out-of-band verbs (!ping, !cancel), the end of input during a wait,
// and the detailed listing (dl), checked with Options.Ext.

// send writes raw lines in one write; their replies are read with expect.
func (c *conn) send(lines ...string) {
	if err := c.c.Send(c.t.ctx, lines...); err != nil {
		c.t.Fatalf("%s: send %q: %v", c.label, lines, err)
	}
}

// expect reads the next reply to lines sent with send and checks it. It
// fails the check when none comes within wait (the check's time if 0).
func (c *conn) expect(what string, wait time.Duration, want string) {
	ctx := c.t.ctx
	if wait > 0 {
		var cancel func()
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	got, err := c.c.Recv(ctx)
	if err != nil {
		c.t.Fatalf("%s: %s: no reply within %v (%v); want %q", c.label, what, wait, err, want)
	}
	if got != want {
		c.t.Fatalf("%s: %s: got %q, want %q", c.label, what, got, want)
	}
}

// soon is how long a reply that the server must send at once, while a wait
// holds back the connection's other replies, may take: generous, since the
// point is that it comes before the wait ends, and the wait never ends by
// itself.
func (t *checkRun) soon() time.Duration { return t.opts.Timeout / 2 }

// noVerbsCounted checks that q counts no out-of-band verb, neither as a
// command nor as an invalid one. (!gw and !sgw are commands, counted as
// command_!gw and command_!sgw.)
func (t *checkRun) noVerbsCounted(before, after map[string]int64) {
	for k := range after {
		if strings.Contains(k, "!ping") || strings.Contains(k, "!cancel") {
			t.Fatalf("q lists %q; out-of-band verbs are not counted", k)
		}
	}
	t.delta(before, after, "invalid_commands", 0)
}

// checkOutOfBandPing checks that !ping is answered in order when no wait is
// pending, and at once, ahead of the wait's reply and those queued behind
// it, while one is.
func checkOutOfBandPing(t *checkRun) {
	admin := t.quiet()
	a, b := t.dial("A"), t.dial("B")
	n := t.name("x")
	before := admin.stats()
	b.send("i "+n, "!ping")
	b.expect("i before !ping", 0, wire.ReplyLine(0, wire.NotLocked, n))
	b.expect("!ping with no wait pending, after the i sent before it", 0, wire.Line(wire.NowPong))

	equal(t, "A g", a.get(n), true)
	b.send("gw -1 "+n, "i "+n)
	t.waiting(admin, "gw", before, 1)
	b.send("!ping")
	b.expect("!ping while B's gw -1 waits (answered at once)", t.soon(), wire.Line(wire.NowPong))
	b.send("!ping", "!ping x")
	b.expect("first of two more !ping during the wait", t.soon(), wire.Line(wire.NowPong))
	b.expect("\"!ping x\" during the wait", t.soon(), wire.Line(wire.NowPong))
	equal(t, "A r", a.release(n), true)
	b.expect("gw -1 after A r", 0, wire.ReplyLine(1, wire.GetSuccess, n))
	b.expect("i queued behind the gw", 0, wire.ReplyLine(1, wire.IsLocked, n))
	t.noVerbsCounted(before, admin.stats())
}

// checkOutOfBandCancel checks !cancel and !cancel NAME: "!cancel 0" when no
// matching wait is pending; else "!cancel 1", then the wait's timeout reply,
// then the replies queued behind it, with the connection and its other
// locks kept and the waiter gone from the queue.
func checkOutOfBandCancel(t *checkRun) {
	admin := t.quiet()
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	n, mine, s := t.name("x"), t.name("mine"), t.name("sem")
	equal(t, "B g "+mine, b.get(mine), true)
	before := admin.stats()
	b.send("!cancel", "!cancel "+n)
	b.expect("!cancel with no wait pending", 0, wire.Line(wire.NothingPending))
	b.expect("!cancel NAME with no wait pending", 0, wire.Line(wire.NothingPending))

	equal(t, "A g", a.get(n), true)
	b.send("gw -1 "+n, "i "+mine)
	t.waiting(admin, "gw", before, 1)
	b.send("!cancel " + t.name("other"))
	b.expect("!cancel of a name B does not wait for", t.soon(), wire.Line(wire.NothingPending))
	b.send("!cancel " + n)
	b.expect("!cancel NAME of B's gw -1 (answered at once)", t.soon(), wire.Line(wire.Cancelled))
	b.expect("the cancelled gw's reply, after \"!cancel 1\"", t.soon(), wire.ReplyLine(0, wire.GetTimeout, n))
	b.expect("i queued behind the cancelled gw", t.soon(), wire.ReplyLine(1, wire.IsLocked, mine))

	// The connection lives on, and so do its locks.
	if tok := b.token(mine); tok == 0 {
		t.Fatalf("B t %s after the cancel: 0 (not locked), want B's token", mine)
	}
	equal(t, "C i "+mine+" (B's lock outlives the cancel)", c.inspect(mine), true)
	// The cancelled waiter has left the queue: the lock goes to nobody.
	equal(t, "A r", a.release(n), true)
	equal(t, "C i "+n+" after A r (B's cancelled gw is not granted)", c.inspect(n), false)

	// A bare !cancel, in the same write as the sgw it cancels.
	equal(t, "A sgw 0 1", a.sharedGetWait(0, 1, s), 1)
	b.send("sgw -1 1 "+s, "!cancel")
	b.expect("!cancel sent with B's sgw -1 1", t.soon(), wire.Line(wire.Cancelled))
	b.expect("the cancelled sgw's reply, after \"!cancel 1\"", t.soon(), wire.ReplyLine(0, wire.SharedGetTimeout, s))
	equal(t, "A sr", a.sr(s), true)
	equal(t, "C si after A sr (B's cancelled sgw is not granted)", c.si(s), 0)
	equal(t, "B i "+mine+" at the end", b.inspect(mine), true)
	t.noVerbsCounted(before, admin.stats())
}

// checkEndOfInputDuringWait checks that a client that shuts down its
// sending side while a wait is pending ends the wait at once, as a timeout,
// and still gets its reply and those of the commands queued behind it
// before the server closes the connection.
func checkEndOfInputDuringWait(t *checkRun) {
	admin := t.quiet()
	a, c := t.dial("A"), t.dial("C")
	n, m := t.name("x"), t.name("after")
	equal(t, "A g", a.get(n), true)
	before := admin.stats()
	var d net.Dialer
	nc, err := d.DialContext(t.ctx, t.opts.Network, t.opts.Addr)
	if err != nil {
		t.cannotConnect("B", err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, "gw -1 "+n+"\ni "+n+"\ng "+m+"\n"); err != nil {
		t.Fatalf("B: write: %v", err)
	}
	t.waiting(admin, "gw", before, 1)
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("B: a %T cannot shut down its sending side", nc)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("B: shutdown: %v", err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(t.soon()))
	got, err := io.ReadAll(nc)
	want := wire.Reply(0, wire.GetTimeout, n) + wire.Reply(1, wire.IsLocked, n) + wire.Reply(1, wire.GetSuccess, m)
	switch {
	case err != nil:
		t.Fatalf("B gw -1, i, g, then end of input: read %q, then %v; want %q and the connection closed", got, err, want)
	case string(got) != want:
		t.Fatalf("B gw -1, i, g, then end of input: got %q before the close, want %q", got, want)
	}
	// B is gone: the lock it took after the wait is orphaned, and the one it
	// waited for is never granted to it.
	t.eventually("C i "+m+" is \"not locked\" once B has gone", func() bool { return !c.inspect(m) })
	equal(t, "A r", a.release(n), true)
	equal(t, "C i "+n+" after A r (B, gone, is not granted)", c.inspect(n), false)
}

// detail is one line of dl.
type detail struct {
	lock, owner string
	shared      bool
	token       uint64
	heldMS      int64
	holders     int64
	waiters     int64
}

// parseDetail reads a dl line. The owner may hold spaces, so the fields
// after it are read from the end.
func parseDetail(line string) (detail, bool) {
	lock, rest, ok := strings.Cut(line, ": ")
	if !ok {
		return detail{}, false
	}
	f := strings.Split(rest, " ")
	num := func(field, key string) (int64, bool) {
		v, ok := strings.CutPrefix(field, key+"=")
		n, ok2 := parseCount(v)
		return int64(n), ok && ok2 && n <= 1<<62
	}
	d := detail{lock: lock}
	switch k := len(f); {
	case k >= 4 && strings.HasPrefix(f[k-3], "token="):
		tok, ok1 := strings.CutPrefix(f[k-3], "token=")
		var ok2, ok3, ok4 bool
		d.token, ok2 = parseCount(tok)
		d.heldMS, ok3 = num(f[k-2], "held_ms")
		d.waiters, ok4 = num(f[k-1], "waiters")
		d.owner = strings.Join(f[:k-3], " ")
		return d, ok1 && ok2 && ok3 && ok4
	case k >= 5 && f[k-4] == "shared":
		var ok1, ok2, ok3 bool
		d.shared = true
		d.heldMS, ok1 = num(f[k-3], "held_ms")
		d.holders, ok2 = num(f[k-2], "holders")
		d.waiters, ok3 = num(f[k-1], "waiters")
		d.owner = strings.Join(f[:k-4], " ")
		return d, ok1 && ok2 && ok3
	}
	return detail{}, false
}

// checkDetailed checks dl and dl NAME: owners, tokens, hold times, holder
// and waiter counts, and the order of the shared holders of one lock (the
// order they took it; the locks come in any order, dl NAME gives the
// exclusive line first); "0 disabled" with -dump=false.
func checkDetailed(t *checkRun) {
	admin := t.quiet()
	a := t.dial("A")
	if !t.opts.Dump {
		for _, line := range []string{"dl", "dl " + t.name("x")} {
			equal(t, "A "+quote(line), a.do(line), wire.Line(wire.Disabled))
		}
		return
	}
	b, c, d, e := t.dial("B"), t.dial("C"), t.dial("D"), t.dial("E")
	x, s := t.name("a-x"), t.name("b-s") // x sorts first
	aOwner := a.connName()
	if t.opts.Registry {
		aOwner = t.name("owner of x") // spaces, as iam names may have
		a.iam(aOwner)
	}
	before := admin.stats()
	start := time.Now()
	equal(t, "A g "+x, a.get(x), true)
	token := a.token(x)
	equal(t, "A sg "+x+" (the shared lock of the same name)", a.sg(x), 1)
	equal(t, "C sgw 0 2", c.sharedGetWait(0, 2, s), 1)
	equal(t, "D sgw 0 2", d.sharedGetWait(0, 2, s), 2)
	bGot := async(func() (bool, error) { return b.c.GetWait(t.ctx, -1, x) })
	t.waiting(admin, "gw", before, 1)
	eGot := async(func() (int, error) { return e.c.SharedGetWait(t.ctx, -1, 2, s) })
	t.waiting(admin, "sgw", before, 1)
	const held = 100 * time.Millisecond
	time.Sleep(held) // after every grant's reply, so every hold is at least this long

	all := a.doLines("dl")
	maxHeld := time.Since(start).Milliseconds() + 1
	var got []detail
	var lines []string
	for _, line := range all {
		if !strings.HasPrefix(line, t.prefix) {
			continue
		}
		dt, ok := parseDetail(line)
		if !ok {
			t.Fatalf("dl: line %q is not \"LOCK: OWNER token=T held_ms=MS waiters=W\" or \"LOCK: OWNER shared held_ms=MS holders=N waiters=W\"", line)
		}
		got, lines = append(got, dt), append(lines, line)
	}
	got, lines = sortDetails(got, lines)
	cOwner, dOwner := c.connName(), d.connName()
	want := []detail{
		{lock: x, owner: aOwner, token: token, waiters: 1},
		{lock: x, owner: aOwner, shared: true, holders: 1},
		{lock: s, owner: cOwner, shared: true, holders: 2, waiters: 1},
		{lock: s, owner: dOwner, shared: true, holders: 2, waiters: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("dl: this check's lines are %q; want %d: %s exclusive (waiters=1) and shared, then %s shared by C and D (waiters=1)", lines, len(want), x, s)
	}
	for i, w := range want {
		g := got[i]
		if g.heldMS < held.Milliseconds()-10 || g.heldMS > maxHeld {
			t.Fatalf("dl: line %q: held_ms=%d; want between %d (slept after the grant) and %d (since before it)", lines[i], g.heldMS, held.Milliseconds()-10, maxHeld)
		}
		w.heldMS = g.heldMS
		if g != w {
			t.Fatalf("dl: line %d is %q; want %s", i+1, lines[i], formatDetail(w))
		}
	}
	only := a.doLines("dl " + x)
	if len(only) != 2 || !strings.HasPrefix(only[0], x+": "+aOwner+" token=") || !strings.HasPrefix(only[1], x+": "+aOwner+" shared ") {
		t.Fatalf("dl %s: got %q; want its exclusive line, then its shared one", x, only)
	}
	equalSlices(t, "dl on a name nobody holds", a.doLines("dl "+t.name("free")), nil)
	t.delta(before, admin.stats(), "command_dl", 3)

	equal(t, "A r", a.release(x), true)
	equal(t, "B gw -1 after A r", await(t, "B gw -1", bGot), true)
	equal(t, "C sr", c.sr(s), true)
	equal(t, "E sgw -1 2 after C sr", await(t, "E sgw -1 2", eGot), 2)
	eOwner := e.connName()
	var afterDetails []detail
	var afterLines []string
	for _, line := range a.doLines("dl") {
		if dt, ok := parseDetail(line); ok && strings.HasPrefix(line, t.prefix) {
			afterDetails, afterLines = append(afterDetails, dt), append(afterLines, line)
		}
	}
	afterDetails, _ = sortDetails(afterDetails, afterLines)
	var after []string
	for _, dt := range afterDetails {
		after = append(after, fmt.Sprintf("%s %s %v %d %d", dt.lock, dt.owner, dt.shared, dt.holders, dt.waiters))
	}
	wantAfter := []string{
		x + " " + b.connName() + " false 0 0",
		x + " " + aOwner + " true 1 0",
		s + " " + dOwner + " true 2 0",
		s + " " + eOwner + " true 2 0",
	}
	equalSlices(t, "dl after the hand-overs (lock owner shared holders waiters)", after, wantAfter)
	if tok := got[0].token; b.token(x) <= tok {
		t.Fatalf("t %s after the hand-over to B: not above A's token %d", x, tok)
	}
}

func formatDetail(d detail) string {
	if d.shared {
		return quote(d.lock + ": " + d.owner + " shared held_ms=" + strconv.FormatInt(d.heldMS, 10) +
			" holders=" + strconv.FormatInt(d.holders, 10) + " waiters=" + strconv.FormatInt(d.waiters, 10))
	}
	return quote(d.lock + ": " + d.owner + " token=" + strconv.FormatUint(d.token, 10) +
		" held_ms=" + strconv.FormatInt(d.heldMS, 10) + " waiters=" + strconv.FormatInt(d.waiters, 10))
}

// sortDetails sorts dl's entries (and their lines) by lock, exclusive
// first; the sort is stable, so the holders of a shared lock keep the
// server's order.
func sortDetails(got []detail, lines []string) ([]detail, []string) {
	order := make([]int, len(got))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int {
		if c := strings.Compare(got[i].lock, got[j].lock); c != 0 {
			return c
		}
		return cmp.Compare(btoi(got[i].shared), btoi(got[j].shared))
	})
	sortedGot, sortedLines := make([]detail, len(got)), make([]string, len(got))
	for k, i := range order {
		sortedGot[k], sortedLines[k] = got[i], lines[i]
	}
	return sortedGot, sortedLines
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
