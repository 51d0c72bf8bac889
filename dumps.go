package main

import (
	"maps"
	"slices"

	"github.com/glockd/glockd/internal/proto"
)

// dumpEntry is one "key: value" pair of a table listing.
type dumpEntry struct {
	key, value string
}

type dumpFormat uint8

const (
	dumpLines     dumpFormat = iota // d, sd, who: "KEY: VALUE" lines
	dumpMap                         // dump: map[LOCK:CONN ...]
	dumpSharedMap                   // dump shared: map[LOCK:[CONN CONN] ...]
	dumpDetailed                    // dl: a line per exclusive lock and per shared holder
	dumpWaiters                     // dw: a line per waiter, each lock's queue in order
)

// dump is a listing produced in steps: the manager copies a step of the
// table (about dumpStep entries) into entries or details, the connection
// formats and writes it, then asks for the next step (manager.dumpStep).
// What a dump holds at any time is one step, whatever the size of the
// table, and the manager is held up by one step at a time. The table is
// walked in the order of its slab, not sorted: sorting needs the whole table
// at once. Entries of one shared lock come in one step, in the holders'
// order.
type dump struct {
	format  dumpFormat
	entries []dumpEntry
	details []dumpDetail // dl, dw
	now     int64        // dl, dw: the manager's clock when the step was copied

	// step copies the next step into entries or details and reports
	// whether the dump is then complete. Only the manager calls it; nil
	// once the dump is complete.
	step func(n int) (done bool)

	listed bool // dump, dump shared: an entry has been formatted
	cut    bool // the manager ended the dump unfinished (fence.go)
}

// dumpDetail is one line of dl (an exclusive lock, or one holder of a
// shared lock) or of dw (a waiter).
type dumpDetail struct {
	lock, owner string
	shared      bool
	token       uint64 // exclusive
	since       int64  // when it was granted (dw: queued), on the manager's clock
	holders     int    // shared
	waiters     int
	cycle       uint64 // dw: the reported deadlock the wait is in, or 0
}

// done reports whether the dump is complete: its last step is copied.
func (d *dump) done() bool { return d.step == nil }

// appendStep formats the step copied last, and the end of the reply when
// it was the last.
func (d *dump) appendStep(out []byte) []byte {
	switch d.format {
	case dumpDetailed:
		out = d.appendDetails(out)
	case dumpWaiters:
		out = d.appendWaiters(out)
	case dumpLines:
		for _, e := range d.entries {
			out = append(out, e.key...)
			out = append(out, ": "...)
			out = append(out, e.value...)
			out = append(out, '\n')
		}
	case dumpMap:
		for _, e := range d.entries {
			out = d.appendSeparator(out, "map[", " ")
			out = append(out, e.key...)
			out = append(out, ':')
			out = append(out, e.value...)
		}
	case dumpSharedMap:
		for i, e := range d.entries {
			if i > 0 && e.key == d.entries[i-1].key {
				out = append(out, ' ')
				out = append(out, e.value...)
				continue
			}
			out = d.appendSeparator(out, "map[", "] ")
			out = append(out, e.key...)
			out = append(out, ":["...)
			out = append(out, e.value...)
		}
	}
	if !d.done() || d.cut || (d.format != dumpMap && d.format != dumpSharedMap) {
		return out
	}
	switch {
	case !d.listed:
		out = append(out, "map[]\n"...)
	case d.format == dumpSharedMap:
		out = append(out, "]]\n"...)
	default:
		out = append(out, "]\n"...)
	}
	return out
}

// appendSeparator appends first before a map's first entry, else between.
func (d *dump) appendSeparator(out []byte, first, between string) []byte {
	if d.listed {
		return append(out, between...)
	}
	d.listed = true
	return append(out, first...)
}

// appendDetails formats dl: "LOCK: OWNER token=T held_ms=MS waiters=W" for
// an exclusive lock, "LOCK: OWNER shared held_ms=MS holders=N waiters=W"
// for each holder of a shared lock, the holders of one lock in the order
// they took it. An owner may hold spaces (iam names do): the fields after
// it are read from the end of the line.
func (d *dump) appendDetails(out []byte) []byte {
	for _, e := range d.details {
		out = append(out, e.lock...)
		out = append(out, ": "...)
		out = append(out, e.owner...)
		if e.shared {
			out = append(out, " shared held_ms="...)
			out = proto.AppendUint(out, uint64(max(0, d.now-e.since)/1e6))
			out = append(out, " holders="...)
			out = proto.AppendUint(out, uint64(e.holders))
		} else {
			out = append(out, " token="...)
			out = proto.AppendUint(out, e.token)
			out = append(out, " held_ms="...)
			out = proto.AppendUint(out, uint64(max(0, d.now-e.since)/1e6))
		}
		out = append(out, " waiters="...)
		out = proto.AppendUint(out, uint64(e.waiters))
		out = append(out, '\n')
	}
	return out
}

// dumpStep bounds the entries one step of a dump copies: a dump of a big
// table is copied in steps interleaved with other requests, as orphaning is,
// so that it never holds up other clients for long, and a dump holds one
// step's entries and their formatted lines at a time.
const dumpStep = 4096

// startDump begins the dump cmd asks for into b.dump and copies its first
// step. A dump copied in steps is not a snapshot: a lock held throughout is
// listed once, one taken or released meanwhile may or may not be.
func (m *manager) startDump(cmd *proto.Command, b *batch) {
	d, _ := m.dumps.Get().(*dump)
	if d == nil {
		d = &dump{entries: make([]dumpEntry, 0, dumpStep)}
	}
	*d = dump{entries: d.entries[:0], details: d.details[:0]}
	b.dump = d
	switch {
	case cmd.Verb == proto.VerbWho:
		d.format = dumpLines
		d.step = m.registryDump(d, cmd.Name)
	case cmd.Verb == proto.VerbD:
		d.format = dumpLines
		d.step = m.exclusiveDump(d, cmd.Name, (*connState).displayName)
	case cmd.Verb == proto.VerbSD:
		d.format = dumpLines
		d.step = m.sharedDump(d, cmd.Name, (*connState).displayName)
	case cmd.Verb == proto.VerbDL:
		d.format = dumpDetailed
		d.step = m.detailedDump(d, cmd.Name)
	case cmd.Verb == proto.VerbDW:
		d.format = dumpWaiters
		d.step = m.waitersDump(d, cmd.Name)
	case string(cmd.Name) == "shared":
		d.format = dumpSharedMap
		d.step = m.sharedDump(d, nil, connName)
	default:
		d.format = dumpMap
		d.step = m.exclusiveDump(d, nil, connName)
	}
	m.copyStep(d)
}

// copyStep copies the next step of d, in place of the last one.
func (m *manager) copyStep(d *dump) {
	clear(d.entries) // let go of the names the last step listed
	clear(d.details)
	d.entries, d.details, d.now = d.entries[:0], d.details[:0], m.now
	if d.step(dumpStep) {
		d.step = nil
	}
}

// releaseDump keeps a finished dump's buffers for the next one, without
// the names its last step listed.
func (m *manager) releaseDump(d *dump) {
	clear(d.entries)
	clear(d.details)
	d.step = nil
	m.dumps.Put(d)
}

// dumpStep asks the manager for the next step of d (see conn.appendDump),
// and waits until it is copied.
func (m *manager) dumpStep(c *connState, d *dump) {
	m.requests <- request{kind: requestDumpStep, conn: c, dump: d}
	<-c.done
}

// exclusiveDump copies the exclusive table, or the entry of name when one is
// given, into d. owner picks the name shown for the holder. The full table
// is walked in the order of its slab, where records never move.
func (m *manager) exclusiveDump(d *dump, name []byte, owner func(*connState) string) func(int) bool {
	add := func(l *exclusiveLock) {
		d.entries = append(d.entries, dumpEntry{key: l.name, value: owner(l.owner)})
	}
	if len(name) > 0 {
		return func(int) bool {
			if l, _, _ := m.exclusive.get(name); l != nil {
				add(l)
			}
			return true
		}
	}
	steps := m.exclusiveSteps(add)
	return func(n int) bool {
		_, done := steps(n)
		return done
	}
}

// exclusiveSteps walks the exclusive table in the order of its slab, where
// records never move, calling add with each held lock; a step ends once n
// records have gone by, and reports how many of the n were left over and
// whether the walk is complete.
func (m *manager) exclusiveSteps(add func(*exclusiveLock)) func(n int) (left int, done bool) {
	pos := 0
	return func(n int) (int, bool) {
		t := &m.exclusive
		size := len(t.chunks) * lockChunk
		end := max(pos, min(pos+n, size)) // the table may have shrunk since
		left := n - (end - pos)
		for ; pos < end; pos++ {
			if l := t.record(lockRef(pos)); l.owner != nil {
				add(l)
			}
		}
		return left, pos >= size
	}
}

// sharedDump copies the shared table (or one name of it) into d, a pair per
// holder.
func (m *manager) sharedDump(d *dump, name []byte, owner func(*connState) string) func(int) bool {
	add := func(ref lockRef) int {
		n := m.shared.name(ref)
		m.shared.eachHolder(ref, func(h *sharedHolder) {
			d.entries = append(d.entries, dumpEntry{key: n.name, value: owner(h.conn)})
		})
		return int(n.count)
	}
	if len(name) > 0 {
		return func(int) bool {
			if ref, _ := m.shared.find(name); ref != noRef {
				add(ref)
			}
			return true
		}
	}
	return m.sharedSteps(add)
}

// sharedSteps walks the shared table's names in the order of their slab,
// where records never move, calling add with each; a step ends once about n
// entries (or free records) have gone by. A name's holders are added
// together, in one step.
func (m *manager) sharedSteps(add func(ref lockRef) (entries int)) func(int) bool {
	pos := 0
	return func(n int) bool {
		size := len(m.shared.nameChunks) * lockChunk
		for ; pos < size && n > 0; pos++ {
			if m.shared.name(lockRef(pos)).count == 0 {
				n--
				continue
			}
			n -= max(1, add(lockRef(pos)))
		}
		return pos >= size
	}
}

// registryDump copies the registered connections (those registered as
// filter, when one is given) into d, in the order of registration.
func (m *manager) registryDump(d *dump, name []byte) func(int) bool {
	filter := string(name) // name aliases the connection's buffer, which later steps outlive
	return m.registry.steps(func(c *connState) {
		if filter == "" || c.regName == filter {
			d.entries = append(d.entries, dumpEntry{key: c.name, value: c.regName})
		}
	})
}

// detailedDump copies what dl lists into d: the exclusive table, then the
// shared one (or the entries of name in each).
func (m *manager) detailedDump(d *dump, name []byte) func(int) bool {
	waiters := func(table map[string]*waitQueue, name string) int {
		if q := table[name]; q != nil {
			return q.length
		}
		return 0
	}
	addExclusive := func(l *exclusiveLock) {
		d.details = append(d.details, dumpDetail{lock: l.name, owner: l.owner.displayName(),
			token: l.token, since: l.since, waiters: waiters(m.waiters, l.name)})
	}
	addShared := func(ref lockRef) int {
		n := m.shared.name(ref)
		w := waiters(m.sharedWaiters, n.name)
		m.shared.eachHolder(ref, func(h *sharedHolder) {
			d.details = append(d.details, dumpDetail{lock: n.name, owner: h.conn.displayName(),
				shared: true, since: h.since, holders: int(n.count), waiters: w})
		})
		return int(n.count)
	}
	if len(name) > 0 {
		return func(int) bool {
			if l, _, _ := m.exclusive.get(name); l != nil {
				addExclusive(l)
			}
			if ref, _ := m.shared.find(name); ref != noRef {
				addShared(ref)
			}
			return true
		}
	}
	exclusive, shared := m.exclusiveSteps(addExclusive), m.sharedSteps(addShared)
	return func(n int) bool {
		left, done := exclusive(n)
		if !done {
			return false
		}
		return shared(max(left, 1))
	}
}

func connName(c *connState) string { return c.name }

// waitersDump copies the wait queues (or those of name) into d, a line per
// waiter, each queue whole in one step and in its order: the exclusive
// queues, then the shared ones, in no order of name. The names of the
// queues are listed when the walk begins (a string header per queue); a
// queue gone by the time its turn comes is skipped.
func (m *manager) waitersDump(d *dump, name []byte) func(int) bool {
	add := func(q *waitQueue) int {
		for w := q.head; w != nil; w = w.next {
			d.details = append(d.details, dumpDetail{lock: w.name, owner: w.conn.displayName(),
				shared: w.shared, since: int64(w.started.Sub(m.start)), cycle: m.cycleOf(w)})
		}
		return q.length
	}
	if len(name) > 0 {
		return func(int) bool {
			for _, table := range []map[string]*waitQueue{m.waiters, m.sharedWaiters} {
				if q := table[string(name)]; q != nil {
					add(q)
				}
			}
			return true
		}
	}
	var exclusive, shared []string
	listed := false
	return func(n int) bool {
		if !listed {
			listed = true
			exclusive = slices.Collect(maps.Keys(m.waiters))
			shared = slices.Collect(maps.Keys(m.sharedWaiters))
		}
		for n > 0 {
			var lock string
			table := m.waiters
			switch {
			case len(exclusive) > 0:
				lock, exclusive = exclusive[len(exclusive)-1], exclusive[:len(exclusive)-1]
			case len(shared) > 0:
				lock, shared, table = shared[len(shared)-1], shared[:len(shared)-1], m.sharedWaiters
			default:
				return true
			}
			if q := table[lock]; q != nil {
				n -= add(q)
			}
			n--
		}
		return len(exclusive) == 0 && len(shared) == 0
	}
}

// appendWaiters formats dw: "LOCK: WAITER queued_ms=MS" per waiter, with
// "shared" before queued_ms for a shared lock's waiter and " deadlock=ID"
// after it for a wait in a deadlock found with -deadlocks report that is
// not broken yet. A waiter may hold spaces (iam names do).
func (d *dump) appendWaiters(out []byte) []byte {
	for _, e := range d.details {
		out = append(out, e.lock...)
		out = append(out, ": "...)
		out = append(out, e.owner...)
		if e.shared {
			out = append(out, " shared"...)
		}
		out = append(out, " queued_ms="...)
		out = proto.AppendUint(out, uint64(max(0, d.now-e.since)/1e6))
		if e.cycle != 0 {
			out = append(out, " deadlock="...)
			out = proto.AppendUint(out, e.cycle)
		}
		out = append(out, '\n')
	}
	return out
}
