package suite

import (
	"slices"
	"strings"
)

// originalKeys are the counters q lists from start-up, as the original did.
var originalKeys = []string{
	"command_d", "command_dump", "command_g", "command_i", "command_q", "command_r",
	"command_sd", "command_sg", "command_si", "command_sr", "connections",
	"invalid_commands", "locks", "orphans", "shared_locks", "shared_orphans",
}

// statsKeys returns the keys of a q reply in order, failing the check on a
// line that is not "KEY: N" or keys out of order.
func statsKeys(t *checkRun, what string, lines []string) []string {
	keys := make([]string, 0, len(lines))
	for _, l := range lines {
		key, val, ok := strings.Cut(l, ": ")
		if _, isNum := parseCount(val); !ok || key == "" || !isNum {
			t.Fatalf("%s: line %q is not \"KEY: N\"", what, l)
		}
		keys = append(keys, key)
	}
	if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
		t.Fatalf("%s: keys not sorted or repeated: %q", what, keys)
	}
	return keys
}

// checkStartup runs first on a fresh server: q lists exactly the original's
// 16 keys, and a counter of another command appears once it is used.
func checkStartup(t *checkRun) {
	a := t.dial("A")
	lines := a.doLines("q")
	equalSlices(t, "q keys at start-up", statsKeys(t, "q", lines), originalKeys)
	stats := a.stats() // the second q
	for _, k := range originalKeys {
		want := int64(0)
		switch k {
		case "connections":
			want = 1
		case "command_q":
			want = 2 // q counts the q being answered
		case "command_i":
			want = t.fence() // the first q's fence
		}
		equal(t, "q at start-up: "+k, stats[k], want)
	}
	a.me()
	if t.opts.Ext {
		if err := a.c.Ping(t.ctx); err != nil {
			t.Fatalf("A: ping: %v", err)
		}
	}
	stats = a.stats()
	equal(t, "q: command_me after one me", stats["command_me"], 1)
	want := len(originalKeys) + 1
	if t.opts.Ext {
		equal(t, "q: command_ping after one ping", stats["command_ping"], 1)
		want++
	}
	equal(t, "q: number of keys after me (and ping)", len(stats), want)
}

// checkStatsFormat checks the form of q on any server: sorted "KEY: N"
// lines, the original's keys all there, any other a command counter.
func checkStatsFormat(t *checkRun) {
	a := t.dial("A")
	keys := statsKeys(t, "q", a.doLines("q"))
	for _, k := range originalKeys {
		if !slices.Contains(keys, k) {
			t.Fatalf("q: key %q missing from %q", k, keys)
		}
	}
	for _, k := range keys {
		if !slices.Contains(originalKeys, k) && !strings.HasPrefix(k, "command_") {
			t.Fatalf("q: unexpected key %q", k)
		}
	}
	a.me()
	if got := a.stats()["command_me"]; got < 1 {
		t.Fatalf("q after me: command_me is %d, want at least 1", got)
	}
}

// checkStatsDeltas checks that each command counter goes up by the number
// of commands sent, and the locks and shared_locks levels.
func checkStatsDeltas(t *checkRun) {
	admin := t.quiet()
	a := t.dial("A")
	before := admin.stats()
	n, s := t.name("x"), t.name("s")
	a.get(n)
	a.get(n)
	a.inspect(n)
	a.sg(s)
	a.si(s)
	mid := admin.stats()
	t.level(mid, "locks", 1)
	t.level(mid, "shared_locks", 1)
	a.release(n)
	a.release(n)
	a.sr(s)
	a.sr(s)
	after := admin.stats()
	t.level(after, "locks", 0)
	t.level(after, "shared_locks", 0)
	for _, d := range []struct {
		key  string
		want int64
	}{
		{"command_g", 2},
		{"command_r", 2},
		{"command_i", 1 + 2*t.fence()}, // the fences of before and mid
		{"command_sg", 1},
		{"command_si", 1},
		{"command_sr", 2},
		{"command_q", 2}, // mid and after: each counts itself
		{"invalid_commands", 0},
	} {
		t.delta(before, after, d.key, d.want)
	}
}

// checkConnections checks that connections counts every live connection,
// the caller included, and drops when one ends.
func checkConnections(t *checkRun) {
	admin := t.quiet()
	before := admin.stats()["connections"]
	a, b := t.dial("A"), t.dial("B")
	if !t.exclusive() {
		// Others come and go; the three of this check are there at least.
		t.eventually("q: connections at least 3 with Q, A and B connected", func() bool {
			return admin.stats()["connections"] >= 3
		})
		return
	}
	t.eventually("q: connections up by 2 after two connected", func() bool {
		return admin.stats()["connections"] == before+2
	})
	b.close()
	t.eventually("q: connections: 2 after B disconnected", func() bool {
		return admin.stats()["connections"] == 2
	})
	a.close()
	t.eventually("q: connections: 1 after A disconnected", func() bool {
		return admin.stats()["connections"] == 1
	})
}
