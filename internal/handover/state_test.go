package handover

import (
	"reflect"
	"strconv"
	"testing"
)

// The hand-over state survives its encoding, and a damaged encoding is
// refused, never half read.
func TestHandoverStateEncoding(t *testing.T) {
	st := &State{
		Wall: 1_700_000_000_000_000_000, NextToken: 1 << 40,
		Commands: map[string]uint64{"g": 7, "gw": 2},
		Invalid:  1, Orphans: 2, SharedOrphans: 3, RegSeq: 9, Pidfile: 0,
		Upgrades: 2, Closed: map[string]uint64{"tls": 3},
		Listeners: []Listener{{Kind: "tcp", FD: 1}, {Kind: "unix", FD: 2, Path: "/run/glockd/glockd.sock"}},
		Conns: []Conn{
			{Name: "127.0.0.1:5000", Transport: "tcp", FD: 3, Input: []byte("g hal"), RegName: "a", RegSeq: 9},
			{Name: "unix:4", Transport: "unix", FD: 4, Input: []byte{}, Discarding: true, Ident: "svc", AuthFailures: 1,
				PendingVerb: "gw", PendingName: "x", PendingMS: 500, Queued: []QueuedLine{{Line: "ping"}, {TooLong: true}}},
		},
		Locks:   []Lock{{Name: "x", Conn: 0, Token: 1 << 40, Age: 5e9}},
		Shared:  []SharedHold{{Name: "s", Conn: 0, Age: 1}, {Name: "s", Conn: 1, Age: 0}},
		Waiters: []Waiter{{Name: "x", Conn: 1, Remaining: 400e6, Age: 100e6}, {Name: "s", Conn: 0, Shared: true, Async: true, Max: 2, Remaining: -1}},
	}
	data := st.Encode(nil)
	got, err := Decode(data, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, st)
	}
	// An -etcd leader's term.
	st.HA = &HA{Lease: 0x694d7c1a2b3c4d5e, TTL: 5, Key: "/glockd/default/election/694d7c1a2b3c4d5e",
		Rev: 42, BlockStart: 1 << 41, BlockEnd: 1<<41 + 1<<22, Left: 3e9, Elections: 3}
	data = st.Encode(nil)
	if got, err = Decode(data, 5); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got.HA, st.HA)
	}
	bad := *st
	bad.HA = &HA{BlockStart: 2, BlockEnd: 1}
	if _, err := Decode(bad.Encode(nil), 5); err == nil {
		t.Error("a token block ending before its start was accepted")
	}
	for n := range len(data) {
		if _, err := Decode(data[:n], 5); err == nil {
			t.Fatalf("%d of %d bytes decoded without an error", n, len(data))
		}
	}
	if _, err := Decode(append(data, 0), 5); err == nil {
		t.Error("a trailing byte was accepted")
	}
	if _, err := Decode(data, 4); err == nil {
		t.Error("a descriptor index past those received was accepted")
	}
}

// benchState is a hand-over's state at the size: 1,000 connections
// holding 80,000 exclusive locks and 20,000 shared holds.
func benchState() *State {
	st := &State{Wall: 1_700_000_000_000_000_000, NextToken: 1, Pidfile: -1, Conns: make([]Conn, 1000)}
	for i := range st.Conns {
		st.Conns[i] = Conn{Name: "127.0.0.1:" + strconv.Itoa(10000+i), Transport: "tcp", FD: i, Input: []byte{}, RegName: "c" + strconv.Itoa(i), RegSeq: uint64(i + 1)}
	}
	for i := range 1000 {
		for j := range 100 {
			if j < 80 {
				st.Locks = append(st.Locks, Lock{Name: "x/" + strconv.Itoa(i) + "/" + strconv.Itoa(j), Conn: i, Token: uint64(len(st.Locks) + 1), Age: 3e9})
			} else {
				st.Shared = append(st.Shared, SharedHold{Name: "s/" + strconv.Itoa(i/5) + "/" + strconv.Itoa(j), Conn: i, Age: 3e9})
			}
		}
	}
	return st
}

// The encoding and decoding of a hand-over's state, part of its pause
// (docs/operating.md):
//
//	go test -run '^$' -bench State -benchmem ./internal/handover
func BenchmarkStateEncode(b *testing.B) {
	st := benchState()
	for range b.N {
		st.Encode(nil)
	}
}

func BenchmarkStateDecode(b *testing.B) {
	data := benchState().Encode(nil)
	b.SetBytes(int64(len(data)))
	for range b.N {
		if _, err := Decode(data, 1000); err != nil {
			b.Fatal(err)
		}
	}
}
