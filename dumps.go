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
)

// dump is a copy of part of a table, taken by the manager and formatted by
// the connection, so that sorting and printing a big table does not hold up
// the manager. Entries of one key keep their order (the holders' order).
type dump struct {
	format  dumpFormat
	entries []dumpEntry
	details []dumpDetail // dl
	now     int64        // dl: the manager's clock when the copy began
}

// dumpDetail is one line of dl: an exclusive lock, or one holder of a shared
// lock.
type dumpDetail struct {
	lock, owner string
	shared      bool
	token       uint64 // exclusive
	since       int64  // when it was granted, on the manager's clock
	holders     int    // shared
	waiters     int
}

func (d *dump) appendTo(out []byte) []byte {
	if d.format == dumpDetailed {
		return d.appendDetails(out)
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
	pos := 0
	return func(n int) bool {
		t := &m.exclusive
		size := len(t.chunks) * lockChunk
		for end := min(pos+n, size); pos < end; pos++ {
			if l := t.record(lockRef(pos)); l.owner != nil {
				d.entries = append(d.entries, dumpEntry{key: l.name, value: owner(l.owner)})
			}
		}
		return pos >= size
	}
}

// sharedDump copies the shared table (or one name of it) into d, a pair per
// holder.
func (m *manager) sharedDump(d *dump, name []byte, owner func(*connState) string) func(int) bool {
	add := func(l *sharedLock) int {
		n := 0
		for h := l.head; h != nil; h = h.next {
			d.entries = append(d.entries, dumpEntry{key: l.name, value: owner(h.conn)})
			n++
		}
		return n
	}
	if len(name) > 0 {
		if l := m.shared[string(name)]; l != nil {
			add(l)
		}
		return copied
	}
	if len(m.shared) <= dumpStep {
		for _, l := range m.shared {
			add(l)
		}
		return copied
	}
	next, stop := iter.Pull(maps.Values(m.shared))
	return func(n int) bool {
		for n > 0 {
			l, ok := next()
			if !ok {
				stop()
				return true
			}
			n -= add(l)
		}
		return false
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
	addShared := func(l *sharedLock) int {
		w := waiters(m.sharedWaiters, l.name)
		n := 0
		for h := l.head; h != nil; h = h.next {
			d.details = append(d.details, dumpDetail{lock: l.name, owner: h.conn.displayName(),
				shared: true, since: h.since, holders: l.count, waiters: w})
			n++
		}
		return n
	}
	if len(name) > 0 {
		if l, _, _ := m.exclusive.get(name); l != nil {
			addExclusive(l)
		}
		if l := m.shared[string(name)]; l != nil {
			addShared(l)
		}
		return copied
	}
	pos := 0
	var next func() (*sharedLock, bool)
	var stop func()
	return func(n int) bool {
		t := &m.exclusive
		size := len(t.chunks) * lockChunk
		for end := min(pos+n, size); pos < end; pos++ {
			if l := t.record(lockRef(pos)); l.owner != nil {
				addExclusive(l)
			}
			n--
		}
		if pos < size {
			return false
		}
		if next == nil && len(m.shared) <= n {
			for _, l := range m.shared {
				addShared(l)
			}
			return true
		}
		if next == nil {
			next, stop = iter.Pull(maps.Values(m.shared))
		}
		for n > 0 {
			l, ok := next()
			if !ok {
				stop()
				return true
			}
			n -= addShared(l)
		}
		return false
	}
}

func connName(c *connState) string { return c.name }
