package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Hooks are what a node asks of its server. They are called from the
// node's goroutine, one at a time.
type Hooks interface {
	// Lead opens the lock listeners, unless they are open already (a term
	// resumed after a hand-over): the term is the manager's by then.
	Lead() error
	// AnswerWaiters answers every pending wait as a timeout, as a single
	// node does when it stops: the node is shutting down while it still
	// leads, and the term is still current.
	AnswerWaiters()
	// StepDown closes the lock listeners and every connection, and waits
	// until the connections have ended. It reports whether the listeners
	// were open.
	StepDown() bool
}

// Node runs the election for a server.
type Node struct {
	cfg   Config
	log   *slog.Logger
	hooks Hooks
	lead  *Leadership

	electionPrefix string // concurrency.NewElection adds "/"
	tokensKey      string

	client *clientv3.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu         sync.Mutex
	role       string // standby, elected (waiting the takeover delay), leader
	leaderAddr string // the current leader's advertise address, "" if unknown

	isLeader             prometheus.Gauge
	elections, stepDowns prometheus.Counter
	won                  atomic.Uint64 // what elections counts, carried on at a hand-over

	// Hand-overs to a new binary (handover.go). handingOver, guarded by mu,
	// keeps a node that is not serving from starting to serve meanwhile;
	// handedOff, once the new process confirmed, keeps this one from
	// touching the lease, the listeners or the connections again.
	handingOver bool
	handedOff   atomic.Bool
	// resumed is the new process's term, taken over from the old one's
	// leader before Start; run serves it first.
	resumed *Term
}

// New makes a node of an active/standby group, standing by; Start begins
// its campaign.
func New(cfg Config, log *slog.Logger, hooks Hooks) (*Node, error) {
	client, err := newClient(cfg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:            cfg,
		log:            log,
		hooks:          hooks,
		lead:           NewLeadership(),
		electionPrefix: cfg.Prefix + "election",
		tokensKey:      cfg.Prefix + "tokens",
		client:         client,
		ctx:            ctx,
		cancel:         cancel,
		role:           "standby",
	}
	n.isLeader, n.elections, n.stepDowns = NewMetrics()
	return n, nil
}

// NewMetrics makes the metrics of a node.
func NewMetrics() (isLeader prometheus.Gauge, elections, stepDowns prometheus.Counter) {
	isLeader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "glockd_leader",
		Help: "1 while this node is the leader and serves clients, 0 on a standby (or an elected node waiting the takeover delay).",
	})
	elections = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glockd_elections_won_total",
		Help: "Elections this node won.",
	})
	stepDowns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glockd_step_downs_total",
		Help: "Times this node stopped leading: lease deadline passed, lease or election key lost, or shutdown.",
	})
	return isLeader, elections, stepDowns
}

// Collectors are the node's metrics, for the server's registry.
func (n *Node) Collectors() []prometheus.Collector {
	return []prometheus.Collector{n.isLeader, n.elections, n.stepDowns}
}

// Leadership is what the node shares with the lock manager.
func (n *Node) Leadership() *Leadership { return n.lead }

// Client is the node's etcd client (tests put faults in its lease calls).
func (n *Node) Client() *clientv3.Client { return n.client }

// ElectionPrefix is the prefix of the election's keys in etcd, without the
// "/" that ends it.
func (n *Node) ElectionPrefix() string { return n.electionPrefix }

// Start begins the campaign, and the observation of who leads.
func (n *Node) Start() {
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		n.observe()
	}()
	go func() {
		defer n.wg.Done()
		n.run()
	}()
}

// Stop steps down if leading, resigns, and closes the etcd client.
func (n *Node) Stop() {
	n.once.Do(func() {
		n.cancel()
		n.wg.Wait()
		n.client.Close()
	})
}

func (n *Node) setRole(role string) {
	n.mu.Lock()
	n.role = role
	n.mu.Unlock()
}

// run campaigns, leads, steps down and campaigns again until the server
// closes.
func (n *Node) run() {
	if t := n.resumed; t != nil {
		n.resumed = nil
		if err := n.runResumedTerm(t); err != nil && n.ctx.Err() == nil {
			n.log.Warn("not leading", "err", err)
			sleepCtx(n.ctx, n.cfg.LeaseTTL/4)
		}
	}
	for n.ctx.Err() == nil && !n.handedOff.Load() {
		err := n.runTerm()
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("not leading", "err", err)
			sleepCtx(n.ctx, n.cfg.LeaseTTL/4)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// runTerm takes a lease, campaigns with it, and if elected serves until the
// term ends.
func (n *Node) runTerm() error {
	t, err := n.grantLease()
	if err != nil {
		return err
	}
	tctx, stopTerm := context.WithCancel(n.ctx)
	var wg sync.WaitGroup
	defer n.endTerm(t, stopTerm, &wg)
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.keepLease(tctx, t, time.Now().Add(renewEvery(t.ttl)))
	}()
	session, err := n.electionSession(t.lease, t.ttl)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	n.endAtShutdown(t, &wg)
	election := concurrency.NewElection(session, n.electionPrefix)
	if err := n.campaign(tctx, t, election); err != nil {
		return err
	}
	t.key, t.rev = election.Key(), election.Rev()
	if !t.Valid() {
		return errors.New("lease deadline passed during the campaign")
	}
	// The first block is reserved by a transaction that succeeds only while
	// the election key is ours: it also confirms the election.
	if t.first, err = n.reserveBlock(tctx, t.key, t.rev); err != nil {
		return fmt.Errorf("token block: %w", err)
	}
	n.elections.Inc()
	n.won.Add(1)
	n.setRole("elected")
	n.log.Info("elected leader", "advertise", n.cfg.Advertise, "takeover_delay", n.cfg.TakeoverDelay, "first_token", t.first.Start)
	defer n.stepDown(t)
	n.guardKey(tctx, t, &wg)

	delay := time.NewTimer(n.cfg.TakeoverDelay)
	defer delay.Stop()
	select {
	case <-delay.C:
	case <-t.over:
		return errors.New(t.reason)
	}
	if err := n.serve(t); err != nil {
		return err
	}
	return n.awaitEnd(t)
}

// grantLease starts a term with a new lease, its deadline counted from
// when the grant was sent.
func (n *Node) grantLease() (*Term, error) {
	ttl := n.cfg.LeaseTTL
	t := newTerm(n.lead)
	sent := time.Now()
	gctx, cancel := context.WithTimeout(n.ctx, ttl)
	grant, err := n.client.Grant(gctx, int64(ttl/time.Second))
	cancel()
	if err != nil {
		return nil, fmt.Errorf("lease grant: %w", err)
	}
	t.lease, t.ttl = grant.ID, min(ttl, time.Duration(grant.TTL)*time.Second)
	t.deadline.Store(int64(sent.Sub(n.lead.base) + t.ttl - leaseMargin(t.ttl)))
	return t, nil
}

// campaign campaigns until elected or the term ends: a candidate whose
// lease lapsed must not go on to believe it won.
func (n *Node) campaign(tctx context.Context, t *Term, election *concurrency.Election) error {
	cctx, stopCampaign := context.WithCancel(tctx)
	defer stopCampaign()
	campaign := make(chan error, 1)
	go func() { campaign <- election.Campaign(cctx, n.cfg.Advertise) }()
	select {
	case err := <-campaign:
		if err != nil {
			return fmt.Errorf("campaign: %w", err)
		}
		return nil
	case <-t.over:
		stopCampaign()
		<-campaign
		return errors.New(t.reason)
	}
}

// endTerm is the end of a term's goroutine: the term ends, its helpers
// stop, and its lease is revoked, unless a new process renews it now.
func (n *Node) endTerm(t *Term, stopTerm context.CancelFunc, wg *sync.WaitGroup) {
	t.End("term over")
	stopTerm()
	wg.Wait()
	if !n.handedOff.Load() {
		n.revoke(t.lease)
	}
}

// endAtShutdown ends t when the node stops.
func (n *Node) endAtShutdown(t *Term, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-n.ctx.Done():
			t.End("shutting down")
		case <-t.over:
		}
	}()
}

// guardKey follows the elected term's key: the term ends when the key
// goes, and token blocks are reserved under it while it is ours.
func (n *Node) guardKey(tctx context.Context, t *Term, wg *sync.WaitGroup) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		n.watchKey(tctx, t)
	}()
	go func() {
		defer wg.Done()
		n.reserveBlocks(tctx, t)
	}()
}

// awaitEnd waits for the end of a term being served, and reports why it
// ended: nil when the node stops.
func (n *Node) awaitEnd(t *Term) error {
	<-t.over
	if n.ctx.Err() != nil {
		return nil
	}
	return errors.New(t.reason)
}

// electionSession wraps the term's lease in the concurrency.Session that
// an Election needs, without the keep-alive loop such a session runs: the
// lease has exactly one, keepLease, which knows when each renewal was sent.
// A second loop would keep the lease (and so the election key) alive in
// etcd after keepLease gave up, holding up the standby, and its failures
// would end terms that keepLease still renews. The session's context is
// over before it starts, so its loop ends at once; only the lease ID and
// the client of the session are used.
func (n *Node) electionSession(id clientv3.LeaseID, ttl time.Duration) (*concurrency.Session, error) {
	over, cancel := context.WithCancel(context.Background())
	cancel()
	return concurrency.NewSession(n.client, concurrency.WithLease(id),
		concurrency.WithTTL(int(ttl/time.Second)), concurrency.WithContext(over))
}

// revoke ends a lease at once rather than at its expiry, so that a standby
// takes over sooner; everything is closed by now. When etcd cannot be
// reached, it tries again in the background: a lease outlives an etcd
// restart, and would hold up the next election by its whole TTL.
func (n *Node) revoke(id clientv3.LeaseID) {
	if n.tryRevoke(id) {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		stop := time.Now().Add(10 * n.cfg.LeaseTTL)
		for time.Now().Before(stop) && n.ctx.Err() == nil {
			sleepCtx(n.ctx, 200*time.Millisecond)
			if n.tryRevoke(id) {
				return
			}
		}
	}()
}

// tryRevoke reports whether the lease is gone.
func (n *Node) tryRevoke(id clientv3.LeaseID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := n.client.Revoke(ctx, id)
	return err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound)
}

// serve publishes the term to the manager and opens the lock listeners,
// unless a hand-over to a new binary is under way: the new process
// campaigns afresh.
func (n *Node) serve(t *Term) error {
	n.mu.Lock()
	if n.handingOver {
		n.mu.Unlock()
		return errors.New("a hand-over to a new binary is under way: not taking over")
	}
	n.lead.Publish(t)
	n.mu.Unlock()
	if err := n.hooks.Lead(); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	n.setRole("leader")
	n.isLeader.Set(1)
	n.log.Info("serving as leader", "advertise", n.cfg.Advertise, "deadline_in", time.Until(t.Deadline()).Round(time.Millisecond))
	return nil
}

// stepDown ends serving: no request is answered from the first line on, then
// the listeners and every connection close, their locks orphaned.
func (n *Node) stepDown(t *Term) {
	t.End("stepping down")
	handedOff := n.handedOff.Load() // the listeners and connections are the new process's
	if n.ctx.Err() != nil && t.Valid() && !handedOff {
		// Stopping while still the leader: waiters learn that they did
		// not get their lock, as from a single node that stops.
		n.hooks.AnswerWaiters()
	}
	n.lead.Publish(nil)
	n.isLeader.Set(0)
	wasOpen := false
	if !handedOff {
		wasOpen = n.hooks.StepDown()
	}
	n.stepDowns.Inc()
	n.setRole("standby")
	n.log.Warn("stepped down", "reason", t.reason, "served", wasOpen)
}

// keepLease renews the lease with one KeepAliveOnce at a time, so that it
// knows when each successful renewal was sent, and ends the term when the
// deadline passes or etcd no longer knows the lease.
func (n *Node) keepLease(ctx context.Context, t *Term, next time.Time) {
	id, ttl := t.lease, t.ttl
	every := renewEvery(ttl)
	for {
		if !t.Valid() {
			t.End("lease deadline passed: no renewal from etcd in time")
			return
		}
		timer := time.NewTimer(min(time.Until(next), time.Until(t.Deadline())))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-t.over:
			timer.Stop()
			return
		case <-timer.C:
		}
		if time.Now().Before(next) {
			continue
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, t.Deadline())
		resp, err := n.client.KeepAliveOnce(rctx, id)
		cancel()
		switch {
		case err == nil:
			t.extend(sent, min(ttl, time.Duration(resp.TTL)*time.Second))
			next = sent.Add(every)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			t.End("etcd no longer knows the lease")
			return
		default:
			next = time.Now().Add(min(every, 100*time.Millisecond))
		}
	}
}

// watchKey ends the term when the election key goes: a lease revoked, or
// the key deleted by hand.
func (n *Node) watchKey(ctx context.Context, t *Term) {
	key, rev := t.key, t.rev
	for ctx.Err() == nil {
		wch := n.client.Watch(ctx, key, clientv3.WithRev(rev+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					t.End("the election key was deleted")
					return
				}
				rev = ev.Kv.ModRevision
			}
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}
