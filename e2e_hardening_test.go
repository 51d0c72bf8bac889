package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// liveHeap is the heap in use after a collection: what is still referenced.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestWebsocketIdleMemory: a websocket connection that once received a
// 1 MiB message goes back to its small cost when idle; before, it kept a
// buffer the size of its largest message for as long as it lived.
func TestWebsocketIdleMemory(t *testing.T) {
	const (
		conns   = 20
		msgSize = 1<<20 - 16 // within transport.MaxMessage, so buffered whole
	)
	srv := startServer(t, nil)
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = dial(t, srv, "websocket")
		clients[i].expect("ping", "1 pong\n")
	}
	before := liveHeap()
	sendBig(t, clients, msgSize)
	grew := liveHeap() - before
	t.Logf("live heap grew by %.1f MiB for %d idle connections that each received 1 MiB", float64(grew)/(1<<20), conns)
	if grew > conns*msgSize/4 {
		t.Fatalf("live heap grew by %d MiB: idle connections keep their biggest message", grew>>20)
	}
	for _, c := range clients {
		c.expect("ping", "1 pong\n")
	}
}

// sendBig sends each client one message of size bytes in one frame, built
// by hand with a zero masking key: one line longer than -max-line, so one
// short reply.
func sendBig(t *testing.T, clients []*client, size int) {
	frame := []byte{0x81, 0x80 | 127}
	frame = binary.BigEndian.AppendUint64(frame, uint64(size))
	frame = append(frame, 0, 0, 0, 0)
	frame = append(frame, bytes.Repeat([]byte("x"), size)...)
	for _, c := range clients {
		writeAll(t, c.nc, frame)
		if got := c.line(); got != "0 Line Too Long\n" {
			t.Fatalf("big message: %q", got)
		}
		c.expect("ping", "1 pong\n")
	}
}

// TestPidfileSymlink: -pidfile never follows a symbolic link, which would
// let whoever can write the pidfile's directory have the daemon (often
// root) truncate and overwrite any file, or create one anywhere.
func TestPidfileSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "glockd.pid")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if pf, err := lockPidfile(link); err == nil {
		pf.remove()
		t.Fatal("a pidfile that is a symlink was accepted")
	} else if !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("unclear error: %v", err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious\n" {
		t.Fatalf("the link's target was written: %q", got)
	}
	dangling := filepath.Join(dir, "dangling.pid")
	created := filepath.Join(dir, "created")
	if err := os.Symlink(created, dangling); err != nil {
		t.Fatal(err)
	}
	if pf, err := lockPidfile(dangling); err == nil {
		pf.remove()
		t.Fatal("a dangling symlink was accepted")
	}
	if _, err := os.Lstat(created); err == nil {
		t.Fatal("the dangling link's target was created")
	}
	// A plain path still works, and the file is removed at the end.
	plain := filepath.Join(dir, "plain.pid")
	pf, err := lockPidfile(plain)
	if err != nil {
		t.Fatal(err)
	}
	pf.remove()
	if _, err := os.Lstat(plain); err == nil {
		t.Fatal("pidfile left behind")
	}
}
