package main

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/wire"
	"go.uber.org/goleak"
	"golang.org/x/net/websocket"
)

// TestChaos has 200 clients on all transports run random commands (g r i sg
// sr si gw sgw iam q) on a few contended locks while connections are killed
// at random: closed, reset (RST), abandoned in the middle of a wait or of a
// pipeline. Each client knows what it holds from its replies and checks
// every reply against that; a checker compares dumps taken during the run
// with what the clients hold; between rounds, with everyone quiet, the
// server's tables must equal the clients' beliefs exactly, which also
// proves that nothing is held by a connection that was killed. At the end
// the counters are back to zero and no goroutine is left.
func TestChaos(t *testing.T) {
	duration := 30 * time.Second
	if testing.Short() {
		duration = 3 * time.Second
	}
	const clients = 200
	ignore := goleak.IgnoreCurrent()

	srv := startServer(t, nil)
	m := &chaosModel{
		t:      t,
		srv:    srv,
		named:  map[string]int{},
		excl:   map[string]*chaosClaim{},
		shared: map[string]map[*chaosSession]*chaosClaim{},
	}
	checker, err := m.connect("tcp")
	if err != nil {
		t.Fatal(err)
	}
	slots := make([]*chaosSlot, clients)
	for i := range slots {
		slots[i] = &chaosSlot{tr: transports[i%len(transports)], rng: rand.New(rand.NewPCG(uint64(i), 42))}
		if slots[i].s, err = m.connect(slots[i].tr); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	rounds := 0
	for rounds == 0 || time.Since(start) < duration {
		rounds++
		stop := make(chan struct{})
		var bg sync.WaitGroup
		bg.Add(2)
		go func() { defer bg.Done(); m.killer(slots, stop) }()
		go func() { defer bg.Done(); m.watch(checker, stop) }()
		var wg sync.WaitGroup
		for _, sl := range slots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					m.step(sl)
				}
			}()
		}
		wg.Wait()
		close(stop)
		bg.Wait()
		if t.Failed() {
			break
		}
		for _, sl := range slots {
			m.mu.Lock()
			dead := sl.s.dead
			m.mu.Unlock()
			if dead {
				m.reconnect(sl)
			}
		}
		m.quiescentCheck(checker, slots)
		m.forgetMaybe()
		if t.Failed() {
			break
		}
	}

	for _, sl := range slots {
		m.kill(sl.s, "close")
	}
	eventually(t, "every client's end is processed", func() bool {
		st, err := checker.stats()
		return err == nil && st["connections"] == 1
	})
	st, err := checker.stats()
	if err != nil {
		t.Fatal(err)
	}
	if st["locks"] != 0 || st["shared_locks"] != 0 || st["connections"] != 1 {
		t.Errorf("after every client left: locks %d, shared_locks %d, connections %d (want 0, 0, 1: the checker)", st["locks"], st["shared_locks"], st["connections"])
	}

	c := &m.counts
	t.Logf("%d rounds in %v: %d commands, %d acquisitions, %d contentions (g failures and wait timeouts: %d), %d waits granted after a wait, at most %d waiters at once, %d kills (%d holding locks, %d while waiting), %d orphans and %d shared orphans, %d deadlocks refused (%d of them !gw/!sgw; each checked against the model's possible cycles)",
		rounds, time.Since(start).Round(time.Millisecond), c.commands.Load(), c.acquired.Load(), c.contended.Load(), c.timeouts.Load(),
		c.waitedGrants.Load(), c.maxWaiters.Load(), c.kills.Load(), c.killsHolding.Load(), c.killsWaiting.Load(), st["orphans"], st["shared_orphans"], c.deadlocks.Load(), c.asyncDeadlocks.Load())
	// It must not have passed by doing nothing.
	scale := int64(3) // a loaded 2-core CI machine still does several times this
	if testing.Short() {
		scale = 1
	}
	for _, min := range []struct {
		what     string
		got, min int64
	}{
		{"acquisitions", c.acquired.Load(), 200 * scale},
		{"contentions", c.contended.Load(), 100 * scale},
		{"wait timeouts", c.timeouts.Load(), 10 * scale},
		{"waits granted after waiting", c.waitedGrants.Load(), 5 * scale},
		{"most waiters at once", c.maxWaiters.Load(), 3},
		{"kills", c.kills.Load(), 30 * scale},
		{"kills of a holder", c.killsHolding.Load(), 10 * scale},
		{"kills of a waiter", c.killsWaiting.Load(), 3 * scale},
		{"orphans", int64(st["orphans"]), 5 * scale},
		{"shared orphans", int64(st["shared_orphans"]), 10 * scale},
	} {
		if min.got < min.min {
			t.Errorf("only %d %s (want at least %d): the test did not test much", min.got, min.what, min.min)
		}
	}

	checker.close()
	srv.Close()
	goleak.VerifyNone(t, ignore)
}

var (
	chaosLocks  = []string{"x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7"}
	chaosShared = []string{"s0", "s1", "s2", "s3", "m0", "m1"}
	// chaosSems are the shared locks only sgw takes, so that their count
	// stays near MAX and a grant past MAX would show.
	chaosSems = chaosShared[4:]
)

// chaosSession is one connection of a client. Its fields after the first
// three are guarded by the model's mutex.
type chaosSession struct {
	nc   net.Conn
	r    *bufio.Reader   // streams
	ws   *websocket.Conn // websocket
	name string          // the server's name for it

	dead  bool            // killed: its claims are withdrawn
	held  map[string]bool // exclusive locks it holds, by its replies
	sheld map[string]bool // shared locks it holds
}

// chaosClaim is a session's hold on a lock, as the model sees it. A claim
// is made when the reply granting the lock arrives, and withdrawn before the
// lock is released or the connection killed: so while a claim stands, the
// server has the session as a holder.
type chaosClaim struct {
	s  *chaosSession
	id uint64
}

// chaosSlot is one of the clients: a session at a time, replaced when killed.
type chaosSlot struct {
	tr  string
	s   *chaosSession
	rng *rand.Rand
}

type chaosModel struct {
	t   *testing.T
	srv *Server

	mu     sync.Mutex
	named  map[string]int // how many sessions have had each connection name
	excl   map[string]*chaosClaim
	shared map[string]map[*chaosSession]*chaosClaim
	seq    uint64

	// maybe is every hold and wait the server may have had since the
	// round began, a superset of the truth: an entry begins before the
	// command that may start it is sent and ends (until) once a reply
	// shows it is over; a killed session's entries never end. A deadlock
	// the server reports must be a cycle through them (possibleCycle).
	clock uint64
	maybe []maybeEntry

	counts struct {
		commands, acquired, contended, timeouts, waitedGrants atomic.Int64
		kills, killsHolding, killsWaiting                     atomic.Int64
		maxWaiters, deadlocks, asyncDeadlocks                 atomic.Int64
	}
}

// maybeEntry is a hold or a wait that the server may have: name is an
// exclusive lock's, or "shared " and a shared lock's.
type maybeEntry struct {
	s     *chaosSession
	wait  bool
	name  string
	until uint64 // when it was seen to be over; 0 while it may last
}

// tick is the model's clock, for maybe.
func (m *chaosModel) tick() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clock++
	return m.clock
}

// mayStart notes that s may hold (or wait for) name from now on.
func (m *chaosModel) mayStart(s *chaosSession, wait bool, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maybe = append(m.maybe, maybeEntry{s: s, wait: wait, name: name})
}

// over notes that s holds (or waits for) name no more, unless it was killed.
func (m *chaosModel) over(s *chaosSession, wait bool, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.dead {
		return
	}
	m.clock++
	for i := range m.maybe {
		if e := &m.maybe[i]; e.s == s && e.wait == wait && e.name == name && e.until == 0 {
			e.until = m.clock
		}
	}
}

// possibleCycle reports whether s's wait for name could have closed a cycle
// of waiters at some moment since the clock read since: a path from a
// holder of name, through waits and holds that may have been, back to s.
func (m *chaosModel) possibleCycle(s *chaosSession, name string, since uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	holders := map[string][]*chaosSession{}
	waits := map[*chaosSession][]string{}
	for _, e := range m.maybe {
		if e.until != 0 && e.until < since {
			continue
		}
		if e.wait {
			waits[e.s] = append(waits[e.s], e.name)
		} else {
			holders[e.name] = append(holders[e.name], e.s)
		}
	}
	seen := map[*chaosSession]bool{}
	var next []*chaosSession
	for _, h := range holders[name] {
		if h != s {
			next = append(next, h)
		}
	}
	for len(next) > 0 {
		v := next[len(next)-1]
		next = next[:len(next)-1]
		if v == s {
			return true
		}
		if seen[v] {
			continue
		}
		seen[v] = true
		for _, n := range waits[v] {
			for _, h := range holders[n] {
				if h != v {
					next = append(next, h)
				}
			}
		}
	}
	return false
}

// forgetMaybe keeps, with every client quiet and every end processed, only
// the holds that may still last.
func (m *chaosModel) forgetMaybe() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maybe = slices.DeleteFunc(m.maybe, func(e maybeEntry) bool { return e.s.dead || e.wait || e.until != 0 })
}

func (m *chaosModel) connect(tr string) (*chaosSession, error) {
	s := &chaosSession{held: map[string]bool{}, sheld: map[string]bool{}}
	var err error
	if s.nc, s.ws, err = dialTransport(tr, addrsOf(m.srv)); err != nil {
		return nil, err
	}
	if s.ws == nil {
		s.r = bufio.NewReader(s.nc)
	}
	me, err := s.do("me")
	if f := strings.Fields(me); err != nil || len(f) != 3 {
		s.nc.Close()
		return nil, fmt.Errorf("me: %q, %v", me, err)
	}
	s.name = strings.Fields(me)[1]
	m.mu.Lock()
	m.named[s.name]++
	m.mu.Unlock()
	return s, nil
}

func (m *chaosModel) reconnect(sl *chaosSlot) {
	s, err := m.connect(sl.tr)
	if err != nil {
		m.t.Errorf("reconnect over %s: %v", sl.tr, err)
		return
	}
	m.mu.Lock()
	sl.s = s
	m.mu.Unlock()
}

// send writes one command (or several lines) without reading.
func (s *chaosSession) send(cmd string) error {
	s.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if s.ws != nil {
		return websocket.Message.Send(s.ws, cmd)
	}
	_, err := s.nc.Write([]byte(cmd + "\n"))
	return err
}

// do runs a command with a one-line reply.
func (s *chaosSession) do(cmd string) (string, error) {
	if err := s.send(cmd); err != nil {
		return "", err
	}
	s.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if s.ws != nil {
		var msg string
		err := websocket.Message.Receive(s.ws, &msg)
		return msg, err
	}
	return s.r.ReadString('\n')
}

// next reads one more reply: a line, or a websocket message.
func (s *chaosSession) next() (string, error) {
	s.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if s.ws != nil {
		var msg string
		err := websocket.Message.Receive(s.ws, &msg)
		return msg, err
	}
	return s.r.ReadString('\n')
}

// cancelled reads the second reply of "gw ...\n!cancel ..." after first,
// and returns the wait's reply; the !cancel reply must be "!cancel 1" before
// a timeout, or "!cancel 0" with a grant.
func (s *chaosSession) cancelled(first string) (string, error) {
	var second string
	s.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	if s.ws != nil {
		err = websocket.Message.Receive(s.ws, &second)
	} else {
		second, err = s.r.ReadString('\n')
	}
	if err != nil {
		return "", err
	}
	switch {
	case first == wire.Cancelled && strings.HasPrefix(second, wire.ReplyLine(0, wire.GetTimeout, "")):
		return second, nil
	case second == wire.NothingPending && strings.HasPrefix(first, wire.ReplyLine(1, wire.GetSuccess, "")):
		return first, nil
	case second == wire.NothingPending && strings.HasPrefix(first, wire.ReplyLine(0, wire.GetDeadlock, "")):
		return first, nil
	case first == wire.NothingPending && strings.HasPrefix(second, wire.ReplyLine(1, wire.GetSuccess, "")):
		return second, nil
	}
	return "", fmt.Errorf("gw then !cancel: replies %q, %q", first, second)
}

// stats runs q. On a stream its lines end at the reply of a ping after it.
func (s *chaosSession) stats() (map[string]int, error) {
	var reply string
	if s.ws != nil {
		var err error
		if reply, err = s.do("q"); err != nil {
			return nil, err
		}
	} else {
		if err := s.send("q\nping"); err != nil {
			return nil, err
		}
		s.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var b strings.Builder
		for {
			l, err := s.r.ReadString('\n')
			if err != nil {
				return nil, err
			}
			if l == wire.Pong {
				break
			}
			b.WriteString(l)
		}
		reply = b.String()
	}
	st := map[string]int{}
	for _, l := range strings.Split(strings.TrimSuffix(reply, "\n"), "\n") {
		k, v, ok := strings.Cut(l, ": ")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			return nil, fmt.Errorf("q line %q", l)
		}
		st[k] = n
	}
	return st, nil
}

func (s *chaosSession) close() { s.nc.Close() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// kill withdraws s's claims, then ends its connection in one of several
// ways. From the moment it is marked dead its replies are ignored.
func (m *chaosModel) kill(s *chaosSession, how string) {
	m.mu.Lock()
	if s.dead {
		m.mu.Unlock()
		return
	}
	s.dead = true
	holding := len(s.held)+len(s.sheld) > 0
	for n := range s.held {
		if c := m.excl[n]; c != nil && c.s == s {
			delete(m.excl, n)
		}
	}
	for n := range s.sheld {
		delete(m.shared[n], s)
		if len(m.shared[n]) == 0 {
			delete(m.shared, n)
		}
	}
	m.mu.Unlock()
	m.counts.kills.Add(1)
	if holding {
		m.counts.killsHolding.Add(1)
	}
	switch how {
	case "rst":
		if tc, ok := s.nc.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	case "mid-wait":
		// Queue behind a lock someone probably holds, and vanish.
		m.mayStart(s, false, chaosLocks[0])
		m.mayStart(s, true, chaosLocks[0])
		s.send("gw 2000 " + chaosLocks[0])
		m.counts.killsWaiting.Add(1)
		if tc, ok := s.nc.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	case "mid-pipeline":
		for _, n := range []string{"x1", "shared s1", "x2", "shared s2", "x3"} {
			m.mayStart(s, false, n)
		}
		m.mayStart(s, true, "shared s2")
		m.mayStart(s, true, "x3")
		s.send("g x1\nsg s1\ng x2\nsgw 500 2 s2\ngw 500 x3")
	case "mid-async":
		// Asynchronous waits pending on the connection as it vanishes:
		// none of them may be granted to it afterwards.
		for _, n := range []string{chaosLocks[0], chaosLocks[1], "shared " + chaosSems[0]} {
			m.mayStart(s, false, n)
			m.mayStart(s, true, n)
		}
		s.send("!gw 2000 " + chaosLocks[0] + "\n!gw -1 " + chaosLocks[1] + "\n!sgw 2000 1 " + chaosSems[0])
		m.counts.killsWaiting.Add(1)
		if tc, ok := s.nc.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	s.nc.Close()
}

// killer kills a random client's session every few milliseconds, whatever
// it is doing.
func (m *chaosModel) killer(slots []*chaosSlot, stop chan struct{}) {
	rng := rand.New(rand.NewPCG(7, 7))
	modes := []string{"close", "rst", "mid-wait", "mid-pipeline", "mid-async"}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		sl := slots[rng.IntN(len(slots))]
		m.mu.Lock()
		s := sl.s
		m.mu.Unlock()
		m.kill(s, modes[rng.IntN(len(modes))])
	}
}

// stable returns the claims present in both snapshots: held by the same
// session throughout.
func stableClaims(before, after map[string][]chaosClaim) map[string][]chaosClaim {
	out := map[string][]chaosClaim{}
	for n, cs := range after {
		for _, c := range cs {
			if slices.Contains(before[n], c) {
				out[n] = append(out[n], c)
			}
		}
	}
	return out
}

// claims snapshots the exclusive and shared claims.
func (m *chaosModel) claims() (excl, shared map[string][]chaosClaim) {
	m.mu.Lock()
	defer m.mu.Unlock()
	excl, shared = map[string][]chaosClaim{}, map[string][]chaosClaim{}
	for n, c := range m.excl {
		excl[n] = []chaosClaim{*c}
	}
	for n, hs := range m.shared {
		for _, c := range hs {
			shared[n] = append(shared[n], *c)
		}
	}
	return excl, shared
}

func (m *chaosModel) claim(s *chaosSession, name string, shared bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts.acquired.Add(1)
	if s.dead {
		return
	}
	m.seq++
	if shared {
		s.sheld[name] = true
		if m.shared[name] == nil {
			m.shared[name] = map[*chaosSession]*chaosClaim{}
		}
		m.shared[name][s] = &chaosClaim{s, m.seq}
		return
	}
	if old := m.excl[name]; old != nil && old.s != s {
		m.t.Errorf("%s granted %s while %s holds it", s.name, name, old.s.name)
	}
	s.held[name] = true
	m.excl[name] = &chaosClaim{s, m.seq}
}

// unclaim withdraws s's claim before it releases name.
func (m *chaosModel) unclaim(s *chaosSession, name string, shared bool) (had bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if shared {
		had = s.sheld[name]
		delete(s.sheld, name)
		delete(m.shared[name], s)
		if len(m.shared[name]) == 0 {
			delete(m.shared, name)
		}
		return had
	}
	had = s.held[name]
	delete(s.held, name)
	if c := m.excl[name]; c != nil && c.s == s {
		delete(m.excl, name)
	}
	return had
}

func (m *chaosModel) holds(s *chaosSession, name string, shared bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if shared {
		return s.sheld[name]
	}
	return s.held[name]
}

// others counts the claims on name by sessions other than s that stood
// through the whole exchange.
func others(stable map[string][]chaosClaim, name string, s *chaosSession) int {
	n := 0
	for _, c := range stable[name] {
		if c.s != s {
			n++
		}
	}
	return n
}

var sharedReplyRE = regexp.MustCompile(`^([0-9]+) Shared Lock (Get Success|Is Locked|Not Locked|Get Timeout|Get Deadlock): (\S+)\n$`)

func sharedCount(reply string) (int, string, bool) {
	mm := sharedReplyRE.FindStringSubmatch(reply)
	if mm == nil {
		return 0, "", false
	}
	n, _ := strconv.Atoi(mm[1])
	return n, mm[2], true
}

// step runs one random command on sl's session and checks its reply.
// chaosCheck checks the reply of a step's command against the claims that
// held from before it was sent until after its reply.
type chaosCheck func(reply string, stable, stableShared map[string][]chaosClaim) string

// chaosStep is one step of a client: who it is, what it holds, and the
// names and wait a step may use.
type chaosStep struct {
	m                *chaosModel
	sl               *chaosSlot
	s                *chaosSession
	rng              *rand.Rand
	mine, mineShared []string // what it holds, sorted
	name, sname      string   // an exclusive and a shared name to use
	ms               int      // a wait's MS
	op               int      // the draw that chose the step, out of 100
	sent             uint64   // the model's clock before the command was sent
}

// pick is one of held most of the time, else one of all.
func (st *chaosStep) pick(held []string, all []string) string {
	if len(held) > 0 && st.rng.IntN(10) < 7 {
		return held[st.rng.IntN(len(held))]
	}
	return all[st.rng.IntN(len(all))]
}

// chaosOps are the steps a client takes, each with the odds (out of 100,
// cumulated) of being the next.
var chaosOps = []struct {
	upTo int
	run  func(*chaosStep) (string, chaosCheck)
}{
	{15, (*chaosStep).get},
	{30, (*chaosStep).release},
	{37, (*chaosStep).inspect},
	{44, (*chaosStep).getWait},
	{50, (*chaosStep).asyncWait},
	{72, (*chaosStep).sharedGet},
	{82, (*chaosStep).sharedRelease},
	{88, (*chaosStep).sharedInspect},
	{92, (*chaosStep).register},
	{94, (*chaosStep).stats},
	{100, (*chaosStep).kill},
}

func (m *chaosModel) step(sl *chaosSlot) {
	rng := sl.rng
	m.mu.Lock()
	s := sl.s
	dead := s.dead
	var mine, mineShared []string
	for n := range s.held {
		mine = append(mine, n)
	}
	for n := range s.sheld {
		mineShared = append(mineShared, n)
	}
	m.mu.Unlock()
	if dead {
		m.reconnect(sl)
		return
	}
	slices.Sort(mine)
	slices.Sort(mineShared)
	st := &chaosStep{m: m, sl: sl, s: s, rng: rng, mine: mine, mineShared: mineShared,
		name:  chaosLocks[rng.IntN(len(chaosLocks))],
		sname: chaosShared[rng.IntN(len(chaosShared)-len(chaosSems))],
		ms:    []int{0, 1, 5, 20, 50}[rng.IntN(5)],
	}
	st.op = rng.IntN(100)
	var cmd string
	var check chaosCheck
	for _, o := range chaosOps {
		if st.op < o.upTo {
			cmd, check = o.run(st)
			break
		}
	}
	if check == nil {
		return // the operation was not a command with a reply to check
	}

	exclBefore, sharedBefore := m.claims()
	st.sent = m.tick()
	m.counts.commands.Add(1)
	reply, err := s.do(cmd)
	switch {
	case err != nil:
	case strings.HasPrefix(cmd, "!"):
		// An asynchronous wait and the command after it: two replies,
		// the outcome and the other's, in either order.
		var second string
		if second, err = s.next(); err == nil {
			reply += second
		}
	case strings.Contains(cmd, "\n!cancel "):
		reply, err = s.cancelled(reply)
	}
	if err != nil {
		m.afterError(s, cmd, err)
		return
	}
	exclAfter, sharedAfter := m.claims()
	m.mu.Lock()
	dead = s.dead
	m.mu.Unlock()
	if dead {
		return // killed meanwhile: its claims are gone, its replies moot
	}
	if problem := check(reply, stableClaims(exclBefore, exclAfter), stableClaims(sharedBefore, sharedAfter)); problem != "" {
		m.t.Errorf("%s: %q: reply %q: %s", s.name, cmd, reply, problem)
	}
}

func (st *chaosStep) get() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	name := st.name
	held := m.holds(s, name, false)
	cmd = "g " + name
	m.mayStart(s, false, name)
	check = func(reply string, stable, _ map[string][]chaosClaim) string {
		if !held && reply != wire.Reply(1, wire.GetSuccess, name) {
			m.over(s, false, name)
		}
		switch reply {
		case wire.Reply(1, wire.GetSuccess, name):
			if others(stable, name, s) > 0 {
				return "granted a lock another client held throughout"
			}
			m.claim(s, name, false)
		case wire.Reply(0, wire.GetFailure, name):
			if held {
				return "refused a lock it holds"
			}
			m.counts.contended.Add(1)
		default:
			return "bad reply"
		}
		return ""
	}
	return cmd, check
}

func (st *chaosStep) release() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	name := st.pick(st.mine, chaosLocks)
	had := m.unclaim(s, name, false)
	cmd = "r " + name
	released := releaseCheck(had, wire.ReleaseSuccess, wire.ReleaseFailure, name)
	return cmd, func(reply string, stable, stableShared map[string][]chaosClaim) string {
		m.over(s, false, name)
		return released(reply, stable, stableShared)
	}
}

func (st *chaosStep) inspect() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	name := st.name
	held := m.holds(s, name, false)
	cmd = "i " + name
	check = func(reply string, stable, _ map[string][]chaosClaim) string {
		locked := reply == wire.Reply(1, wire.IsLocked, name)
		if !locked && reply != wire.Reply(0, wire.NotLocked, name) {
			return "bad reply"
		}
		if !locked && (held || others(stable, name, s) > 0) {
			return "a held lock is not locked"
		}
		return ""
	}
	return cmd, check
}

func (st *chaosStep) getWait() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	rng := st.rng
	name := st.name
	ms := st.ms
	held := m.holds(s, name, false)
	cmd = fmt.Sprintf("gw %d %s", ms, name)
	if rng.IntN(8) == 0 {
		// A wait that is given up at once: "!cancel 1" comes before
		// the wait's reply, which is then a timeout; when the lock was
		// granted first, "!cancel 0" comes before or after the grant.
		cmd = fmt.Sprintf("gw -1 %s\n!cancel %s", name, name)
	}
	start := time.Now()
	m.mayStart(s, false, name)
	m.mayStart(s, true, name)
	check = func(reply string, stable, _ map[string][]chaosClaim) string {
		m.over(s, true, name)
		if !held && reply != wire.Reply(1, wire.GetSuccess, name) {
			m.over(s, false, name)
		}
		switch reply {
		case wire.Reply(0, wire.GetDeadlock, name):
			if held {
				return "a deadlock on a lock it holds"
			}
			if !m.possibleCycle(s, name, st.sent) {
				return "a deadlock where no cycle of waiters could have been"
			}
			m.counts.deadlocks.Add(1)
		case wire.Reply(1, wire.GetSuccess, name):
			if others(stable, name, s) > 0 {
				return "granted a lock another client held throughout"
			}
			if !held && time.Since(start) > 2*time.Millisecond {
				m.counts.waitedGrants.Add(1)
			}
			m.claim(s, name, false)
		case wire.Reply(0, wire.GetTimeout, name):
			if held {
				return "timed out on a lock it holds"
			}
			m.counts.contended.Add(1)
			if ms > 0 {
				m.counts.timeouts.Add(1)
			}
		default:
			return "bad reply"
		}
		return ""
	}
	return cmd, check
}

// asyncWait sends !gw or !sgw (sometimes with a !cancel of it) and an i of
// another lock: i is answered in order, and the wait's outcome out of band,
// in either order. A grant obeys what get and sgw obey.
func (st *chaosStep) asyncWait() (cmd string, check chaosCheck) {
	m, s, rng := st.m, st.s, st.rng
	name, ms := st.name, st.ms
	shared := rng.IntN(3) == 0
	maxHolders := 1 + rng.IntN(2)
	if shared {
		name = chaosSems[rng.IntN(len(chaosSems))]
	}
	held := m.holds(s, name, shared)
	verb := "!gw"
	wait := fmt.Sprintf("!gw %d %s", ms, name)
	if shared {
		verb = "!sgw"
		wait = fmt.Sprintf("!sgw %d %d %s", ms, maxHolders, name)
	}
	probe := chaosLocks[len(chaosLocks)-1]
	cmd = wait + "\ni " + probe
	cancel := rng.IntN(6) == 0
	if cancel {
		// Given up at once: the first reply is the !cancel's, then the
		// outcome (a grant, if it came first, in either order).
		cmd = strings.Replace(wait, fmt.Sprint(ms), "-1", 1) + "\n!cancel " + name
	}
	grantRE := regexp.MustCompile(`^!gw 1 ([1-9][0-9]*) ` + regexp.QuoteMeta(name) + "\n$")
	key := name // in the model's maybe
	if shared {
		key = "shared " + name
	}
	m.mayStart(s, false, key)
	m.mayStart(s, true, key)
	check = func(reply string, stable, stableShared map[string][]chaosClaim) string {
		m.over(s, true, key)
		var outcome string
		for _, l := range strings.SplitAfter(reply, "\n") {
			switch {
			case l == "":
			case strings.HasPrefix(l, verb+" "):
				if outcome != "" {
					return "two outcomes"
				}
				outcome = l
			case l == wire.Cancelled || l == wire.NothingPending:
				if !cancel {
					return "a !cancel reply to no !cancel"
				}
			case l == wire.Reply(1, wire.IsLocked, probe) || l == wire.Reply(0, wire.NotLocked, probe):
				if cancel {
					return "an i reply to no i"
				}
			default:
				return "bad reply"
			}
		}
		granted := false
		switch {
		case outcome == "":
			return "no outcome"
		case !shared && outcome == wire.AsyncGWDeadlock(name) || shared && outcome == wire.AsyncSGWDeadlock(name):
			if !held {
				m.over(s, false, key)
			}
			switch {
			case held:
				return "a deadlock on a lock it holds"
			case cancel && !strings.Contains(reply, wire.NothingPending):
				return "!cancel 1 after a wait refused as a deadlock"
			case !m.possibleCycle(s, key, st.sent):
				return "a deadlock where no cycle of waiters could have been"
			}
			m.counts.deadlocks.Add(1)
			m.counts.asyncDeadlocks.Add(1)
			return ""
		case !shared && outcome == wire.AsyncGWOutcome(false, 0, name):
		case !shared && grantRE.MatchString(outcome):
			if others(stable, name, s) > 0 {
				return "granted a lock another client held throughout"
			}
			granted = true
		case shared && outcome == wire.AsyncSGWOutcome(0, name):
		case shared:
			n, err := strconv.Atoi(strings.Fields(outcome)[1])
			if err != nil || n < others(stableShared, name, s)+1 {
				return "fewer holders than hold it"
			}
			if !held && n > maxHolders {
				return "over MAX"
			}
			granted = true
		default:
			return "bad outcome"
		}
		if cancel && granted == strings.Contains(reply, wire.Cancelled) {
			return "!cancel 1 with a grant, or !cancel 0 without one"
		}
		if !granted {
			if !held {
				m.over(s, false, key)
			}
			if held {
				return "refused a lock it holds"
			}
			m.counts.contended.Add(1)
			if ms > 0 && !cancel {
				m.counts.timeouts.Add(1)
			}
			return ""
		}
		if !held {
			m.claim(s, name, shared)
		}
		return ""
	}
	return cmd, check
}

func (st *chaosStep) sharedGet() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	rng := st.rng
	sname := st.sname
	ms := st.ms
	maxHolders := 1 + rng.IntN(3)
	sgw := st.op >= 60
	if sgw && rng.IntN(5) > 0 {
		sname = chaosSems[rng.IntN(len(chaosSems))]
	}
	held := m.holds(s, sname, true)
	cmd = "sg " + sname
	if sgw {
		cmd = fmt.Sprintf("sgw %d %d %s", ms, maxHolders, sname)
		m.mayStart(s, true, "shared "+sname)
	}
	m.mayStart(s, false, "shared "+sname)
	start := time.Now()
	check = func(reply string, _, stable map[string][]chaosClaim) string {
		n, kind, ok := sharedCount(reply)
		m.over(s, true, "shared "+sname)
		if !held && kind != "Get Success" {
			m.over(s, false, "shared "+sname)
		}
		switch {
		case !ok:
			return "bad reply"
		case kind == "Get Deadlock" && sgw && !held && n == 0:
			if !m.possibleCycle(s, "shared "+sname, st.sent) {
				return "a deadlock where no cycle of waiters could have been"
			}
			m.counts.deadlocks.Add(1)
		case kind == "Get Success":
			if n < others(stable, sname, s)+1 {
				return "fewer holders than hold it"
			}
			if sgw && !held && n > maxHolders {
				return "over MAX"
			}
			if sgw && !held && time.Since(start) > 2*time.Millisecond {
				m.counts.waitedGrants.Add(1)
			}
			if !held {
				m.claim(s, sname, true)
			}
		case kind == "Get Timeout" && sgw && !held && n == 0:
			// Whatever the holders: others may be queued first, and
			// the queue is strictly first come, first served.
			m.counts.contended.Add(1)
			if ms > 0 {
				m.counts.timeouts.Add(1)
			}
		default:
			return "bad reply"
		}
		return ""
	}
	return cmd, check
}

func (st *chaosStep) sharedRelease() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	sname := st.pick(st.mineShared, chaosShared)
	had := m.unclaim(s, sname, true)
	cmd = "sr " + sname
	released := releaseCheck(had, wire.SharedReleaseSuccess, wire.SharedReleaseFailure, sname)
	return cmd, func(reply string, stable, stableShared map[string][]chaosClaim) string {
		m.over(s, false, "shared "+sname)
		return released(reply, stable, stableShared)
	}
}

func (st *chaosStep) sharedInspect() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	sname := chaosShared[st.rng.IntN(len(chaosShared))]
	held := m.holds(s, sname, true)
	cmd = "si " + sname
	check = func(reply string, _, stable map[string][]chaosClaim) string {
		n, kind, ok := sharedCount(reply)
		want := others(stable, sname, s)
		if held {
			want++
		}
		if !ok || (kind != "Is Locked" && kind != "Not Locked") || (kind == "Not Locked") != (n == 0) || n < want {
			return fmt.Sprintf("at least %d holders", want)
		}
		return ""
	}
	return cmd, check
}

func (st *chaosStep) register() (cmd string, check chaosCheck) {
	rng := st.rng
	cmd = "iam client-" + strconv.Itoa(rng.IntN(1000))
	check = func(reply string, _, _ map[string][]chaosClaim) string {
		if reply != wire.OK {
			return "bad reply"
		}
		return ""
	}
	return cmd, check
}

func (st *chaosStep) stats() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	m.counts.commands.Add(1)
	q, err := s.stats()
	m.afterError(s, "q", err)
	if err == nil && (q["connections"] < 1 || q["locks"] > len(chaosLocks) || q["shared_locks"] > len(chaosShared)) {
		m.t.Errorf("%s: q: %v", s.name, q)
	}
	return "", nil
}

func (st *chaosStep) kill() (cmd string, check chaosCheck) {
	m := st.m
	s := st.s
	sl := st.sl
	rng := st.rng
	m.kill(s, []string{"close", "rst", "mid-wait", "mid-pipeline"}[rng.IntN(4)])
	m.reconnect(sl)
	return "", nil
}

// afterError accepts an error only on a session that was killed.
func (m *chaosModel) afterError(s *chaosSession, cmd string, err error) {
	if err == nil {
		return
	}
	m.mu.Lock()
	dead := s.dead
	m.mu.Unlock()
	if !dead {
		if isTimeout(err) {
			m.t.Errorf("%s: %q: no reply in 10s", s.name, cmd)
		} else {
			m.t.Errorf("%s: %q: %v on a connection nobody killed", s.name, cmd, err)
		}
		m.kill(s, "close")
	}
}

var (
	dumpEntryRE       = regexp.MustCompile(`^([^: ]+):(\S+)$`)
	dumpSharedEntryRE = regexp.MustCompile(`([^: \[\]]+):\[([^\]]*)\]`)
)

// tables reads dump and dump shared: lock → holders' connection names.
func tables(s *chaosSession) (excl, shared map[string][]string, err error) {
	d, err := s.do("dump")
	if err != nil {
		return nil, nil, err
	}
	ds, err := s.do("dump shared")
	if err != nil {
		return nil, nil, err
	}
	excl, shared = map[string][]string{}, map[string][]string{}
	body, ok := strings.CutPrefix(d, "map[")
	body, ok2 := strings.CutSuffix(body, "]\n")
	if !ok || !ok2 {
		return nil, nil, fmt.Errorf("dump: %q", d)
	}
	for _, e := range strings.Fields(body) {
		mm := dumpEntryRE.FindStringSubmatch(e)
		if mm == nil || excl[mm[1]] != nil {
			return nil, nil, fmt.Errorf("dump: %q", d)
		}
		excl[mm[1]] = []string{mm[2]}
	}
	for _, mm := range dumpSharedEntryRE.FindAllStringSubmatch(ds, -1) {
		shared[mm[1]] = strings.Fields(mm[2])
	}
	return excl, shared, nil
}

// watch compares dumps with the claims that stood while they were taken, and
// watches the manager's queue of waiters, until stop.
func (m *chaosModel) watch(checker *chaosSession, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if snap, ok := m.srv.manager.askStats(10 * time.Second); ok {
			for w := int64(snap.waiters); w > m.counts.maxWaiters.Load(); {
				m.counts.maxWaiters.Store(w)
			}
		}
		exclBefore, sharedBefore := m.claims()
		excl, shared, err := tables(checker)
		if err != nil {
			m.t.Errorf("checker: %v", err)
			return
		}
		exclAfter, sharedAfter := m.claims()
		for n, cs := range stableClaims(exclBefore, exclAfter) {
			if got := excl[n]; len(got) != 1 || got[0] != cs[0].s.name {
				m.t.Errorf("dump: %s held by %v, but %s held it throughout", n, got, cs[0].s.name)
			}
		}
		for n, cs := range stableClaims(sharedBefore, sharedAfter) {
			for _, c := range cs {
				if !slices.Contains(shared[n], c.s.name) {
					m.t.Errorf("dump shared: %s held by %v, without %s who held it throughout", n, shared[n], c.s.name)
				}
			}
		}
		// A connection holds a shared lock once. (A name twice is two
		// connections only when a killed one's port was reused before its
		// end was processed.)
		for n, hs := range shared {
			sorted := slices.Sorted(slices.Values(hs))
			for i := 1; i < len(sorted); i++ {
				m.mu.Lock()
				reused := m.named[sorted[i]] > 1
				m.mu.Unlock()
				if sorted[i] == sorted[i-1] && !reused {
					m.t.Errorf("dump shared: %s: %s holds it twice: %v", n, sorted[i], hs)
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// quiescentCheck runs with every client quiet: once the server has seen
// every killed connection end, its tables must be exactly the claims.
func (m *chaosModel) quiescentCheck(checker *chaosSession, slots []*chaosSlot) {
	t := m.t
	eventually(t, "every killed connection's end is processed", func() bool {
		st, err := checker.stats()
		return err == nil && st["connections"] == len(slots)+1
	})
	if snap, ok := m.srv.manager.askStats(10 * time.Second); !ok || snap.waiters != 0 {
		t.Errorf("waiters with every client quiet: %d (%v)", snap.waiters, ok)
	}
	excl, shared, err := tables(checker)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	wantExcl, wantShared := map[string][]string{}, map[string][]string{}
	for n, c := range m.excl {
		wantExcl[n] = []string{c.s.name}
	}
	for n, hs := range m.shared {
		for s := range hs {
			wantShared[n] = append(wantShared[n], s.name)
		}
	}
	m.mu.Unlock()
	for _, tab := range []map[string][]string{shared, wantShared} {
		for _, hs := range tab {
			slices.Sort(hs)
		}
	}
	if fmt.Sprint(excl) != fmt.Sprint(wantExcl) {
		t.Errorf("quiet: dump %v, clients hold %v", excl, wantExcl)
	}
	if fmt.Sprint(shared) != fmt.Sprint(wantShared) {
		t.Errorf("quiet: dump shared %v, clients hold %v", shared, wantShared)
	}
	st, err := checker.stats()
	if err != nil {
		t.Fatal(err)
	}
	if st["locks"] != len(wantExcl) || st["shared_locks"] != len(wantShared) {
		t.Errorf("quiet: q says %d locks and %d shared locks; clients hold %d and %d", st["locks"], st["shared_locks"], len(wantExcl), len(wantShared))
	}
	// And each lock as i and si see it, asked by a client.
	for _, n := range chaosLocks {
		want := wire.Reply(0, wire.NotLocked, n)
		if wantExcl[n] != nil {
			want = wire.Reply(1, wire.IsLocked, n)
		}
		if got, err := checker.do("i " + n); err != nil || got != want {
			t.Errorf("quiet: i %s: %q (%v), want %q", n, got, err, want)
		}
	}
	for _, n := range chaosShared {
		want := wire.Reply(0, wire.SharedNotLocked, n)
		if k := len(wantShared[n]); k > 0 {
			want = wire.Reply(uint64(k), wire.SharedIsLocked, n)
		}
		if got, err := checker.do("si " + n); err != nil || got != want {
			t.Errorf("quiet: si %s: %q (%v), want %q", n, got, err, want)
		}
	}
}

// releaseCheck checks the reply to r or sr by a client that held the lock, or
// did not.
func releaseCheck(had bool, success, failure, name string) func(string, map[string][]chaosClaim, map[string][]chaosClaim) string {
	want := "0 " + failure + ": " + name + "\n"
	if had {
		want = "1 " + success + ": " + name + "\n"
	}
	return func(reply string, _, _ map[string][]chaosClaim) string {
		if reply != want {
			return fmt.Sprintf("held: %v", had)
		}
		return ""
	}
}
