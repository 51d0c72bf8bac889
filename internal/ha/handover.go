package ha

// Hand-overs to a new binary under -etcd (the root's upgrade.go, which
// holds the glue, and upgrade_snapshot.go).
//
// A leader hands over its term: the lease, the election key and its create
// revision, the rest of its token block, and the time left before its
// deadline. The new process resumes the same lease and election key, without
// a campaign (it renews the one and watches the other, as an elected node
// does, and reserves its token blocks under that key), serves at once
// without a takeover delay, and renews the lease with its own loop, the
// first renewal at once. The old process stops serving at the pause (its
// manager stays frozen from the snapshot on) and keeps renewing until the
// new one confirmed; the new one serves only after the go, whose message
// carries the time left before the deadline, measured by the old process
// as it sends it: the new process counts it from when it receives it, so
// its deadline comes no later than the old one's, whatever the clocks.
//
// A standby (or a node elected but still waiting its takeover delay)
// starts no term while it hands over, and once the new process confirmed it
// stops campaigning and revokes its lease; the new process campaigns
// afresh.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/glockd/glockd/internal/tokens"
)

// Resume is what a leader hands over for the new process to lead on with
// its term.
type Resume struct {
	Lease     int64         // the etcd lease
	TTL       time.Duration // the lease's TTL, whole seconds
	Key       string        // the election key
	Rev       int64         // its create revision
	Block     tokens.Block  // the rest of the term's tokens
	Left      time.Duration // the time left before the deadline at the snapshot
	Elections uint64        // elections won, for the metric
}

// BeginHandover stops the node starting to serve until EndHandover, and
// returns the term it serves, nil if it does not.
func (n *Node) BeginHandover() *Term {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handingOver = true
	return n.lead.Current()
}

// EndHandover lets the node serve again after a failed hand-over, and
// takes back a HandOff.
func (n *Node) EndHandover() {
	n.handedOff.Store(false)
	n.mu.Lock()
	n.handingOver = false
	n.mu.Unlock()
}

// HandOff tells the node whether the new process has taken its term over
// (the new process confirmed): from then on it does not touch the lease,
// the listeners or the connections again. false takes that back.
func (n *Node) HandOff(done bool) { n.handedOff.Store(done) }

// Handover is what the new process needs to resume the term t, the term
// that BeginHandover returned; the caller adds the rest of the tokens.
func (n *Node) Handover(t *Term) (Resume, error) {
	if t.Ended() || !t.Valid() {
		return Resume{}, errors.New("the term ended during the hand-over")
	}
	return Resume{
		Lease: int64(t.lease), TTL: t.ttl, Key: t.key, Rev: t.rev,
		Left:      time.Until(t.Deadline()),
		Elections: n.won.Load(),
	}, nil
}

// GoMessage is the payload of the go message: the time left before the
// deadline of t, now. It reports false when the term is over: the old
// process then goes on as if the hand-over had failed.
func (n *Node) GoMessage(t *Term) ([]byte, bool) {
	if t.Ended() || n.lead.Current() != t {
		return nil, false
	}
	// The new process renews at once; it needs a round trip to etcd.
	left := time.Until(t.Deadline())
	if left < renewEvery(t.ttl) {
		return nil, false
	}
	return binary.AppendVarint(nil, int64(left)), true
}

// Adopt takes over the old process's term: the term is the manager's
// before the manager runs, so that the adopted connections and waiters are
// served by it. Called before Start, which then serves it first: the
// server opens its lock listeners at its own Start (Resumed).
func (n *Node) Adopt(r Resume) error {
	if !strings.HasPrefix(r.Key, n.electionPrefix+"/") {
		return fmt.Errorf("the old process leads with election key %q, outside -etcd-prefix %q", r.Key, n.cfg.Prefix)
	}
	if r.TTL < time.Second {
		return fmt.Errorf("lease TTL %v", r.TTL)
	}
	t := newTerm(n.lead)
	t.lease, t.ttl, t.key, t.rev = clientv3.LeaseID(r.Lease), r.TTL, r.Key, r.Rev
	t.first = r.Block
	// Until the go message brings the exact time left; nothing is served
	// before it.
	t.deadline.Store(int64(n.lead.now() + r.Left))
	if r.Block.End-r.Block.Start < tokens.Reserve {
		t.want <- struct{}{} // the manager waits for the next block before it serves
	}
	n.resumed = t
	n.lead.Publish(t)
	n.role = "leader"
	n.isLeader.Set(1)
	n.won.Store(r.Elections)
	n.elections.Add(float64(r.Elections))
	return nil
}

// Resumed reports whether the node leads on with a term adopted from the
// old process, which Start serves at once.
func (n *Node) Resumed() bool { return n.resumed != nil }

// StartResumed sets the resumed term's deadline from the go message,
// received at at; without one the term is over at once.
func (n *Node) StartResumed(goMsg []byte, at time.Time) {
	t := n.resumed
	if t == nil {
		return
	}
	left, k := binary.Varint(goMsg)
	if k <= 0 {
		left = 0
	}
	t.deadline.Store(int64(at.Sub(n.lead.base) + time.Duration(left)))
}

// runResumedTerm leads with the term taken over from the old process: its
// listeners are open already (the server's Start), its manager serves it,
// and it renews the lease at once.
func (n *Node) runResumedTerm(t *Term) error {
	tctx, stopTerm := context.WithCancel(n.ctx)
	var wg sync.WaitGroup
	defer n.endTerm(t, stopTerm, &wg)
	defer n.stepDown(t)
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.keepLease(tctx, t, time.Now())
	}()
	n.endAtShutdown(t, &wg)
	// The election is the old process's: its key, created at t.rev, is
	// followed as an elected node's is.
	n.guardKey(tctx, t, &wg)
	n.setRole("leader")
	n.isLeader.Set(1)
	n.log.Info("leading on after a hand-over", "advertise", n.cfg.Advertise, "deadline_in", time.Until(t.Deadline()).Round(time.Millisecond))
	return n.awaitEnd(t)
}
