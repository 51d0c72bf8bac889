package main

import (
	"cmp"
	"slices"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// stats are the counters behind q that are not derived from the tables.
type stats struct {
	commands      [proto.NumVerbs]uint64
	invalid       uint64
	orphans       uint64
	sharedOrphans uint64
}

type statLine struct {
	key   string
	value uint64
}

// statLines is every counter q lists now, sorted by key.
func (m *manager) statLines() []statLine {
	lines := make([]statLine, 0, 32)
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		if v.OutOfBand() {
			continue // not commands of the protocol's, but of its transport
		}
		if n := m.stats.commands[v]; n > 0 || v.Original() {
			lines = append(lines, statLine{"command_" + v.String(), n})
		}
	}
	lines = append(lines,
		statLine{"connections", uint64(m.conns)},
		statLine{"invalid_commands", m.stats.invalid},
		statLine{"locks", uint64(m.exclusive.count)},
		statLine{"orphans", m.stats.orphans},
		statLine{"shared_locks", uint64(m.shared.count)},
		statLine{"shared_orphans", m.stats.sharedOrphans},
	)
	slices.SortFunc(lines, func(a, b statLine) int { return cmp.Compare(a.key, b.key) })
	return lines
}

func (m *manager) appendStats(out []byte) []byte {
	for _, l := range m.statLines() {
		out = append(out, l.key...)
		out = append(out, ": "...)
		out = proto.AppendUint(out, l.value)
		out = append(out, '\n')
	}
	return out
}

// statsSnapshot is a copy of the counters, for /metrics: taking it is O(1),
// so a scrape never walks a table inside the manager.
type statsSnapshot struct {
	stats
	connections      int
	connsByTransport map[string]int
	locks            int
	sharedLocks      int
	waiters          int
	holds            [2]holdHistogram
	oldestHold       [2]time.Duration // age of the oldest current hold, by holdKind; 0 when none
	oldestWait       time.Duration    // age of the longest current wait; 0 when none
	deadlocks        uint64           // cycles of waiters found
}

func (m *manager) snapshot() statsSnapshot {
	byTransport := make(map[string]int, len(m.connsByTransport))
	for t, n := range m.connsByTransport {
		byTransport[t] = n
	}
	var oldest [2]time.Duration
	if since, ok := m.exclusive.oldestSince(); ok {
		oldest[exclusiveHold] = time.Duration(m.now - since)
	}
	if since, ok := m.shared.oldestSince(); ok {
		oldest[sharedHold] = time.Duration(m.now - since)
	}
	var oldestWait time.Duration
	if w := m.waitAges.oldest; w != nil {
		oldestWait = time.Since(w.started)
	}
	return statsSnapshot{
		holds:            m.holds,
		oldestHold:       oldest,
		oldestWait:       oldestWait,
		stats:            m.stats,
		connections:      m.conns,
		connsByTransport: byTransport,
		locks:            m.exclusive.count,
		sharedLocks:      m.shared.count,
		waiters:          m.waiterCount,
		deadlocks:        m.deadlocks.found,
	}
}

// askStats asks the manager for a snapshot of its counters. ok is false
// when the manager does not answer within timeout (it is stopped or stuck).
func (m *manager) askStats(timeout time.Duration) (s statsSnapshot, ok bool) {
	reply := make(chan statsSnapshot, 1)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case m.requests <- request{kind: requestStats, stats: reply}:
	case <-m.stopped:
		return s, false
	case <-timer.C:
		return s, false
	}
	select {
	case s = <-reply:
		return s, true
	case <-m.stopped:
		return s, false
	case <-timer.C:
		return s, false
	}
}

// holdKind picks the histogram of hold times.
type holdKind uint8

const (
	exclusiveHold holdKind = iota
	sharedHold
)

func (k holdKind) String() string {
	if k == sharedHold {
		return "shared"
	}
	return "exclusive"
}

// holdBuckets are the upper bounds, in seconds, of the hold-time histogram:
// from a millisecond to a day, for alerts on locks held too long.
var holdBuckets = [...]float64{0.001, 0.01, 0.1, 1, 10, 60, 600, 3600, 86400}

// holdHistogram counts hold times, in the manager without atomics; a scrape
// copies it in the snapshot.
type holdHistogram struct {
	counts [len(holdBuckets) + 1]uint64 // the last one is above every bound
	sum    float64                      // seconds
}

func (h *holdHistogram) observe(ns int64) {
	s := float64(ns) / 1e9
	i := 0
	for i < len(holdBuckets) && s > holdBuckets[i] {
		i++
	}
	h.counts[i]++
	h.sum += s
}
