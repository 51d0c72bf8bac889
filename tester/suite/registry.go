package suite

import (
	"fmt"
	"slices"

	"github.com/glockd/glockd/client"
	"github.com/glockd/glockd/internal/wire"
)

// checkMeIam checks me before and after iam, and iam's removal of a name.
// With -registry=false, me still answers and iam is disabled.
func checkMeIam(t *checkRun) {
	a := t.dial("A")
	conn, reg := a.me()
	a.connName() // checks the form
	equal(t, "A me: registered name before any iam", reg, conn)
	if t.opts.Network == "unix" {
		b := t.dial("B")
		var na, nb int
		fmt.Sscanf(conn, "unix:%d", &na)
		fmt.Sscanf(b.connName(), "unix:%d", &nb)
		if nb <= na {
			t.Fatalf("unix connection names: A is unix:%d, B (accepted later) is unix:%d; want N to grow in accept order", na, nb)
		}
	}
	if !t.opts.Registry {
		a.disabled("iam", a.c.Iam(t.ctx, t.name("me")))
		_, reg = a.me()
		equal(t, "A me after a disabled iam", reg, conn)
		return
	}
	me := t.name("me")
	a.iam(me)
	gotConn, reg := a.me()
	equal(t, "A me: connection name after iam", gotConn, conn)
	equal(t, "A me: registered name after iam "+me, reg, me)
	a.iam("  " + me + "   two\twords ")
	_, reg = a.me()
	equal(t, "A me after an iam with odd white space", reg, me+" two words")
	equal(t, `A "iam" alone`, a.do("iam"), wire.Line(wire.OK))
	_, reg = a.me()
	equal(t, `A me after "iam" alone removed the name`, reg, conn)
}

// checkWho checks who's order (oldest registration first, so a new iam
// goes last), its filter, and that a connection's registration ends with
// it.
func checkWho(t *checkRun) {
	a := t.dial("A")
	if !t.opts.Registry || !t.opts.Dump {
		_, err := a.c.Who(t.ctx, "")
		a.disabled("who", err)
		_, err = a.c.Who(t.ctx, t.name("x"))
		a.disabled("who NAME", err)
		return
	}
	b, c := t.dial("B"), t.dial("C")
	an, bn, cn := a.connName(), b.connName(), c.connName()
	x, y, z := t.name("x"), t.name("y"), t.name("z")
	a.iam(x)
	b.iam(y)
	c.iam(x)
	mine := func() []client.Registration {
		return slices.DeleteFunc(a.who(""), func(r client.Registration) bool {
			return r.Name != x && r.Name != y && r.Name != z
		})
	}
	equalSlices(t, "who (this check's lines)", mine(),
		[]client.Registration{{Conn: an, Name: x}, {Conn: bn, Name: y}, {Conn: cn, Name: x}})
	equalSlices(t, "who "+x, b.who(x), []client.Registration{{Conn: an, Name: x}, {Conn: cn, Name: x}})
	a.iam(z)
	equalSlices(t, "who after A's new iam (latest last)", mine(),
		[]client.Registration{{Conn: bn, Name: y}, {Conn: cn, Name: x}, {Conn: an, Name: z}})
	equalSlices(t, "who "+x+" after A's new iam", b.who(x), []client.Registration{{Conn: cn, Name: x}})
	equalSlices(t, "who on a name no one has", b.who(t.name("nobody")), []client.Registration{})
	c.close()
	t.eventually("who "+x+" empty after C disconnected", func() bool { return len(b.who(x)) == 0 })
}

// checkOwnerInDumps checks that d and sd show the registered name, or the
// connection name when there is none, while dump shows connection names.
func checkOwnerInDumps(t *checkRun) {
	a := t.dial("A")
	n, s := t.name("x"), t.name("s")
	equal(t, "A g", a.get(n), true)
	equal(t, "A sg", a.sg(s), 1)
	if !t.opts.Dump {
		_, err := a.c.Debug(t.ctx, n)
		a.disabled("d", err)
		return
	}
	conn := a.connName()
	equalSlices(t, "d "+n, a.debug(n), []client.LockOwner{{Lock: n, Owner: conn}})
	if !t.opts.Registry {
		equalSlices(t, "sd "+s, a.sharedDebug(s), []client.LockOwner{{Lock: s, Owner: conn}})
		return
	}
	reg := t.name("owner")
	a.iam(reg)
	equalSlices(t, "d "+n+" after iam", a.debug(n), []client.LockOwner{{Lock: n, Owner: reg}})
	equalSlices(t, "sd "+s+" after iam", a.sharedDebug(s), []client.LockOwner{{Lock: s, Owner: reg}})
	if d := a.dump(); !containsEntry(d, n+":"+conn) {
		t.Fatalf("dump after iam: %q lacks %q (dump shows connection names)", d, n+":"+conn)
	}
	a.iam("")
	equalSlices(t, "d "+n+" after iam with no name", a.debug(n), []client.LockOwner{{Lock: n, Owner: conn}})
}
