package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// endings are the ways a client connection can end; each must orphan its locks.
const padLocks = 2000

var endings = map[string]func(c *client){
	"close": func(c *client) { c.close() },
	"reset": func(c *client) {
		if tc, ok := c.nc.(*net.TCPConn); ok {
			tc.SetLinger(0) // close sends RST
		}
		c.nc.Close()
	},
	"half-close": func(c *client) {
		// The server sees EOF while the client could still read.
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			return
		}
		c.nc.Close()
	},
	"write-error": func(c *client) {
		// Ask for far more output than socket buffers hold, never read it,
		// and reset: the server's write fails (or its read does first).
		var pad strings.Builder
		for i := range padLocks {
			fmt.Fprintf(&pad, "g pad%d\n", i)
		}
		c.send(pad.String())
		for range padLocks {
			c.line()
		}
		c.send(strings.Repeat("d\n", 50))
		if tc, ok := c.nc.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.nc.Close()
	},
}

func TestOrphansOnDisconnect(t *testing.T) {
	for _, tr := range transports {
		for ending, end := range endings {
			t.Run(tr+"/"+ending, func(t *testing.T) {
				srv := startServer(t, nil)
				a := dial(t, srv, tr)
				b := dial(t, srv, tr)
				a.expect("g x", "1 Lock Get Success: x\n")
				a.expect("g y", "1 Lock Get Success: y\n")
				a.expect("sg s", "1 Shared Lock Get Success: s\n")
				b.expect("sg s", "2 Shared Lock Get Success: s\n")
				a.expect("iam leaving", "1 ok\n")
				if tr == "websocket" && ending == "close" {
					a.ws.Close() // a proper websocket close frame
				}
				end(a)
				eventually(t, "locks released", func() bool { return b.stat("connections") == 1 && b.stat("locks") == 0 })
				b.expect("i x", "0 Lock Not Locked: x\n")
				b.expect("i y", "0 Lock Not Locked: y\n")
				b.expect("si s", "1 Shared Lock Is Locked: s\n")
				b.expect("who", "")
				wantOrphans := 2
				if ending == "write-error" {
					wantOrphans += padLocks
				}
				if n := b.stat("orphans"); n != wantOrphans {
					t.Errorf("orphans = %d, want %d", n, wantOrphans)
				}
				if n := b.stat("shared_orphans"); n != 1 {
					t.Errorf("shared_orphans = %d, want 1", n)
				}
				b.expect("g x", "1 Lock Get Success: x\n")
			})
		}
	}
}

// TestOrphanManyLocks covers release in steps: a connection holding more
// locks than one step frees.
func TestOrphanManyLocks(t *testing.T) {
	srv := startServer(t, nil)
	a := dial(t, srv, "tcp")
	b := dial(t, srv, "tcp")
	const n = 3*orphanStep + 17
	var cmds strings.Builder
	for i := range n {
		fmt.Fprintf(&cmds, "g l%d\nsg s%d\n", i, i%5000)
	}
	a.send(cmds.String())
	for range 2 * n {
		if l := a.line(); !strings.HasPrefix(l, "1 ") {
			t.Fatalf("got %q", l)
		}
	}
	b.expect("g l5", "0 Lock Get Failure: l5\n")
	a.close()
	eventually(t, "all orphaned", func() bool { return b.stat("locks") == 0 && b.stat("shared_locks") == 0 })
	if got := b.stat("orphans"); got != n {
		t.Errorf("orphans = %d, want %d", got, n)
	}
	if got := b.stat("shared_orphans"); got != 5000 {
		t.Errorf("shared_orphans = %d, want 5000", got)
	}
	b.expect("g l5", "1 Lock Get Success: l5\n")
}

// TestCommandThenHalfClose: the end of input arriving with the last command
// (a client that writes, shuts down its sending side and waits for the
// reply) must be seen at once, not left to keepalive.
func TestCommandThenHalfClose(t *testing.T) {
	for _, tr := range []string{"tcp", "unix"} {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			b := dial(t, srv, tr)
			for i := range 20 {
				nc, _ := rawDial(t, srv, tr)
				name := fmt.Sprintf("x%d", i)
				nc.Write([]byte(strings.Repeat("xx\n", i*100) + "g " + name + "\n"))
				nc.(interface{ CloseWrite() error }).CloseWrite()
				eventually(t, name+" released", func() bool {
					return b.do("i "+name) == "0 Lock Not Locked: "+name+"\n"
				})
			}
		})
	}
}
