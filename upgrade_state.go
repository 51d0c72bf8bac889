package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// The state an old process hands to a new one (upgrade.go), and its
// encoding. docs/operating.md, "Upgrading without dropping locks", describes
// the format; handoverFormat is its version, sent first, and a process only
// reads the version it writes.
//
// Every integer is a varint (encoding/binary's Uvarint, or Varint for signed
// values), every string or byte string a uvarint length and its bytes.
const handoverMagic = "glockd-handover"

// handoverFormat is the version of the state encoding this binary writes and
// reads. It is a string so that a test can build a binary that speaks
// another (-ldflags -X main.handoverFormat=...); it is never written at run
// time.
var handoverFormat = "2"

// handoverState is everything the new process needs, besides the
// descriptors, which travel beside it and are known here by their index.
type handoverState struct {
	wall      int64  // when the snapshot was taken, Unix nanoseconds
	nextToken uint64 // the next fencing token: the new source never goes below
	commands  map[string]uint64
	invalid   uint64
	orphans   uint64
	sharedOrp uint64
	regSeq    uint64 // the registry's last sequence number
	// The upgrade metrics, carried on: hand-overs done (this one
	// included) and connections closed at them, by transport.
	upgrades  uint64
	closed    map[string]uint64
	pidfile   int // index of the pidfile's descriptor, or -1
	listeners []listenerState
	conns     []connHandover
	locks     []heldLock        // oldest grant first
	shared    []sharedHoldState // oldest grant first
	waiters   []waiterState
	ha        *haHandover // an -etcd leader's term; nil otherwise
}

// haHandover is an -etcd leader's term, resumed by the new process: the
// lease, the election key, the rest of its tokens, and the time left before
// its deadline when the snapshot was taken (the new process takes the exact
// time left from the go message, see upgrade.go).
type haHandover struct {
	lease     int64  // the etcd lease ID
	ttl       int64  // its TTL in seconds
	key       string // the election key
	rev       int64  // its create revision
	block     tokenBlock
	left      int64  // nanoseconds to the deadline at the snapshot
	elections uint64 // glockd_elections_won_total, carried on
}

type listenerState struct {
	kind string // "tcp", "websocket", "unix", "tls", "metrics"
	fd   int
	path string // the unix socket's path
}

// connHandover is one connection: its descriptor, its unread input (a
// partial line) and the manager's view of it.
type connHandover struct {
	name, transport string
	fd              int
	input           []byte
	discarding      bool
	regName         string
	regSeq          uint64
	ident           string // the ACL identity's name, if identified
	authFailures    int
	// A pending gw or sgw: its verb's word ("" when none), name, MS and
	// MAX, and the lines that arrived behind it, still to run.
	pendingVerb string
	pendingName string
	pendingMS   int64
	pendingMax  int64
	queued      []queuedLineState
}

type queuedLineState struct {
	line    string
	tooLong bool // only its reply is kept
}

type heldLock struct {
	name  string
	conn  int
	token uint64
	age   int64 // nanoseconds since it was granted
}

type sharedHoldState struct {
	name string
	conn int
	age  int64
}

// waiterState is a pending wait, in the order the waits began; the queues
// are rebuilt in that order, which is each queue's order.
type waiterState struct {
	name      string
	conn      int
	shared    bool
	async     bool
	max       int
	remaining int64 // nanoseconds left before it times out; -1: no limit
	age       int64 // nanoseconds since it began
}

// encode appends the state's encoding, format handoverFormat.
func (st *handoverState) encode(b []byte) []byte {
	e := encoder{b}
	e.varint(st.wall)
	e.uvarint(st.nextToken)
	e.uvarint(uint64(len(st.commands)))
	for word, n := range st.commands {
		e.string(word)
		e.uvarint(n)
	}
	e.uvarint(st.invalid)
	e.uvarint(st.orphans)
	e.uvarint(st.sharedOrp)
	e.uvarint(st.regSeq)
	e.uvarint(st.upgrades)
	e.uvarint(uint64(len(st.closed)))
	for transport, n := range st.closed {
		e.string(transport)
		e.uvarint(n)
	}
	e.varint(int64(st.pidfile))
	e.uvarint(uint64(len(st.listeners)))
	for _, l := range st.listeners {
		e.string(l.kind)
		e.uvarint(uint64(l.fd))
		e.string(l.path)
	}
	e.uvarint(uint64(len(st.conns)))
	for _, c := range st.conns {
		e.string(c.name)
		e.string(c.transport)
		e.uvarint(uint64(c.fd))
		e.string(string(c.input))
		e.bool(c.discarding)
		e.string(c.regName)
		e.uvarint(c.regSeq)
		e.string(c.ident)
		e.uvarint(uint64(c.authFailures))
		e.string(c.pendingVerb)
		e.string(c.pendingName)
		e.varint(c.pendingMS)
		e.varint(c.pendingMax)
		e.uvarint(uint64(len(c.queued)))
		for _, q := range c.queued {
			e.string(q.line)
			e.bool(q.tooLong)
		}
	}
	e.uvarint(uint64(len(st.locks)))
	for _, l := range st.locks {
		e.string(l.name)
		e.uvarint(uint64(l.conn))
		e.uvarint(l.token)
		e.varint(l.age)
	}
	e.uvarint(uint64(len(st.shared)))
	for _, h := range st.shared {
		e.string(h.name)
		e.uvarint(uint64(h.conn))
		e.varint(h.age)
	}
	e.uvarint(uint64(len(st.waiters)))
	for _, w := range st.waiters {
		e.string(w.name)
		e.uvarint(uint64(w.conn))
		e.bool(w.shared)
		e.bool(w.async)
		e.uvarint(uint64(w.max))
		e.varint(w.remaining)
		e.varint(w.age)
	}
	e.bool(st.ha != nil)
	if h := st.ha; h != nil {
		e.varint(h.lease)
		e.varint(h.ttl)
		e.string(h.key)
		e.varint(h.rev)
		e.uvarint(h.block.start)
		e.uvarint(h.block.end)
		e.varint(h.left)
		e.uvarint(h.elections)
	}
	return e.b
}

// decodeHandoverState reads what encode wrote; fds is how many descriptors
// came with it, and every index must be below it.
func decodeHandoverState(b []byte, fds int) (*handoverState, error) {
	d := decoder{b: b}
	st := &handoverState{commands: make(map[string]uint64)}
	st.wall = d.varint()
	st.nextToken = d.uvarint()
	for n := d.count(2); n > 0; n-- {
		word := d.string()
		st.commands[word] = d.uvarint()
	}
	st.invalid, st.orphans, st.sharedOrp = d.uvarint(), d.uvarint(), d.uvarint()
	st.regSeq = d.uvarint()
	st.upgrades = d.uvarint()
	st.closed = make(map[string]uint64)
	for n := d.count(2); n > 0; n-- {
		transport := d.string()
		st.closed[transport] = d.uvarint()
	}
	st.pidfile = int(d.varint())
	if st.pidfile < -1 || st.pidfile >= fds {
		d.fail("pidfile descriptor %d of %d", st.pidfile, fds)
	}
	for n := d.count(3); n > 0; n-- {
		st.listeners = append(st.listeners, listenerState{kind: d.string(), fd: d.index(fds), path: d.string()})
	}
	for n := d.count(14); n > 0; n-- {
		c := connHandover{
			name: d.string(), transport: d.string(), fd: d.index(fds),
			input: []byte(d.string()), discarding: d.bool(),
			regName: d.string(), regSeq: d.uvarint(), ident: d.string(),
			authFailures: int(d.uvarint()),
			pendingVerb:  d.string(), pendingName: d.string(), pendingMS: d.varint(), pendingMax: d.varint(),
		}
		for q := d.count(2); q > 0; q-- {
			c.queued = append(c.queued, queuedLineState{line: d.string(), tooLong: d.bool()})
		}
		st.conns = append(st.conns, c)
	}
	conns := len(st.conns)
	if n := d.count(4); d.err == nil {
		st.locks = make([]heldLock, 0, n)
		for ; n > 0; n-- {
			st.locks = append(st.locks, heldLock{name: d.string(), conn: d.index(conns), token: d.uvarint(), age: d.varint()})
		}
	}
	if n := d.count(3); d.err == nil {
		st.shared = make([]sharedHoldState, 0, n)
		for ; n > 0; n-- {
			st.shared = append(st.shared, sharedHoldState{name: d.string(), conn: d.index(conns), age: d.varint()})
		}
	}
	for n := d.count(7); n > 0; n-- {
		st.waiters = append(st.waiters, waiterState{name: d.string(), conn: d.index(conns), shared: d.bool(),
			async: d.bool(), max: int(d.uvarint()), remaining: d.varint(), age: d.varint()})
	}
	if d.bool() {
		st.ha = &haHandover{lease: d.varint(), ttl: d.varint(), key: d.string(), rev: d.varint(),
			block: tokenBlock{start: d.uvarint(), end: d.uvarint()}, left: d.varint(), elections: d.uvarint()}
		if d.err == nil && (st.ha.block.start > st.ha.block.end || st.ha.block.end > maxToken+1) {
			d.fail("token block [%d, %d)", st.ha.block.start, st.ha.block.end)
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

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) string(s string) {
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

// errHandoverBusy is a snapshot put off: long work (orphaning, a
// pending kill) is under way in the manager.
var errHandoverBusy = errors.New("the manager is busy with long work")

// snapshot copies the manager's state for a hand-over; conns are the
// connections handed over, in the order of their indexes. Every connection
// has stopped at a batch boundary, so nothing changes meanwhile but what
// timers and the manager do. Run in the manager.
func (m *manager) snapshotHandover(st *handoverState, conns []*connState) error {
	if len(m.orphaning) > 0 || len(m.sec.kills) > 0 {
		return errHandoverBusy
	}
	if l := m.leader; l != nil {
		// A leader hands over the rest of its tokens; a standby has none.
		if t := l.current.Load(); t != nil {
			switch {
			case !t.valid() || (t == l.seen && l.fenced):
				return errors.New("the term ended: not leading any more")
			case t != l.seen:
				// Not one request run in this term yet: its first block
				// is untouched.
				st.ha = &haHandover{block: t.first}
			default:
				ts := &m.tokens
				b := tokenBlock{start: ts.next, end: ts.end}
				if b.end-b.start < tokenReserve && ts.pending.end > 0 {
					b = ts.pending // the rest of the current block is wasted
				}
				st.ha = &haHandover{block: b}
			}
		} else if len(conns) > 0 {
			return errors.New("a standby with connections")
		}
	}
	index := make(map[*connState]int, len(conns))
	for i, c := range conns {
		index[c] = i
	}
	m.now = int64(time.Since(m.start))
	st.wall = time.Now().UnixNano()
	st.nextToken = m.tokens.next
	st.commands = make(map[string]uint64)
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		if n := m.stats.commands[v]; n > 0 {
			st.commands[v.String()] = n
		}
	}
	st.invalid, st.orphans, st.sharedOrp = m.stats.invalid, m.stats.orphans, m.stats.sharedOrphans
	st.regSeq = m.registry.lastSeq
	for i, c := range conns {
		h := &st.conns[i]
		h.regName, h.regSeq = c.regName, c.regSeq
		if c.ident != nil {
			h.ident = c.ident.name
		}
	}
	st.locks, st.shared, st.waiters = make([]heldLock, 0, m.exclusive.count), nil, nil
	for ref := m.exclusive.oldest; ref != noRef; {
		l := m.exclusive.record(ref)
		i, ok := index[l.owner]
		if !ok {
			return fmt.Errorf("lock %q is held by %s, which is not handed over", l.name, l.owner.name)
		}
		st.locks = append(st.locks, heldLock{name: l.name, conn: i, token: l.token, age: m.now - l.since})
		ref = l.newer
	}
	for ref := m.shared.oldest; ref != noRef; {
		h := m.shared.holder(ref)
		i, ok := index[h.conn]
		if !ok {
			return fmt.Errorf("shared lock %q is held by %s, which is not handed over", m.shared.name(h.lock).name, h.conn.name)
		}
		st.shared = append(st.shared, sharedHoldState{name: m.shared.name(h.lock).name, conn: i, age: m.now - h.since})
		ref = h.newer
	}
	for w := m.waitAges.oldest; w != nil; w = w.newer {
		i, ok := index[w.conn]
		if !ok {
			return fmt.Errorf("a wait for %q is of %s, which is not handed over", w.name, w.conn.name)
		}
		ws := waiterState{name: w.name, conn: i, shared: w.shared, async: w.async, max: w.max,
			remaining: -1, age: int64(time.Since(w.started))}
		if w.timer != nil {
			ws.remaining = max(0, int64(time.Until(w.deadline)))
		}
		st.waiters = append(st.waiters, ws)
	}
	return nil
}

// restoreHandover fills a new manager, not yet running, with the state; conns
// are the connections' new states, by index.
func (m *manager) restoreHandover(st *handoverState, conns []*connState) error {
	m.now = int64(time.Since(m.start))
	// What passed since the snapshot, by the wall clock (the monotonic
	// clocks of two processes cannot be compared); never negative.
	gap := max(0, time.Now().UnixNano()-st.wall)
	// With -etcd the tokens come from the term's block (leader.go).
	if st.nextToken > m.tokens.next && m.leader == nil {
		m.tokens.next = min(st.nextToken, maxToken)
	}
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		m.stats.commands[v] = st.commands[v.String()]
	}
	m.stats.invalid, m.stats.orphans, m.stats.sharedOrphans = st.invalid, st.orphans, st.sharedOrp
	m.registry.lastSeq = st.regSeq
	for i, h := range st.conns {
		c := conns[i]
		if h.regSeq != 0 {
			c.regName, c.regSeq = h.regName, h.regSeq
			m.registry.members[c] = struct{}{}
		}
		if h.ident != "" && m.sec.acl != nil {
			if id := m.sec.acl.byName[h.ident]; id != nil {
				c.ident = id
				c.identified.Store(true)
			}
		}
	}
	for _, l := range st.locks {
		if found, _, _ := m.exclusive.get([]byte(l.name)); found != nil {
			return fmt.Errorf("lock %q handed over twice", l.name)
		}
		frag := m.exclusive.hashFragment([]byte(l.name))
		rec, ref := m.exclusive.insert(l.name, frag)
		c := conns[l.conn]
		rec.owner, rec.token, rec.index = c, l.token, uint32(len(c.held))
		m.exclusive.age(ref, m.now-l.age-gap)
		c.held = append(c.held, ref)
	}
	for _, h := range st.shared {
		c := conns[h.conn]
		ref := m.shared.findString(h.name)
		if ref == noRef {
			ref = m.shared.addName(h.name, uint32(maphash.String(m.shared.seed, h.name)>>32))
		} else if m.shared.heldBy(c, ref) != noRef {
			return fmt.Errorf("shared lock %q handed over twice for one connection", h.name)
		}
		m.shared.addHolder(c, ref, m.now-h.age-gap)
	}
	for _, ws := range st.waiters {
		ms := int64(proto.NoWait)
		if ws.remaining >= 0 {
			// Rounded up: a wait never ends before its original time.
			left := max(0, time.Duration(ws.remaining-gap))
			ms = int64((left + time.Millisecond - 1) / time.Millisecond)
		}
		c := conns[ws.conn]
		if ws.async {
			m.outbox(c)
		} else if c.waiter != nil {
			return fmt.Errorf("connection %s handed over with two waits pending", c.name)
		}
		// The old process let this wait stand, so it closes no cycle to
		// break; under -deadlocks report a standing cycle is found (logged,
		// counted) again.
		if m.wait(c, ws.name, ws.shared, int64(ws.max), ms, ws.async) == waitRefused {
			return fmt.Errorf("the wait of %s for %q would close a deadlock", c.name, ws.name)
		}
		w := c.waiter
		if ws.async {
			w = c.asyncWaits[waitKey{ws.name, ws.shared}]
		}
		w.started = time.Now().Add(-time.Duration(ws.age + gap))
	}
	return nil
}

// formatVersionOK reports whether this binary reads the format an old process
// announced.
func formatVersionOK(format uint64) bool {
	mine, err := strconv.ParseUint(handoverFormat, 10, 64)
	return err == nil && mine == format && format <= math.MaxInt32
}
