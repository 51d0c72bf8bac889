package suite

import (
	"context"
	"strings"
	"time"

	"github.com/glockd/glockd/internal/wire"
)

// checkWhitespace sends the same commands spelt with odd white space; the
// replies carry the normalised name.
func checkWhitespace(t *checkRun) {
	a := t.dial("A")
	n := t.name("ws")
	tests := []struct{ send, want string }{
		{"g   " + n + "   x  y ", wire.ReplyLine(1, wire.GetSuccess, n+" x y")},
		{"  \t i " + n + " x y", wire.ReplyLine(1, wire.IsLocked, n+" x y")},
		{"r\t" + n + "\t x\ty", wire.ReplyLine(1, wire.ReleaseSuccess, n+" x y")},
		{"g " + n + "\r", wire.ReplyLine(1, wire.GetSuccess, n)},
		{"i " + n + "\u00a0\u2003", wire.ReplyLine(1, wire.IsLocked, n)},
		{"r " + n + "\u2003a\u00a0b", wire.ReplyLine(0, wire.ReleaseFailure, n+" a b")},
		{"r " + n, wire.ReplyLine(1, wire.ReleaseSuccess, n)},
		{"sg " + n + "  \t s", wire.ReplyLine(1, wire.SharedGetSuccess, n+" s")},
		{"sr\t\t" + n + " s  ", wire.ReplyLine(1, wire.SharedReleaseSuccess, n+" s")},
	}
	for _, tt := range tests {
		equal(t, "A sends "+quote(tt.send), a.do(tt.send), tt.want)
	}
}

// checkLineTooLong sends a line over the default -max-line of 64 KiB: it
// must get "0 Line Too Long", run nothing, and leave the stream in step.
func checkLineTooLong(t *checkRun) {
	a := t.dial("A")
	n := t.name("long")
	long := "g " + n + strings.Repeat("x", 70_000)
	equal(t, "A sends a 70,000-byte g", a.do(long), wire.Line(wire.LineTooLong))
	equal(t, "A i after the long line (the next reply)", a.inspect(n), false)
	equal(t, "A g after the long line", a.get(n), true)
}

// checkInvalid sends an unknown command, a wrongly cased one and a blank
// line. On the line protocol none gets a reply within 100 ms; over a
// websocket each gets an empty message. invalid_commands goes up by 3.
func checkInvalid(t *checkRun) {
	admin := t.quiet()
	before := admin.stats()
	a := t.dial("A")
	for _, line := range []string{"xx", "G " + t.name("case"), ""} {
		if err := a.c.Send(t.ctx, line); err != nil {
			t.Fatalf("A: send %s: %v", quote(line), err)
		}
		if t.ws() {
			got, err := a.c.Recv(t.ctx)
			if err != nil || got != "" {
				t.Fatalf("A: %s over a websocket: got %q, %v; want an empty message", quote(line), got, err)
			}
			continue
		}
		ctx, cancel := context.WithTimeout(t.ctx, 100*time.Millisecond)
		got, err := a.c.Recv(ctx)
		cancel()
		if err == nil {
			t.Fatalf("A: %s: got the reply %q, want none within 100 ms", quote(line), got)
		}
		if ctx.Err() == nil {
			t.Fatalf("A: %s: waiting for silence: %v", quote(line), err)
		}
	}
	// A late reply to any of them would now come before this one.
	equal(t, "A i after them (the next reply)", a.inspect(t.name("case")), false)
	after := admin.stats()
	t.delta(before, after, "invalid_commands", 3)
}
