package main

import (
	"slices"
	"strconv"
	"testing"
)

// TestSharedTable checks the shared table against a model made of Go maps
// and slices, through sg, sr and orphaning by many connections on enough
// names to split the indexes' buckets, wrap their probe runs and empty the
// table: each name's holders in the order they took it, each connection's
// holds, the order of grants of all holders (the oldest hold), and the
// memory given back at the end.
func TestSharedTable(t *testing.T) {
	m := newManager(Config{MaxLocksPerConn: 1 << 20}.withDefaults())
	conns := make([]*connState, 24)
	for i := range conns {
		conns[i] = newConnState("127.0.0.1:"+strconv.Itoa(i), "tcp")
	}
	type hold struct {
		c    *connState
		name string
	}
	holders := map[string][]*connState{} // the model: each name's holders in order
	granted := map[hold]int64{}          // every hold, with when it was granted
	holds := 0
	rng := uint64(7)
	next := func(n int) int {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return int(rng % uint64(n))
	}
	release := func(c *connState, name string) {
		holders[name] = slices.DeleteFunc(holders[name], func(h *connState) bool { return h == c })
		if len(holders[name]) == 0 {
			delete(holders, name)
		}
		delete(granted, hold{c, name})
		holds--
	}
	check := func(round int) {
		t.Helper()
		if m.shared.count != len(holders) {
			t.Fatalf("round %d: %d names, want %d", round, m.shared.count, len(holders))
		}
		for name, want := range holders {
			ref, _ := m.shared.find([]byte(name))
			if ref == noRef {
				t.Fatalf("round %d: %q lost", round, name)
			}
			var got []*connState
			m.shared.eachHolder(ref, func(h *sharedHolder) { got = append(got, h.conn) })
			if !slices.Equal(got, want) || int(m.shared.name(ref).count) != len(want) {
				t.Fatalf("round %d: %q held by %d in another order or count", round, name, len(got))
			}
		}
		indexed := 0
		for _, hs := range holders {
			if len(hs) > indexedHolders {
				indexed += len(hs)
			}
		}
		for _, x := range []struct {
			index *hashIndex
			want  int
		}{{&m.shared.names, len(holders)}, {&m.shared.holders, indexed}} {
			seen, entries := map[*lockBucket]bool{}, 0
			for _, b := range x.index.dir {
				if !seen[b] {
					seen[b] = true
					entries += int(b.count)
				}
			}
			if entries != x.want {
				t.Fatalf("round %d: an index has %d entries, want %d", round, entries, x.want)
			}
		}
		perConn := map[*connState]int{}
		for g := range granted {
			perConn[g.c]++
		}
		for _, c := range conns {
			if len(c.sharedHeld) != perConn[c] {
				t.Fatalf("round %d: %s holds %d, want %d", round, c.name, len(c.sharedHeld), perConn[c])
			}
			for i, h := range c.sharedHeld {
				if r := m.shared.holder(h); r.conn != c || int(r.index) != i {
					t.Fatalf("round %d: %s's hold %d is another's or misplaced", round, c.name, i)
				}
			}
		}
		i := 0
		var last int64
		for h := m.shared.oldest; h != noRef; h = m.shared.holder(h).newer {
			r := m.shared.holder(h)
			since, ok := granted[hold{r.conn, m.shared.name(r.lock).name}]
			if !ok || r.since != since || r.since <= last {
				t.Fatalf("round %d: grant %d out of order or unknown", round, i)
			}
			last = r.since
			i++
		}
		if i != len(granted) {
			t.Fatalf("round %d: %d grants in the age list, want %d", round, i, len(granted))
		}
		for h := m.shared.newest; h != noRef; h = m.shared.holder(h).older {
			i--
		}
		if i != 0 {
			t.Fatalf("round %d: the age list has %d more grants forwards than backwards", round, i)
		}
	}
	// Rounds of many names with few holders, then few names with many: the
	// holders of a name with more than indexedHolders are indexed.
	for round, size := range []int{3000, 60000, 500, 90000, 10, 90, 30, 100, 0} {
		names := size/3 + 10
		if round >= 4 {
			names = 5
		}
		for step := 1; holds != size; step++ {
			if step%20000 == 0 {
				check(round)
			}
			m.now++
			c := conns[next(len(conns))]
			name := "s" + strconv.Itoa(next(names))
			held := slices.Contains(holders[name], c)
			switch {
			case holds > size && len(c.sharedHeld) > 0 && next(5000) == 0:
				// A connection ends: its holds go, a few at a time.
				for _, h := range slices.Clone(c.sharedHeld) {
					release(c, m.shared.name(m.shared.holder(h).lock).name)
				}
				for !m.orphanLocks(c, 1+next(50)) {
				}
			case holds > size && len(c.sharedHeld) > 0:
				// One of c's holds, at random.
				name = m.shared.name(m.shared.holder(c.sharedHeld[next(len(c.sharedHeld))]).lock).name
				if !m.sharedUnlock(c, []byte(name)) {
					t.Fatalf("round %d: sr %s by a holder failed", round, name)
				}
				release(c, name)
			case holds < size && !held:
				n, res := m.takeShared(c, []byte(name))
				holders[name] = append(holders[name], c)
				granted[hold{c, name}] = m.now
				holds++
				if res != lockTaken || n != len(holders[name]) {
					t.Fatalf("round %d: sg %s: %d holders, result %v; want %d", round, name, n, res, len(holders[name]))
				}
			case held:
				if n, _ := m.takeShared(c, []byte(name)); n != len(holders[name]) {
					t.Fatalf("round %d: sg %s again: %d holders, want %d", round, name, n, len(holders[name]))
				}
			default:
				if m.sharedUnlock(c, []byte(name)) {
					t.Fatalf("round %d: sr %s by a non-holder succeeded", round, name)
				}
			}
		}
		check(round)
	}
	if len(m.shared.nameChunks) != 0 || len(m.shared.holderChunks) != 0 ||
		len(m.shared.names.dir) != 1 || len(m.shared.holders.dir) != 1 {
		t.Errorf("an empty table keeps %d+%d chunks and %d+%d buckets", len(m.shared.nameChunks),
			len(m.shared.holderChunks), len(m.shared.names.dir), len(m.shared.holders.dir))
	}
}
