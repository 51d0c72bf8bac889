package fake

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/glockd/glockd/internal/wire"
)

// conn is one client connection. Only its serving goroutine touches n and
// dropped; the rest is guarded by state.mu.
type conn struct {
	name    string
	reg     string // the registered name, "" for none
	closer  io.Closer
	gone    chan struct{} // closed once the client has gone
	n       int           // commands received
	dropped bool          // the current command's reply is being dropped
	replied bool          // the current command wrote what it answers itself (!gw, !cancel)
	in      *input        // only its serving goroutine touches it
	excl    map[string]bool
	shared  map[string]bool
	async   map[string]*asyncWait // queued !gw and !sgw, by "VERB NAME"
	waiter  *waiter               // its pending gw or sgw
}

type waiter struct {
	c       *conn
	name    string
	shared  bool
	max     int           // sgw only
	since   time.Time     // queued
	granted chan struct{} // closed when the lock is handed over
	holders int           // sgw: holders after the grant
}

type exclusive struct {
	holder  *conn
	token   uint64
	since   time.Time // granted
	waiters []*waiter
}

type sharedLock struct {
	holders []*conn
	since   map[*conn]time.Time // granted, per holder
	waiters []*waiter
}

type state struct {
	cfg      Config
	mu       sync.Mutex
	excl     map[string]*exclusive
	shared   map[string]*sharedLock
	conns    map[*conn]bool
	regs     []*conn // registration order
	counters map[string]int64
	token    uint64
}

func newState(cfg Config) *state {
	st := &state{
		cfg:      cfg,
		excl:     map[string]*exclusive{},
		shared:   map[string]*sharedLock{},
		conns:    map[*conn]bool{},
		counters: map[string]int64{},
		token:    uint64(time.Now().UnixMilli()-1735689600000) << 12, // as glockd: ms since 2025 × 4096
	}
	for _, k := range []string{"command_d", "command_dump", "command_g", "command_i", "command_q",
		"command_r", "command_sd", "command_sg", "command_si", "command_sr", "invalid_commands",
		"orphans", "shared_orphans"} {
		st.counters[k] = 0
	}
	return st
}

func (st *state) connect(name string, closer io.Closer) *conn {
	c := &conn{name: name, closer: closer, gone: make(chan struct{}),
		excl: map[string]bool{}, shared: map[string]bool{}, async: map[string]*asyncWait{}}
	st.mu.Lock()
	st.conns[c] = true
	st.mu.Unlock()
	return c
}

func (st *state) closeAll() {
	st.mu.Lock()
	defer st.mu.Unlock()
	for c := range st.conns {
		c.closer.Close()
	}
}

// disconnect forgets c and releases ("orphans") its locks.
func (st *state) disconnect(c *conn) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.conns, c)
	st.unregister(c)
	st.endAsync(c, "") // nobody reads their lines now
	if st.cfg.NoOrphans {
		return
	}
	for name := range c.excl {
		st.counters["orphans"]++
		st.release(c, name)
	}
	for name := range c.shared {
		st.counters["shared_orphans"]++
		st.sharedRelease(c, name)
	}
}

// endOfInput ends c's asynchronous waits, as timeouts, when its input has
// ended: their 0 lines are written before the connection closes.
func (st *state) endOfInput(c *conn) {
	st.mu.Lock()
	lines, _ := st.endAsync(c, "")
	st.mu.Unlock()
	for _, l := range lines {
		c.in.now(l)
	}
}

func (st *state) unregister(c *conn) {
	st.regs = slices.DeleteFunc(st.regs, func(r *conn) bool { return r == c })
	c.reg = ""
}

// parse splits a line into its command word and normalised argument.
func parse(line string) (verb, arg string) {
	line = strings.TrimLeftFunc(line, unicode.IsSpace)
	verb, arg, _ = strings.Cut(line, " ")
	if i := strings.IndexByte(verb, '\t'); i >= 0 {
		verb, arg = line[:i], line[i+1:]
	}
	return verb, strings.Join(strings.Fields(arg), " ")
}

// exec runs one command for c; false means no reply at all.
func (st *state) exec(c *conn, line string) (string, bool) {
	verb, arg := parse(line)
	st.mu.Lock()
	defer st.mu.Unlock()
	switch verb {
	case "!ping", "!cancel": // not counted
	case "g", "r", "i", "sg", "sr", "si", "d", "sd", "dump", "q", "me", "iam", "who", "gw", "sgw", "t", "ping", "dl", "!gw", "!sgw", "dw":
		st.counters["command_"+verb]++
	default:
		st.counters["invalid_commands"]++
		return "", false
	}
	switch verb {
	case "g":
		if st.acquire(c, arg) {
			return wire.Reply(1, wire.GetSuccess, arg), true
		}
		return wire.Reply(0, wire.GetFailure, arg), true
	case "r":
		if l := st.excl[arg]; l != nil && l.holder == c {
			st.release(c, arg)
			return wire.Reply(1, wire.ReleaseSuccess, arg), true
		}
		return wire.Reply(0, wire.ReleaseFailure, arg), true
	case "i":
		if st.excl[arg] != nil {
			return wire.Reply(1, wire.IsLocked, arg), true
		}
		return wire.Reply(0, wire.NotLocked, arg), true
	case "sg":
		n := st.sharedAcquire(c, arg)
		if st.cfg.SharedCountOffByOne {
			n++
		}
		return wire.Reply(uint64(n), wire.SharedGetSuccess, arg), true
	case "sr":
		if c.shared[arg] {
			st.sharedRelease(c, arg)
			return wire.Reply(1, wire.SharedReleaseSuccess, arg), true
		}
		return wire.Reply(0, wire.SharedReleaseFailure, arg), true
	case "si":
		if l := st.shared[arg]; l != nil && len(l.holders) > 0 {
			return wire.Reply(uint64(len(l.holders)), wire.SharedIsLocked, arg), true
		}
		return wire.Reply(0, wire.SharedNotLocked, arg), true
	case "me":
		return "1 " + c.name + " " + owner(c) + "\n", true
	case "iam":
		if !st.cfg.Registry {
			return wire.Disabled, true
		}
		st.unregister(c)
		if arg != "" {
			c.reg = arg
			st.regs = append(st.regs, c)
		}
		return wire.OK, true
	case "who":
		if !st.cfg.Registry || !st.cfg.Dump {
			return wire.Disabled, true
		}
		return st.who(arg)
	case "d", "sd", "dump":
		if !st.cfg.Dump {
			return wire.Disabled, true
		}
		return st.debug(verb, arg)
	case "dl":
		if !st.cfg.Dump {
			return wire.Disabled, true
		}
		return st.detailed(arg)
	case "dw":
		if !st.cfg.Dump {
			return wire.Disabled, true
		}
		return st.waiters(arg)
	case "!ping": // no wait is pending, or this would not run
		return wire.NowPong, true
	case "!cancel":
		lines, any := st.endAsync(c, arg)
		if !any {
			return wire.NothingPending, true
		}
		c.in.now(wire.Cancelled)
		c.replied = true
		if !st.cfg.AsyncCancelQuiet {
			for _, l := range lines {
				c.in.now(l)
			}
		}
		return "", false
	case "!gw", "!sgw":
		if st.cfg.AsyncInOrder {
			return st.asyncInOrder(c, verb == "!sgw", line, arg)
		}
		st.asyncWait(c, verb == "!sgw", arg)
		c.replied = true
		return "", false
	case "q":
		return st.stats(), true
	case "gw":
		return st.getWait(c, line, arg), true
	case "sgw":
		return st.sharedGetWait(c, line, arg), true
	case "t":
		if l := st.excl[arg]; l != nil {
			return wire.Reply(uint64(l.token), wire.Token, arg), true
		}
		return wire.Reply(0, wire.NotLocked, arg), true
	default: // ping
		return wire.Pong, true
	}
}

func owner(c *conn) string {
	if c.reg != "" {
		return c.reg
	}
	return c.name
}

func (st *state) acquire(c *conn, name string) bool {
	l := st.excl[name]
	if l != nil {
		return l.holder == c
	}
	st.token++
	st.excl[name] = &exclusive{holder: c, token: st.token, since: time.Now()}
	c.excl[name] = true
	return true
}

// release frees name, held by c, and hands it to its oldest waiter.
func (st *state) release(c *conn, name string) {
	delete(c.excl, name)
	l := st.excl[name]
	if len(l.waiters) == 0 {
		delete(st.excl, name)
		return
	}
	w := l.waiters[0]
	l.waiters = l.waiters[1:]
	st.token++
	l.holder, l.token, l.since = w.c, st.token, time.Now()
	w.c.excl[name] = true
	close(w.granted)
}

func (st *state) sharedAcquire(c *conn, name string) int {
	l := st.shared[name]
	if l == nil {
		l = &sharedLock{since: map[*conn]time.Time{}}
		st.shared[name] = l
	}
	if !c.shared[name] {
		c.shared[name] = true
		l.holders = append(l.holders, c)
		l.since[c] = time.Now()
	}
	return len(l.holders)
}

func (st *state) sharedRelease(c *conn, name string) {
	delete(c.shared, name)
	l := st.shared[name]
	l.holders = slices.DeleteFunc(l.holders, func(h *conn) bool { return h == c })
	delete(l.since, c)
	for len(l.waiters) > 0 && len(l.holders) < l.waiters[0].max {
		w := l.waiters[0]
		l.waiters = l.waiters[1:]
		w.c.shared[name] = true
		l.holders = append(l.holders, w.c)
		l.since[w.c] = time.Now()
		w.holders = len(l.holders)
		close(w.granted)
	}
	if len(l.holders) == 0 && len(l.waiters) == 0 {
		delete(st.shared, name)
	}
}

// waitArgs splits "MS NAME" (n == 1) or "MS MAX NAME" (n == 2).
func waitArgs(arg string, n int) (nums []int, name string, ok bool) {
	for range n {
		word, rest, _ := strings.Cut(arg, " ")
		v, err := strconv.Atoi(word)
		if err != nil {
			return nil, "", false
		}
		nums, arg = append(nums, v), rest
	}
	return nums, arg, true
}

// wait blocks, with st.mu released, until w is granted, ms runs out, c
// goes, its input ends, or a "!cancel" ends the wait. Meanwhile it answers
// "!ping" and "!cancel" at once and keeps c's other lines to run after it.
// It reports whether the lock was granted; if not, w is out of queue. late
// is what to write after the wait's reply (CancelReplyLate).
func (st *state) wait(c *conn, w *waiter, ms int, name string, queue *[]*waiter) (granted bool, late string) {
	st.mu.Unlock()
	items := c.in.items
	if st.cfg.QueueOutOfBand || c.in.ended {
		items = nil
	}
	timer := waitUntil(ms)
	ended := false // by the end of input
	cancelled := false
wait:
	for {
		select {
		case <-w.granted:
			break wait
		case <-timer:
			break wait
		case <-c.gone:
			ended = true
			break wait
		case it, ok := <-items:
			if !ok {
				c.in.ended = true
				ended = true
				break wait
			}
			verb, arg := parse(it.line)
			switch {
			case it.tooLong || verb != "!ping" && verb != "!cancel":
				c.in.backlog = append(c.in.backlog, it)
			case verb == "!ping":
				c.in.now(wire.NowPong)
			case arg != "" && arg != name:
				c.in.now(wire.NothingPending)
			default:
				st.mu.Lock()
				select {
				case <-w.granted: // too late: the grant stands
					st.mu.Unlock()
					c.in.now(wire.NothingPending)
					break wait
				default:
				}
				// Out of the queue before answering, so that no grant can follow.
				*queue = slices.DeleteFunc(*queue, func(x *waiter) bool { return x == w })
				st.mu.Unlock()
				cancelled = true
				if st.cfg.CancelReplyLate {
					late = wire.Cancelled
				} else {
					c.in.now(wire.Cancelled)
				}
				break wait
			}
		}
	}
	st.mu.Lock()
	c.waiter = nil
	select {
	case <-w.granted:
		return true, late
	default:
		if !cancelled {
			*queue = slices.DeleteFunc(*queue, func(x *waiter) bool { return x == w })
		}
		if ended && st.cfg.EOFDropsReplies {
			c.in.discard = true
		}
		return false, late
	}
}

func (st *state) getWait(c *conn, line, arg string) string {
	nums, name, ok := waitArgs(arg, 1)
	if !ok {
		return wire.Reply(0, wire.InvalidArgument, line)
	}
	if st.acquire(c, name) {
		return wire.Reply(1, wire.GetSuccess, name)
	}
	if nums[0] != 0 {
		l := st.excl[name]
		w := &waiter{c: c, name: name, since: time.Now(), granted: make(chan struct{})}
		l.waiters = append(l.waiters, w)
		if st.deadlocked(w, &l.waiters, false) {
			return wire.Reply(0, wire.GetDeadlock, name)
		}
		granted, late := st.wait(c, w, nums[0], name, &l.waiters)
		if granted {
			return wire.Reply(1, wire.GetSuccess, name) + late
		}
		return wire.Reply(0, wire.GetTimeout, name) + late
	}
	return wire.Reply(0, wire.GetTimeout, name)
}

func (st *state) sharedGetWait(c *conn, line, arg string) string {
	nums, name, ok := waitArgs(arg, 2)
	if !ok {
		return wire.Reply(0, wire.InvalidArgument, line)
	}
	ms, limit := nums[0], nums[1]
	l := st.shared[name]
	if c.shared[name] || l == nil || len(l.waiters) == 0 && len(l.holders) < limit {
		return wire.Reply(uint64(st.sharedAcquire(c, name)), wire.SharedGetSuccess, name)
	}
	if ms != 0 {
		w := &waiter{c: c, name: name, shared: true, max: limit, since: time.Now(), granted: make(chan struct{})}
		l.waiters = append(l.waiters, w)
		if st.deadlocked(w, &l.waiters, false) {
			return wire.Reply(0, wire.SharedGetDeadlock, name)
		}
		granted, late := st.wait(c, w, ms, name, &l.waiters)
		if granted {
			return wire.Reply(uint64(w.holders), wire.SharedGetSuccess, name) + late
		}
		if len(l.holders) == 0 && len(l.waiters) == 0 {
			delete(st.shared, name)
		}
		return wire.Reply(0, wire.SharedGetTimeout, name) + late
	}
	return wire.Reply(0, wire.SharedGetTimeout, name)
}

func (st *state) who(arg string) (string, bool) {
	var b strings.Builder
	for _, c := range st.regs {
		if arg == "" || c.reg == arg {
			b.WriteString(c.name + ": " + c.reg + "\n")
		}
	}
	return b.String(), b.Len() > 0
}

func (st *state) debug(verb, arg string) (string, bool) {
	switch verb {
	case "dump":
		if arg == "shared" {
			m := map[string][]string{}
			for name, l := range st.shared {
				if len(l.holders) == 0 {
					continue
				}
				for _, h := range l.holders {
					m[name] = append(m[name], h.name)
				}
			}
			return fmt.Sprintf("%v\n", m), true
		}
		m := map[string]string{}
		for name, l := range st.excl {
			m[name] = l.holder.name
		}
		return fmt.Sprintf("%v\n", m), true
	}
	var names []string
	if verb == "d" {
		for name := range st.excl {
			names = append(names, name)
		}
	} else {
		for name, l := range st.shared {
			if len(l.holders) > 0 {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		if arg != "" && name != arg {
			continue
		}
		if verb == "d" {
			b.WriteString(name + ": " + owner(st.excl[name].holder) + "\n")
			continue
		}
		for _, h := range st.shared[name].holders {
			b.WriteString(name + ": " + owner(h) + "\n")
		}
	}
	return b.String(), b.Len() > 0
}

// detailed answers dl: a line per exclusive lock, then per holder of a
// shared lock of the same name, sorted by name.
func (st *state) detailed(arg string) (string, bool) {
	names := map[string]bool{}
	for name := range st.excl {
		names[name] = true
	}
	for name, l := range st.shared {
		if len(l.holders) > 0 {
			names[name] = true
		}
	}
	now := time.Now()
	waiting := func(ws []*waiter) int {
		if st.cfg.DetailNoWaiters {
			return 0
		}
		return len(ws)
	}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if arg != "" && name != arg {
			continue
		}
		if l := st.excl[name]; l != nil {
			fmt.Fprintf(&b, "%s: %s token=%d held_ms=%d waiters=%d\n",
				name, owner(l.holder), l.token, now.Sub(l.since).Milliseconds(), waiting(l.waiters))
		}
		if l := st.shared[name]; l != nil {
			for _, h := range l.holders {
				fmt.Fprintf(&b, "%s: %s shared held_ms=%d holders=%d waiters=%d\n",
					name, owner(h), now.Sub(l.since[h]).Milliseconds(), len(l.holders), waiting(l.waiters))
			}
		}
	}
	return b.String(), b.Len() > 0
}

func (st *state) stats() string {
	snap := map[string]int64{
		"connections":  int64(len(st.conns)),
		"locks":        int64(len(st.excl)),
		"shared_locks": 0,
	}
	for _, l := range st.shared {
		if len(l.holders) > 0 {
			snap["shared_locks"]++
		}
	}
	for k, v := range st.counters {
		snap[k] = v
	}
	keys := make([]string, 0, len(snap))
	for k := range snap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %d\n", k, snap[k])
	}
	return b.String()
}

// deadlocked reports whether w, just queued, closes a cycle of waiters; it
// then takes w out of queue again. Every connection that waits for nothing
// can go on; then, pass after pass, one whose every wait (its gw or sgw and
// its !gw and !sgw) can end: one for an exclusive lock whose holder can go
// on, or for a semaphore when the waiter before it can and enough holders
// can to bring the count under its MAX. w deadlocks when its connection
// cannot. async: w is a !gw or !sgw, already in its connection's async.
func (st *state) deadlocked(w *waiter, queue *[]*waiter, async bool) bool {
	if st.cfg.NoDeadlocks {
		return false
	}
	if !async {
		w.c.waiter = w
	}
	free := map[*conn]bool{}
	canEnd := func(x *waiter) bool {
		select {
		case <-x.granted: // granted, its outcome not yet written
			return true
		default:
		}
		if !x.shared {
			return free[st.excl[x.name].holder]
		}
		l := st.shared[x.name]
		i := slices.Index(l.waiters, x)
		n := 0
		for _, h := range l.holders {
			if free[h] {
				n++
			}
		}
		return (i <= 0 || free[l.waiters[i-1].c]) && n >= len(l.holders)-x.max+1
	}
	for changed := true; changed; {
		changed = false
		for c := range st.conns {
			if free[c] {
				continue
			}
			ok := c.waiter == nil || canEnd(c.waiter)
			for _, aw := range c.async {
				ok = ok && canEnd(aw.w)
			}
			if ok {
				free[c], changed = true, true
			}
		}
	}
	if free[w.c] {
		return false
	}
	if !async {
		w.c.waiter = nil
	}
	*queue = slices.DeleteFunc(*queue, func(x *waiter) bool { return x == w })
	return true
}

// waiters answers dw: a line per waiter, sorted by lock, the exclusive
// queue before the shared one, each in its order.
func (st *state) waiters(arg string) (string, bool) {
	names := map[string]bool{}
	for name, l := range st.excl {
		if len(l.waiters) > 0 {
			names[name] = true
		}
	}
	for name, l := range st.shared {
		if len(l.waiters) > 0 {
			names[name] = true
		}
	}
	now := time.Now()
	var b strings.Builder
	list := func(ws []*waiter, kind string) {
		if st.cfg.WaitersNewestFirst {
			ws = slices.Clone(ws)
			slices.Reverse(ws)
		}
		for _, w := range ws {
			fmt.Fprintf(&b, "%s: %s %squeued_ms=%d\n", w.name, owner(w.c), kind, now.Sub(w.since).Milliseconds())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if arg != "" && name != arg {
			continue
		}
		if l := st.excl[name]; l != nil {
			list(l.waiters, "")
		}
		if l := st.shared[name]; l != nil {
			list(l.waiters, "shared ")
		}
	}
	return b.String(), b.Len() > 0
}
