package main

import (
	"bytes"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/transport"
	"github.com/glockd/glockd/internal/wire"
)

// The fuzz tests run their committed corpus (testdata/fuzz/…) as ordinary
// tests; run them for real with
//
//	go test -run XXX -fuzz FuzzCommandPath -fuzztime 5m .
//	go test -run XXX -fuzz FuzzParseCommand -fuzztime 5m .

// modelCommand is what a line means, worked out with the strings package
// rather than the parser's own code.
type modelCommand struct {
	verb    string // "" for an unknown command or a blank line, "toolong"
	line    string // the line without its "\r" and surrounding white space
	arg     string // the normalised argument
	name    string // the lock name (for gw and sgw, after MS and MAX)
	ms, max int64
	bad     bool // gw, sgw: MS or MAX malformed
	// cancellable: gw, sgw: a !cancel follows, so the wait may end early.
	cancellable bool
}

var (
	modelVerbs = []string{"g", "r", "i", "sg", "sr", "si", "me", "iam", "who", "d", "sd", "dump", "q", "gw", "sgw", "t", "ping", "!ping", "!cancel", "auth", "kill", "kill-holder", "perms", "dl", "!gw", "!sgw"}
	integerRE  = regexp.MustCompile(`^-?[0-9]{1,18}$`)
)

// modelParse parses one line (without "\n") as the protocol describes it.
func modelParse(line string, maxLine int) modelCommand {
	line = strings.TrimSuffix(line, "\r")
	if len(line) > maxLine {
		return modelCommand{verb: "toolong"}
	}
	s := strings.TrimSpace(line)
	word, rest := s, ""
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		word, rest = s[:i], s[i:]
	}
	if !slices.Contains(modelVerbs, word) {
		return modelCommand{line: s}
	}
	mc := modelCommand{verb: word, line: s}
	fields := strings.Fields(rest)
	mc.arg = strings.Join(fields, " ")
	mc.name = mc.arg
	integer := func(i int) (int64, bool) {
		if i >= len(fields) || !integerRE.MatchString(fields[i]) {
			return 0, false
		}
		n, err := strconv.ParseInt(fields[i], 10, 64)
		return n, err == nil
	}
	switch word {
	case "gw", "!gw":
		var ok bool
		mc.ms, ok = integer(0)
		mc.bad = !ok || mc.ms < -1
		mc.name = strings.Join(fields[min(1, len(fields)):], " ")
	case "sgw", "!sgw":
		var okMS, okMax bool
		mc.ms, okMS = integer(0)
		mc.max, okMax = integer(1)
		mc.bad = !okMS || !okMax || mc.ms < -1 || mc.max < 1
		mc.name = strings.Join(fields[min(2, len(fields)):], " ")
	}
	return mc
}

// modelLines splits a stream into the lines the server must answer (or
// count, for unknown ones): every line ended by "\n", and an unended tail
// only when it is already too long whatever comes next.
func modelLines(data []byte, maxLine int) []modelCommand {
	var cmds []modelCommand
	for {
		line, rest, found := bytes.Cut(data, []byte{'\n'})
		if !found {
			if len(line) > maxLine+1 {
				cmds = append(cmds, modelCommand{verb: "toolong"})
			}
			return cmds
		}
		cmds = append(cmds, modelParse(string(line), maxLine))
		data = rest
	}
}

// verbWords maps the parser's verbs to their words, for comparing with the model.
func verbWord(v proto.Verb) string {
	switch v {
	case proto.VerbInvalid:
		return ""
	case proto.VerbTooLong:
		return "toolong"
	}
	return v.String()
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"g foo", "  g   a  b  ", "g\tfoo", "g\u00a0foo", "g \u00a0x\u2003y\u0085", "gw 10 x", "gw -1", "gw -2 x",
		"gw 999999999999999999 x", "gw 9999999999999999999 x", "sgw 1 2 a b", "sgw 1 0 a", "sgw - 1 a", "gw -0 x",
		"g a\x00b", "g \xff\xfe", "\xff", "dump shared", "iam  x  y ", "q", "", " ", "\t\r", "G x", "g\r",
		"sgw \xe2\x80\x83 5 6 n", "gw +5 x", "gw 5\x00 x",
	} {
		f.Add([]byte(s), []byte("sg other line"))
	}
	f.Fuzz(func(t *testing.T, line, next []byte) {
		if bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(next, '\n') >= 0 {
			t.Skip("a line has no newline")
		}
		orig := string(line)
		cmd, scratch := proto.Parse(line, nil)
		checkParsed(t, orig, cmd)

		// The parser must not have changed its input.
		if string(line) != orig {
			t.Fatalf("proto.Parse changed its input: %q became %q", orig, line)
		}
		if cmd.Verb == proto.VerbInvalid {
			return
		}
		name := string(cmd.Name)

		// Idempotence: the normalised form parses to the same command, and
		// needs no rewriting.
		norm := cmd.Verb.String()
		if arg := strings.Join(strings.Fields(strings.TrimSpace(orig)[len(firstWord(orig)):]), " "); arg != "" {
			norm += " " + arg
		}
		again, scratch2 := proto.Parse([]byte(norm), nil)
		if again.Verb != cmd.Verb || string(again.Name) != name || again.MS != cmd.MS || again.Max != cmd.Max || again.Bad != cmd.Bad {
			t.Fatalf("%q parses to %+v, its normal form %q to %+v", orig, cmd, norm, again)
		}
		if string(again.Line) != norm {
			t.Fatalf("normal form %q: line %q", norm, again.Line)
		}
		if len(scratch2) != 0 && isASCII(norm) {
			t.Fatalf("normal form %q needed rewriting into %q", norm, scratch2)
		}

		// A second command parsed into the same scratch space leaves the
		// first one's name alone.
		second, _ := proto.Parse(next, scratch)
		checkParsed(t, string(next), second)
		if string(cmd.Name) != name {
			t.Fatalf("parsing %q after %q changed the first name from %q to %q", next, orig, name, cmd.Name)
		}
	})
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func firstWord(line string) string {
	s := strings.TrimSpace(line)
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i]
	}
	return s
}

// checkParsed compares a parsed command with the model of the same line.
func checkParsed(t *testing.T, line string, cmd proto.Command) {
	t.Helper()
	mc := modelParse(line, len(line))
	if verbWord(cmd.Verb) != mc.verb {
		t.Fatalf("%q: verb %q, want %q", line, verbWord(cmd.Verb), mc.verb)
	}
	if string(cmd.Line) != mc.line {
		t.Fatalf("%q: line %q, want %q", line, cmd.Line, mc.line)
	}
	if cmd.Verb == proto.VerbInvalid {
		return
	}
	name := string(cmd.Name)
	if name != strings.TrimSpace(name) || strings.Contains(name, "  ") {
		t.Fatalf("%q: name %q is not normalised", line, name)
	}
	if cmd.Bad != mc.bad {
		t.Fatalf("%q: bad = %v, want %v", line, cmd.Bad, mc.bad)
	}
	if cmd.Bad {
		return
	}
	if name != mc.name || cmd.MS != mc.ms || cmd.Max != mc.max {
		t.Fatalf("%q: name %q ms %d max %d, want %q %d %d", line, name, cmd.MS, cmd.Max, mc.name, mc.ms, mc.max)
	}
	if cmd.Verb != proto.VerbGW && cmd.Verb != proto.VerbSGW && !cmd.Verb.Async() && name != mc.arg {
		t.Fatalf("%q: name %q, want strings.Fields's %q", line, name, mc.arg)
	}
}

// inputFeed is where the fuzzed connection's input comes from: a script
// read in chunks, or a real socket (whose reads go through the transport's
// raw syscall path) written in chunks.
type inputFeed interface {
	conn() net.Conn             // the server's end
	exhausted() <-chan struct{} // closed once all the input is out
	end()                       // the client ends the connection
}

// socketFeed writes the input into a unix socket pair.
type socketFeed struct {
	srv, cli net.Conn
	written  chan struct{}
}

func newSocketFeed(t *testing.T, data []byte, seed uint16) *socketFeed {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	sf := &socketFeed{srv: conns[0], cli: conns[1], written: make(chan struct{})}
	chunks := newScriptConn(data, seed).chunks
	go func() {
		defer close(sf.written)
		for _, c := range chunks {
			if _, err := sf.cli.Write(c); err != nil {
				return
			}
		}
	}()
	return sf
}

func (sf *socketFeed) conn() net.Conn             { return sf.srv }
func (sf *socketFeed) exhausted() <-chan struct{} { return sf.written }
func (sf *socketFeed) end() {
	sf.cli.Close()
	<-sf.written
}

// scriptConn is a net.Conn whose reads come from a script in chunks. After
// the script it blocks until the test ends the connection.
type scriptConn struct {
	chunks [][]byte
	done   chan struct{} // closed when a read finds the script used up
	eof    chan struct{} // closed by the test: reads return io.EOF
	once   sync.Once
}

func newScriptConn(data []byte, seed uint16) *scriptConn {
	sc := &scriptConn{done: make(chan struct{}), eof: make(chan struct{})}
	if seed == 0 {
		sc.chunks = [][]byte{data}
		return sc
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(int(seed%300)+1))
		sc.chunks = append(sc.chunks, data[:n])
		data = data[n:]
	}
	return sc
}

func (sc *scriptConn) Read(p []byte) (int, error) {
	for len(sc.chunks) > 0 && len(sc.chunks[0]) == 0 {
		sc.chunks = sc.chunks[1:]
	}
	if len(sc.chunks) > 0 {
		n := copy(p, sc.chunks[0])
		sc.chunks[0] = sc.chunks[0][n:]
		return n, nil
	}
	sc.once.Do(func() { close(sc.done) })
	<-sc.eof
	return 0, io.EOF
}

func (sc *scriptConn) conn() net.Conn             { return sc }
func (sc *scriptConn) exhausted() <-chan struct{} { return sc.done }
func (sc *scriptConn) end()                       { close(sc.eof) }

func (sc *scriptConn) Write(p []byte) (int, error)      { return len(p), nil }
func (sc *scriptConn) Close() error                     { return nil }
func (sc *scriptConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (sc *scriptConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (sc *scriptConn) SetDeadline(time.Time) error      { return nil }
func (sc *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (sc *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// recordingTransport is the line protocol's reader with a writer that keeps
// each command's reply apart, as the websocket transport gets them.
type recordingTransport struct {
	*transport.Stream
	mu      sync.Mutex
	replies []string
	wrote   chan struct{}
}

func (rt *recordingTransport) Write(out []byte, ends []int) error {
	rt.mu.Lock()
	start := 0
	for _, end := range ends {
		rt.replies = append(rt.replies, string(out[start:end]))
		start = end
	}
	if start != len(out) {
		rt.replies = append(rt.replies, "UNENDED REPLY "+string(out[start:]))
	}
	rt.mu.Unlock()
	select {
	case rt.wrote <- struct{}{}:
	default:
	}
	return nil
}

func (rt *recordingTransport) count() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.replies)
}

const (
	fuzzMaxLine  = 64
	fuzzMaxLocks = 4
	fuzzConn     = "fuzz:1"
	fuzzOther    = "other"
)

// FuzzCommandPath feeds arbitrary bytes, in arbitrary chunks (from a script,
// or through a real socket when chunking is odd), through the real command
// path: the line reader, the parser, the connection's batching
// and waiting, the manager and the replies. Another connection holds "busy"
// and shared "sbusy" until the input has been read, so that gw and sgw can
// wait. Every line must get exactly one reply (empty for unknown ones), the
// reply must be the one a model of the protocol allows, nothing may hang,
// and when the connection ends the manager must be empty.
func FuzzCommandPath(f *testing.F) {
	for _, s := range []string{
		"g a\nr a\ni a\n",
		"sg s\nsi s\nsr s\nsi s\n",
		"gw 50 busy\ni busy\nping\n",
		"gw -1 busy\nq\n",
		"sgw 10 1 sbusy\nsgw -1 1 x\nsd\n",
		"g a\ng b\ng c\nsg d\ng e\nsg f\ngw 1 e\nsgw 1 2 f\ndump\ndump shared\n",
		"iam me\nme\nwho\nwho me\nd\nsd\niam\nme\n",
		"g\ng \nt\nt a\n\n\n xx\nG a\n",
		"g " + strings.Repeat("x", 70) + "\nping\n",
		strings.Repeat("y", 200),
		"g a\r\ng\tb\r\n\u00a0g c\ng \u00a0d\u2003e \n",
		"g \x00\ng \xff\xfe\ni \xff\xfe\nsg \xc3\n",
		"gw x busy\nsgw 1 0 s\ngw -2 a\nsgw -1 1\n",
		"gw -1 busy\n!ping\ni a\n!cancel\nping\n!cancel\n",
		"g a\nsg b\ndl\ndl a\ndl busy\niam x y\ndl\n",
		"sgw -1 1 sbusy\n!cancel sbusy\nd\ngw -1 busy\n!cancel other\n!ping\n",
		"auth x\nperms\nkill fuzz:1\nkill-holder busy\nq\n",
		"!gw -1 busy\ni a\n!gw 0 a\nt a\n!gw 5 busy\n!sgw -1 1 sbusy\nq\n",
		"!gw 10 busy\ngw -1 x\n!cancel busy\n!gw x y\n!sgw 0 0 s\n!gw 0 a b\nr a b\n",
		"gw -1 busy\n!gw -1 busy\nr busy\ni busy\ndl busy\n!cancel\n",
		"g a\ng b\ng c\n!gw -1 busy\n!gw 0 d\n!sgw 0 2 e\nsg sbusy\n!sgw 1 1 sbusy\n",
		// Its own !sgw pending when it takes the semaphore with sg, with
		// other waits pending: granted, never a wait for itself (a deadlock).
		"g a\n!gw -1 busy\n!sgw -1 1 sbusy\nsg sbusy\nq\nsr sbusy\n",
	} {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s), uint16(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunking uint16) {
		runCommandPath(t, data, chunking)
	})
}

func runCommandPath(t *testing.T, data []byte, chunking uint16) {
	// A server that is not started: its manager runs, but no listener.
	srv, err := NewServer(Config{Registry: true, Dump: true, MaxLine: fuzzMaxLine, MaxLocksPerConn: fuzzMaxLocks})
	if err != nil {
		t.Fatal(err)
	}
	cfg, m := srv.cfg, srv.manager
	go m.run()
	defer func() {
		m.send(request{kind: requestStop})
		<-m.stopped
	}()

	other := newConnState(fuzzOther, "test")
	m.send(request{kind: requestConnect, conn: other})
	var scratch []byte
	var b batch
	for _, l := range []string{"g busy", "sg sbusy"} {
		var cmd proto.Command
		cmd, scratch = proto.Parse([]byte(l), scratch)
		b.cmds = append(b.cmds, cmd)
	}
	m.execute(other, &b)
	if string(b.out) != wire.Reply(1, wire.GetSuccess, "busy")+wire.Reply(1, wire.SharedGetSuccess, "sbusy") {
		t.Fatalf("setup: %q", b.out)
	}

	var in inputFeed
	if chunking%2 == 0 {
		in = newScriptConn(data, chunking)
	} else {
		in = newSocketFeed(t, data, chunking)
	}
	rt := &recordingTransport{Stream: transport.NewStream(in.conn(), cfg.MaxLine, &srv.readBuffers), wrote: make(chan struct{}, 1)}
	c := newConn(srv, fuzzConn, "test", rt)
	served := make(chan struct{})
	go func() {
		defer close(served)
		c.serve()
	}()
	ended := false
	defer func() {
		if !ended {
			in.end()
			select {
			case <-served:
			case <-time.After(10 * time.Second):
				t.Error("the connection's goroutine is stuck")
			}
		}
	}()

	// The other connection leaves, so that every wait ends, once the input
	// is all out and then every line is answered, or (in half the runs,
	// chosen by chunking) a wait is queued, or nothing has moved for a
	// moment: a wait is pending, and its time limit may pass first.
	leaveAtWait := chunking&2 != 0
	want := modelLines(data, cfg.MaxLine)
	idle := time.NewTimer(20 * time.Millisecond)
	poll := time.NewTicker(200 * time.Microsecond)
	exhausted := in.exhausted()
	for leave := false; !leave; {
		select {
		case <-exhausted:
			exhausted = nil
		case <-rt.wrote:
			idle.Reset(20 * time.Millisecond)
		case <-idle.C:
			leave = true
		case <-poll.C:
		}
		if exhausted == nil && rt.count() >= len(want) {
			leave = true
		}
		if exhausted == nil && leaveAtWait {
			if s, ok := m.askStats(time.Second); ok && s.waiters > 0 {
				leave = true
			}
		}
	}
	idle.Stop()
	poll.Stop()
	m.send(request{kind: requestDisconnect, conn: other})

	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for rt.count() < len(want) {
		select {
		case <-rt.wrote:
		case <-deadline.C:
			rt.mu.Lock()
			got := slices.Clone(rt.replies)
			rt.mu.Unlock()
			t.Fatalf("hang: %d replies to %d lines after 10s; replies %q", len(got), len(want), got)
		}
	}
	in.end()
	ended = true
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection does not end")
	}
	if n := rt.count(); n != len(want) {
		t.Fatalf("%d replies to %d lines: %q", n, len(want), rt.replies)
	}

	// Out-of-band replies come as soon as their command is read, maybe
	// before replies of commands read earlier: they are checked apart, and
	// the others in order.
	var inOrder []modelCommand
	var outOfBand []string
	cancel := false
	for i := len(want) - 1; i >= 0; i-- {
		mc := want[i]
		switch mc.verb {
		case "!ping":
			outOfBand = append(outOfBand, wire.NowPong)
			continue
		case "!cancel":
			outOfBand = append(outOfBand, "!cancel")
			cancel = true
			continue
		}
		mc.cancellable = cancel
		inOrder = append(inOrder, mc)
	}
	slices.Reverse(inOrder)
	var gotInOrder, gotOutOfBand []string
	outcomes := map[string][]string{} // the outcome lines of !gw and !sgw, by "VERB NAME"
	waited := map[string]bool{}       // "VERB NAME" of every !gw and !sgw
	for _, mc := range inOrder {
		if mc.verb == "!gw" || mc.verb == "!sgw" {
			waited[mc.verb+" "+mc.name] = true
		}
	}
	for _, r := range rt.replies {
		switch r {
		case wire.NowPong, wire.Cancelled, wire.NothingPending:
			gotOutOfBand = append(gotOutOfBand, r)
		default:
			// (A d line of a lock named "!gw 1 2 x" looks like one too.)
			if key, ok := outcomeKey(r); ok && waited[key] {
				outcomes[key] = append(outcomes[key], r)
				continue
			}
			gotInOrder = append(gotInOrder, r)
		}
	}
	if len(gotOutOfBand) != len(outOfBand) {
		t.Fatalf("%d out-of-band replies to %d commands: %q", len(gotOutOfBand), len(outOfBand), gotOutOfBand)
	}
	slices.Sort(outOfBand)
	slices.Sort(gotOutOfBand)
	for i, r := range gotOutOfBand {
		if want := outOfBand[i]; r != want && !(want == "!cancel" && strings.HasPrefix(r, "!cancel ")) {
			t.Fatalf("out-of-band replies %q, want %q", gotOutOfBand, outOfBand)
		}
	}
	model := newConnModel()
	next := 0
	for i, mc := range inOrder {
		got := ""
		if mc.verb == "!gw" || mc.verb == "!sgw" {
			// Its outcome: outcomes on one name come in the order their
			// waits were decided, which for any name but busy and sbusy
			// (the only ones that can queue) is the order of the lines.
			key := mc.verb + " " + mc.name
			if len(outcomes[key]) == 0 {
				t.Fatalf("line %d %q: no outcome line; outcomes %q", i, mc.line, outcomes)
			}
			got, outcomes[key] = outcomes[key][0], outcomes[key][1:]
		} else {
			if next >= len(gotInOrder) {
				t.Fatalf("line %d %q: no reply left; replies %q", i, mc.line, gotInOrder)
			}
			got = gotInOrder[next]
			next++
		}
		model.check(t, i, mc, got)
	}
	for key, left := range outcomes {
		if len(left) > 0 {
			t.Fatalf("outcome lines %q of no %s", left, key)
		}
	}

	snap, ok := m.askStats(10 * time.Second)
	if !ok {
		t.Fatal("manager does not answer")
	}
	if snap.connections != 0 || snap.locks != 0 || snap.sharedLocks != 0 || snap.waiters != 0 {
		t.Fatalf("after both connections ended: %+v", snap)
	}
	// A !gw busy or !sgw sbusy may have been granted when the other
	// connection left, and orphaned in the end: one more orphan allowed.
	if wantOrphans := uint64(1 + len(model.held)); snap.orphans != wantOrphans && !(model.asyncBusy && snap.orphans == wantOrphans+1) {
		t.Fatalf("orphans = %d, want %d (busy and %v)", snap.orphans, wantOrphans, model.held)
	}
	if wantOrphans := uint64(1 + len(model.sheld)); snap.sharedOrphans != wantOrphans && !(model.asyncSbusy && snap.sharedOrphans == wantOrphans+1) {
		t.Fatalf("shared orphans = %d, want %d (sbusy and %v)", snap.sharedOrphans, wantOrphans, model.sheld)
	}
}

// connModel is what the fuzzed connection holds, as its replies tell. The
// other connection's "busy" and "sbusy" are held or not depending on
// whether it has left yet, so the model allows both for them.
type connModel struct {
	held, sheld map[string]bool
	reg         string
	registered  bool
	// asyncBusy, asyncSbusy: a !gw busy (!sgw sbusy) was sent that may be
	// granted at a moment the model cannot know (when the other connection
	// leaves). From then on the model allows both states of that name, and
	// keeps it out of held (sheld).
	asyncBusy, asyncSbusy bool
}

func newConnModel() *connModel {
	return &connModel{held: map[string]bool{}, sheld: map[string]bool{}}
}

func (cm *connModel) count() int { return len(cm.held) + len(cm.sheld) }

// variants are the states the connection may be in: itself, or, while a
// grant of an asynchronous wait on busy or sbusy may have come, copies with
// the name held and not.
func (cm *connModel) variants() []*connModel {
	vs := []*connModel{cm}
	if !cm.asyncBusy && !cm.asyncSbusy {
		return vs
	}
	vs = nil
	for _, busy := range []bool{false, true} {
		for _, sbusy := range []bool{false, true} {
			if (busy && !cm.asyncBusy) || (sbusy && !cm.asyncSbusy) {
				continue
			}
			v := &connModel{held: maps.Clone(cm.held), sheld: maps.Clone(cm.sheld), reg: cm.reg, registered: cm.registered,
				asyncBusy: cm.asyncBusy, asyncSbusy: cm.asyncSbusy}
			if busy {
				v.held["busy"] = true
			}
			if sbusy {
				v.sheld["sbusy"] = true
			}
			vs = append(vs, v)
		}
	}
	return vs
}

// adopt takes the state of the variant v whose reply matched, the names
// still in doubt excepted.
func (cm *connModel) adopt(v *connModel) {
	if v == cm {
		return
	}
	cm.held, cm.sheld, cm.reg, cm.registered = v.held, v.sheld, v.reg, v.registered
	cm.asyncBusy, cm.asyncSbusy = v.asyncBusy, v.asyncSbusy
	if cm.asyncBusy {
		delete(cm.held, "busy")
	}
	if cm.asyncSbusy {
		delete(cm.sheld, "sbusy")
	}
}

func (cm *connModel) display() string {
	if cm.registered {
		return cm.reg
	}
	return fuzzConn
}

// alt is one acceptable reply and what it means for the model.
type alt struct {
	reply string
	apply func()
}

func modelReply(n int, text, name string) string { return wire.Reply(uint64(n), text, name) }

// dlReplyRE matches a dl reply of the fuzzed connection and the other one
// (which holds busy and shared sbusy).
var dlReplyRE = regexp.MustCompile(`^(([^\n]*: [^\n]+ (token=\d+ held_ms=\d+|shared held_ms=\d+ holders=\d+) waiters=\d+\n)*)$`)

// waitMayTimeOut: a wait of ms milliseconds can end in a timeout within
// the test's time: the other connection leaves within milliseconds, the
// test gives up after 10 s.
func waitMayTimeOut(ms int64) bool { return ms >= 0 && ms <= 60_000 }

// replyCheck is one reply being checked: the command, the reply, and the
// replies the model allows (each with what it means for the model).
type replyCheck struct {
	cm   *connModel
	mc   modelCommand
	got  string
	alts []alt
}

func (rc *replyCheck) add(reply string, apply func()) { rc.alts = append(rc.alts, alt{reply, apply}) }

func (rc *replyCheck) full() bool { return rc.cm.count() >= fuzzMaxLocks }

// otherShared is the number of holders of the name besides this connection.
func (rc *replyCheck) otherShared() []int {
	if rc.mc.name == "sbusy" {
		return []int{0, 1}
	}
	return []int{0}
}

// checkers is the model's reply checker of each verb.
var checkers = map[string]func(*connModel, *replyCheck){
	"toolong":     (*connModel).checkTooLong,
	"":            (*connModel).checkBlank,
	"g":           (*connModel).checkG,
	"gw":          (*connModel).checkGw,
	"r":           (*connModel).checkR,
	"i":           (*connModel).checkI,
	"t":           (*connModel).checkT,
	"sg":          (*connModel).checkSg,
	"sgw":         (*connModel).checkSg,
	"sr":          (*connModel).checkSr,
	"si":          (*connModel).checkSi,
	"me":          (*connModel).checkMe,
	"iam":         (*connModel).checkIam,
	"who":         (*connModel).checkWho,
	"d":           (*connModel).checkDumps,
	"sd":          (*connModel).checkDumps,
	"dump":        (*connModel).checkDumps,
	"q":           (*connModel).checkQ,
	"ping":        (*connModel).checkPing,
	"dl":          (*connModel).checkDl,
	"auth":        (*connModel).checkDisabled,
	"kill":        (*connModel).checkDisabled,
	"kill-holder": (*connModel).checkDisabled,
	"perms":       (*connModel).checkDisabled,
	"!gw":         (*connModel).checkAsyncGw,
	"!sgw":        (*connModel).checkAsyncSgw,
}

// check compares a reply with those the model allows for its command, and
// applies to the model what the reply means.
func (cm *connModel) check(t *testing.T, i int, mc modelCommand, got string) {
	t.Helper()
	checker := checkers[mc.verb]
	if checker == nil {
		t.Fatalf("line %d: the model does not know %q", i, mc.verb)
	}
	var want []string
	for _, v := range cm.variants() {
		rc := &replyCheck{cm: v, mc: mc, got: got}
		checker(v, rc)
		for _, a := range rc.alts {
			if a.reply == got {
				if a.apply != nil {
					a.apply()
				}
				cm.adopt(v)
				return
			}
			want = append(want, a.reply)
		}
	}
	t.Fatalf("line %d %q (verb %q, name %q, holding %v and shared %v): reply %q, want one of %q", i, mc.line, mc.verb, mc.name, sortedKeys(cm.held), sortedKeys(cm.sheld), got, want)
}

func (*connModel) checkTooLong(rc *replyCheck) {
	add := rc.add
	add(wire.LineTooLong, nil)
}

func (*connModel) checkBlank(rc *replyCheck) {
	add := rc.add
	add("", nil)
}

func (cm *connModel) checkG(rc *replyCheck) {
	n := rc.mc.name
	full := rc.full()
	take := func() { cm.held[rc.mc.name] = true }
	add := rc.add
	switch {
	case cm.held[n]:
		add(modelReply(1, wire.GetSuccess, n), nil)
	case n == "busy" && full:
		add(modelReply(0, wire.GetFailure, n), nil)
		add(modelReply(0, wire.TooManyLocks, n), nil)
	case n == "busy":
		add(modelReply(0, wire.GetFailure, n), nil)
		add(modelReply(1, wire.GetSuccess, n), take)
	case full:
		add(modelReply(0, wire.TooManyLocks, n), nil)
	default:
		add(modelReply(1, wire.GetSuccess, n), take)
	}
}

func (cm *connModel) checkGw(rc *replyCheck) {
	n := rc.mc.name
	full := rc.full()
	take := func() { cm.held[rc.mc.name] = true }
	mc := rc.mc
	add := rc.add
	switch {
	case mc.bad:
		add(wire.Reply(0, wire.InvalidArgument, mc.line), nil)
	case cm.held[n]:
		add(modelReply(1, wire.GetSuccess, n), nil)
	case full:
		add(modelReply(0, wire.TooManyLocks, n), nil)
	case n == "busy":
		add(modelReply(1, wire.GetSuccess, n), take)
		// With a !gw busy pending, gw busy times out at once.
		if waitMayTimeOut(mc.ms) || mc.cancellable || cm.asyncBusy {
			add(modelReply(0, wire.GetTimeout, n), nil)
		}
	default:
		add(modelReply(1, wire.GetSuccess, n), take)
	}
}

// asyncGrantRE matches a grant of !gw, whose token the model does not know.
var asyncGrantRE = regexp.MustCompile(`^!gw 1 [1-9][0-9]* `)

// checkAsyncGw checks the outcome line of a !gw. A wait on busy may queue
// and end any way, at a time the model cannot know; any other name is
// decided at once.
func (cm *connModel) checkAsyncGw(rc *replyCheck) {
	n, mc, add := rc.mc.name, rc.mc, rc.add
	refused := wire.AsyncGWOutcome(false, 0, n)
	grant := func(take func()) {
		if asyncGrantRE.MatchString(rc.got) && strings.TrimPrefix(rc.got, asyncGrantRE.FindString(rc.got)) == n+"\n" {
			add(rc.got, take)
		}
	}
	switch {
	case mc.bad:
		add(refused, nil)
	case cm.held[n]:
		grant(nil)
	case n == "busy":
		add(refused, func() { cm.asyncBusy = true })
		grant(func() { cm.asyncBusy = true })
	case rc.full():
		add(refused, nil)
	default:
		grant(func() { cm.held[n] = true })
	}
}

// checkAsyncSgw checks the outcome line of a !sgw, as checkAsyncGw does.
func (cm *connModel) checkAsyncSgw(rc *replyCheck) {
	n, mc, add := rc.mc.name, rc.mc, rc.add
	refused := wire.AsyncSGWOutcome(0, n)
	switch {
	case mc.bad:
		add(refused, nil)
	case cm.sheld[n]:
		for _, o := range rc.otherShared() {
			add(wire.AsyncSGWOutcome(1+o, n), nil)
		}
	case n == "sbusy":
		for _, holders := range []int{0, 1, 2} {
			add(wire.AsyncSGWOutcome(holders, n), func() { cm.asyncSbusy = true })
		}
	case rc.full():
		add(refused, nil)
	default:
		add(wire.AsyncSGWOutcome(1, n), func() { cm.sheld[n] = true })
	}
}

func (cm *connModel) checkR(rc *replyCheck) {
	n := rc.mc.name
	add := rc.add
	if cm.held[n] {
		add(modelReply(1, wire.ReleaseSuccess, n), func() { delete(cm.held, n) })
	} else {
		add(modelReply(0, wire.ReleaseFailure, n), nil)
	}
}

func (cm *connModel) checkI(rc *replyCheck) {
	n := rc.mc.name
	add := rc.add
	if cm.held[n] || n == "busy" {
		add(modelReply(1, wire.IsLocked, n), nil)
	}
	if !cm.held[n] {
		add(modelReply(0, wire.NotLocked, n), nil)
	}
}

func (cm *connModel) checkT(rc *replyCheck) {
	n := rc.mc.name
	got := rc.got
	add := rc.add
	if !cm.held[n] {
		add(modelReply(0, wire.NotLocked, n), nil)
	}
	if cm.held[n] || n == "busy" {
		// Any token: checked below.
		if f := strings.Fields(got); len(f) > 0 && strings.HasSuffix(got, " "+wire.Token+": "+n+"\n") {
			if tok, err := strconv.ParseUint(f[0], 10, 64); err == nil && tok > 0 {
				add(got, nil)
			}
		}
	}
}

func (cm *connModel) checkSg(rc *replyCheck) {
	n := rc.mc.name
	full := rc.full()
	stake := func() { cm.sheld[rc.mc.name] = true }
	otherShared := rc.otherShared
	mc := rc.mc
	add := rc.add
	if mc.bad {
		add(wire.Reply(0, wire.InvalidArgument, mc.line), nil)
		return
	}
	own := 0
	if cm.sheld[n] {
		own = 1
	}
	if own == 1 {
		for _, o := range otherShared() {
			add(modelReply(own+o, wire.SharedGetSuccess, n), nil)
		}
		return
	}
	if full {
		add(modelReply(0, wire.TooManyLocks, n), nil)
		return
	}
	for _, o := range otherShared() {
		if mc.verb == "sg" || int64(o) < mc.max {
			add(modelReply(1+o, wire.SharedGetSuccess, n), stake)
		}
	}
	if mc.verb == "sgw" && n == "sbusy" && (mc.max == 1 && (waitMayTimeOut(mc.ms) || mc.cancellable) || cm.asyncSbusy) {
		add(modelReply(0, wire.SharedGetTimeout, n), nil)
	}
}

func (cm *connModel) checkSr(rc *replyCheck) {
	n := rc.mc.name
	add := rc.add
	if cm.sheld[n] {
		add(modelReply(1, wire.SharedReleaseSuccess, n), func() { delete(cm.sheld, n) })
	} else {
		add(modelReply(0, wire.SharedReleaseFailure, n), nil)
	}
}

func (cm *connModel) checkSi(rc *replyCheck) {
	n := rc.mc.name
	otherShared := rc.otherShared
	add := rc.add
	own := 0
	if cm.sheld[n] {
		own = 1
	}
	for _, o := range otherShared() {
		if own+o == 0 {
			add(modelReply(0, wire.SharedNotLocked, n), nil)
		} else {
			add(modelReply(own+o, wire.SharedIsLocked, n), nil)
		}
	}
}

func (cm *connModel) checkMe(rc *replyCheck) {
	add := rc.add
	add("1 "+fuzzConn+" "+cm.display()+"\n", nil)
}

func (cm *connModel) checkIam(rc *replyCheck) {
	n := rc.mc.name
	add := rc.add
	if n == "" {
		add(wire.OK, func() { cm.reg, cm.registered = "", false })
	} else {
		add(wire.OK, func() { cm.reg, cm.registered = n, true })
	}
}

func (cm *connModel) checkWho(rc *replyCheck) {
	n := rc.mc.name
	add := rc.add
	if cm.registered && (n == "" || n == cm.reg) {
		add(fuzzConn+": "+cm.reg+"\n", nil)
	} else {
		add("", nil)
	}
}

// checkDumps accepts the table in any order of its locks (a dump walks the
// table as it lies), holders of one shared lock in the order they took it.
func (cm *connModel) checkDumps(rc *replyCheck) {
	mc := rc.mc
	for _, withOther := range []bool{false, true} {
		want := cm.table(mc, withOther)
		if tableOrderFree(rc.got) == tableOrderFree(want) {
			want = rc.got
		}
		rc.add(want, nil)
	}
}

// tableOrderFree is a reply of d, sd or dump with its locks sorted: the
// lines of d and sd (the holders of one lock keep their order: the sort is
// stable), the entries of a printed map.
func tableOrderFree(reply string) string {
	if body, ok := strings.CutPrefix(reply, "map["); ok {
		body, ok = strings.CutSuffix(body, "]\n")
		if !ok || body == "" {
			return reply
		}
		sep := " "
		if strings.HasSuffix(body, "]") { // dump shared: "k:[a b] k2:[c]"
			body, sep = strings.TrimSuffix(body, "]"), "] "
		}
		entries := strings.Split(body, sep)
		slices.Sort(entries)
		return "map[" + strings.Join(entries, sep) + strings.TrimPrefix(sep, " ") + "]\n"
	}
	lines := strings.SplitAfter(reply, "\n")
	slices.SortStableFunc(lines, func(a, b string) int {
		ka, _, _ := strings.Cut(a, ": ")
		kb, _, _ := strings.Cut(b, ": ")
		return strings.Compare(ka, kb)
	})
	return strings.Join(lines, "")
}

func (*connModel) checkQ(rc *replyCheck) {
	got := rc.got
	add := rc.add
	if checkStats(got) {
		add(got, nil)
	}
}

func (*connModel) checkPing(rc *replyCheck) {
	add := rc.add
	add(wire.Pong, nil)
}

func (*connModel) checkDl(rc *replyCheck) {
	got := rc.got
	add := rc.add
	// Hold times vary: any well-formed listing of what can be held.
	if dlReplyRE.MatchString(got) {
		add(got, nil)
	}
}

func (*connModel) checkDisabled(rc *replyCheck) {
	add := rc.add
	// Without -acl-file and -admin.
	add(wire.Disabled, nil)
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// table is the reply of d, sd or dump, with or without the other
// connection's busy and sbusy.
func (cm *connModel) table(mc modelCommand, withOther bool) string {
	shared := mc.verb == "sd" || (mc.verb == "dump" && mc.name == "shared")
	type entry struct{ key, value string }
	var entries []entry
	owner := cm.display()
	if mc.verb == "dump" {
		owner = fuzzConn
	}
	if shared {
		if withOther {
			entries = append(entries, entry{"sbusy", fuzzOther})
		}
		for k := range cm.sheld {
			entries = append(entries, entry{k, owner})
		}
	} else {
		if withOther && !cm.held["busy"] {
			entries = append(entries, entry{"busy", fuzzOther})
		}
		for k := range cm.held {
			entries = append(entries, entry{k, owner})
		}
	}
	if mc.verb != "dump" && mc.name != "" {
		entries = slices.DeleteFunc(entries, func(e entry) bool { return e.key != mc.name })
	}
	// The other connection took sbusy first, so it comes first among its
	// holders: a stable sort keeps that order. (The server's order of
	// locks is free: see tableOrderFree.)
	slices.SortStableFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	var out strings.Builder
	if mc.verb != "dump" {
		for _, e := range entries {
			out.WriteString(e.key + ": " + e.value + "\n")
		}
		return out.String()
	}
	out.WriteString("map[")
	for i, e := range entries {
		switch {
		case i == 0:
		case shared && e.key == entries[i-1].key:
			out.WriteString(" " + e.value)
			continue
		case shared:
			out.WriteString("] ")
		default:
			out.WriteString(" ")
		}
		if shared {
			out.WriteString(e.key + ":[" + e.value)
		} else {
			out.WriteString(e.key + ":" + e.value)
		}
	}
	if shared && len(entries) > 0 {
		out.WriteString("]")
	}
	out.WriteString("]\n")
	return out.String()
}

var statLineRE = regexp.MustCompile(`^[a-z_!-]+: [0-9]+$`)

// outcomeKey is "VERB NAME" of an outcome line of !gw or !sgw.
func outcomeKey(r string) (string, bool) {
	line, ok := strings.CutSuffix(r, "\n")
	if !ok || strings.Contains(line, "\n") {
		return "", false
	}
	if rest, ok := strings.CutPrefix(line, "!gw "); ok {
		if f := strings.SplitN(rest, " ", 3); len(f) == 3 {
			return "!gw " + f[2], true
		}
	}
	if rest, ok := strings.CutPrefix(line, "!sgw "); ok {
		if f := strings.SplitN(rest, " ", 2); len(f) == 2 {
			return "!sgw " + f[1], true
		}
	}
	return "", false
}

// checkStats checks the form of q's reply: "key: N" lines sorted by key,
// the original's 16 keys among them.
func checkStats(got string) bool {
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if !strings.HasSuffix(got, "\n") {
		return false
	}
	var ks []string
	for _, l := range lines {
		if !statLineRE.MatchString(l) {
			return false
		}
		ks = append(ks, l[:strings.IndexByte(l, ':')])
	}
	// Sorted by key: "command_kill" comes before "command_kill-holder".
	if !slices.IsSorted(ks) {
		return false
	}
	for _, k := range []string{"command_d", "command_dump", "command_g", "command_i", "command_q", "command_r", "command_sd", "command_sg", "command_si", "command_sr", "connections", "invalid_commands", "locks", "orphans", "shared_locks", "shared_orphans"} {
		if !slices.Contains(ks, k) {
			return false
		}
	}
	return true
}
