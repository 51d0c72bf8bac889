package suite

import "github.com/glockd/glockd/client"

// checkOrphanExclusive checks that a connection's exclusive locks are
// released when it ends, one orphan each, and a lock it released itself is
// not counted.
func checkOrphanExclusive(t *checkRun) {
	admin := t.quiet()
	before := admin.stats()
	a, b := t.dial("A"), t.dial("B")
	n1, n2, n3 := t.name("x1"), t.name("x2"), t.name("x3")
	equal(t, "A g "+n1, a.get(n1), true)
	equal(t, "A g "+n2, a.get(n2), true)
	equal(t, "A g "+n3, a.get(n3), true)
	equal(t, "A r "+n3, a.release(n3), true)
	equal(t, "B g "+n1+" while A holds", b.get(n1), false)
	a.close()
	t.eventually("B i: A's locks released after A disconnected", func() bool {
		return !b.inspect(n1) && !b.inspect(n2)
	})
	equal(t, "B g "+n1+" after A disconnected", b.get(n1), true)
	after := admin.stats()
	t.delta(before, after, "orphans", 2)
	t.delta(before, after, "shared_orphans", 0)
}

// checkOrphanShared is checkOrphanExclusive for shared locks: the holder
// count drops, and each adds one to shared_orphans.
func checkOrphanShared(t *checkRun) {
	admin := t.quiet()
	before := admin.stats()
	a, b := t.dial("A"), t.dial("B")
	s1, s2, s3 := t.name("s1"), t.name("s2"), t.name("s3")
	equal(t, "A sg "+s1, a.sg(s1), 1)
	equal(t, "B sg "+s1, b.sg(s1), 2)
	equal(t, "A sg "+s2, a.sg(s2), 1)
	equal(t, "A sg "+s3, a.sg(s3), 1)
	equal(t, "A sr "+s3, a.sr(s3), true)
	a.close()
	t.eventually("B si: A's shared locks released after A disconnected", func() bool {
		return b.si(s1) == 1 && b.si(s2) == 0
	})
	if t.opts.Dump {
		bName := b.connName()
		equalSlices(t, "B sd "+s1+" after A disconnected", b.sharedDebug(s1),
			[]client.LockOwner{{Lock: s1, Owner: bName}})
	}
	after := admin.stats()
	t.delta(before, after, "shared_orphans", 2)
	t.delta(before, after, "orphans", 0)
}
