package main

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// TestDumpInSteps: dumps of tables bigger than one step list every entry
// held throughout once, while the table changes between the steps; no step
// copies more than a step's entries; who keeps the order of registration
// across steps, and the printed maps are whole.
func TestDumpInSteps(t *testing.T) {
	m := newManager(Config{Registry: true, Dump: true, MaxLocksPerConn: DefaultMaxLocksPerConn})
	owner := newConnState("127.0.0.1:1", "tcp")
	other := newConnState("127.0.0.1:2", "tcp")
	const n = 3*dumpStep + 17
	members := make([]*connState, n)
	for i := range n {
		name := []byte("lock" + strconv.Itoa(i))
		m.lock(owner, name)
		m.takeShared(owner, name)
		m.takeShared(other, name)
		members[i] = newConnState("127.0.0.1:"+strconv.Itoa(10000+i), "tcp")
		m.registry.register(members[i], "member")
	}
	for _, tc := range []struct {
		line  string
		lines int
	}{
		{"d", n}, {"sd", 2 * n}, {"who", n}, {"dl", 3 * n}, {"dump", 1}, {"dump shared", 1},
	} {
		b := benchBatch(tc.line)
		m.runBatch(owner, b)
		<-owner.done
		d := b.dump
		if d == nil || d.done() {
			t.Fatalf("%s of %d entries was copied in one step", tc.line, n)
		}
		var out []byte
		steps := 0
		for {
			if len(d.entries) > dumpStep+2 || len(d.details) > dumpStep+2 {
				t.Fatalf("%s: a step of %d entries and %d details, want at most %d", tc.line, len(d.entries), len(d.details), dumpStep+2)
			}
			out = d.appendStep(out)
			if d.done() {
				break
			}
			// Meanwhile the tables change: a lock taken after the dump
			// began may or may not be listed, one held throughout must be;
			// a connection registered again moves to the end of who.
			late := []byte("late" + strconv.Itoa(steps))
			m.lock(other, late)
			m.takeShared(other, late)
			if tc.line == "who" {
				m.registry.register(newConnState("127.0.0.1:"+strconv.Itoa(1000+steps), "tcp"), "late")
				m.registry.remove(members[steps]) // listed already
			}
			m.copyStep(d)
			steps++
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		var listed []string
		for _, l := range lines {
			if !strings.HasPrefix(l, "late") && !strings.HasSuffix(l, ": late") {
				listed = append(listed, l)
			}
		}
		switch tc.line {
		case "d", "sd", "dl":
			if len(listed) < tc.lines || len(listed) > tc.lines+1 {
				t.Errorf("%s: %d lines, want %d", tc.line, len(listed), tc.lines)
			}
			seen := map[string]int{}
			for _, l := range listed {
				seen[l]++
			}
			for i := range n {
				key := "lock" + strconv.Itoa(i) + ": "
				if tc.line == "d" && seen[key+"127.0.0.1:1"] != 1 {
					t.Fatalf("d lists %s %d times", key, seen[key+"127.0.0.1:1"])
				}
				if tc.line == "sd" && (seen[key+"127.0.0.1:1"] != 1 || seen[key+"127.0.0.1:2"] != 1) {
					t.Fatalf("sd lists the holders of %s %d and %d times", key, seen[key+"127.0.0.1:1"], seen[key+"127.0.0.1:2"])
				}
			}
		case "who":
			// Each step removed a member the first step listed.
			if len(listed) != tc.lines {
				t.Errorf("who: %d lines, want %d", len(listed), tc.lines)
			}
			for i, l := range listed {
				if want := "127.0.0.1:" + strconv.Itoa(10000+i) + ": member"; l != want {
					t.Fatalf("who line %d: %q, want %q (registration order)", i, l, want)
				}
			}
		default:
			shared := strings.HasSuffix(tc.line, "shared")
			body, ok := strings.CutPrefix(string(out), "map[")
			if !ok || !strings.HasSuffix(body, "]\n") || strings.Count(string(out), "\n") != 1 {
				t.Fatalf("%s: not one printed map: %.80q ... %q", tc.line, out, out[max(0, len(out)-80):])
			}
			body = strings.TrimSuffix(body, "]\n")
			var entries []string
			if shared {
				entries = strings.Split(strings.TrimSuffix(body, "]"), "] ")
			} else {
				entries = strings.Split(body, " ")
			}
			seen := map[string]int{}
			for _, e := range entries {
				seen[e]++
			}
			for i := range n {
				want := "lock" + strconv.Itoa(i) + ":127.0.0.1:1"
				if shared {
					want = "lock" + strconv.Itoa(i) + ":[127.0.0.1:1 127.0.0.1:2"
				}
				if seen[want] != 1 {
					t.Fatalf("%s lists %q %d times", tc.line, want, seen[want])
				}
			}
		}
		t.Logf("%s: %d steps", tc.line, steps)
	}
	// An empty table prints an empty map.
	empty := newManager(Config{Dump: true})
	for _, line := range []string{"dump", "dump shared"} {
		b := benchBatch(line)
		empty.runBatch(owner, b)
		<-owner.done
		if got := string(b.dump.appendStep(nil)); !b.dump.done() || got != "map[]\n" {
			t.Errorf("%s of an empty table: %q", line, got)
		}
	}
}

// TestDumpSlowReader: a client that asks for a dump of a big table and does
// not read it costs the server about a step of memory, not the table's
// listing, and the manager goes on serving others meanwhile; once it reads,
// it gets every lock once.
func TestDumpSlowReader(t *testing.T) {
	srv := startServer(t, nil)
	// Lines of about 80 bytes: the listing, 8 MB, is more than the
	// kernel's socket buffers take.
	n := 100_000
	if testing.Short() {
		n = 40_000
	}
	pad := "lock-" + strings.Repeat("x", 50) + "-"
	owner, err := net.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	go func() {
		w := bufio.NewWriterSize(owner, 64<<10)
		for i := range n {
			fmt.Fprintf(w, "g %s%d\n", pad, i)
		}
		w.Flush()
	}()
	or := bufio.NewReader(owner)
	for range n {
		if _, err := or.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// A small receive buffer, set before the connection is made (the
	// window scale is chosen then): the kernel holds little of the dump.
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
	}}
	slow, err := dialer.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("d\nping\n")); err != nil {
		t.Fatal(err)
	}
	// Others are served while the dump waits for its reader.
	bystander := dial(t, srv, "tcp")
	for range 20 {
		bystander.expect("i x", "0 Lock Not Locked: x\n")
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// A step is 4096 lines, about 330 KB.
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap grown by %d bytes while a dump of %d locks waits for its reader", grown, n)
	if limit := int64(2 << 20); grown > limit {
		t.Errorf("the heap grew by %d bytes while a dump of %d locks waits for its reader, want under %d (a few steps)", grown, n, limit)
	}
	r := bufio.NewReader(slow)
	seen := make(map[string]bool, n)
	slow.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "1 pong\n" {
			break
		}
		if seen[l] {
			t.Fatalf("%q listed twice", l)
		}
		seen[l] = true
	}
	if len(seen) != n {
		t.Fatalf("d listed %d locks, want %d", len(seen), n)
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
// waiters, the exclusive table first; dl NAME filters; -dump=false disables
// it.
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
			m := re.FindStringSubmatch(lines[0])
			if m == nil {
				t.Fatalf("dl exclusive line %q", lines[0])
			}
			if ms, _ := strconv.Atoi(m[1]); ms < 30 || ms > 60_000 {
				t.Fatalf("held_ms %d", ms)
			}
			if !regexp.MustCompile(`^S: alice smith shared held_ms=\d+ holders=2 waiters=0$`).MatchString(lines[1]) ||
				!regexp.MustCompile(`^S: `+regexp.QuoteMeta(b.name)+` shared held_ms=\d+ holders=2 waiters=0$`).MatchString(lines[2]) {
				t.Fatalf("dl shared lines %q", lines[1:])
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
// the exclusive queues before the shared ones (locks in no order), shared
// waiters marked; dw NAME filters; -dump=false disables it.
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
				"X: " + names[0],
				"X: " + names[2],
				"X: " + names[4],
				"S: " + names[3] + " shared", // the shared queues in no order
				"X: " + names[1] + " shared",
			}
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			if len(lines) != len(want) {
				t.Fatalf("dw: %q", got)
			}
			prefixes := make([]string, len(lines))
			for i, l := range lines {
				prefix, ms, ok := strings.Cut(l, " queued_ms=")
				n, err := strconv.Atoi(ms)
				if !ok || err != nil || n < 30 || n > 60_000 {
					t.Fatalf("dw line %d: %q, want queued_ms=N (N >= 30)", i, l)
				}
				prefixes[i] = prefix
			}
			slices.Sort(prefixes[3:])
			if !slices.Equal(prefixes, want) {
				t.Fatalf("dw: %q, want the lines %q", got, want)
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
			m.wait(c, []byte(name), false, 0, proto.NoWait, false)
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

// TestRegistrySteps: who's walk resumes after the last registration it
// listed when the list has been compacted between its steps, and lists a
// connection registered again once, at its new place.
func TestRegistrySteps(t *testing.T) {
	r := newRegistry()
	conns := make([]*connState, 1000)
	for i := range conns {
		conns[i] = newConnState(strconv.Itoa(i), "tcp")
		r.register(conns[i], "x")
	}
	var got []string
	step := r.steps(func(c *connState) { got = append(got, c.name) })
	if step(100) {
		t.Fatal("a step of 100 of 1000 registrations was the last")
	}
	for _, c := range conns[100:900] {
		r.remove(c)
	}
	if len(r.order) > 500 {
		t.Fatalf("%d entries for 200 registrations: not compacted", len(r.order))
	}
	r.register(conns[950], "again")
	for !step(7) {
	}
	var want []string
	for i := range 100 {
		want = append(want, strconv.Itoa(i))
	}
	for i := 900; i < 1000; i++ {
		if i != 950 {
			want = append(want, strconv.Itoa(i))
		}
	}
	want = append(want, "950")
	if !slices.Equal(got, want) {
		t.Fatalf("who listed %v, want %v", got, want)
	}
}

// BenchmarkDumpStream measures one client's d of a table of 1<<18 locks,
// read as fast as it comes: time and, with -benchmem, what the server (and
// the client's reads, which allocate nothing) allocates per dump.
// Run: go test -run '^$' -bench DumpStream -benchmem .
func BenchmarkDumpStream(b *testing.B) {
	srv := benchServer(b)
	srv.manager.dumpEnabled = true
	const locks = 1 << 18
	owner, err := net.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer owner.Close()
	go func() {
		w := bufio.NewWriterSize(owner, 64<<10)
		for i := range locks {
			fmt.Fprintf(w, "g lock%d\n", i)
		}
		w.Flush()
	}()
	r := bufio.NewReader(owner)
	for range locks {
		if _, err := r.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
	}
	nc, err := net.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	buf := make([]byte, 1<<20)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := nc.Write([]byte("d\nping\n")); err != nil {
			b.Fatal(err)
		}
		// The ping's reply ends the dump: read until the last bytes read
		// are it.
		const pong = "\n1 pong\n"
		var tail []byte
		for string(tail) != pong {
			n, err := nc.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			tail = append(tail, buf[max(0, n-len(pong)):n]...)
			tail = tail[max(0, len(tail)-len(pong)):]
		}
	}
}
