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
