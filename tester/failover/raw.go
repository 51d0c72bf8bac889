package failover

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"
)

// Raw clients: no session, no heartbeat, nothing the server was designed
// for. Each pipelines batches of RawBatchMin to RawBatchMax g, sg and t on
// many names, followed in the same write by the releases of what it took,
// reads every reply, and starts again. A grant reply counts as believed
// from the moment it is received; any received from a node after that
// node's leadership ended is a violation (see lateGrants).

// rawNames is how many lock names the raw clients draw from, all of them:
// their batches overlap now and then.
const rawNames = 5000

// rawRound is one batch of a raw client, and the grant replies it got.
type rawRound struct {
	client     int
	node       string // the address it was sent to
	sent       time.Time
	grants     int // grant replies received
	firstGrant time.Time
	lastGrant  time.Time
}

// runRaw is one raw client: a connection after another, to a node drawn at
// random each time (a standby refuses at once), until ctx ends.
func (w *workload) runRaw(ctx context.Context, id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x2545f4914f6cdd1d))
	d := net.Dialer{Timeout: time.Second}
	for ctx.Err() == nil {
		addr := w.addrs[rng.IntN(len(w.addrs))]
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			sleep(ctx, 20*time.Millisecond+randDuration(rng, 50*time.Millisecond))
			continue
		}
		w.rawConn(ctx, rng, id, nc, addr)
		nc.Close()
	}
}

// rawConn runs batches on one connection until it ends or ctx does.
func (w *workload) rawConn(ctx context.Context, rng *rand.Rand, id int, nc net.Conn, addr string) {
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	br := bufio.NewReaderSize(nc, 64<<10)
	// A paused node answers once resumed, or closes: wait for it that long.
	patience := w.opts.Pause + w.opts.LeaseTTL + w.opts.TakeoverDelay + 30*time.Second
	var buf []byte
	for ctx.Err() == nil {
		n := w.opts.RawBatchMin + rng.IntN(w.opts.RawBatchMax-w.opts.RawBatchMin+1)
		buf = buf[:0]
		var releases []string
		base := rng.IntN(rawNames)
		for i := range n {
			name := "raw-" + strconv.Itoa((base+i)%rawNames)
			switch rng.IntN(3) {
			case 0:
				buf = append(buf, "g "+name+"\n"...)
				releases = append(releases, "r "+name+"\n")
			case 1:
				buf = append(buf, "sg "+name+"\n"...)
				releases = append(releases, "sr "+name+"\n")
			default:
				buf = append(buf, "t "+name+"\n"...)
			}
		}
		for _, r := range releases {
			buf = append(buf, r...)
		}
		replies := n + len(releases) // one line each
		round := &rawRound{client: id, node: addr}
		w.rec.rawSent(round)
		nc.SetDeadline(time.Now().Add(patience))
		_, err := nc.Write(buf)
		for ; err == nil && replies > 0; replies-- {
			var line string
			if line, err = br.ReadString('\n'); err == nil && isGrantReply(line) {
				w.rec.rawGrant(round, time.Now())
			}
		}
		w.rec.rawDone(round)
		if err != nil {
			return
		}
		sleep(ctx, randDuration(rng, w.opts.RawGap))
	}
}

func isGrantReply(line string) bool {
	return strings.HasPrefix(line, "1 Lock Get Success: ") ||
		(strings.Contains(line, " Shared Lock Get Success: ") && !strings.HasPrefix(line, "0 "))
}

func (r *record) rawSent(round *rawRound) {
	r.mu.Lock()
	defer r.mu.Unlock()
	round.sent = time.Now()
	r.rawRounds = append(r.rawRounds, round)
	r.rawPending[round.client] = round
}

func (r *record) rawGrant(round *rawRound, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if round.grants == 0 {
		round.firstGrant = at
	}
	round.grants++
	round.lastGrant = at
}

func (r *record) rawDone(round *rawRound) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rawPending[round.client] == round {
		delete(r.rawPending, round.client)
	}
}

// rawInFlight counts the raw batches sent to node and not yet answered in
// full: those a pause of node now catches, in its socket, in its lock
// manager or before their replies are written.
func (r *record) rawInFlight(node string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, round := range r.rawPending {
		if round.node == node {
			n++
		}
	}
	return n
}

// A deposal is a leadership that a fault ended: node stopped at (or was
// paused then), and was seen a standby again at standby.
type deposal struct {
	fault   string // as printed: "fault 2/40 pause"
	node    string // address
	name    string // "node a"
	at      time.Time
	standby time.Time
}

// lateGrants finds the grant replies received from a deposed node after
// its leadership ended. The observable end is the first grant any client
// received from another node after the fault: from then on the other node
// serves, so the deposed one must have stopped. Grants by sessions (their
// Lock returned) and by raw clients (a grant reply read) both count. The
// caller holds r.mu.
func (r *record) lateGrants(t0 time.Time, deposals []deposal) []Violation {
	at := func(t time.Time) string { return fmt.Sprintf("%.3fs", t.Sub(t0).Seconds()) }
	var out []Violation
	for _, d := range deposals {
		var first time.Time
		earlier := func(t time.Time) {
			if t.After(d.at) && (first.IsZero() || t.Before(first)) {
				first = t
			}
		}
		for _, b := range r.beliefs {
			if b.node != d.node {
				earlier(b.start)
			}
		}
		for _, round := range r.rawRounds {
			if round.node != d.node && round.grants > 0 {
				earlier(round.firstGrant)
			}
		}
		if first.IsZero() {
			continue
		}
		for _, round := range r.rawRounds {
			if round.node != d.node || round.grants == 0 || !round.lastGrant.After(first) || round.sent.After(d.standby) {
				continue
			}
			out = append(out, Violation{"late grant", fmt.Sprintf("%s: raw client %d received grant replies from %s until %s (the batch was sent at %s, %d grants in it), after another node's first grant at %s",
				d.fault, round.client, d.name, at(round.lastGrant), at(round.sent), round.grants, at(first))})
		}
		for _, b := range r.beliefs {
			if b.node == d.node && b.start.After(first) && b.start.Before(d.standby) {
				out = append(out, Violation{"late grant", fmt.Sprintf("%s: session %d was granted lock %s by %s at %s (token %d), after another node's first grant at %s",
					d.fault, b.session, b.lock, d.name, at(b.start), b.token, at(first))})
			}
		}
	}
	return out
}
