package main

import (
	"reflect"
	"testing"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/tokens"
)

// The hand-over state survives its encoding, and a damaged encoding is
// refused, never half read.
func TestHandoverStateEncoding(t *testing.T) {
	st := &handoverState{
		wall: 1_700_000_000_000_000_000, nextToken: 1 << 40,
		commands: map[string]uint64{"g": 7, "gw": 2},
		invalid:  1, orphans: 2, sharedOrp: 3, regSeq: 9, pidfile: 0,
		upgrades: 2, closed: map[string]uint64{"tls": 3},
		listeners: []listenerState{{kind: "tcp", fd: 1}, {kind: "unix", fd: 2, path: "/run/glockd/glockd.sock"}},
		conns: []connHandover{
			{name: "127.0.0.1:5000", transport: "tcp", fd: 3, input: []byte("g hal"), regName: "a", regSeq: 9},
			{name: "unix:4", transport: "unix", fd: 4, input: []byte{}, discarding: true, ident: "svc", authFailures: 1,
				pendingVerb: "gw", pendingName: "x", pendingMS: 500, queued: []queuedLineState{{line: "ping"}, {tooLong: true}}},
		},
		locks:   []heldLock{{name: "x", conn: 0, token: 1 << 40, age: 5e9}},
		shared:  []sharedHoldState{{name: "s", conn: 0, age: 1}, {name: "s", conn: 1, age: 0}},
		waiters: []waiterState{{name: "x", conn: 1, remaining: 400e6, age: 100e6}, {name: "s", conn: 0, shared: true, async: true, max: 2, remaining: -1}},
	}
	data := st.encode(nil)
	got, err := decodeHandoverState(data, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got, st)
	}
	// An -etcd leader's term (upgrade_ha.go).
	st.ha = &haHandover{lease: 0x694d7c1a2b3c4d5e, ttl: 5, key: ha.DefaultEtcdPrefix + "election/694d7c1a2b3c4d5e",
		rev: 42, block: tokens.Block{Start: 1 << 41, End: 1<<41 + tokens.BlockSize}, left: 3e9, elections: 3}
	data = st.encode(nil)
	if got, err = decodeHandoverState(data, 5); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", got.ha, st.ha)
	}
	bad := *st
	bad.ha = &haHandover{block: tokens.Block{Start: 2, End: 1}}
	if _, err := decodeHandoverState(bad.encode(nil), 5); err == nil {
		t.Error("a token block ending before its start was accepted")
	}
	for n := range len(data) {
		if _, err := decodeHandoverState(data[:n], 5); err == nil {
			t.Fatalf("%d of %d bytes decoded without an error", n, len(data))
		}
	}
	if _, err := decodeHandoverState(append(data, 0), 5); err == nil {
		t.Error("a trailing byte was accepted")
	}
	if _, err := decodeHandoverState(data, 4); err == nil {
		t.Error("a descriptor index past those received was accepted")
	}
}
