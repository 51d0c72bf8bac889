package main

import (
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glockd/glockd/internal/acl"
	"github.com/glockd/glockd/internal/tokens"
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
	maxWaitsPerConn int          // pending !gw and !sgw of one connection
	log             *slog.Logger // nil unless -verbose

	exclusive lockTable
	waiters   map[string]*waitQueue // exclusive waiters, by lock name
	tokens    tokens.Source         // fencing tokens, see internal/tokens
	leader    *leadership           // HA: nil without -etcd, see fence.go

	// The manager's clock: now is read once per request, in nanoseconds
	// since start (monotonic), and dates grants and waits.
	start time.Time
	now   int64

	shared        sharedTable
	sharedWaiters map[string]*waitQueue
	waitAges      waiterAges // every waiter, oldest first

	registry         registry
	stats            stats
	holds            [2]holdHistogram // how long locks were held, by holdKind
	conns            int              // live connections
	connsByTransport map[string]int
	waiterCount      int // waiters in the wait queues
	spareWaiters     waiterPool

	// orphaning holds connections that ended holding more locks than one
	// step releases; run interleaves their release with other requests.
	orphaning []*connState
	// dumps keeps finished dumps (*dump) with their step buffers, for the
	// next (see startDump); connections put them back.
	dumps sync.Pool

	sec managerSecurity // access control and kill (admin.go)

	deadlocks deadlocks // the wait-for graph's search (deadlocks.go)
}

// connState is the manager's view of a connection.
type connState struct {
	// Set before the manager first sees the connection; read-only after.
	name      string          // "127.0.0.1:5000", "unix:3"
	transport string          // "tcp", "unix", "websocket"
	done      chan struct{}   // the manager has answered a request: see answered
	grants    chan waitResult // the outcome of the pending gw or sgw: see deliver
	key       uint64          // random: the shared table hashes the connection's holds with it

	// Owned by the manager goroutine.
	held       []lockRef // exclusive locks, for orphaning
	sharedHeld []lockRef // shared holds (sharedTable holder records), for release and orphaning
	regName    string
	regSeq     uint64              // 0 when not registered; else the order of registration
	waiter     *waiter             // the pending gw or sgw
	asyncWaits map[waitKey]*waiter // the pending !gw and !sgw (asyncwait.go)
	box        *asyncOutbox        // their outcomes; nil until the first
	inputEnded bool                // the client will send nothing more: no wait may begin
	// Its place in the deadlock search that ran last (deadlocks.go).
	search      int32
	searchEpoch uint64

	// Access control (admin.go, internal/acl). certName and kill are set before
	// the manager first sees the connection; ident is the manager's.
	certName string        // the verified client certificate's name, if any
	kill     func()        // cuts the connection short; nil when kill is off
	ident    *acl.Identity // who the connection is; nil until identified
	// identified: ident is set. Written by the manager, read by the
	// connection and the server (auth.go).
	identified atomic.Bool
}

func newConnState(name, transport string) *connState {
	return &connState{
		name:      name,
		transport: transport,
		done:      make(chan struct{}, 1),
		grants:    make(chan waitResult, 1),
		key:       rand.Uint64(),
	}
}

// answered tells c's connection that the manager is done with the request
// it waits for: a batch run or refused, a dump step copied or cut short, a
// kill answered. Every such signal goes through here; the connection then
// owns the batch (or the dump) again.
func (c *connState) answered() { c.done <- struct{}{} }

// deliver hands the outcome of the connection's pending gw or sgw to its
// wait goroutine (conn.awaitWaits). grants has room for one result, and a
// connection has one such wait at a time, so this never blocks the manager.
func (c *connState) deliver(res waitResult) { c.grants <- res }

// offer is deliver unless an outcome is pending already: the end of a
// failed auth's delay, which its timer and the end of input may both
// announce.
func (c *connState) offer(res waitResult) {
	select {
	case c.grants <- res:
	default:
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
	requestEndOfInput
	requestWaitExpired
	requestStats
	requestStop
	requestCall     // run fn in the manager: rare work such as a reload
	requestDumpStep // copy the next step of a dump (dumps.go)
)

type request struct {
	kind   requestKind
	conn   *connState
	batch  *batch
	waiter *waiter
	stats  chan<- statsSnapshot
	fn     func(*manager)
	dump   *dump
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
		maxWaitsPerConn:  cfg.MaxWaitsPerConn,
		exclusive:        newLockTable(),
		waiters:          make(map[string]*waitQueue),
		shared:           newSharedTable(),
		sharedWaiters:    make(map[string]*waitQueue),
		registry:         newRegistry(),
		connsByTransport: make(map[string]int),
		tokens:           tokens.NewClock(time.Now()),
		start:            time.Now(),
		deadlocks:        deadlocks{report: cfg.Deadlocks == DeadlocksReport, log: cfg.Logger},
	}
	if cfg.Verbose {
		m.log = cfg.Logger
	}
	return m
}

// run serves requests until a stop request. While connections are being
// orphaned it alternates: every request already queued, then one step of
// orphaning. (A dump's steps are requests: its connection asks for the next
// once it has written the last.)
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
		// With one core (GOMAXPROCS=1, as under taskset -c 0) this loop
		// never blocks, so the connections whose requests it should
		// interleave would only run when it is preempted, every 10 ms.
		runtime.Gosched()
	}
}

func (m *manager) handle(req request) bool {
	m.now = int64(time.Since(m.start))
	if len(m.spareWaiters.retired) > 0 {
		m.spareWaiters.recycle()
	}
	// HA: past the leader's deadline nothing is answered (fence.go).
	if m.leader != nil && !m.admit(req) {
		return true
	}
	switch req.kind {
	case requestBatch:
		m.runBatch(req.conn, req.batch)
	case requestConnect:
		m.conns++
		m.connsByTransport[req.conn.transport]++
		m.logEvent("connect", req.conn)
		if m.sec.enabled {
			m.secureConnect(req.conn)
		}
	case requestDisconnect:
		if m.sec.enabled {
			m.secureDisconnect(req.conn)
		}
		m.disconnect(req.conn)
	case requestEndOfInput:
		req.conn.inputEnded = true
		if w := req.conn.waiter; w != nil {
			m.expire(w)
		}
		if len(req.conn.asyncWaits) > 0 {
			m.cancelAsync(req.conn, nil)
		}
	case requestWaitExpired:
		m.expire(req.waiter)
	case requestStats:
		req.stats <- m.snapshot()
	case requestCall:
		req.fn(m)
	case requestDumpStep:
		m.copyStep(req.dump)
		req.conn.answered()
	case requestStop:
		return false
	}
	return true
}

// call runs fn in the manager and waits until it has run; false when the
// manager has stopped.
func (m *manager) call(fn func(*manager)) bool {
	done := make(chan struct{})
	select {
	case m.requests <- request{kind: requestCall, fn: func(m *manager) { fn(m); close(done) }}:
	case <-m.stopped:
		return false
	}
	select {
	case <-done:
		return true
	case <-m.stopped:
		return false
	}
}

// send queues a request for the manager; it does not wait for the answer.
func (m *manager) send(req request) { m.requests <- req }

// execute hands a batch to the manager and waits until it has run.
func (m *manager) execute(c *connState, b *batch) {
	m.requests <- request{kind: requestBatch, conn: c, batch: b}
	<-c.done
}

// logEvent logs an event with -verbose: the connection's address and, once
// it has registered one with iam, its name. Its ...any arguments are
// allocated by the caller whether or not they are logged, so calls on a
// per-command path check m.log first.
func (m *manager) logEvent(event string, c *connState, args ...any) {
	if m.log != nil {
		who := []any{"conn", c.name}
		if c.regSeq != 0 {
			who = append(who, "name", c.regName)
		}
		m.log.Info(event, append(who, args...)...)
	}
}

// disconnect forgets a connection that has ended: its waits, its
// registration and, as orphans, its locks.
func (m *manager) disconnect(c *connState) {
	m.conns--
	m.connsByTransport[c.transport]--
	m.logEvent("disconnect", c, "locks", len(c.held), "shared_locks", len(c.sharedHeld))
	if w := c.waiter; w != nil {
		m.unqueue(w)
	}
	for _, w := range c.asyncWaits {
		m.unqueue(w) // deletes it from c.asyncWaits
	}
	m.registry.remove(c)
	if c.lockCount() <= orphanStep {
		m.orphanLocks(c, orphanStep)
		m.released(c)
		return
	}
	m.orphaning = append(m.orphaning, c)
}

// released runs when an ended connection's locks are all released.
func (m *manager) released(c *connState) {
	if len(m.sec.kills) > 0 {
		m.killReleased(c)
	}
}

// orphanStep releases up to orphanStep locks of the oldest ended connection.
func (m *manager) orphanStep() {
	m.now = int64(time.Since(m.start))
	if m.leader != nil {
		m.mayServe() // HA: a step past the deadline hands nothing to waiters (fence.go)
	}
	c := m.orphaning[0]
	if m.orphanLocks(c, orphanStep) {
		m.orphaning[0] = nil
		m.orphaning = m.orphaning[1:]
		m.released(c)
	}
}

// orphanLocks releases up to limit locks of an ended connection, exclusive
// ones first as the original did, and reports whether it has none left.
func (m *manager) orphanLocks(c *connState, limit int) bool {
	for ; limit > 0 && len(c.held) > 0; limit-- {
		last := len(c.held) - 1
		ref := c.held[last]
		c.held = c.held[:last]
		m.stats.orphans++
		if m.log != nil {
			m.logEvent("orphan", c, "lock", m.exclusive.record(ref).name)
		}
		m.passOn(ref)
	}
	for ; limit > 0 && len(c.sharedHeld) > 0; limit-- {
		h := c.sharedHeld[len(c.sharedHeld)-1]
		m.stats.sharedOrphans++
		if m.log != nil {
			m.logEvent("orphan shared", c, "lock", m.shared.name(m.shared.holder(h).lock).name)
		}
		m.dropHolder(h)
	}
	if len(c.held) > 0 || len(c.sharedHeld) > 0 {
		return false
	}
	c.held, c.sharedHeld = nil, nil
	return true
}
