package main

// Hand-overs to a new binary under -etcd (upgrade.go, leader.go).
//
// A leader hands over its term: the lease, the election key and its create
// revision, the rest of its token block, and the time left before its
// deadline. The new process resumes the same lease and election
// (concurrency.WithLease, concurrency.ResumeElection), serves at once
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
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/glockd/glockd/internal/tokens"
)

// beginHandover stops the node starting to serve until endHandover, and
// returns the term it serves, nil if it does not.
func (n *haNode) beginHandover() *term {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handingOver = true
	return n.lead.current.Load()
}

// endHandover lets the node serve again after a failed hand-over.
func (n *haNode) endHandover() {
	n.mu.Lock()
	n.handingOver = false
	n.mu.Unlock()
}

// handoverTerm fills in the state what the new process needs to resume the
// term t; the manager's snapshot put the rest of its tokens in st.ha.
func (n *haNode) handoverTerm(st *handoverState, t *term) error {
	switch {
	case t == nil && st.ha != nil:
		return errors.New("the node began serving during the hand-over")
	case t == nil:
		return nil
	case st.ha == nil || t.ended() || !t.valid():
		return errors.New("the term ended during the hand-over")
	}
	h := st.ha
	h.lease, h.ttl, h.key, h.rev = int64(t.lease), int64(t.ttl/time.Second), t.key, t.rev
	h.left = int64(time.Until(t.deadlineTime()))
	h.elections = n.won.Load()
	return nil
}

// goMessage is the payload of the go message: the time left before the
// deadline of t, now. It reports false when the term is over: the old
// process then goes on as if the hand-over had failed.
func (n *haNode) goMessage(t *term) ([]byte, bool) {
	if t.ended() || n.lead.current.Load() != t {
		return nil, false
	}
	// The new process renews at once; it needs a round trip to etcd.
	left := time.Until(t.deadlineTime())
	if left < renewEvery(t.ttl) {
		return nil, false
	}
	return binary.AppendVarint(nil, int64(left)), true
}

// adoptHA takes over the old process's term, if it led: the term is the
// manager's before the manager runs, so that the adopted connections and
// waiters are served by it. Called by adopt, before Start.
func (s *Server) adoptHA(st *handoverState) error {
	switch {
	case st.ha == nil && s.ha == nil:
		return nil
	case st.ha != nil && s.ha == nil:
		return errors.New("the old process leads an -etcd group and this one has no -etcd: restart instead")
	case st.ha == nil:
		if len(st.conns) > 0 {
			return errors.New("the old process serves clients without -etcd and this one has -etcd: restart instead")
		}
		return nil // a standby: this process campaigns afresh
	}
	n, h := s.ha, st.ha
	if !strings.HasPrefix(h.key, n.electionPrefix+"/") {
		return fmt.Errorf("the old process leads with election key %q, outside -etcd-prefix %q", h.key, n.cfg.Prefix)
	}
	if h.ttl < 1 {
		return fmt.Errorf("lease TTL %ds", h.ttl)
	}
	t := newTerm(n.lead)
	t.lease, t.ttl, t.key, t.rev = clientv3.LeaseID(h.lease), time.Duration(h.ttl)*time.Second, h.key, h.rev
	t.first = h.block
	// Until the go message brings the exact time left; nothing is served
	// before it.
	t.deadline.Store(int64(n.lead.now() + time.Duration(h.left)))
	if h.block.End-h.block.Start < tokens.Reserve {
		t.want <- struct{}{} // the manager waits for the next block before it serves
	}
	n.resumed = t
	n.lead.current.Store(t)
	n.role = "leader" // Start opens the lock listeners
	n.isLeader.Set(1)
	n.won.Store(h.elections)
	n.elections.Add(float64(h.elections))
	return nil
}

// startResumed sets the resumed term's deadline from the go message,
// received at at; without one the term is over at once.
func (s *Server) startResumed(goMsg []byte, at time.Time) {
	if s.ha == nil || s.ha.resumed == nil {
		return
	}
	n, t := s.ha, s.ha.resumed
	left, k := binary.Varint(goMsg)
	if k <= 0 {
		left = 0
	}
	t.deadline.Store(int64(at.Sub(n.lead.base) + time.Duration(left)))
}

// runResumedTerm leads with the term taken over from the old process: its
// listeners are open already (Start), its manager serves it, and it renews
// the lease at once.
func (n *haNode) runResumedTerm(t *term) error {
	tctx, stopTerm := context.WithCancel(n.ctx)
	var wg sync.WaitGroup
	defer func() {
		t.end("term over")
		stopTerm()
		wg.Wait()
		if !n.handedOff.Load() { // the next new process renews it now
			n.revoke(t.lease)
		}
	}()
	defer n.stepDown(t)
	wg.Add(2)
	go func() {
		defer wg.Done()
		n.keepLease(tctx, t, t.lease, t.ttl, time.Now())
	}()
	go func() {
		defer wg.Done()
		select {
		case <-n.ctx.Done():
			t.end("shutting down")
		case <-t.over:
		}
	}()
	session, err := n.electionSession(t.lease, t.ttl)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	election := concurrency.ResumeElection(session, n.electionPrefix, t.key, t.rev)
	key, rev := election.Key(), election.Rev()
	wg.Add(2)
	go func() {
		defer wg.Done()
		n.watchKey(tctx, t, key, rev)
	}()
	go func() {
		defer wg.Done()
		n.reserveBlocks(tctx, t, key, rev)
	}()
	n.setRole("leader")
	n.isLeader.Set(1)
	n.log.Info("leading on after a hand-over", "advertise", n.cfg.Advertise, "deadline_in", time.Until(t.deadlineTime()).Round(time.Millisecond))
	<-t.over
	if n.ctx.Err() != nil {
		return nil
	}
	return errors.New(t.reason)
}
