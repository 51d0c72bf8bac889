package main

// Hand-overs to a new binary under -etcd: the glue between the hand-over's
// state (internal/handover) and the node's term, which internal/ha hands
// over and resumes (internal/ha/handover.go says how).

import (
	"errors"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/handover"
	"github.com/glockd/glockd/internal/tokens"
)

// handoverHA fills in the state what the new process needs to resume the
// term t, the one BeginHandover returned; the manager's snapshot put the
// rest of its tokens in st.HA.
func (s *Server) handoverHA(st *handover.State, t *ha.Term) error {
	switch {
	case t == nil && st.HA != nil:
		return errors.New("the node began serving during the hand-over")
	case t == nil:
		return nil
	case st.HA == nil:
		return errors.New("the term ended during the hand-over")
	}
	r, err := s.ha.Handover(t)
	if err != nil {
		return err
	}
	h := st.HA
	h.Lease, h.TTL, h.Key, h.Rev = r.Lease, int64(r.TTL/time.Second), r.Key, r.Rev
	h.Left, h.Elections = int64(r.Left), r.Elections
	return nil
}

// adoptHA takes over the old process's term, if it led: the term is the
// manager's before the manager runs, so that the adopted connections and
// waiters are served by it. Called by adopt, before Start.
func (s *Server) adoptHA(st *handover.State) error {
	switch {
	case st.HA == nil && s.ha == nil:
		return nil
	case st.HA != nil && s.ha == nil:
		return errors.New("the old process leads an -etcd group and this one has no -etcd: restart instead")
	case st.HA == nil:
		if len(st.Conns) > 0 {
			return errors.New("the old process serves clients without -etcd and this one has -etcd: restart instead")
		}
		return nil // a standby: this process campaigns afresh
	}
	h := st.HA
	return s.ha.Adopt(ha.Resume{
		Lease: h.Lease, TTL: time.Duration(h.TTL) * time.Second, Key: h.Key, Rev: h.Rev,
		Block: tokens.Block{Start: h.BlockStart, End: h.BlockEnd}, Left: time.Duration(h.Left), Elections: h.Elections,
	})
}

// startResumed sets the resumed term's deadline from the go message,
// received at at; without one the term is over at once.
func (s *Server) startResumed(goMsg []byte, at time.Time) {
	if s.ha != nil {
		s.ha.StartResumed(goMsg, at)
	}
}
