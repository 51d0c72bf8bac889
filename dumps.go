package main

import (
	"cmp"
	"slices"
)

// dumpEntry is one "key: value" pair of a table listing.
type dumpEntry struct{ key, value string }

type dumpFormat uint8

const (
	dumpLines     dumpFormat = iota // d, sd: "LOCK: OWNER" lines sorted by lock, holders in order
	dumpOrdered                     // who: "CONN: NAME" lines in the order given
	dumpMap                         // dump: map[LOCK:CONN ...]
	dumpSharedMap                   // dump shared: map[LOCK:[CONN CONN] ...]
)

// dump is a copy of part of a table, taken by the manager and formatted by
// the connection, so that sorting and printing a big table does not hold up
// the manager. Entries of one key keep their order (the holders' order).
type dump struct {
	format  dumpFormat
	entries []dumpEntry
}

func (d *dump) appendTo(out []byte) []byte {
	if d.format != dumpOrdered {
		slices.SortStableFunc(d.entries, func(a, b dumpEntry) int { return cmp.Compare(a.key, b.key) })
	}
	switch d.format {
	case dumpLines, dumpOrdered:
		for _, e := range d.entries {
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

// exclusiveDump copies the exclusive table, or the entry of name when one is
// given. owner picks the name shown for the holder.
func (m *manager) exclusiveDump(name []byte, owner func(*connState) string) []dumpEntry {
	if len(name) > 0 {
		if l, _, _ := m.exclusive.get(name); l != nil {
			return []dumpEntry{{key: l.name, value: owner(l.owner)}}
		}
		return nil
	}
	entries := make([]dumpEntry, 0, m.exclusive.count)
	m.exclusive.each(func(l *exclusiveLock) {
		entries = append(entries, dumpEntry{key: l.name, value: owner(l.owner)})
	})
	return entries
}

// sharedDump copies the shared table (or one name of it), a pair per holder.
func (m *manager) sharedDump(name []byte, owner func(*connState) string) []dumpEntry {
	var entries []dumpEntry
	add := func(l *sharedLock) {
		for h := l.head; h != nil; h = h.next {
			entries = append(entries, dumpEntry{key: l.name, value: owner(h.conn)})
		}
	}
	if len(name) > 0 {
		if l := m.shared[string(name)]; l != nil {
			add(l)
		}
		return entries
	}
	for _, l := range m.shared {
		add(l)
	}
	return entries
}

func connName(c *connState) string { return c.name }
