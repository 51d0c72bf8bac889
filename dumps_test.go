package main

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDumpInSteps: dumps of tables bigger than one step list every entry
// once, sorted, while other requests are served between the steps.
func TestDumpInSteps(t *testing.T) {
	m := newManager(Config{Registry: true, Dump: true, MaxLocksPerConn: DefaultMaxLocksPerConn})
	owner := newConnState("127.0.0.1:1", "tcp")
	other := newConnState("127.0.0.1:2", "tcp")
	const n = 3*dumpStep + 17
	for i := range n {
		name := []byte("lock" + strconv.Itoa(i))
		m.lock(owner, name)
		m.takeShared(owner, name)
		m.takeShared(other, name)
		c := newConnState("127.0.0.1:"+strconv.Itoa(10000+i), "tcp")
		m.registry.register(c, "member")
	}
	for _, tc := range []struct {
		line  string
		lines int
	}{
		{"d", n}, {"sd", 2 * n}, {"who", n}, {"dump", 1}, {"dump shared", 1},
	} {
		b := benchBatch(tc.line)
		m.runBatch(owner, b)
		if !b.dumpPending && len(m.dumps) == 0 {
			t.Fatalf("%s of %d entries was copied in one step", tc.line, n)
		}
		steps := 0
		for len(m.dumps) > 0 {
			// Meanwhile the table changes: a lock taken after the dump
			// began may or may not be listed, one held throughout must be.
			m.lock(other, []byte("late"+strconv.Itoa(steps)))
			m.dumpStepAll()
			steps++
		}
		select {
		case <-owner.done:
		default:
			t.Fatalf("%s: the connection was not answered", tc.line)
		}
		out := string(b.dump.appendTo(nil))
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		switch tc.line {
		case "d", "sd":
			var listed []string
			for _, l := range lines {
				if !strings.HasPrefix(l, "late") {
					listed = append(listed, l)
				}
			}
			if len(listed) != tc.lines {
				t.Errorf("%s: %d lines, want %d", tc.line, len(listed), tc.lines)
			}
			keys := make([]string, len(lines))
			for i, l := range lines {
				keys[i], _, _ = strings.Cut(l, ": ")
			}
			if !sort.StringsAreSorted(keys) {
				t.Errorf("%s: not sorted", tc.line)
			}
			if tc.line == "d" && len(slices.Compact(slices.Clone(lines))) != len(lines) {
				t.Errorf("d lists a lock twice")
			}
		case "who":
			if len(lines) != tc.lines {
				t.Errorf("who: %d lines, want %d", len(lines), tc.lines)
			}
			for i, l := range lines {
				if want := "127.0.0.1:" + strconv.Itoa(10000+i) + ": member"; l != want {
					t.Fatalf("who line %d: %q, want %q (registration order)", i, l, want)
				}
			}
		default:
			if !strings.HasPrefix(out, "map[") || strings.Count(out, "lock") < n {
				t.Errorf("%s: %d bytes, not every lock", tc.line, len(out))
			}
		}
		t.Logf("%s: %d steps", tc.line, steps)
	}
}

// BenchmarkDumpInterference measures what dumps of a big table cost other
// clients: while dumpers loop "d" over a table of -locks locks, a probe
// sends "i x" and waits for the reply; its latency percentiles are reported.
// Run: go test -run '^$' -bench DumpInterference -benchtime 2000x .
func BenchmarkDumpInterference(b *testing.B) {
	for _, tc := range []struct{ locks, dumpers int }{{1 << 20, 1}, {1 << 20, 3}} {
		b.Run(fmt.Sprintf("locks=%d/dumpers=%d", tc.locks, tc.dumpers), func(b *testing.B) {
			srv := benchServer(b)
			srv.manager.dumpEnabled = true
			owner, err := net.Dial("tcp", srv.TCPAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer owner.Close()
			go func() {
				w := bufio.NewWriterSize(owner, 64<<10)
				for i := range tc.locks {
					fmt.Fprintf(w, "g lock%d\n", i)
				}
				w.Flush()
			}()
			r := bufio.NewReader(owner)
			for range tc.locks {
				if _, err := r.ReadString('\n'); err != nil {
					b.Fatal(err)
				}
			}
			stop := make(chan struct{})
			defer close(stop)
			for range tc.dumpers {
				nc, err := net.Dial("tcp", srv.TCPAddr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer nc.Close()
				go func() {
					buf := make([]byte, 1<<20)
					for {
						select {
						case <-stop:
							return
						default:
						}
						if _, err := nc.Write([]byte("d\nping\n")); err != nil {
							return
						}
						// Read to the ping's reply, looking only at the
						// tail: the client must cost little next to the
						// server it measures.
						var tail []byte
						for !strings.HasSuffix(string(tail), "\n1 pong\n") {
							n, err := nc.Read(buf)
							if err != nil {
								return
							}
							tail = append(tail, buf[:n]...)
							tail = tail[max(0, len(tail)-16):]
						}
					}
				}()
			}
			probe, err := net.Dial("tcp", srv.TCPAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer probe.Close()
			pr := bufio.NewReader(probe)
			time.Sleep(100 * time.Millisecond) // the dumps are under way
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				probe.Write([]byte("i x\n"))
				if _, err := pr.ReadString('\n'); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			slices.Sort(lat)
			pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
			b.ReportMetric(pct(0.5), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1])/1e6, "max-ms")
		})
	}
}

// TestDetailedListing: dl shows owner, token, hold time and waiters of each
// exclusive lock, and each shared holder with its hold time, holders and
// waiters, sorted by lock; dl NAME filters; -dump=false disables it.
func TestDetailedListing(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			a, b, w := dial(t, srv, tr), dial(t, srv, tr), dial(t, srv, tr)
			a.expect("iam alice smith", "1 ok\n")
			a.expect("g X", "1 Lock Get Success: X\n")
			tok := strings.Fields(a.do("t X"))[0]
			a.expect("sg S", "1 Shared Lock Get Success: S\n")
			b.expect("sg S", "2 Shared Lock Get Success: S\n")
			w.send("gw -1 X\n")
			waitersQueued(t, srv, 1, "the waiter queued")
			time.Sleep(30 * time.Millisecond)
			got := a.do("dl")
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("dl: %q", got)
			}
			re := regexp.MustCompile(`^X: alice smith token=` + tok + ` held_ms=(\d+) waiters=1$`)
			m := re.FindStringSubmatch(lines[2])
			if m == nil {
				t.Fatalf("dl exclusive line %q", lines[2])
			}
			if ms, _ := strconv.Atoi(m[1]); ms < 30 || ms > 60_000 {
				t.Fatalf("held_ms %d", ms)
			}
			if !regexp.MustCompile(`^S: alice smith shared held_ms=\d+ holders=2 waiters=0$`).MatchString(lines[0]) ||
				!regexp.MustCompile(`^S: `+regexp.QuoteMeta(b.name)+` shared held_ms=\d+ holders=2 waiters=0$`).MatchString(lines[1]) {
				t.Fatalf("dl shared lines %q", lines[:2])
			}
			if got := a.do("dl S"); strings.Count(got, "\n") != 2 || strings.Contains(got, "X:") {
				t.Fatalf("dl S: %q", got)
			}
			a.expect("dl nothing", "")
			a.expect("r X", "1 Lock Release Success: X\n")
			if got := w.line(); got != "1 Lock Get Success: X\n" {
				t.Fatalf("waiter: %q", got)
			}
		})
	}
	srv := startServer(t, func(c *Config) { c.Dump = false })
	dial(t, srv, "tcp").expect("dl", "0 disabled\n")
}

// TestWaitersListing: dw lists every waiter in queue order, one line each,
// sorted by lock, the exclusive queue before the shared one, shared waiters
// marked; dw NAME filters; -dump=false disables it.
func TestWaitersListing(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			h := dial(t, srv, tr)
			h.expect("g X", "1 Lock Get Success: X\n")
			h.expect("sg X", "1 Shared Lock Get Success: X\n")
			h.expect("sg S", "1 Shared Lock Get Success: S\n")
			h.expect("dw", "")
			var names []string
			for _, cmd := range []string{"gw -1 X", "sgw -1 1 X", "gw -1 X", "sgw 60000 1 S", "gw 60000 X"} {
				w := dial(t, srv, tr)
				if len(names) == 0 {
					w.expect("iam first waiter", "1 ok\n")
					w.name = "first waiter"
				}
				queue(t, srv, w, cmd)
				names = append(names, w.name)
			}
			time.Sleep(30 * time.Millisecond)
			got := h.do("dw")
			want := []string{
				"S: " + names[3] + " shared",
				"X: " + names[0],
				"X: " + names[2],
				"X: " + names[4],
				"X: " + names[1] + " shared",
			}
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			if len(lines) != len(want) {
				t.Fatalf("dw: %q", got)
			}
			for i, l := range lines {
				prefix, ms, ok := strings.Cut(l, " queued_ms=")
				n, err := strconv.Atoi(ms)
				if !ok || prefix != want[i] || err != nil || n < 30 || n > 60_000 {
					t.Fatalf("dw line %d: %q, want %q queued_ms=N (N >= 30)", i, l, want[i])
				}
			}
			if got := h.do("dw S"); !strings.HasPrefix(got, "S: "+names[3]+" shared queued_ms=") || strings.Count(got, "\n") != 1 {
				t.Fatalf("dw S: %q", got)
			}
			h.expect("dw nothing", "")
		})
	}
	srv := startServer(t, func(c *Config) { c.Dump = false })
	dial(t, srv, "tcp").expect("dw", "0 disabled\n")
}

// TestWaitersListingInSteps: a dw of more waiters than one step copies is
// copied in steps and still lists each waiter once, in queue order.
func TestWaitersListingInSteps(t *testing.T) {
	srv := startServer(t, nil)
	h := dial(t, srv, "tcp")
	n := dumpStep + 100
	done := make(chan struct{})
	srv.manager.call(func(m *manager) {
		// Waiters queued directly in the manager: n connections would
		// take far longer to open than the listing takes to test.
		for i := range n {
			c := newConnState(fmt.Sprintf("fake:%d", i), "tcp")
			name := fmt.Sprintf("L%d", i%7)
			if l, _, _ := m.exclusive.get([]byte(name)); l == nil {
				m.lock(newConnState("holder:"+name, "tcp"), []byte(name))
			}
			m.wait(c, name, false, 0, noWait, false)
		}
		close(done)
	})
	<-done
	got := h.do("dw")
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("dw: %d lines, want %d", len(lines), n)
	}
	last := map[string]int{}
	for _, l := range lines {
		var lock string
		var i, ms int
		if _, err := fmt.Sscanf(l, "%s fake:%d queued_ms=%d", &lock, &i, &ms); err != nil {
			t.Fatalf("dw line %q: %v", l, err)
		}
		if prev, ok := last[lock]; ok && i <= prev {
			t.Fatalf("dw: %s lists fake:%d after fake:%d", lock, i, prev)
		}
		last[lock] = i
	}
	srv.manager.call(func(m *manager) {
		for _, q := range m.waiters {
			for _, w := range q.waiting() {
				m.unqueue(w)
			}
		}
	})
}
