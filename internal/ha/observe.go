package ha

import (
	"context"
	"fmt"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// observe follows who leads, for /healthz.
func (n *Node) observe() {
	prefix := n.electionPrefix + "/"
	for n.ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaseTTL)
		resp, err := n.client.Get(gctx, prefix, clientv3.WithFirstCreate()...)
		cancel()
		if err != nil {
			n.setLeaderAddr("")
			sleepCtx(n.ctx, 500*time.Millisecond)
			continue
		}
		addr := ""
		if len(resp.Kvs) > 0 {
			addr = string(resp.Kvs[0].Value)
		}
		n.setLeaderAddr(addr)
		// Any change under the prefix, or the watch failing, means look again.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(n.ctx))
		wch := n.client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				sleepCtx(n.ctx, 500*time.Millisecond)
			}
		case <-n.ctx.Done():
		}
		cancel()
	}
}

func (n *Node) setLeaderAddr(addr string) {
	n.mu.Lock()
	n.leaderAddr = addr
	n.mu.Unlock()
}

// Healthz answers for a node that does not serve: 503, its role and the
// leader's address. It reports false on the leader, whose /healthz is the
// single node's.
func (n *Node) Healthz(w http.ResponseWriter) bool {
	n.mu.Lock()
	role, leader := n.role, n.leaderAddr
	n.mu.Unlock()
	if role == "leader" {
		return false
	}
	if leader == "" {
		leader = "unknown"
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintf(w, "role: %s\nleader: %s\n", role, leader)
	return true
}
