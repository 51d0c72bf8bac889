package suite

// checkSharedCounts checks the holder counts of sg, si and sr.
func checkSharedCounts(t *checkRun) {
	a, b, c := t.dial("A"), t.dial("B"), t.dial("C")
	n := t.name("shared")
	equal(t, "C si before anyone takes it", c.si(n), 0)
	equal(t, "A sg", a.sg(n), 1)
	equal(t, "B sg", b.sg(n), 2)
	equal(t, "A sg again (not counted twice)", a.sg(n), 2)
	equal(t, "C si", c.si(n), 2)
	equal(t, "A sr", a.sr(n), true)
	equal(t, "C si after A sr", c.si(n), 1)
	equal(t, "A sr again", a.sr(n), false)
	equal(t, "C sr (never held it)", c.sr(n), false)
	equal(t, "B sr", b.sr(n), true)
	equal(t, "C si after every holder released", c.si(n), 0)
}

// checkSharedNamespace checks that g and sg on one name do not interact.
func checkSharedNamespace(t *checkRun) {
	a, b := t.dial("A"), t.dial("B")
	n := t.name("both")
	equal(t, "A g", a.get(n), true)
	equal(t, "B sg on the name A holds exclusively", b.sg(n), 1)
	equal(t, "B si", b.si(n), 1)
	equal(t, "A i", a.inspect(n), true)
	equal(t, "B r (B holds only the shared lock)", b.release(n), false)
	equal(t, "A sr (A holds only the exclusive lock)", a.sr(n), false)
	equal(t, "A r", a.release(n), true)
	equal(t, "B si after A r", b.si(n), 1)
	equal(t, "B i after A r", b.inspect(n), false)
	equal(t, "B sr", b.sr(n), true)
}
