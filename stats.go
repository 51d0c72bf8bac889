package main

import (
	"cmp"
	"slices"
)

// stats are the counters behind q that are not derived from the tables.
type stats struct {
	commands      [numVerbs]uint64
	invalid       uint64
	orphans       uint64
	sharedOrphans uint64
}

// original reports whether the original glockd listed the verb's counter in q
// from start-up; the others appear once used, because a published client
// counts q's lines.
func (v verb) original() bool {
	switch v {
	case verbD, verbDump, verbG, verbI, verbQ, verbR, verbSD, verbSG, verbSI, verbSR:
		return true
	}
	return false
}

type statLine struct {
	key   string
	value uint64
}

// statLines is every counter q lists now, sorted by key.
func (m *manager) statLines() []statLine {
	lines := make([]statLine, 0, 32)
	for v := verbG; v < numVerbs; v++ {
		if n := m.stats.commands[v]; n > 0 || v.original() {
			lines = append(lines, statLine{"command_" + v.String(), n})
		}
	}
	lines = append(lines,
		statLine{"connections", uint64(m.conns)},
		statLine{"invalid_commands", m.stats.invalid},
		statLine{"locks", uint64(len(m.exclusive))},
		statLine{"orphans", m.stats.orphans},
		statLine{"shared_locks", uint64(len(m.shared))},
		statLine{"shared_orphans", m.stats.sharedOrphans},
	)
	slices.SortFunc(lines, func(a, b statLine) int { return cmp.Compare(a.key, b.key) })
	return lines
}

func (m *manager) appendStats(out []byte) []byte {
	for _, l := range m.statLines() {
		out = append(out, l.key...)
		out = append(out, ": "...)
		out = appendUint(out, l.value)
		out = append(out, '\n')
	}
	return out
}
