package main

import (
	"strconv"
	"testing"
)

// TestLockTable checks the exclusive table against a Go map through inserts
// and removals that split buckets, wrap probe runs and empty the table.
func TestLockTable(t *testing.T) {
	tab := newLockTable()
	model := map[string]lockRef{}
	owner := newConnState("x", "tcp")
	rng := uint64(1)
	next := func(n int) int {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	check := func() {
		t.Helper()
		if tab.count != len(model) {
			t.Fatalf("count %d, want %d", tab.count, len(model))
		}
		seen := 0
		tab.each(func(l *exclusiveLock) {
			seen++
			if ref, ok := model[l.name]; !ok || tab.record(ref) != l {
				t.Fatalf("each: %q not in the model", l.name)
			}
		})
		if seen != len(model) {
			t.Fatalf("each saw %d, want %d", seen, len(model))
		}
	}
	for round, size := range []int{50000, 300, 120000, 0} {
		for len(model) != size {
			name := "n" + strconv.Itoa(next(2*size+10))
			if len(model) > size && next(2) == 0 {
				for name = range model { // a random present one
					break
				}
			}
			l, ref, frag := tab.get([]byte(name))
			want, ok := model[name]
			if (l != nil) != ok || ok && (ref != want || l.name != name) {
				t.Fatalf("round %d: get %q = %v %d, want %v %d", round, name, l != nil, ref, ok, want)
			}
			switch {
			case !ok && len(model) < size:
				l, ref = tab.insert(name, frag)
				l.owner = owner
				model[name] = ref
			case ok && len(model) > size:
				tab.remove(ref)
				delete(model, name)
			}
		}
		check()
		for name, ref := range model {
			if l, got, _ := tab.get([]byte(name)); l == nil || got != ref {
				t.Fatalf("round %d: %q lost", round, name)
			}
		}
	}
	if len(tab.chunks) != 0 || len(tab.dir) != 1 {
		t.Errorf("an empty table keeps %d chunks and %d buckets", len(tab.chunks), len(tab.dir))
	}
}

// TestLockTableIndexAll checks the bulk filling of a hand-over (reserve,
// insertUnindexed, indexAll): every name found again, the table usable
// after, a duplicate reported, whether reserve saw the right size or not.
func TestLockTableIndexAll(t *testing.T) {
	for _, reserved := range []int{30000, 100, 0} {
		tab := newLockTable()
		tab.reserve(reserved)
		owner := newConnState("x", "tcp")
		refs := make([]lockRef, 30000)
		for i := range refs {
			l, ref := tab.insertUnindexed("n" + strconv.Itoa(i))
			l.owner = owner
			refs[i] = ref
		}
		if dup := tab.indexAll(refs); dup != nil {
			t.Fatalf("reserved %d: %q reported twice", reserved, dup.name)
		}
		for i, ref := range refs {
			if l, got, _ := tab.get([]byte("n" + strconv.Itoa(i))); l == nil || got != ref {
				t.Fatalf("reserved %d: n%d not found", reserved, i)
			}
		}
		for i := range 20000 { // splits, and removals, go on as usual
			name := "m" + strconv.Itoa(i)
			_, _, frag := tab.get([]byte(name))
			l, _ := tab.insert(name, frag)
			l.owner = owner
			tab.remove(refs[i])
		}
		if tab.count != 30000 {
			t.Fatalf("reserved %d: count %d", reserved, tab.count)
		}
		for i := range 30000 {
			name := "n" + strconv.Itoa(i)
			if i < 20000 {
				name = "m" + strconv.Itoa(i)
			}
			if l, _, _ := tab.get([]byte(name)); l == nil {
				t.Fatalf("reserved %d: %s lost", reserved, name)
			}
		}
		l, ref := tab.insertUnindexed("n29999")
		l.owner = owner
		if dup := tab.indexAll([]lockRef{ref}); dup == nil || dup.name != "n29999" {
			t.Fatalf("reserved %d: a name added twice not reported: %v", reserved, dup)
		}
	}
}
