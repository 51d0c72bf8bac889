package suite

import (
	"bytes"
	"net"
	"net/url"
	"strings"

	"github.com/glockd/glockd/internal/wire"
	"golang.org/x/net/websocket"
)

// checkNewlineOnly reads the raw bytes of a reply of every kind: each line
// ends in "\n" alone (the original sometimes sent "\r\n").
func checkNewlineOnly(t *checkRun) {
	var d net.Dialer
	nc, err := d.DialContext(t.ctx, t.opts.Network, t.opts.Addr)
	if err != nil {
		t.cannotConnect("raw", err)
	}
	defer nc.Close()
	if dl, ok := t.ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	n, s, fence := t.name("x"), t.name("s"), t.name("fence")
	cmds := []string{"g " + n, "i " + n, "sg " + s, "si " + s, "sr " + s, "r " + n,
		"me", "iam", "iam", "who", "d", "sd", "dump", "dump shared", "q", "i " + fence}
	if _, err := nc.Write([]byte(strings.Join(cmds, "\n") + "\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	end := []byte(wire.Reply(0, wire.NotLocked, fence))
	var got []byte
	buf := make([]byte, 64<<10)
	for !bytes.HasSuffix(got, end) {
		k, err := nc.Read(buf)
		got = append(got, buf[:k]...)
		if err != nil {
			t.Fatalf("read: %v after %q", err, got)
		}
	}
	if i := bytes.IndexByte(got, '\r'); i >= 0 {
		t.Fatalf("a reply holds \"\\r\" at byte %d: %q", i, got)
	}
	if first := wire.Reply(1, wire.GetSuccess, n); !bytes.HasPrefix(got, []byte(first)) {
		t.Fatalf("replies start %q, want %q", got[:min(len(got), 80)], first)
	}
}

// checkWebsocketMessages checks the websocket framing with a raw websocket:
// a message is split into lines, each line gets exactly one message with
// its reply, an empty one where the line protocol sends nothing.
func checkWebsocketMessages(t *checkRun) {
	u, err := url.Parse(t.opts.Addr)
	if err != nil {
		t.Fatalf("%v", err)
	}
	// The origin as a browser sends it, scheme://host[:port]: a server
	// with -ws-origin compares it exactly.
	origin := "http://" + u.Host
	if u.Scheme == "wss" {
		origin = "https://" + u.Host
	}
	cfg, err := websocket.NewConfig(t.opts.Addr, origin)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ws, err := cfg.DialContext(t.ctx)
	if err != nil {
		t.cannotConnect("raw websocket", err)
	}
	defer ws.Close()
	if dl, ok := t.ctx.Deadline(); ok {
		ws.SetDeadline(dl)
	}
	n, s := t.name("x"), t.name("s")
	exchange := func(send string, want ...string) {
		if err := websocket.Message.Send(ws, send); err != nil {
			t.Fatalf("send %q: %v", send, err)
		}
		for i, w := range want {
			var got string
			if err := websocket.Message.Receive(ws, &got); err != nil {
				t.Fatalf("message %q: reply %d: %v", send, i+1, err)
			}
			if w == "*" { // q: any lines, each ending in "\n"
				if !strings.HasSuffix(got, "\n") || !strings.Contains(got, "\nconnections: ") {
					t.Fatalf("message %q: reply %d: got %q, want the q lines, each ending in \"\\n\"", send, i+1, got)
				}
				continue
			}
			if got != w {
				t.Fatalf("message %q: reply %d: got %q, want %q", send, i+1, got, w)
			}
		}
	}
	exchange("g "+n+"\nxx\ni "+n+"\n",
		wire.Reply(1, wire.GetSuccess, n), "", wire.Reply(1, wire.IsLocked, n))
	exchange("r "+n, wire.Reply(1, wire.ReleaseSuccess, n))
	exchange("\n", "")
	exchange("q\n", "*")
	sdReply := wire.Disabled
	dReply := wire.Disabled
	if t.opts.Dump {
		var me string
		if err := websocket.Message.Send(ws, "me\n"); err != nil {
			t.Fatalf("send me: %v", err)
		}
		if err := websocket.Message.Receive(ws, &me); err != nil {
			t.Fatalf("me: %v", err)
		}
		fields := strings.Fields(me)
		if len(fields) != 3 {
			t.Fatalf("me: got %q", me)
		}
		sdReply = s + ": " + fields[1] + "\n"
		dReply = ""
	}
	exchange("sg "+s+"\nsd "+s+"\nd "+n+"\n", wire.Reply(1, wire.SharedGetSuccess, s), sdReply, dReply)
}
