package main

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWebsocketHugeFrameLength sends frame headers claiming up to 2^63-1
// bytes, alone and after a first fragment (where adding the lengths
// overflows an int): the daemon must neither crash nor allocate them. It
// runs the daemon binary, so that a panic fails this test, not the suite.
func TestWebsocketHugeFrameLength(t *testing.T) {
	wsPort := freePort(t)
	d := startDaemon(t, "-port", "0", "-bind", "127.0.0.1", "-ws", strconv.Itoa(wsPort))
	addr := "127.0.0.1:" + strconv.Itoa(wsPort)
	dialRetry(t, "tcp", addr).Close()
	huge := func(b0 byte) []byte {
		return []byte{b0, 0x80 | 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}
	}
	for _, attack := range [][]byte{
		huge(0x81),
		append(wsFrame(0x01, "g"), huge(0x80)...),
		append(wsFrame(0x01, "g"), huge(0x00)...),
	} {
		status, nc, _ := upgrade(t, addr, "")
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d", status)
		}
		nc.Write(attack)
		nc.Write(bytes.Repeat([]byte("x"), 1<<20))
		// Another client is still served.
		status, probe, r := upgrade(t, addr, "")
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("after a frame of 2^63 bytes: status %d", status)
		}
		if got := wsCommand(t, probe, r, "ping"); got != "1 pong\n" {
			t.Fatalf("after a frame of 2^63 bytes: %q", got)
		}
		nc.Close()
		probe.Close()
	}
	select {
	case <-d.done:
		t.Fatalf("the daemon died: %s", d.stderr)
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.exitCode(t, 5*time.Second); code != 0 || strings.Contains(d.stderr.String(), "panic") {
		t.Fatalf("exit code %d; stderr:\n%s", code, d.stderr)
	}
}
