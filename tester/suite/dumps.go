package suite

import (
	"slices"
	"strings"

	"github.com/glockd/glockd/client"
)

// checkDumpDisabled checks the "0 disabled" replies of a server run with
// -dump=false.
func checkDumpDisabled(t *checkRun) {
	a := t.dial("A")
	n := t.name("x")
	_, err := a.c.Debug(t.ctx, "")
	a.disabled("d", err)
	_, err = a.c.Debug(t.ctx, n)
	a.disabled("d NAME", err)
	_, err = a.c.SharedDebug(t.ctx, "")
	a.disabled("sd", err)
	_, err = a.c.SharedDebug(t.ctx, n)
	a.disabled("sd NAME", err)
	_, err = a.c.Dump(t.ctx)
	a.disabled("dump", err)
	_, err = a.c.DumpShared(t.ctx)
	a.disabled("dump shared", err)
}

// checkDebugOrder checks that d lists each lock once with its holder (in
// any order: glockd walks its table in steps, the original's order was
// random), and that d NAME lists that lock only.
func checkDebugOrder(t *checkRun) {
	a, b := t.dial("A"), t.dial("B")
	an, bn := a.connName(), b.connName()
	nb, na, nc := t.name("b"), t.name("a"), t.name("c")
	equal(t, "A g "+nb, a.get(nb), true)
	equal(t, "B g "+na, b.get(na), true)
	equal(t, "A g "+nc, a.get(nc), true)
	all := sortedByLock(a.debug(""))
	equalSlices(t, "d (this check's lines)", t.filterLocks(all),
		[]client.LockOwner{{Lock: na, Owner: bn}, {Lock: nb, Owner: an}, {Lock: nc, Owner: an}})
	equalSlices(t, "d "+na, a.debug(na), []client.LockOwner{{Lock: na, Owner: bn}})
	equalSlices(t, "d on a free lock", a.debug(t.name("free")), []client.LockOwner{})
	equal(t, "B r "+na, b.release(na), true)
	equalSlices(t, "d "+na+" after B r", a.debug(na), []client.LockOwner{})
}

// checkSharedDebugOrder checks that sd lists the holders of a shared lock
// together, in the order they took it (the locks in any order).
func checkSharedDebugOrder(t *checkRun) {
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	an, bn, cn := a.connName(), b.connName(), c.connName()
	s1, s0 := t.name("s1"), t.name("s0")
	equal(t, "B sg "+s1, b.sg(s1), 1)
	equal(t, "A sg "+s1, a.sg(s1), 2)
	equal(t, "C sg "+s1, c.sg(s1), 3)
	equal(t, "A sg "+s0, a.sg(s0), 1)
	all := a.sharedDebug("")
	for i := 2; i < len(all); i++ {
		if all[i].Lock == all[i-2].Lock && all[i-1].Lock != all[i].Lock {
			t.Fatalf("sd: the holders of %s are not together: %+v", all[i].Lock, all)
		}
	}
	all = sortedByLock(all)
	equalSlices(t, "sd (this check's lines)", t.filterLocks(all), []client.LockOwner{
		{Lock: s0, Owner: an}, {Lock: s1, Owner: bn}, {Lock: s1, Owner: an}, {Lock: s1, Owner: cn}})
	equal(t, "B sr "+s1, b.sr(s1), true)
	equal(t, "B sg "+s1+" again", b.sg(s1), 3)
	equalSlices(t, "sd "+s1+" after B took it again (now last)", a.sharedDebug(s1), []client.LockOwner{
		{Lock: s1, Owner: an}, {Lock: s1, Owner: cn}, {Lock: s1, Owner: bn}})
	equalSlices(t, "sd on a free lock", a.sharedDebug(t.name("free")), []client.LockOwner{})
}

// checkDump checks dump and dump shared: Go's %v of the tables (but with
// the keys in any order), connection names as values, holders in the order
// they came.
func checkDump(t *checkRun) {
	var admin *conn
	if t.exclusive() {
		admin = t.quiet()
		equal(t, "dump with no lock held", admin.dump(), "map[]")
		equal(t, "dump shared with no lock held", admin.dumpShared(), "map[]")
	}
	a, b := t.dial("A"), t.dial("B")
	an, bn := a.connName(), b.connName()
	k1, k2 := t.name("k1"), t.name("k2")
	equal(t, "A g "+k2, a.get(k2), true)
	equal(t, "B g "+k1, b.get(k1), true)
	want := []string{k1 + ":" + bn, k2 + ":" + an}
	for _, w := range want {
		if d := a.dump(); !containsEntry(d, w) {
			t.Fatalf("dump: %q lacks %q", d, w)
		}
		if d := a.do("dump " + t.name("other")); !containsEntry(d, w) {
			t.Fatalf("dump with another argument (the exclusive table): %q lacks %q", d, w)
		}
	}
	s := t.name("s")
	equal(t, "B sg "+s, b.sg(s), 1)
	equal(t, "A sg "+s, a.sg(s), 2)
	wantShared := s + ":[" + bn + " " + an + "]"
	if d := a.dumpShared(); !containsEntry(d, wantShared) {
		t.Fatalf("dump shared: %q lacks %q", d, wantShared)
	}
	if admin != nil {
		d := admin.dump()
		if d != "map["+want[0]+" "+want[1]+"]" && d != "map["+want[1]+" "+want[0]+"]" {
			t.Fatalf("dump: %q, want the entries %q and no other", d, want)
		}
		equal(t, "dump shared", admin.dumpShared(), "map["+wantShared+"]")
	}
}

// containsEntry reports whether a printed map holds entry as whole
// entries: after "map[" or a space, before a space or the final "]".
func containsEntry(dump, entry string) bool {
	body, ok := strings.CutPrefix(dump, "map[")
	if !ok || !strings.HasSuffix(body, "]") {
		return false
	}
	padded := " " + strings.TrimSuffix(body, "]") + " "
	return strings.Contains(padded, " "+entry+" ")
}

// sortedByLock sorts a listing by lock, keeping the order of the holders of
// one lock.
func sortedByLock(all []client.LockOwner) []client.LockOwner {
	slices.SortStableFunc(all, func(x, y client.LockOwner) int { return strings.Compare(x.Lock, y.Lock) })
	return all
}
