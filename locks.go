package main

import (
	"log/slog"
	"time"
)

// manager is the one goroutine that owns every table: exclusive locks, shared
// locks, waiters, the registry and the counters. Connections reach it over
// requests; nothing else touches its state, so none of it needs a lock.
type manager struct {
	requests chan request
	stopped  chan struct{} // closed when run returns, so timers stop sending

	registryEnabled bool
	dumpEnabled     bool
	maxLocksPerConn int
	log             *slog.Logger // nil unless -verbose

	exclusive map[string]exclusiveLock
	waiters   map[string]*waitQueue // exclusive waiters, by lock name
	lastToken uint64                // fencing token of the latest acquisition

	shared        map[string]*sharedLock
	sharedWaiters map[string]*waitQueue

	registry         registry
	stats            stats
	conns            int // live connections
	connsByTransport map[string]int
	waiting          int // connections in a wait queue

	// orphaning holds connections that ended holding more locks than one
	// step releases; run interleaves their release with other requests.
	orphaning []*connState
}

// exclusiveLock is the value of the exclusive table. It is stored by value so
// that a held lock costs one map slot and the name in its holder's list.
type exclusiveLock struct {
	owner *connState
	index int // position of the name in owner.held
	token uint64
}

// connState is the manager's view of a connection.
type connState struct {
	// Set before the manager first sees the connection; read-only after.
	name      string        // "127.0.0.1:5000", "unix:3"
	transport string        // "tcp", "unix", "websocket"
	done      chan struct{} // the manager has answered a batch
	grants    chan waitResult

	// Owned by the manager goroutine.
	held        []string                 // exclusive locks, for orphaning
	sharedHeld  map[string]*sharedHolder // shared locks, for orphaning
	orphanNames []string                 // shared locks still to release after the connection ended
	regName     string
	regSeq      uint64 // 0 when not registered; else the order of registration
	waiter      *waiter
}

func newConnState(name, transport string) *connState {
	return &connState{
		name:      name,
		transport: transport,
		done:      make(chan struct{}, 1),
		grants:    make(chan waitResult, 1),
	}
}

// displayName is the owner shown by d and sd: the registered name, if any.
func (c *connState) displayName() string {
	if c.regSeq != 0 {
		return c.regName
	}
	return c.name
}

func (c *connState) lockCount() int { return len(c.held) + len(c.sharedHeld) }

type requestKind uint8

const (
	requestBatch requestKind = iota
	requestConnect
	requestDisconnect
	requestWaitExpired
	requestStats
	requestStop
)

type request struct {
	kind   requestKind
	conn   *connState
	batch  *batch
	waiter *waiter
	stats  chan<- statsSnapshot
}

// orphanStep bounds how many locks one step of orphaning releases, so that a
// connection that held a million locks delays other clients by one step at a
// time rather than by the whole release.
const orphanStep = 4096

func newManager(cfg Config) *manager {
	m := &manager{
		requests:         make(chan request, 1024),
		stopped:          make(chan struct{}),
		registryEnabled:  cfg.Registry,
		dumpEnabled:      cfg.Dump,
		maxLocksPerConn:  cfg.MaxLocksPerConn,
		exclusive:        make(map[string]exclusiveLock),
		waiters:          make(map[string]*waitQueue),
		shared:           make(map[string]*sharedLock),
		sharedWaiters:    make(map[string]*waitQueue),
		registry:         newRegistry(),
		connsByTransport: make(map[string]int),
		// Seeded from the clock so tokens keep increasing across restarts.
		lastToken: uint64(time.Now().UnixNano()),
	}
	if cfg.Verbose {
		m.log = cfg.Logger
	}
	return m
}

// run serves requests until a stop request. While connections are being
// orphaned it alternates: every request already queued, then one step.
func (m *manager) run() {
	defer close(m.stopped)
	for {
		if len(m.orphaning) == 0 {
			if !m.handle(<-m.requests) {
				return
			}
			continue
		}
		for pending := len(m.requests); pending > 0; pending-- {
			if !m.handle(<-m.requests) {
				return
			}
		}
		m.orphanStep()
	}
}

func (m *manager) handle(req request) bool {
	switch req.kind {
	case requestBatch:
		m.runBatch(req.conn, req.batch)
	case requestConnect:
		m.conns++
		m.connsByTransport[req.conn.transport]++
		m.logf("connect", req.conn)
	case requestDisconnect:
		m.disconnect(req.conn)
	case requestWaitExpired:
		m.expire(req.waiter)
	case requestStats:
		req.stats <- m.snapshot()
	case requestStop:
		return false
	}
	return true
}

// send queues a request for the manager; it does not wait for the answer.
func (m *manager) send(req request) { m.requests <- req }

// execute hands a batch to the manager and waits until it has run.
func (m *manager) execute(c *connState, b *batch) {
	m.requests <- request{kind: requestBatch, conn: c, batch: b}
	<-c.done
}

// logf logs an event with -verbose. Its ...any arguments are allocated by
// the caller whether or not they are logged, so calls on a per-command path
// check m.log first.
func (m *manager) logf(event string, c *connState, args ...any) {
	if m.log != nil {
		m.log.Info(event, append([]any{"conn", c.name}, args...)...)
	}
}

// lock takes the exclusive lock name for c: ok is true when c holds it after
// the call, full when c is at its limit of locks.
func (m *manager) lock(c *connState, name []byte) (ok, full bool) {
	if l, held := m.exclusive[string(name)]; held {
		return l.owner == c, false
	}
	if c.lockCount() >= m.maxLocksPerConn {
		return false, true
	}
	m.grant(c, string(name))
	return true, false
}

func (m *manager) grant(c *connState, name string) {
	m.lastToken++
	m.exclusive[name] = exclusiveLock{owner: c, index: len(c.held), token: m.lastToken}
	c.held = append(c.held, name)
	if m.log != nil {
		m.logf("acquire", c, "lock", name)
	}
}

// unlock releases name if c holds it.
func (m *manager) unlock(c *connState, name []byte) bool {
	l, held := m.exclusive[string(name)]
	if !held || l.owner != c {
		return false
	}
	key := c.held[l.index]
	m.forgetHeld(c, l.index)
	if m.log != nil {
		m.logf("release", c, "lock", key)
	}
	m.passOn(key)
	return true
}

// forgetHeld removes c.held[i], moving the last name into its place.
func (m *manager) forgetHeld(c *connState, i int) {
	last := len(c.held) - 1
	if i != last {
		moved := c.held[last]
		c.held[i] = moved
		l := m.exclusive[moved]
		l.index = i
		m.exclusive[moved] = l
	}
	c.held[last] = ""
	c.held = c.held[:last]
	c.held = shrink(c.held)
}

// passOn frees a lock that its holder has given up: the oldest waiter gets
// it at once, or it is deleted.
func (m *manager) passOn(name string) {
	if q := m.waiters[name]; q != nil {
		w := popWaiter(m.waiters, q, name)
		m.grant(w.conn, name)
		m.resolve(w, waitResult{granted: true, holders: 1})
		return
	}
	delete(m.exclusive, name)
}

// inspect reports whether name is held, and by whom.
func (m *manager) inspect(name []byte) (exclusiveLock, bool) {
	l, held := m.exclusive[string(name)]
	return l, held
}

// disconnect forgets a connection that has ended: its wait, its registration
// and, as orphans, its locks.
func (m *manager) disconnect(c *connState) {
	m.conns--
	m.connsByTransport[c.transport]--
	m.logf("disconnect", c, "locks", len(c.held), "shared_locks", len(c.sharedHeld))
	if w := c.waiter; w != nil {
		m.unqueue(w)
	}
	m.registry.remove(c)
	for name := range c.sharedHeld {
		c.orphanNames = append(c.orphanNames, name)
	}
	if c.lockCount() <= orphanStep {
		m.orphanLocks(c, orphanStep)
		return
	}
	m.orphaning = append(m.orphaning, c)
}

// orphanStep releases up to orphanStep locks of the oldest ended connection.
func (m *manager) orphanStep() {
	c := m.orphaning[0]
	if m.orphanLocks(c, orphanStep) {
		m.orphaning[0] = nil
		m.orphaning = m.orphaning[1:]
	}
}

// orphanLocks releases up to limit locks of an ended connection, exclusive
// ones first as the original did, and reports whether it has none left.
func (m *manager) orphanLocks(c *connState, limit int) bool {
	for ; limit > 0 && len(c.held) > 0; limit-- {
		last := len(c.held) - 1
		name := c.held[last]
		c.held[last] = ""
		c.held = c.held[:last]
		m.stats.orphans++
		if m.log != nil {
			m.logf("orphan", c, "lock", name)
		}
		m.passOn(name)
	}
	for ; limit > 0 && len(c.orphanNames) > 0; limit-- {
		last := len(c.orphanNames) - 1
		name := c.orphanNames[last]
		c.orphanNames = c.orphanNames[:last]
		m.stats.sharedOrphans++
		if m.log != nil {
			m.logf("orphan shared", c, "lock", name)
		}
		m.sharedRelease(c, name)
	}
	if len(c.held) > 0 || len(c.orphanNames) > 0 {
		return false
	}
	c.held, c.orphanNames = nil, nil
	return true
}

// shrink gives back the memory of a list that once held many more names.
func shrink(names []string) []string {
	if cap(names) > 1024 && len(names) < cap(names)/4 {
		return append([]string(nil), names...)
	}
	return names
}
