package main

import (
	"bytes"
	"encoding/binary"
	"runtime"
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
		msgSize = 1<<20 - 16 // within maxMessage, so buffered whole
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
