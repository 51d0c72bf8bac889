package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/glockd/glockd/internal/transport"
)

// TestPipelining writes 10,000 commands in one burst; every one is answered,
// in order (the original answered only the first of each read).
func TestPipelining(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			c := dial(t, srv, tr)
			const n = 10000
			var cmds strings.Builder
			want := make([]string, 0, n)
			for i := 0; len(want) < n; i++ {
				name := fmt.Sprintf("p%d", i)
				fmt.Fprintf(&cmds, "g %s\ni %s\nr %s\nsg %s\n", name, name, name, name)
				want = append(want,
					"1 Lock Get Success: "+name+"\n",
					"1 Lock Is Locked: "+name+"\n",
					"1 Lock Release Success: "+name+"\n",
					"1 Shared Lock Get Success: "+name+"\n")
			}
			c.send(cmds.String())
			for i, w := range want {
				if got := c.line(); got != w {
					t.Fatalf("reply %d: got %q, want %q", i, got, w)
				}
			}
			c.expect("i p0", "0 Lock Not Locked: p0\n")
		})
	}
}

// TestWebsocketMessages checks how messages map to commands: lines of one
// message are separate commands, and every command gets exactly one message.
func TestWebsocketMessages(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, "websocket")
	c.send("g a\ng b\n") // a trailing newline does not add a blank command
	for _, want := range []string{"1 Lock Get Success: a\n", "1 Lock Get Success: b\n"} {
		if got := c.line(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	c.send("bogus\r\n\ni a\r\nd\nd none")
	for _, want := range []string{"", "", "1 Lock Is Locked: a\n", "a: " + c.name + "\nb: " + c.name + "\n", ""} {
		if got := c.line(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	c.expect("", "") // an empty message is a blank line
	if n := c.stat("invalid_commands"); n != 3 {
		t.Fatalf("invalid_commands = %d, want 3", n)
	}
}

// TestFloodOfShortLines sends many more lines than one batch holds; they are
// all handled, in order, in bounded batches.
func TestFloodOfShortLines(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			c := dial(t, srv, tr)
			const n = 20 * transport.MaxBatch
			c.send(strings.Repeat("x\n", n) + "g after\n")
			if tr == "websocket" {
				for i := range n {
					if got := c.line(); got != "" {
						t.Fatalf("reply %d to an unknown command: %q", i, got)
					}
				}
			}
			if got := c.line(); got != "1 Lock Get Success: after\n" {
				t.Fatalf("got %q", got)
			}
			if got := c.stat("invalid_commands"); got != n {
				t.Fatalf("invalid_commands = %d, want %d", got, n)
			}
		})
	}
}
