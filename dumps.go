package main

import (
	"cmp"
	"iter"
	"maps"
	"runtime"
	"slices"
)

// dumpEntry is one "key: value" pair of a table listing; order sorts who's
// entries.
type dumpEntry struct {
	key, value string
	order      uint64
}

type dumpFormat uint8

const (
	dumpLines     dumpFormat = iota // d, sd: "LOCK: OWNER" lines sorted by lock, holders in order
	dumpOrdered                     // who: "CONN: NAME" lines in the order of registration
	dumpMap                         // dump: map[LOCK:CONN ...]
	dumpSharedMap                   // dump shared: map[LOCK:[CONN CONN] ...]
	dumpDetailed                    // dl: a line per exclusive lock and per shared holder, sorted by lock
	dumpWaiters                     // dw: a line per waiter, sorted by lock, in queue order
)

// dump is a copy of part of a table, taken by the manager and formatted by
// the connection, so that sorting and printing a big table does not hold up
// the manager. Entries of one key keep their order (the holders' order).
type dump struct {
	format  dumpFormat
	entries []dumpEntry
	details []dumpDetail // dl, dw
	now     int64        // dl, dw: the manager's clock when the copy began
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

func (d *dump) appendTo(out []byte) []byte {
	if d.format == dumpDetailed {
		return d.appendDetails(out)
	}
	if d.format == dumpWaiters {
		return d.appendWaiters(out)
	}
	if d.format == dumpOrdered {
		slices.SortFunc(d.entries, func(a, b dumpEntry) int { return cmp.Compare(a.order, b.order) })
	} else {
		slices.SortStableFunc(d.entries, func(a, b dumpEntry) int { return cmp.Compare(a.key, b.key) })
	}
	switch d.format {
	case dumpLines, dumpOrdered:
		for i, e := range d.entries {
			if i%dumpStep == dumpStep-1 {
				runtime.Gosched()
			}
			out = append(out, e.key...)
			out = append(out, ": "...)
			out = append(out, e.value...)
			out = append(out, '\n')
		}
	case dumpMap:
		out = append(out, "map["...)
		for i, e := range d.entries {
			if i > 0 {
				out = append(out, ' ')
			}
			out = append(out, e.key...)
			out = append(out, ':')
			out = append(out, e.value...)
		}
		out = append(out, "]\n"...)
	case dumpSharedMap:
		out = append(out, "map["...)
		for i, e := range d.entries {
			switch {
			case i == 0:
			case e.key == d.entries[i-1].key:
				out = append(out, ' ')
				out = append(out, e.value...)
				continue
			default:
				out = append(out, "] "...)
			}
			out = append(out, e.key...)
			out = append(out, ":["...)
			out = append(out, e.value...)
		}
		if len(d.entries) > 0 {
			out = append(out, ']')
		}
		out = append(out, "]\n"...)
	}
	return out
}

// appendDetails formats dl: "LOCK: OWNER token=T held_ms=MS waiters=W" for
// an exclusive lock, "LOCK: OWNER shared held_ms=MS holders=N waiters=W"
// for each holder of a shared lock, sorted by lock, exclusive first, shared
// holders in the order they took it. An owner may hold spaces (iam names
// do): the fields after it are read from the end of the line.
func (d *dump) appendDetails(out []byte) []byte {
	slices.SortStableFunc(d.details, func(a, b dumpDetail) int {
		if c := cmp.Compare(a.lock, b.lock); c != 0 {
			return c
		}
		return cmp.Compare(btoi(a.shared), btoi(b.shared))
	})
	for i, e := range d.details {
		if i%dumpStep == dumpStep-1 {
			runtime.Gosched()
		}
		out = append(out, e.lock...)
		out = append(out, ": "...)
		out = append(out, e.owner...)
		if e.shared {
			out = append(out, " shared held_ms="...)
			out = appendUint(out, uint64(max(0, d.now-e.since)/1e6))
			out = append(out, " holders="...)
			out = appendUint(out, uint64(e.holders))
		} else {
			out = append(out, " token="...)
			out = appendUint(out, e.token)
			out = append(out, " held_ms="...)
			out = appendUint(out, uint64(max(0, d.now-e.since)/1e6))
		}
		out = append(out, " waiters="...)
		out = appendUint(out, uint64(e.waiters))
		out = append(out, '\n')
	}
	return out
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dumpStep bounds the entries one step of a dump copies: a dump of a big
// table is copied in steps interleaved with other requests, as orphaning is,
// so that it never holds up other clients for long.
const dumpStep = 4096

// dumpJob is a dump being copied: step copies about n more entries and
// reports whether the copy is complete. The connection that asked for it
// waits until then. A dump copied in steps is not a snapshot: a lock held
// throughout is listed once, one taken or released meanwhile may or may not
// be.
type dumpJob struct {
	conn *connState
	step func(n int) (done bool)
}

// startDump begins the dump cmd asks for into b.dump and reports whether it
// is still being copied: then the manager answers the batch when it is.
func (m *manager) startDump(c *connState, cmd *command, b *batch) (pending bool) {
	d := &dump{}
	b.dump = d
	var step func(int) bool
	switch {
	case cmd.verb == verbWho:
		d.format = dumpOrdered
		step = m.registryDump(d, cmd.name)
	case cmd.verb == verbD:
		d.format = dumpLines
		step = m.exclusiveDump(d, cmd.name, (*connState).displayName)
	case cmd.verb == verbSD:
		d.format = dumpLines
		step = m.sharedDump(d, cmd.name, (*connState).displayName)
	case cmd.verb == verbDL:
		d.format, d.now = dumpDetailed, m.now
		step = m.detailedDump(d, cmd.name)
	case cmd.verb == verbDW:
		d.format, d.now = dumpWaiters, m.now
		step = m.waitersDump(d, cmd.name)
	case string(cmd.name) == "shared":
		d.format = dumpSharedMap
		step = m.sharedDump(d, nil, connName)
	default:
		d.format = dumpMap
		step = m.exclusiveDump(d, nil, connName)
	}
	if step(dumpStep) {
		return false
	}
	m.dumps = append(m.dumps, &dumpJob{conn: c, step: step})
	return true
}

// dumpStepAll copies one step of the oldest dump, and answers its
// connection when that dump is complete; an incomplete one goes to the back,
// so that dumps share the manager's time.
func (m *manager) dumpStepAll() {
	job := m.dumps[0]
	m.dumps[0] = nil
	m.dumps = m.dumps[1:]
	if job.step(dumpStep) {
		job.conn.done <- struct{}{}
		return
	}
	m.dumps = append(m.dumps, job)
}

// copied is the step of a dump copied whole when it began.
func copied(int) bool { return true }

// exclusiveDump copies the exclusive table, or the entry of name when one is
// given, into d. owner picks the name shown for the holder. The full table
// is walked in the order of its slab, where records never move.
func (m *manager) exclusiveDump(d *dump, name []byte, owner func(*connState) string) func(int) bool {
	if len(name) > 0 {
		if l, _, _ := m.exclusive.get(name); l != nil {
			d.entries = []dumpEntry{{key: l.name, value: owner(l.owner)}}
		}
		return copied
	}
	d.entries = make([]dumpEntry, 0, m.exclusive.count)
	steps := m.exclusiveSteps(func(l *exclusiveLock) {
		d.entries = append(d.entries, dumpEntry{key: l.name, value: owner(l.owner)})
	})
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
		if ref, _ := m.shared.find(name); ref != noRef {
			add(ref)
		}
		return copied
	}
	return m.sharedSteps(add)
}

// sharedSteps walks the shared table's names in the order of their slab,
// where records never move, calling add with each; a step ends once about n
// entries (or free records) have gone by.
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
// filter, when one is given) into d, with their order of registration; the
// connection sorts them.
func (m *manager) registryDump(d *dump, filter []byte) func(int) bool {
	add := func(c *connState) {
		if len(filter) == 0 || c.regName == string(filter) {
			d.entries = append(d.entries, dumpEntry{key: c.name, value: c.regName, order: c.regSeq})
		}
	}
	members := m.registry.members
	if len(members) <= dumpStep {
		for c := range members {
			add(c)
		}
		return copied
	}
	next, stop := iter.Pull(maps.Keys(members))
	return func(n int) bool {
		for ; n > 0; n-- {
			c, ok := next()
			if !ok {
				stop()
				return true
			}
			add(c)
		}
		return false
	}
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
		if l, _, _ := m.exclusive.get(name); l != nil {
			addExclusive(l)
		}
		if ref, _ := m.shared.find(name); ref != noRef {
			addShared(ref)
		}
		return copied
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
// waiter in queue order: the exclusive queues, then the shared ones. A queue
// is copied whole in one step; the steps walk the queues' names.
func (m *manager) waitersDump(d *dump, name []byte) func(int) bool {
	add := func(q *waitQueue) int {
		for w := q.head; w != nil; w = w.next {
			d.details = append(d.details, dumpDetail{lock: w.name, owner: w.conn.displayName(),
				shared: w.shared, since: int64(w.started.Sub(m.start)), cycle: m.cycleOf(w)})
		}
		return q.length
	}
	if len(name) > 0 {
		for _, table := range []map[string]*waitQueue{m.waiters, m.sharedWaiters} {
			if q := table[string(name)]; q != nil {
				add(q)
			}
		}
		return copied
	}
	if m.waiterCount <= dumpStep {
		for _, table := range []map[string]*waitQueue{m.waiters, m.sharedWaiters} {
			for _, q := range table {
				add(q)
			}
		}
		return copied
	}
	tables := []map[string]*waitQueue{m.waiters, m.sharedWaiters}
	next, stop := iter.Pull(maps.Keys(tables[0]))
	return func(n int) bool {
		for n > 0 {
			lock, ok := next()
			if !ok {
				stop()
				if tables = tables[1:]; len(tables) == 0 {
					return true
				}
				next, stop = iter.Pull(maps.Keys(tables[0]))
				continue
			}
			// The queue may have gone since the walk began.
			if q := tables[0][lock]; q != nil {
				n -= add(q)
			}
			n--
		}
		return false
	}
}

// appendWaiters formats dw: "LOCK: WAITER queued_ms=MS" per waiter, with
// "shared" before queued_ms for sgw's waiters and " deadlock=N" after it
// for a wait in a deadlock reported (not broken) as number N; sorted by
// lock, exclusive queue first, each queue in its order. A waiter's name may
// hold spaces (iam names do): the fields after it are read from the end.
func (d *dump) appendWaiters(out []byte) []byte {
	slices.SortStableFunc(d.details, func(a, b dumpDetail) int {
		if c := cmp.Compare(a.lock, b.lock); c != 0 {
			return c
		}
		return cmp.Compare(btoi(a.shared), btoi(b.shared))
	})
	for i, e := range d.details {
		if i%dumpStep == dumpStep-1 {
			runtime.Gosched()
		}
		out = append(out, e.lock...)
		out = append(out, ": "...)
		out = append(out, e.owner...)
		if e.shared {
			out = append(out, " shared"...)
		}
		out = append(out, " queued_ms="...)
		out = appendUint(out, uint64(max(0, d.now-e.since)/1e6))
		if e.cycle != 0 {
			out = append(out, " deadlock="...)
			out = appendUint(out, e.cycle)
		}
		out = append(out, '\n')
	}
	return out
}
