package main

// Hand-overs to a new binary under -etcd: the glue between the hand-over's
// state (upgrade_state.go) and the node's term, which internal/ha hands
// over and resumes (internal/ha/handover.go says how).

import (
	"errors"
	"time"

	"github.com/glockd/glockd/internal/ha"
)

// handoverHA fills in the state what the new process needs to resume the
// term t, the one BeginHandover returned; the manager's snapshot put the
// rest of its tokens in st.ha.
func (s *Server) handoverHA(st *handoverState, t *ha.Term) error {
	switch {
	case t == nil && st.ha != nil:
		return errors.New("the node began serving during the hand-over")
	case t == nil:
		return nil
	case st.ha == nil:
		return errors.New("the term ended during the hand-over")
	}
	r, err := s.ha.Handover(t)
	if err != nil {
		return err
	}
	h := st.ha
	h.lease, h.ttl, h.key, h.rev = r.Lease, int64(r.TTL/time.Second), r.Key, r.Rev
	h.left, h.elections = int64(r.Left), r.Elections
	return nil
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
	h := st.ha
	return s.ha.Adopt(ha.Resume{
		Lease: h.lease, TTL: time.Duration(h.ttl) * time.Second, Key: h.key, Rev: h.rev,
		Block: h.block, Left: time.Duration(h.left), Elections: h.elections,
	})
}

// startResumed sets the resumed term's deadline from the go message,
// received at at; without one the term is over at once.
func (s *Server) startResumed(goMsg []byte, at time.Time) {
	if s.ha != nil {
		s.ha.StartResumed(goMsg, at)
	}
}
