// Package handover is the wire side of a hand-over to a new binary (the
// root's upgrade.go has the steps): the versioned state an old process hands
// to the new one and its encoding, the SOCK_SEQPACKET link that carries it
// with the descriptors (SCM_RIGHTS), starting the new process, and the new
// process's receiving side. What touches the server, its connections and its
// manager (the pause, the snapshot, the adoption) stays in the root.
package handover

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// The state an old process hands to a new one, and its encoding.
// docs/operating.md, "Upgrading without dropping locks", describes the
// format; format is its version, sent first, and a process only reads the
// version it writes.
//
// Every integer is a varint (encoding/binary's Uvarint, or Varint for signed
// values), every string or byte string a uvarint length and its bytes.
const magic = "glockd-handover"

// format is the version of the state encoding this binary writes and reads.
// It is a string so that a test can build a binary that speaks another
// (-ldflags -X github.com/glockd/glockd/internal/handover.format=...); it is
// never written at run time.
var format = "2"

// State is everything the new process needs, besides the
// descriptors, which travel beside it and are known here by their index.
type State struct {
	Wall          int64  // when the snapshot was taken, Unix nanoseconds
	NextToken     uint64 // the next fencing token: the new source never goes below
	Commands      map[string]uint64
	Invalid       uint64
	Orphans       uint64
	SharedOrphans uint64
	RegSeq        uint64 // the registry's last sequence number
	// The upgrade metrics, carried on: hand-overs done (this one
	// included) and connections closed at them, by transport.
	Upgrades  uint64
	Closed    map[string]uint64
	Pidfile   int // index of the pidfile's descriptor, or -1
	Listeners []Listener
	Conns     []Conn
	Locks     []Lock       // oldest grant first
	Shared    []SharedHold // oldest grant first
	Waiters   []Waiter
	HA        *HA // an -etcd leader's term; nil otherwise
}

// HA is an -etcd leader's term, resumed by the new process: the
// lease, the election key, the rest of its tokens, and the time left before
// its deadline when the snapshot was taken (the new process takes the exact
// time left from the go message, see the root's upgrade.go).
type HA struct {
	Lease int64  // the etcd lease ID
	TTL   int64  // its TTL in seconds
	Key   string // the election key
	Rev   int64  // its create revision
	// The rest of its fencing tokens: the block [BlockStart, BlockEnd).
	BlockStart, BlockEnd uint64
	Left                 int64  // nanoseconds to the deadline at the snapshot
	Elections            uint64 // glockd_elections_won_total, carried on
}

// Listener is a listening socket, by its kind.
type Listener struct {
	Kind string // "tcp", "websocket", "unix", "tls", "metrics"
	FD   int
	Path string // the unix socket's path
}

// Conn is one connection: its descriptor, its unread input (a
// partial line) and the manager's view of it.
type Conn struct {
	Name, Transport string
	FD              int
	Input           []byte
	Discarding      bool
	RegName         string
	RegSeq          uint64
	Ident           string // the ACL identity's name, if identified
	AuthFailures    int
	// A pending gw or sgw: its verb's word ("" when none), name, MS and
	// MAX, and the lines that arrived behind it, still to run.
	PendingVerb string
	PendingName string
	PendingMS   int64
	PendingMax  int64
	Queued      []QueuedLine
}

// QueuedLine is a line read behind a pending wait, still to run.
type QueuedLine struct {
	Line    string
	TooLong bool // only its reply is kept
}

// Lock is a held exclusive lock; Conn is its holder's index in Conns.
type Lock struct {
	Name  string
	Conn  int
	Token uint64
	Age   int64 // nanoseconds since it was granted
}

// SharedHold is one holder's hold of a shared lock.
type SharedHold struct {
	Name string
	Conn int
	Age  int64
}

// Waiter is a pending wait, in the order the waits began; the queues
// are rebuilt in that order, which is each queue's order.
type Waiter struct {
	Name      string
	Conn      int
	Shared    bool
	Async     bool
	Max       int
	Remaining int64 // nanoseconds left before it times out; -1: no limit
	Age       int64 // nanoseconds since it began
}

// Encode appends the state's encoding, in this binary's format.
func (st *State) Encode(b []byte) []byte {
	e := encoder{slices.Grow(b, st.sizeHint())}
	e.varint(st.Wall)
	e.uvarint(st.NextToken)
	e.uvarint(uint64(len(st.Commands)))
	for word, n := range st.Commands {
		e.string(word)
		e.uvarint(n)
	}
	e.uvarint(st.Invalid)
	e.uvarint(st.Orphans)
	e.uvarint(st.SharedOrphans)
	e.uvarint(st.RegSeq)
	e.uvarint(st.Upgrades)
	e.uvarint(uint64(len(st.Closed)))
	for transport, n := range st.Closed {
		e.string(transport)
		e.uvarint(n)
	}
	e.varint(int64(st.Pidfile))
	e.uvarint(uint64(len(st.Listeners)))
	for _, l := range st.Listeners {
		e.string(l.Kind)
		e.uvarint(uint64(l.FD))
		e.string(l.Path)
	}
	e.uvarint(uint64(len(st.Conns)))
	for i := range st.Conns {
		e.conn(&st.Conns[i])
	}
	e.uvarint(uint64(len(st.Locks)))
	for _, l := range st.Locks {
		e.string(l.Name)
		e.uvarint(uint64(l.Conn))
		e.uvarint(l.Token)
		e.varint(l.Age)
	}
	e.uvarint(uint64(len(st.Shared)))
	for _, h := range st.Shared {
		e.string(h.Name)
		e.uvarint(uint64(h.Conn))
		e.varint(h.Age)
	}
	e.uvarint(uint64(len(st.Waiters)))
	for _, w := range st.Waiters {
		e.string(w.Name)
		e.uvarint(uint64(w.Conn))
		e.bool(w.Shared)
		e.bool(w.Async)
		e.uvarint(uint64(w.Max))
		e.varint(w.Remaining)
		e.varint(w.Age)
	}
	e.bool(st.HA != nil)
	if h := st.HA; h != nil {
		e.varint(h.Lease)
		e.varint(h.TTL)
		e.string(h.Key)
		e.varint(h.Rev)
		e.uvarint(h.BlockStart)
		e.uvarint(h.BlockEnd)
		e.varint(h.Left)
		e.uvarint(h.Elections)
	}
	return e.b
}

// Decode reads what Encode wrote; fds is how many descriptors
// came with it, and every index must be below it.
func Decode(b []byte, fds int) (*State, error) {
	d := decoder{b: b}
	st := &State{Commands: make(map[string]uint64)}
	st.Wall = d.varint()
	st.NextToken = d.uvarint()
	for n := d.count(2); n > 0; n-- {
		word := d.string()
		st.Commands[word] = d.uvarint()
	}
	st.Invalid, st.Orphans, st.SharedOrphans = d.uvarint(), d.uvarint(), d.uvarint()
	st.RegSeq = d.uvarint()
	st.Upgrades = d.uvarint()
	st.Closed = make(map[string]uint64)
	for n := d.count(2); n > 0; n-- {
		transport := d.string()
		st.Closed[transport] = d.uvarint()
	}
	st.Pidfile = int(d.varint())
	if st.Pidfile < -1 || st.Pidfile >= fds {
		d.fail("pidfile descriptor %d of %d", st.Pidfile, fds)
	}
	for n := d.count(3); n > 0; n-- {
		st.Listeners = append(st.Listeners, Listener{Kind: d.string(), FD: d.index(fds), Path: d.string()})
	}
	for n := d.count(14); n > 0; n-- {
		c := Conn{
			Name: d.string(), Transport: d.string(), FD: d.index(fds),
			Input: []byte(d.string()), Discarding: d.bool(),
			RegName: d.string(), RegSeq: d.uvarint(), Ident: d.string(),
			AuthFailures: int(d.uvarint()),
			PendingVerb:  d.string(), PendingName: d.string(), PendingMS: d.varint(), PendingMax: d.varint(),
		}
		for q := d.count(2); q > 0; q-- {
			c.Queued = append(c.Queued, QueuedLine{Line: d.string(), TooLong: d.bool()})
		}
		st.Conns = append(st.Conns, c)
	}
	conns := len(st.Conns)
	if n := d.count(4); d.err == nil {
		st.Locks = make([]Lock, 0, n)
		for ; n > 0; n-- {
			st.Locks = append(st.Locks, Lock{Name: d.string(), Conn: d.index(conns), Token: d.uvarint(), Age: d.varint()})
		}
	}
	if n := d.count(3); d.err == nil {
		st.Shared = make([]SharedHold, 0, n)
		for ; n > 0; n-- {
			st.Shared = append(st.Shared, SharedHold{Name: d.string(), Conn: d.index(conns), Age: d.varint()})
		}
	}
	for n := d.count(7); n > 0; n-- {
		st.Waiters = append(st.Waiters, Waiter{Name: d.string(), Conn: d.index(conns), Shared: d.bool(),
			Async: d.bool(), Max: int(d.uvarint()), Remaining: d.varint(), Age: d.varint()})
	}
	if d.bool() {
		st.HA = &HA{Lease: d.varint(), TTL: d.varint(), Key: d.string(), Rev: d.varint(),
			BlockStart: d.uvarint(), BlockEnd: d.uvarint(), Left: d.varint(), Elections: d.uvarint()}
		// The root checks the block against the largest token.
		if d.err == nil && st.HA.BlockStart > st.HA.BlockEnd {
			d.fail("token block [%d, %d)", st.HA.BlockStart, st.HA.BlockEnd)
		}
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d bytes after the state", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("hand-over state: %w", d.err)
	}
	return st, nil
}

// sizeHint is about the size of the state's encoding, a little more as a
// rule: it is made at once, where growing it as it is written would copy
// it over and over (a million locks are about 20 MB).
func (st *State) sizeHint() int {
	const record = 3 * binary.MaxVarintLen32 // a record's small integers and lengths
	n := 256
	for i := range st.Conns {
		c := &st.Conns[i]
		n += 4*record + len(c.Name) + len(c.Transport) + len(c.Input) + len(c.RegName) + len(c.Ident) + len(c.PendingName)
		for _, q := range c.Queued {
			n += record + len(q.Line)
		}
	}
	for _, l := range st.Locks {
		n += record + binary.MaxVarintLen64 + len(l.Name) // and the token
	}
	for _, h := range st.Shared {
		n += record + len(h.Name)
	}
	for _, w := range st.Waiters {
		n += 2*record + len(w.Name)
	}
	return n
}

type encoder struct{ b []byte }

// conn appends a connection's record.
func (e *encoder) conn(c *Conn) {
	e.string(c.Name)
	e.string(c.Transport)
	e.uvarint(uint64(c.FD))
	e.bytes(c.Input)
	e.bool(c.Discarding)
	e.string(c.RegName)
	e.uvarint(c.RegSeq)
	e.string(c.Ident)
	e.uvarint(uint64(c.AuthFailures))
	e.string(c.PendingVerb)
	e.string(c.PendingName)
	e.varint(c.PendingMS)
	e.varint(c.PendingMax)
	e.uvarint(uint64(len(c.Queued)))
	for _, q := range c.Queued {
		e.string(q.Line)
		e.bool(q.TooLong)
	}
}

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) string(s string) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *encoder) bytes(s []byte) {
	e.uvarint(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *encoder) bool(v bool) {
	if v {
		e.uvarint(1)
	} else {
		e.uvarint(0)
	}
}

// decoder reads an encoding; the first error sticks, and every read after
// it returns zero.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated or bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("string of %d bytes, %d left", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) bool() bool {
	switch d.uvarint() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bad boolean")
	return false
}

// count reads a number of records of at least minBytes each, refusing one
// that the rest of the input cannot hold.
func (d *decoder) count(minBytes int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/minBytes) {
		d.fail("%d records in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

// index reads an index below n.
func (d *decoder) index(n int) int {
	i := d.uvarint()
	if i >= uint64(n) {
		d.fail("index %d out of %d", i, n)
		return 0
	}
	return int(i)
}

// formatOK reports whether this binary reads the format an old process
// announced.
func formatOK(f uint64) bool {
	mine, err := strconv.ParseUint(format, 10, 64)
	return err == nil && mine == f && f <= math.MaxInt32
}
