package ha

import (
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/glockd/glockd/internal/tokens"
)

// leaseMargin is how much sooner than etcd the leader gives up its lease:
// room for the drift between its clock and etcd's, and for the time between
// the manager's check and a reply leaving the socket.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 5 }

// renewEvery is the interval between lease renewals: the deadline stays
// 3 to 4 intervals ahead, so a leader survives a few slow renewals.
func renewEvery(ttl time.Duration) time.Duration { return ttl / 5 }

// Leadership is what a node shares with its lock manager: the term it
// serves. Any goroutine may read it.
type Leadership struct {
	base    time.Time            // deadlines count from it, on the monotonic clock
	current atomic.Pointer[Term] // nil while not serving
}

// NewLeadership makes a Leadership with no term.
func NewLeadership() *Leadership { return &Leadership{base: time.Now()} }

// Current is the term being served, nil while the node does not serve.
func (l *Leadership) Current() *Term { return l.current.Load() }

// Publish makes t the term being served (nil: none). The node publishes
// its terms; tests that play the node's part without etcd use it too.
func (l *Leadership) Publish(t *Term) { l.current.Store(t) }

// now is the monotonic time since base.
func (l *Leadership) now() time.Duration { return time.Since(l.base) }

// Term is one lease of a node: it campaigns with it and, if elected,
// serves with it until the deadline passes or the lease is lost.
type Term struct {
	l        *Leadership
	deadline atomic.Int64 // Leadership.now() past which the node must not serve
	first    tokens.Block // reserved before serving
	blocks   chan tokens.Block
	want     chan struct{}

	over    chan struct{} // closed when the term ends
	endOnce sync.Once
	reason  string // why it ended, set before over is closed

	// Set once elected, before serving: what a hand-over to a new binary
	// carries (handover.go).
	lease clientv3.LeaseID
	ttl   time.Duration
	key   string
	rev   int64
}

func newTerm(l *Leadership) *Term {
	return &Term{
		l:      l,
		blocks: make(chan tokens.Block, 1),
		want:   make(chan struct{}, 1),
		over:   make(chan struct{}),
	}
}

// NewTerm is a term that no election made, with its first block of tokens
// and its deadline: for tests and benchmarks that play the node's part
// without etcd.
func NewTerm(l *Leadership, first tokens.Block, deadline time.Time) *Term {
	t := newTerm(l)
	t.first = first
	t.SetDeadline(deadline)
	return t
}

// Valid reports whether the deadline is still ahead. The manager calls it
// before every grant: it must stay inlinable.
func (t *Term) Valid() bool { return t.l.now() < time.Duration(t.deadline.Load()) }

// Deadline is the deadline as a time.Time carrying a monotonic reading.
func (t *Term) Deadline() time.Time {
	return t.l.base.Add(time.Duration(t.deadline.Load()))
}

// SetDeadline moves the deadline to d, back or forth: for the hand-over's
// go message, and for tests that play a pause past it. A term that ended
// stays over whatever its deadline.
func (t *Term) SetDeadline(d time.Time) { t.deadline.Store(int64(d.Sub(t.l.base))) }

// extend moves the deadline after a renewal sent at sent was granted ttl,
// unless the deadline has passed already: a term once lapsed stays over.
func (t *Term) extend(sent time.Time, ttl time.Duration) bool {
	if !t.Valid() || t.Ended() {
		return false
	}
	d := int64(sent.Sub(t.l.base) + ttl - leaseMargin(ttl))
	if d > t.deadline.Load() {
		t.deadline.Store(d)
	}
	return true
}

// First is the block of tokens reserved before the term served.
func (t *Term) First() tokens.Block { return t.first }

// Want is where the manager asks for the next block of tokens (one at a
// time: tokens.NewBlocks); Blocks is where it comes.
func (t *Term) Want() chan<- struct{} { return t.want }

// Blocks is where the next block of tokens comes, once asked for on Want.
func (t *Term) Blocks() <-chan tokens.Block { return t.blocks }

// Over is closed when the term ends.
func (t *Term) Over() <-chan struct{} { return t.over }

// End ends the term for reason; only the first reason is kept.
func (t *Term) End(reason string) {
	t.endOnce.Do(func() {
		t.reason = reason
		close(t.over)
	})
}

// Ended reports whether the term is over.
func (t *Term) Ended() bool {
	select {
	case <-t.over:
		return true
	default:
		return false
	}
}
