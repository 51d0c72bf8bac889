package main

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/handover"
)

// benchState is the state of a hand-over at the size: conns
// connections holding locks exclusive locks (4/5) and shared holds (1/5, each
// name held by five connections), as TestUpgradeProcess builds them.
func benchState(conns, locks int) *handover.State {
	st := &handover.State{Wall: time.Now().UnixNano(), NextToken: 1, Pidfile: -1, Conns: make([]handover.Conn, conns)}
	for i := range st.Conns {
		st.Conns[i] = handover.Conn{Name: fmt.Sprintf("127.0.0.1:%d", 10000+i), Transport: "tcp", FD: i, RegName: fmt.Sprintf("c%d", i), RegSeq: uint64(i + 1)}
	}
	per := locks / conns
	for i := range conns {
		for j := range per {
			if j < per*4/5 {
				st.Locks = append(st.Locks, handover.Lock{Name: fmt.Sprintf("x/%d/%d", i, j), Conn: i, Token: uint64(len(st.Locks) + 1), Age: 1e9})
			} else {
				st.Shared = append(st.Shared, handover.SharedHold{Name: fmt.Sprintf("s/%d/%d", i/5, j), Conn: i, Age: 1e9})
			}
		}
	}
	return st
}

// BenchmarkHandoverRestore is the new process's rebuilding of the tables
// from a hand-over's state (restoreHandover), at 1,000 connections and
// 100,000 locks, and at 100 connections and 1,000,000 locks: part of the
// pause (docs/operating.md).
//
//	go test -run '^$' -bench HandoverRestore -benchmem .
func BenchmarkHandoverRestore(b *testing.B) {
	for _, size := range []struct{ conns, locks int }{{1000, 100000}, {100, 1000000}} {
		b.Run(fmt.Sprintf("%d/%d", size.conns, size.locks), func(b *testing.B) {
			st := benchState(size.conns, size.locks)
			cfg := Config{}.withDefaults()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				m := newManager(cfg)
				states := make([]*connState, len(st.Conns))
				for i := range states {
					states[i] = newConnState(st.Conns[i].Name, "tcp")
				}
				b.StartTimer()
				if err := m.restoreHandover(st, states); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSnapshotRetriesCollect: a hand-over turns the collector off for its
// pause, and a connection that is busy (here: its mutex held, as by a
// delivery goroutine blocked writing to a client that does not read) makes
// the snapshot be taken again every millisecond until the timeout. Each try
// leaves its predecessor's copy of the tables as garbage, so the collector
// must come back on at the first retry (pauseAndSend's gcOn): without it
// the heap grew by hundreds of MB a second.
func TestSnapshotRetriesCollect(t *testing.T) {
	srv := startServer(t, nil)
	holder := dial(t, srv, "tcp")
	const n = 50000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "g lock/%d\n", i)
	}
	holder.send(b.String())
	for range n {
		holder.line()
	}
	other := dial(t, srv, "tcp")
	other.expect("ping", "1 pong\n")
	var busy *conn
	for _, c := range srv.connList() {
		if c.state.name == other.name {
			busy = c
		}
	}
	p := &pause{gate: make(chan struct{}), conns: make(map[*conn]struct{})}
	start := time.Now()
	conns, err := srv.pauseAll(p, start.Add(3*time.Second), newPhases(start))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.resume(p, conns)
	st, _, err := srv.handoverDescriptors(handoverRequest{}, conns)
	if err != nil {
		t.Fatal(err)
	}
	busy.mu.Lock()
	runtime.GC()
	gcOn := collectorOff() // as pauseAndSend does
	defer gcOn()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = srv.snapshot(st, conns, time.Now(), 2*time.Second, gcOn)
	runtime.ReadMemStats(&after)
	busy.mu.Unlock()
	if err != errHandoverBusy {
		t.Fatalf("snapshot with a busy connection: %v, want errHandoverBusy", err)
	}
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("2 s of retries: heap %+d MB, %d collections", grown>>20, after.NumGC-before.NumGC)
	if grown > 64<<20 {
		t.Errorf("2 s of snapshot retries grew the heap by %d MB (%d collections): the collector stayed off", grown>>20, after.NumGC-before.NumGC)
	}
}
