package failover

import (
	"strings"
	"testing"
	"time"
)

// TestVerify feeds verify beliefs that keep every promise, then ones that
// break each: it must name each violation, and only those.
func TestVerify(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	b := func(lock string, session int, token uint64, from, to int, how string) *belief {
		return &belief{lock: lock, session: session, node: "127.0.0.1:1", token: token, start: at(from), end: at(to), how: how}
	}
	good := []*belief{
		b("x", 1, 10, 0, 100, "released"),
		b("x", 2, 11, 100, 200, "lost"), // starts as the other ends: no overlap
		b("y", 1, 12, 50, 300, "released"),
		b("x", 3, 20, 250, 400, "released"),
	}
	if v := verify(t0, good, nil); len(v) != 0 {
		t.Fatalf("violations in a clean run: %v", v)
	}

	stale := b("x", 1, 10, 0, 5000, "lost")
	tests := []struct {
		name       string
		beliefs    []*belief
		rejections []*rejection
		n          int      // violations
		want       []string // in their text
	}{
		{"overlap", []*belief{stale, b("x", 2, 11, 3000, 3100, "released")}, nil, 1,
			[]string{"VIOLATION overlap: lock x: session 1 on 127.0.0.1:1 (token 10) believed it held the lock from 0.000s to 5.000s (lost); session 2 on 127.0.0.1:1 (token 11) was granted it at 3.000s, 2s before that end"}},
		{"overlap with a belief that began earlier than the last one", []*belief{
			stale, b("x", 2, 11, 6000, 6100, "released"), b("x", 3, 12, 1000, 1100, "released")}, nil, 2,
			[]string{"VIOLATION overlap: lock x: session 1", "session 3 on 127.0.0.1:1 (token 12) was granted it at 1.000s, 4s before",
				"VIOLATION token order: lock x: session 2 on 127.0.0.1:1 (token 11) was granted at 6.000s, after session 3"}},
		{"token order", []*belief{b("x", 1, 10, 0, 100, "released"), b("x", 2, 9, 200, 300, "released")}, nil, 1,
			[]string{"VIOLATION token order: lock x: session 2 on 127.0.0.1:1 (token 9) was granted at 0.200s, after session 1 on 127.0.0.1:1 (token 10) at 0.000s"}},
		{"equal tokens", []*belief{b("x", 1, 10, 0, 100, "released"), b("x", 2, 10, 200, 300, "released")}, nil, 1,
			[]string{"VIOLATION token order: lock x: session 2"}},
		{"refused write", []*belief{stale}, []*rejection{{b: stale, at: at(3500), highest: 11, count: 3, last: at(3600)}}, 1,
			[]string{"VIOLATION fenced write refused: lock x: session 1 on 127.0.0.1:1 (token 10) wrote at 3.500s (and 2 more writes up to 3.600s) while it believed it held the lock (since 0.000s), and the register refused it: it had seen token 11"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := verify(t0, tt.beliefs, tt.rejections)
			var lines []string
			for _, x := range v {
				lines = append(lines, x.String())
			}
			got := strings.Join(lines, "\n")
			if len(v) != tt.n {
				t.Errorf("%d violations, want %d:\n%s", len(v), tt.n, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("violations lack %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestRecordWrite: the fenced register takes equal and higher tokens and
// refuses lower ones, and a belief's refusals are reported once.
func TestRecordWrite(t *testing.T) {
	r := newRecord()
	old := &belief{lock: "x", token: 5}
	cur := &belief{lock: "x", token: 7}
	for _, w := range []struct {
		b  *belief
		ok bool
	}{{old, true}, {old, true}, {cur, true}, {cur, true}, {old, false}, {&belief{lock: "y", token: 1}, true}} {
		rj, ok := r.write(w.b)
		if ok != w.ok {
			t.Fatalf("write of token %d to %s: accepted %v, want %v", w.b.token, w.b.lock, ok, w.ok)
		}
		if !ok {
			if rj.highest != 7 {
				t.Fatalf("refusal names token %d, want 7", rj.highest)
			}
			r.rejected(rj)
			r.rejected(rj)
		}
	}
	if len(r.rejections) != 1 || r.rejections[0].count != 2 {
		t.Fatalf("rejections %+v, want one with count 2", r.rejections)
	}
}

// TestLateGrants: after a pause of node A, grant replies received from A
// before node B's first grant are fine, any received after it is a late
// grant, raw or by a session; B's own grants, and A's once it was seen a
// standby again, are not.
func TestLateGrants(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const a, b = "127.0.0.1:1", "127.0.0.1:2"
	round := func(client int, node string, sent, first, last, grants int) *rawRound {
		return &rawRound{client: client, node: node, sent: at(sent), grants: grants, firstGrant: at(first), lastGrant: at(last)}
	}
	d := []deposal{{fault: "fault 1/1 pause", node: a, name: "node a", at: at(1000), standby: at(8000)}}
	r := newRecord()
	r.rawRounds = []*rawRound{
		round(1, a, 900, 950, 1100, 300),  // answered before b's first grant
		round(2, b, 5000, 5010, 5020, 10), // b's first grant, at 5.010s
		round(3, a, 999, 7000, 7100, 0),   // no grant in it
	}
	r.beliefs = []*belief{{lock: "hot-1", session: 4, node: a, token: 7, start: at(990)}}
	if v := r.lateGrants(t0, d); len(v) != 0 {
		t.Fatalf("violations in a clean run: %v", v)
	}

	r.rawRounds = append(r.rawRounds, round(5, a, 999, 6500, 6600, 40), round(6, a, 9000, 9100, 9200, 5))
	r.beliefs = append(r.beliefs, &belief{lock: "hot-2", session: 7, node: a, token: 3, start: at(6000)})
	v := r.lateGrants(t0, d)
	if len(v) != 2 {
		t.Fatalf("violations %v, want raw client 5's and session 7's", v)
	}
	for i, want := range []string{
		"VIOLATION late grant: fault 1/1 pause: raw client 5 received grant replies from node a until 6.600s (the batch was sent at 0.999s, 40 grants in it), after another node's first grant at 5.010s",
		"VIOLATION late grant: fault 1/1 pause: session 7 was granted lock hot-2 by node a at 6.000s (token 3), after another node's first grant at 5.010s",
	} {
		if !strings.Contains(v[i].String(), want) {
			t.Errorf("violation %d: %s\nwant %s", i, v[i], want)
		}
	}
}
