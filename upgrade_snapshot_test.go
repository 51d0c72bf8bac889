package main

import (
	"fmt"
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
