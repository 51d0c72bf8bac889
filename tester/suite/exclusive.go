package suite

import "github.com/glockd/glockd/internal/wire"

// checkGetRelease walks two clients through every outcome of g, r and i.
func checkGetRelease(t *checkRun) {
	a, b := t.dial("A"), t.dial("B")
	n := t.name("lock")
	equal(t, "B i before anyone takes it", b.inspect(n), false)
	equal(t, "A g", a.get(n), true)
	equal(t, "A g again (the holder gets it again)", a.get(n), true)
	equal(t, "B g while A holds", b.get(n), false)
	equal(t, "B i while A holds", b.inspect(n), true)
	equal(t, "B r while A holds (only the holder releases)", b.release(n), false)
	equal(t, "A i", a.inspect(n), true)
	equal(t, "A r", a.release(n), true)
	equal(t, "A r again (gets are not counted)", a.release(n), false)
	equal(t, "B i after A r", b.inspect(n), false)
	equal(t, "B g after A r", b.get(n), true)
	equal(t, "A g while B holds", a.get(n), false)
	equal(t, "B r", b.release(n), true)
}

// checkEmptyName uses the lock named "" ("g" alone). It is the one name the
// suite cannot make its own, so on a shared server someone else may hold
// it: then only the forms of the replies are checked.
func checkEmptyName(t *checkRun) {
	a := t.dial("A")
	switch got := a.do("g"); got {
	case wire.ReplyLine(1, wire.GetSuccess, ""):
		equal(t, `A "i" while A holds ""`, a.do("i"), wire.ReplyLine(1, wire.IsLocked, ""))
		equal(t, `A "r   " (trailing blanks)`, a.do("r   "), wire.ReplyLine(1, wire.ReleaseSuccess, ""))
	case wire.ReplyLine(0, wire.GetFailure, ""):
		if t.exclusive() {
			t.Fatalf(`A "g": got %q on a fresh server, want "1 Lock Get Success: "`, got)
		}
		equal(t, `A "i" while another holds ""`, a.do("i"), wire.ReplyLine(1, wire.IsLocked, ""))
	default:
		t.Fatalf(`A "g": got %q, want "1 Lock Get Success: " (or Failure if another client holds "")`, got)
	}
}
