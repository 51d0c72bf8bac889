package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/transport"
	"github.com/glockd/glockd/internal/wire"
	"golang.org/x/net/websocket"
)

// lineCase is one line sent in pieces, with the reply it must get.
type lineCase struct {
	pieces []string // written one at a time, with a pause between
	want   string
}

// TestMaxLineBoundary sends lines of exactly -max-line bytes and one more,
// with and without "\r", whole and in pieces that stop right at the edges
// the reader has to get right. Each gets one reply, and the next command on
// the connection works.
func TestMaxLineBoundary(t *testing.T) {
	const maxLine = 100
	serve := func(t *testing.T) *Server { return startServer(t, func(c *Config) { c.MaxLine = maxLine }) }
	// fits is a command of exactly n bytes that locks a name only it uses.
	var locked []string
	fits := func(n int) (string, string) {
		name := fmt.Sprintf("%c%s", 'a'+len(locked), strings.Repeat("n", n-3))
		locked = append(locked, name)
		return "g " + name, "1 Lock Get Success: " + name + "\n"
	}
	// tooLong is a line of n bytes whose part past max-line is the start
	// of "g evil": a reader that cut lines at max-line would run it.
	tooLong := func(n int) string {
		return strings.Repeat("x", maxLine) + "g evil"[:n-maxLine]
	}
	const tl = "0 Line Too Long\n"
	ok1, want1 := fits(maxLine)
	ok2, want2 := fits(maxLine)
	ok3, want3 := fits(maxLine)
	ok4, want4 := fits(maxLine - 1)
	huge := strings.Repeat("y", maxLine) + "g evil" + strings.Repeat("z", 5000)
	stream := []lineCase{
		{[]string{ok1 + "\n"}, want1},
		{[]string{ok2 + "\r\n"}, want2},
		{[]string{tooLong(maxLine+1) + "\n"}, tl},
		{[]string{tooLong(maxLine+1) + "\r\n"}, tl},
		{[]string{tooLong(maxLine+2) + "\r\n"}, tl},
		// max-line bytes and "\r" are buffered without a newline: still valid.
		{[]string{ok3 + "\r", "\n"}, want3},
		{[]string{ok4, "\r", "\n"}, want4},
		// max-line+1 bytes without a newline: too long only if no "\r" is
		// in them, which the reader cannot know yet.
		{[]string{tooLong(maxLine + 1), "\n"}, tl},
		{[]string{tooLong(maxLine + 1), "\r\n"}, tl},
		// Answered before the newline arrives; the rest is discarded.
		{[]string{tooLong(maxLine+1) + "\r", "\n"}, tl},
		{[]string{tooLong(maxLine + 2), "g evil", "\n"}, tl},
		{chop(huge+"\n", 7), tl},
		{[]string{huge + "\n"}, tl},
	}
	streamLocked := locked
	for _, tr := range []string{"tcp", "unix"} {
		t.Run(tr, func(t *testing.T) {
			c := dial(t, serve(t), tr)
			for i, lc := range stream {
				for j, p := range lc.pieces {
					if j > 0 && len(lc.pieces) <= 3 {
						time.Sleep(20 * time.Millisecond) // let the server read the piece alone
					}
					c.send(p)
				}
				c.send("ping\n")
				if got := c.line(); got != lc.want {
					t.Fatalf("case %d (%d bytes in %d pieces): got %q, want %q", i, len(strings.Join(lc.pieces, "")), len(lc.pieces), got, lc.want)
				}
				if got := c.line(); got != "1 pong\n" {
					t.Fatalf("case %d: after the line, got %q, want the pong", i, got)
				}
			}
			c.expect("i evil", "0 Lock Not Locked: evil\n")
			checkDump(t, c, streamLocked)
			c.close()
		})
	}
	t.Run("websocket", func(t *testing.T) {
		locked = nil
		c := dial(t, serve(t), "websocket")
		var cases []lineCase
		for _, end := range []string{"", "\r", "\n", "\r\n"} {
			ok, want := fits(maxLine)
			cases = append(cases,
				lineCase{[]string{ok + end}, want},
				lineCase{[]string{tooLong(maxLine+1) + end}, tl},
				lineCase{[]string{tooLong(maxLine+2) + end}, tl},
			)
		}
		cases = append(cases,
			lineCase{[]string{huge}, tl},
			// Over the biggest message: refused without being buffered.
			lineCase{[]string{strings.Repeat("w", transport.MaxMessage(maxLine)+1)}, tl},
		)
		for i, lc := range cases {
			c.send(lc.pieces[0])
			if got := c.line(); got != lc.want {
				t.Fatalf("case %d (%d bytes): got %q, want %q", i, len(lc.pieces[0]), got, lc.want)
			}
			c.expect("ping", "1 pong\n")
		}
		// A too-long line among others in one message: one reply each.
		ok, want := fits(maxLine)
		c.send("ping\n" + tooLong(maxLine+1) + "\r\n" + ok + "\r\nping")
		for _, w := range []string{"1 pong\n", tl, want, "1 pong\n"} {
			if got := c.line(); got != w {
				t.Fatalf("mixed message: got %q, want %q", got, w)
			}
		}
		c.expect("i evil", "0 Lock Not Locked: evil\n")
		checkDump(t, c, locked)
	})
}

// chop cuts s into pieces of n bytes.
func chop(s string, n int) []string {
	var pieces []string
	for len(s) > n {
		pieces = append(pieces, s[:n])
		s = s[n:]
	}
	return append(pieces, s)
}

// checkDump checks that c holds exactly the exclusive locks names.
func checkDump(t *testing.T, c *client, names []string) {
	t.Helper()
	var entries []string
	for _, n := range names {
		entries = append(entries, n+":"+c.name)
	}
	slices.Sort(entries)
	if got, want := c.do("dump"), "map["+strings.Join(entries, " ")+"]\n"; got != want {
		t.Fatalf("dump: got %q, want %q", got, want)
	}
}

// procStatus reads /proc/self/status into a fixed buffer, so that watching
// the memory does not itself allocate.
type procStatus struct {
	f   *os.File
	buf [8192]byte
}

// read returns the value of a "Vm…: N kB" line in bytes, or -1.
func (p *procStatus) read(key string) int64 {
	n, _ := p.f.ReadAt(p.buf[:], 0)
	b := p.buf[:n]
	i := bytes.Index(b, []byte("\n"+key+":"))
	if i < 0 {
		return -1
	}
	var kb int64
	for _, c := range b[i+len(key)+2:] {
		switch {
		case c >= '0' && c <= '9':
			kb = kb*10 + int64(c-'0')
		case c == ' ' || c == '\t':
		default:
			return kb << 10
		}
	}
	return -1
}

// peakRSS watches the process's resident memory while a test runs: the
// kernel's own high-water mark when it can be reset, else samples.
type peakRSS struct {
	status   *procStatus
	baseline int64
	hwm      bool // VmHWM was reset at the baseline
	peak     atomic.Int64
	stop     chan struct{}
	done     chan struct{}
}

func watchRSS(t *testing.T) *peakRSS {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("cannot watch memory: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	p := &peakRSS{status: &procStatus{f: f}, stop: make(chan struct{}), done: make(chan struct{})}
	runtime.GC()
	// "5" resets VmHWM to the current RSS (Linux 4.0+).
	p.hwm = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	if p.baseline = p.status.read("VmRSS"); p.baseline < 0 {
		t.Skip("no VmRSS in /proc/self/status")
	}
	p.peak.Store(p.baseline)
	if p.hwm {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
				if r := p.status.read("VmRSS"); r > p.peak.Load() {
					p.peak.Store(r)
				}
			}
		}
	}()
	return p
}

// growth stops watching and returns by how much the RSS peaked over the
// baseline.
func (p *peakRSS) growth() int64 {
	close(p.stop)
	<-p.done
	peak := max(p.peak.Load(), p.status.read("VmRSS"))
	if p.hwm {
		peak = max(peak, p.status.read("VmHWM"))
	}
	return peak - p.baseline
}

// TestHugeLineMemory sends 100 MB without a newline: the server answers
// "0 Line Too Long" once, discards the rest as it arrives, and its memory
// (this process's: the server runs in it) barely moves.
func TestHugeLineMemory(t *testing.T) {
	const (
		total    = 100 << 20
		warmUp   = 4 << 20
		maxGrow  = 20 << 20
		chunkLen = 64 << 10
	)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), chunkLen/16)
	for _, tr := range []string{"tcp", "websocket", "websocket-fragmented"} {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			c := dial(t, srv, strings.TrimSuffix(tr, "-fragmented"))
			c.expect("g before", "1 Lock Get Success: before\n")
			hugeLine := func(size int) {
				switch tr {
				case "tcp":
					for sent := 0; sent < size; sent += chunkLen {
						writeAll(t, c.nc, chunk)
					}
					c.send("\nping\n")
				case "websocket":
					// One text frame, written by hand: the client library
					// would build it in memory. The zero masking key leaves
					// the payload as it is.
					var header [14]byte
					header[0], header[1] = 0x81, 0x80|127
					binary.BigEndian.PutUint64(header[2:], uint64(size))
					writeAll(t, c.nc, header[:])
					for sent := 0; sent < size; sent += chunkLen {
						writeAll(t, c.nc, chunk)
					}
					c.send("ping")
				case "websocket-fragmented":
					// One message in frames of 32 KiB, and an empty last one.
					const fragment = 32 << 10
					for sent := 0; sent < size; sent += fragment {
						b0 := byte(0x00) // continuation
						if sent == 0 {
							b0 = 0x01 // text, not final
						}
						writeAll(t, c.nc, []byte{b0, 0x80 | 126, fragment >> 8, fragment & 0xff, 0, 0, 0, 0})
						writeAll(t, c.nc, chunk[:fragment])
					}
					writeAll(t, c.nc, []byte{0x80, 0x80, 0, 0, 0, 0})
					c.send("ping")
				}
				if got := c.line(); got != "0 Line Too Long\n" {
					t.Fatalf("after %d MB: got %q", size>>20, got)
				}
				if got := c.line(); got != "1 pong\n" {
					t.Fatalf("after %d MB: got %q, want the pong", size>>20, got)
				}
			}
			// The same on a small scale first, so that the baseline has
			// what any traffic needs (the GC's working set); what grows
			// with the size of the line is what counts.
			hugeLine(warmUp)
			rss := watchRSS(t)
			hugeLine(total)
			grew := rss.growth()
			t.Logf("RSS grew by %.1f MB while 100 MB went by", float64(grew)/(1<<20))
			if grew > maxGrow {
				t.Fatalf("RSS grew by %d MB", grew>>20)
			}
			// The connection still works and kept its lock.
			c.expect("i before", "1 Lock Is Locked: before\n")
		})
	}
}

// TestQueuedBehindWaitMemory: commands sent behind a gw that waits are
// queued, but only up to a bound; past it the client is told and its
// connection ends (its reader never stops watching the socket), rather than
// the server's memory growing. Under the bound, the queue drains in order.
func TestQueuedBehindWaitMemory(t *testing.T) {
	const (
		maxGrow = 20 << 20
		limit   = 256 << 20 // the server reading this much means no bound
	)
	srv := startServer(t, nil)
	holder, c := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	holder.expect("g busy", "1 Lock Get Success: busy\n")
	c.send("gw -1 busy\n")
	waitersQueued(t, srv, 1, "the gw waits")
	rss := watchRSS(t)
	chunk := bytes.Repeat([]byte("i x\n"), 16<<10)
	sent := 0
	for sent < limit {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := c.nc.Write(chunk)
		sent += n
		if err != nil {
			break // the server has closed the connection, or stopped reading
		}
	}
	grew := rss.growth()
	t.Logf("the server stopped after %.1f MB; RSS grew by %.1f MB", float64(sent)/(1<<20), float64(grew)/(1<<20))
	if sent >= limit {
		t.Fatalf("the server read %d MB queued behind a wait", sent>>20)
	}
	if grew > maxGrow {
		t.Fatalf("RSS grew by %d MB", grew>>20)
	}
	if got := c.line(); got != wire.QueueFull {
		t.Fatalf("over the queue limit: %q, want %q", got, wire.QueueFull)
	}
	waitersQueued(t, srv, 0, "the waiter gone")

	// Under the limit: released, the wait ends and the queue drains in order.
	c = dial(t, srv, "tcp")
	c.send("gw -1 busy\n" + strings.Repeat("i x\n", 1000))
	holder.expect("r busy", "1 Lock Release Success: busy\n")
	if got := c.line(); got != "1 Lock Get Success: busy\n" {
		t.Fatalf("after the release: %q", got)
	}
	for range 1000 {
		if got := c.line(); got != "0 Lock Not Locked: x\n" {
			t.Fatalf("queued command: %q", got)
		}
	}
}

func writeAll(t *testing.T, nc net.Conn, b []byte) {
	t.Helper()
	nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readToEnd reads what the server sends until it closes the connection.
func readToEnd(t *testing.T, nc net.Conn, ws *websocket.Conn) []string {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	if ws != nil {
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("connection not closed: %v (got %q)", err, got)
				}
				return got
			}
			got = append(got, msg)
		}
	}
	r := bufio.NewReader(nc)
	for {
		l, err := r.ReadString('\n')
		if l != "" {
			got = append(got, l)
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection not closed: %v (got %q)", err, got)
			}
			return got
		}
	}
}

// TestMaxConns fills the server with one connection per transport; the next
// one, on any transport, is told "0 Too Many Connections" and closed, and the
// ones already in are not disturbed. A slot freed is usable again.
func TestMaxConns(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.MaxConns = len(transports) })
	var in []*client
	for _, tr := range transports {
		c := dial(t, srv, tr)
		c.expect("g held-"+tr, "1 Lock Get Success: held-"+tr+"\n")
		in = append(in, c)
	}
	for _, tr := range transports {
		nc, ws := rawDial(t, srv, tr)
		if got := readToEnd(t, nc, ws); len(got) != 1 || got[0] != "0 Too Many Connections\n" {
			t.Fatalf("%s: connection over the limit got %q, want one \"0 Too Many Connections\" and the end", tr, got)
		}
	}
	// Refused connections do not count, nor hold anything.
	if n := in[0].stat("connections"); n != len(transports) {
		t.Fatalf("connections = %d, want %d", n, len(transports))
	}
	for i, tr := range transports {
		in[i].expect("i held-"+tr, "1 Lock Is Locked: held-"+tr+"\n")
	}
	for _, tr := range transports {
		in[0].close()
		eventually(t, "the slot is freed", func() bool { return in[1].stat("connections") == len(transports)-1 })
		in[0] = dial(t, srv, tr)
		in[0].expect("ping", "1 pong\n")
	}
}

// TestMaxLocksPerConn holds a connection at its limit: every way of taking
// one more lock is refused with "0 Too Many Locks", taking one it already
// holds is not, and releasing one makes room.
func TestMaxLocksPerConn(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, func(c *Config) { c.MaxLocksPerConn = 3 })
			c, other := dial(t, srv, tr), dial(t, srv, tr)
			other.expect("g busy", "1 Lock Get Success: busy\n")
			other.expect("sg sbusy", "1 Shared Lock Get Success: sbusy\n")
			c.expect("g a", "1 Lock Get Success: a\n")
			c.expect("sg b", "1 Shared Lock Get Success: b\n")
			c.expect("sgw 0 5 c", "1 Shared Lock Get Success: c\n")
			for _, cmd := range []string{"g d", "sg d", "gw 0 d", "gw 100 d", "gw -1 d", "sgw 0 5 d", "sgw 100 5 d", "sgw -1 5 d", "sgw 100 1 sbusy", "sg sbusy"} {
				c.expect(cmd, "0 Too Many Locks: "+cmd[strings.LastIndexByte(cmd, ' ')+1:]+"\n")
			}
			// Locks it holds are no more locks.
			c.expect("g a", "1 Lock Get Success: a\n")
			c.expect("gw 100 a", "1 Lock Get Success: a\n")
			c.expect("sg b", "1 Shared Lock Get Success: b\n")
			c.expect("sgw 100 1 c", "1 Shared Lock Get Success: c\n")
			if n := c.stat("locks"); n != 2 {
				t.Fatalf("locks = %d, want 2 (a and busy)", n)
			}
			c.expect("r a", "1 Lock Release Success: a\n")
			c.expect("g d", "1 Lock Get Success: d\n")
			c.expect("g e", "0 Too Many Locks: e\n")
			c.expect("sr c", "1 Shared Lock Release Success: c\n")
			c.expect("sg e", "1 Shared Lock Get Success: e\n")
		})
	}
}

// TestMaxLocksPerConnWait: a gw for a lock someone else holds must not
// queue a connection that is at its limit, or the hand-over puts it over.
func TestMaxLocksPerConnWait(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.MaxLocksPerConn = 1 })
	c, other := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	other.expect("g busy", "1 Lock Get Success: busy\n")
	c.expect("g mine", "1 Lock Get Success: mine\n")
	c.send("gw 5000 busy\n")
	// If it is queued, hand the lock over to it.
	for range 100 {
		if s, _ := srv.manager.askStats(time.Second); s.waiters > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	other.expect("r busy", "1 Lock Release Success: busy\n")
	if got := c.line(); got != "0 Too Many Locks: busy\n" {
		t.Errorf("gw at the limit of 1 lock: got %q, want \"0 Too Many Locks: busy\"; dump: %s", got, other.do("dump"))
	}
}

// TestGarbageInput feeds NUL bytes, invalid UTF-8 and random binary junk on
// every transport: they are ordinary bytes of names and commands, and the
// connection and the server carry on.
func TestGarbageInput(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, func(c *Config) { c.MaxLine = 4096 })
			c := dial(t, srv, tr)
			for _, tt := range []struct{ cmd, want string }{
				{"g \x00", "1 Lock Get Success: \x00\n"},
				{"g a\x00b", "1 Lock Get Success: a\x00b\n"},
				{"i a\x00b", "1 Lock Is Locked: a\x00b\n"},
				{"i a", "0 Lock Not Locked: a\n"},
				{"g \xff\xfe\xfd", "1 Lock Get Success: \xff\xfe\xfd\n"},
				{"sg \xc3\x28 \xe2\x82", "1 Shared Lock Get Success: \xc3\x28 \xe2\x82\n"},
				{"g\x00x", ""}, // the command word is "g\x00x"
				{"\x00", ""},
				{"\xff\xff\xff\xff", ""},
				{"iam \x00\xff", "1 ok\n"},
				{"gw 1 \x00\xff", "1 Lock Get Success: \x00\xff\n"},
				{"gw \x00 x", "0 Invalid Argument: gw \x00 x\n"},
				{"sgw 1 \xff x", "0 Invalid Argument: sgw 1 \xff x\n"},
			} {
				c.expect(tt.cmd, tt.want)
			}
			if got := c.do("t \x00"); !strings.HasSuffix(got, " Lock Token: \x00\n") || strings.HasPrefix(got, "0 ") {
				t.Fatalf("t of a held lock: got %q", got)
			}
			if got := c.do("me"); got != "1 "+c.name+" \x00\xff\n" {
				t.Fatalf("me: %q", got)
			}
			// Random junk, newlines included, in one go: any reply, then
			// the marker's.
			rng := rand.New(rand.NewPCG(1, uint64(len(tr))))
			junk := make([]byte, 256<<10)
			for i := range junk {
				junk[i] = byte(rng.Uint32())
				if junk[i] == '\n' && rng.IntN(4) == 0 {
					junk[i] = 0
				}
			}
			const marker = "i end-of-junk"
			const markerReply = "0 Lock Not Locked: end-of-junk\n"
			if c.ws != nil {
				// Binary and text messages alike.
				for i, part := range chop(string(junk), 16<<10) {
					if i%2 == 0 {
						err := websocket.Message.Send(c.ws, []byte(part))
						if err != nil {
							t.Fatal(err)
						}
					} else {
						c.send(part)
					}
				}
				c.send(marker)
			} else {
				c.send(string(junk) + "\n" + marker + "\n")
			}
			for {
				l := c.line()
				if l == markerReply {
					break
				}
			}
			c.expect("ping", "1 pong\n")
			// The server as a whole is fine: a fresh connection works.
			dial(t, srv, "tcp").expect("ping", "1 pong\n")
		})
	}
}

// TestHugeWaitTimeout: a gw or sgw with a limit too long for a
// time.Duration waits (as good as for ever); it does not time out at once.
func TestHugeWaitTimeout(t *testing.T) {
	srv := startServer(t, nil)
	holder, c := dial(t, srv, "tcp"), dial(t, srv, "tcp")
	for _, ms := range []string{"9223372036855", "18446744073710", "999999999999999999"} {
		for _, tt := range []struct{ take, wait, release, want string }{
			{"g x", "gw " + ms + " x", "r x", "1 Lock Get Success: x\n"},
			{"sgw 0 1 s", "sgw " + ms + " 1 s", "sr s", "1 Shared Lock Get Success: s\n"},
		} {
			if got := holder.do(tt.take); !strings.HasPrefix(got, "1 ") {
				t.Fatalf("%q: %q", tt.take, got)
			}
			c.send(tt.wait + "\n")
			time.Sleep(50 * time.Millisecond)
			holder.do(tt.release)
			if got := c.line(); got != tt.want {
				t.Errorf("%q: got %q, want %q", tt.wait, got, tt.want)
			}
			c.do(tt.release)
		}
	}
}
