package failover

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/glockd/glockd/client"
)

// belief is one client's belief that it holds a lock: from the grant reply
// to the release it sent, or to the last moment it saw its session alive.
type belief struct {
	lock    string
	session int    // the session's number, from 1
	node    string // the address the session was connected to
	token   uint64
	start   time.Time // Lock returned
	end     time.Time // zero while it lasts
	how     string    // how it ended: "released", "lost", "run over"
	shared  bool      // taken through the session shared by many goroutines
}

// rejection is a write the fenced register refused while its writer still
// believed it held the lock: the first of a belief's, with how many more
// followed.
type rejection struct {
	b       *belief
	at      time.Time
	highest uint64 // the register's highest token then
	count   int    // refused writes of this belief
	last    time.Time
}

// record is everything the clients saw; one mutex, since the clients act a
// few hundred times a second at most.
type record struct {
	mu         sync.Mutex
	beliefs    []*belief
	rejections []*rejection
	refused    map[*belief]*rejection
	sessions   int // started
	lost       int // declared lost (not closed by the client)
	abandons   int // closed by the client after a Lock that hung
	lostWhy    map[string]int
	highest    map[string]uint64 // the fenced register: the highest token written per lock
	writes     int64

	rawRounds  []*rawRound
	rawPending map[int]*rawRound // by raw client: its batch in flight
}

func newRecord() *record {
	return &record{highest: map[string]uint64{}, lostWhy: map[string]int{}, refused: map[*belief]*rejection{}, rawPending: map[int]*rawRound{}}
}

func (r *record) newSession() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions++
	return r.sessions
}

func (r *record) abandoned() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.abandons++
}

func (r *record) sessionLost(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost++
	r.lostWhy[why]++
}

func (r *record) granted(b *belief) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.beliefs = append(r.beliefs, b)
}

func (r *record) ended(b *belief, at time.Time, how string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b.end, b.how = at, how
}

// write is a write to the fenced register guarding b.lock: refused when
// b's token is lower than the highest the register has seen. It returns
// the refusal, if any, for the caller to keep only if it still believed
// it held the lock afterwards.
func (r *record) write(b *belief) (rejection, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	h := r.highest[b.lock]
	if b.token < h {
		return rejection{b: b, at: time.Now(), highest: h}, false
	}
	r.highest[b.lock] = b.token
	return rejection{}, true
}

func (r *record) rejected(rj rejection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if first := r.refused[rj.b]; first != nil {
		first.count++
		first.last = rj.at
		return
	}
	rj.count, rj.last = 1, rj.at
	r.refused[rj.b] = &rj
	r.rejections = append(r.rejections, &rj)
}

// firstGrantAfter returns the first belief that started after t on a node
// other than not, or nil.
func (r *record) firstGrantAfter(t time.Time, not string) *belief {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first *belief
	for i := len(r.beliefs) - 1; i >= 0; i-- {
		b := r.beliefs[i]
		if b.start.After(t) && b.node != not && (first == nil || b.start.Before(first.start)) {
			first = b
		}
		if b.start.Before(t.Add(-time.Minute)) {
			break // beliefs are appended roughly in start order
		}
	}
	return first
}

// workload is the clients' side of a run.
type workload struct {
	opts  Options
	addrs []string
	locks []string
	rec   *record
}

// pollEvery is how often a holder looks at its lock's Lost channel (and
// writes to the register): the end of a belief cut short by a loss is the
// last look that found the session alive, so at most this much early.
const pollEvery = 5 * time.Millisecond

// run is one client: a session after another, each taking locks until it
// is lost or, now and then, closed by the client to start afresh.
func (w *workload) run(ctx context.Context, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for ctx.Err() == nil {
		sess, node := w.connect(ctx, rng)
		if sess == nil {
			return
		}
		var once sync.Once
		w.useSession(ctx, rng, sess, node, w.rec.newSession(), &once, false)
		sess.Close()
	}
}

// runShared is one client whose session many goroutines use at once, as a
// service's goroutines share an etcd session: each takes locks as run's
// client does, so the session has several asynchronous waits (!gw) pending
// at a time, one per name. When the session is lost they all stop, and the
// client starts another.
func (w *workload) runShared(ctx context.Context, seed uint64, workers int) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for ctx.Err() == nil {
		sess, node := w.connect(ctx, rng)
		if sess == nil {
			return
		}
		id := w.rec.newSession()
		var once sync.Once // the loss is counted once, not per goroutine
		var wg sync.WaitGroup
		for range workers {
			wrng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
			wg.Go(func() { w.useSession(ctx, wrng, sess, node, id, &once, true) })
		}
		wg.Wait()
		sess.Close()
	}
}

// connect opens a session, trying the addresses from a random one on, as
// clients spread over a load balancer's list would; it retries until one
// answers or ctx ends.
func (w *workload) connect(ctx context.Context, rng *rand.Rand) (*client.Session, string) {
	opts := client.SessionOptions{Timeout: w.opts.SessionTimeout, Interval: w.opts.Interval}
	for ctx.Err() == nil {
		i := rng.IntN(len(w.addrs))
		addrs := append(append([]string(nil), w.addrs[i:]...), w.addrs[:i]...)
		// Long enough for a paused node's share (it accepts, then never
		// answers the heartbeat) and a serving one's.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second*time.Duration(len(addrs)))
		sess, err := client.NewSession(cctx, "tcp", addrs, opts)
		cancel()
		if err == nil {
			return sess, sess.Client().RemoteAddr().String()
		}
		sleep(ctx, 50*time.Millisecond+randDuration(rng, 100*time.Millisecond))
	}
	return nil, ""
}

// sleepUntil waits until ch is closed or d has passed.
func sleepUntil(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// useSession takes locks through sess until it is lost, the run is over
// or (unless shared with other goroutines) the client churns. once counts
// the loss once.
func (w *workload) useSession(ctx context.Context, rng *rand.Rand, sess *client.Session, node string, id int, once *sync.Once, shared bool) {
	for ctx.Err() == nil {
		name := w.locks[rng.IntN(len(w.locks))]
		lctx, cancel := context.WithTimeout(ctx, w.opts.LockWait)
		// A client whose Lock hangs past its own deadline (the server
		// stopped answering, even the cancellation) gives the session up
		// and starts another, as an impatient application would.
		giveUp := time.AfterFunc(w.opts.LockWait+w.opts.ReleaseWait, func() {
			if sess.Close() == nil {
				w.rec.abandoned()
			}
		})
		l, err := sess.Lock(lctx, name)
		giveUp.Stop()
		cancel()
		if err != nil {
			if w.lost(sess, once) {
				return
			}
			continue // the wait ran out, or the run is over
		}
		b := &belief{lock: name, session: id, node: node, token: l.Token(), start: time.Now(), shared: shared}
		w.rec.granted(b)
		if !w.hold(ctx, rng, l, b) {
			w.lost(sess, once)
			return
		}
		uctx, cancel := context.WithTimeout(context.Background(), w.opts.ReleaseWait)
		err = l.Unlock(uctx)
		cancel()
		if err != nil {
			// An Unlock that got no reply fails the connection: the session is
			// lost, or about to be. Otherwise the client gives it up.
			sleepUntil(sess.Done(), w.opts.ReleaseWait)
			w.lost(sess, once)
			return
		}
		if !shared && rng.Float64() < w.opts.Churn {
			return
		}
	}
}

// lost reports whether the session was lost, and counts it, through once,
// if so.
func (w *workload) lost(sess *client.Session, once *sync.Once) bool {
	select {
	case <-sess.Done():
	default:
		return false
	}
	once.Do(func() {
		if err := sess.Err(); errors.Is(err, client.ErrSessionLost) {
			w.rec.sessionLost(lossKind(err))
		}
	})
	return true
}

func lossKind(err error) string {
	s := err.Error()
	for _, k := range []string{"no answer", "no reply", "reset", "EOF", "refused", "broken pipe", "closed"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	return "other"
}

// hold keeps the lock for a random time, writing to the fenced register
// every pollEvery while the session lives. It ends the belief and reports
// false when the session is lost meanwhile.
func (w *workload) hold(ctx context.Context, rng *rand.Rand, l *client.Lock, b *belief) bool {
	d := randDuration(rng, w.opts.Hold)
	if w.opts.LongHoldEvery > 0 && rng.IntN(w.opts.LongHoldEvery) == 0 {
		d = randDuration(rng, w.opts.LongHold)
	}
	end := b.start.Add(d)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	lastAlive := b.start
	for {
		now := time.Now()
		if isClosed(l.Lost()) {
			// Lost between the last look and this one: the last look is
			// the last moment the client is known to have believed.
			w.rec.ended(b, lastAlive, "lost")
			return false
		}
		lastAlive = now
		if rj, ok := w.rec.write(b); !ok {
			// Kept only if the session was still alive after the refused
			// write: the client believed it held the lock when it wrote.
			if !isClosed(l.Lost()) {
				w.rec.rejected(rj)
			}
		}
		if !time.Now().Before(end) {
			w.rec.ended(b, time.Now(), "released")
			return true
		}
		select {
		case <-tick.C:
		case <-l.Lost():
		case <-ctx.Done():
			w.rec.ended(b, time.Now(), "run over")
			return true
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// randDuration returns a duration in [0, d].
func randDuration(rng *rand.Rand, d time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(d) + 1))
}
