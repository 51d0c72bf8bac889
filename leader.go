package main

// High availability: several glockd nodes, one serving, elected through
// etcd (docs/ha.md).
//
// Lock tables are never replicated: a lock dies with its connection, and a
// failover ends every connection. What needs consensus is only which node
// serves, and the fencing-token counter; etcd's election (the concurrency
// package) decides the first, and blocks of tokens reserved in etcd by the
// leader the second.
//
// The rule that keeps two leaders from serving at once is a deadline that
// the leader keeps on its own monotonic clock: each successful renewal of
// its etcd lease moves it to the time the renewal was sent + TTL − margin.
// etcd counts the TTL from when it received the renewal, so the deadline
// always comes before etcd lets the lease expire and another node is
// elected. The manager checks the deadline before every request it runs
// and again before every grant in it (mayGrant), and a connection checks it
// once more before it writes replies; past it the node answers nothing,
// closes its listeners and connections, and campaigns again. A newly
// elected node waits -takeover-delay before it opens its listeners, so
// that clients of a leader that could not be told (paused, or cut off from
// them) have given up their session first.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// HAConfig configures a node of an active/standby group.
type HAConfig struct {
	Endpoints     []string      // etcd client URLs
	Prefix        string        // keys of this group in etcd, ending in "/"
	LeaseTTL      time.Duration // whole seconds
	TakeoverDelay time.Duration // a new leader's wait before it serves
	Advertise     string        // host:port that clients are told to use

	// etcd TLS: a client certificate (both or neither) and the CA that
	// signed etcd's; all empty for plain connections.
	CertFile, KeyFile, CAFile string
}

// Defaults of the HA flags.
const (
	DefaultEtcdPrefix    = "/glockd/default/"
	DefaultLeaseTTL      = 5 * time.Second
	DefaultTakeoverDelay = 10 * time.Second
)

// finishHAConfig checks the HA flags (given only with -etcd) and fills in
// what follows from the rest of cfg.
func finishHAConfig(cfg *Config, etcd string, setFlags map[string]bool) error {
	if etcd == "" {
		for _, f := range []string{"etcd-prefix", "lease-ttl", "takeover-delay", "advertise", "etcd-cert", "etcd-key", "etcd-ca"} {
			if setFlags[f] {
				return fmt.Errorf("-%s needs -etcd", f)
			}
		}
		cfg.HA = nil
		return nil
	}
	ha := cfg.HA
	for _, ep := range strings.Split(etcd, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			ha.Endpoints = append(ha.Endpoints, ep)
		}
	}
	if len(ha.Endpoints) == 0 {
		return errors.New("-etcd: no endpoint")
	}
	if !strings.HasPrefix(ha.Prefix, "/") {
		return fmt.Errorf("-etcd-prefix %q: want a key prefix starting with /", ha.Prefix)
	}
	if !strings.HasSuffix(ha.Prefix, "/") {
		ha.Prefix += "/"
	}
	if ha.LeaseTTL < time.Second || ha.LeaseTTL%time.Second != 0 {
		return fmt.Errorf("-lease-ttl %v: want whole seconds, at least 1s (etcd counts leases in seconds)", ha.LeaseTTL)
	}
	if ha.TakeoverDelay < 0 {
		return fmt.Errorf("-takeover-delay %v: want 0 or more", ha.TakeoverDelay)
	}
	if (ha.CertFile == "") != (ha.KeyFile == "") {
		return errors.New("-etcd-cert and -etcd-key go together")
	}
	if cfg.MetricsAddr == "" {
		return errors.New("-etcd needs -metrics-addr: a standby serves /healthz and /metrics only there")
	}
	if ha.Advertise == "" {
		if cfg.TCPAddr == "" {
			return errors.New("-etcd with -port 0 needs -advertise")
		}
		ha.Advertise = defaultAdvertise(cfg.TCPAddr)
	}
	if _, _, err := net.SplitHostPort(ha.Advertise); err != nil {
		return fmt.Errorf("-advertise %q: want host:port", ha.Advertise)
	}
	return nil
}

// defaultAdvertise is the TCP listener's address, with the host name in
// place of an address that listens on every interface.
func defaultAdvertise(tcpAddr string) string {
	host, port, err := net.SplitHostPort(tcpAddr)
	if err != nil {
		return tcpAddr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if name, err := os.Hostname(); err == nil {
			host = name
		}
	}
	return net.JoinHostPort(host, port)
}

// leaseMargin is how much sooner than etcd the leader gives up its lease:
// room for the drift between its clock and etcd's, and for the time between
// the manager's check and a reply leaving the socket.
func leaseMargin(ttl time.Duration) time.Duration { return ttl / 5 }

// renewEvery is the interval between lease renewals: the deadline stays
// 3 to 4 intervals ahead, so a leader survives a few slow renewals.
func renewEvery(ttl time.Duration) time.Duration { return ttl / 5 }

// leadership is what a node shares with its manager.
type leadership struct {
	base    time.Time            // deadlines count from it, on the monotonic clock
	current atomic.Pointer[term] // nil while not serving

	// Owned by the manager goroutine.
	seen    *term               // the term its token source and fence belong to
	fenced  bool                // seen is over for the manager: it answers nothing more
	dropped map[*connState]bool // connections whose wait the fence dropped
}

// serving reports whether the node may answer now: always without -etcd;
// with it, while a term is current and before its deadline. Any goroutine
// may ask (m.leader is set before the manager runs, and the term is atomic).
func (m *manager) serving() bool {
	if m.leader == nil {
		return true
	}
	t := m.leader.current.Load()
	return t != nil && t.valid()
}

// now is the monotonic time since base.
func (l *leadership) now() time.Duration { return time.Since(l.base) }

// term is one lease of this node: it campaigns with it and, if elected,
// serves with it until the deadline passes or the lease is lost.
type term struct {
	l        *leadership
	deadline atomic.Int64 // leadership.now() past which the node must not serve
	first    tokenBlock   // reserved before serving
	blocks   chan tokenBlock
	want     chan struct{}

	over    chan struct{} // closed when the term ends
	endOnce sync.Once
	reason  string // why it ended, set before over is closed

	// Set once elected, before serving: what a hand-over to a new binary
	// carries (upgrade.go).
	lease clientv3.LeaseID
	ttl   time.Duration
	key   string
	rev   int64
}

func newTerm(l *leadership) *term {
	return &term{
		l:      l,
		blocks: make(chan tokenBlock, 1),
		want:   make(chan struct{}, 1),
		over:   make(chan struct{}),
	}
}

// valid reports whether the deadline is still ahead.
func (t *term) valid() bool { return t.l.now() < time.Duration(t.deadline.Load()) }

// deadlineTime is the deadline as a time.Time carrying a monotonic reading.
func (t *term) deadlineTime() time.Time {
	return t.l.base.Add(time.Duration(t.deadline.Load()))
}

// extend moves the deadline after a renewal sent at sent was granted ttl,
// unless the deadline has passed already: a term once lapsed stays over.
func (t *term) extend(sent time.Time, ttl time.Duration) bool {
	if !t.valid() || t.ended() {
		return false
	}
	d := int64(sent.Sub(t.l.base) + ttl - leaseMargin(ttl))
	if d > t.deadline.Load() {
		t.deadline.Store(d)
	}
	return true
}

func (t *term) end(reason string) {
	t.endOnce.Do(func() {
		t.reason = reason
		close(t.over)
	})
}

func (t *term) ended() bool {
	select {
	case <-t.over:
		return true
	default:
		return false
	}
}

// admit is the manager's check before a request: a batch runs only while
// this node leads and its deadline is ahead; a disconnect or a wait's expiry
// is handled in any case, but past the deadline it finds no waiter to hand
// a lock to. It reports whether the request may run.
func (m *manager) admit(req request) bool {
	switch req.kind {
	case requestBatch:
		if m.mayServe() {
			return true
		}
		// No reply, not even to the commands before this batch; the
		// step-down closes the connection.
		refuseBatch(req.conn, req.batch)
		return false
	case requestDumpStep:
		if m.mayServe() {
			return true
		}
		// The dump ends here, unfinished; the step-down closes the
		// connection.
		d := req.dump
		d.step, d.cut, d.entries, d.details = nil, true, d.entries[:0], d.details[:0]
		req.conn.done <- struct{}{}
		return false
	case requestWaitExpired:
		m.mayServe()
	case requestDisconnect:
		m.mayServe()
		delete(m.leader.dropped, req.conn)
	case requestEndOfInput:
		m.mayServe()
		// The connection waits for its wait to end before it closes: a
		// wait dropped by the fence ends as a timeout, which grants
		// nothing, to a client that has stopped sending anyway.
		if m.leader.dropped[req.conn] {
			delete(m.leader.dropped, req.conn)
			req.conn.grants <- waitResult{}
		}
	}
	return true
}

// mayGrant is the check before every grant with -etcd: a granting command
// of a batch (g, sg, gw or sgw), a lock handed over to a waiter, an orphan
// passed on. admit checked the deadline before the request, but a request
// can run for a while (a batch of maxBatch commands, a pause of the process
// in the middle of it): the term must still be valid at the moment of each
// grant. Past the deadline it fences the manager, as admit would, and
// reports false: nothing is granted. Always true without -etcd.
func (m *manager) mayGrant() bool {
	l := m.leader
	if l == nil {
		return true
	}
	if t := l.current.Load(); t != nil && t == l.seen && !l.fenced && t.valid() {
		return true
	}
	m.fence(l.seen)
	return false
}

// grantsAtOnce reports whether a command can grant a lock as it runs.
func grantsAtOnce(v proto.Verb) bool {
	return v == proto.VerbG || v == proto.VerbSG || v == proto.VerbGW || v == proto.VerbSGW || v.Async()
}

// errNotServing ends a connection whose replies came back from the manager
// after the term ended: the connection closes without writing them.
var errNotServing = errors.New("the term ended before the replies were written")

// refuseBatch drops every reply of b, even those of the commands run before
// its deadline passed, and answers it: the connection writes nothing, and
// the step-down closes it. As admit does with a batch past the deadline.
func refuseBatch(c *connState, b *batch) {
	b.next = len(b.cmds)
	b.out, b.ends = b.out[:0], b.ends[:0]
	c.done <- struct{}{}
}

// mayServe reports whether the current term allows serving, takes a new
// term's tokens, and fences the manager when the term is over.
func (m *manager) mayServe() bool {
	l := m.leader
	t := l.current.Load()
	if t != l.seen {
		l.seen, l.fenced = t, false
		if t != nil {
			m.tokens = newBlockTokens(t.first, t.want)
		}
	}
	if t == nil || l.fenced || !t.valid() {
		m.fence(t)
		return false
	}
	ts := &m.tokens
	if ts.asked && ts.pending.end == 0 {
		select {
		case b := <-t.blocks:
			ts.pending = b
		default:
		}
	}
	if ts.remaining() < tokenReserve && !m.awaitTokens(t) {
		m.fence(t)
		return false
	}
	return true
}

// awaitTokens waits for the next block of tokens, at most until the
// deadline: the one place where the manager waits on etcd, when grants came
// faster than the leader could reserve blocks.
func (m *manager) awaitTokens(t *term) bool {
	timer := time.NewTimer(time.Until(t.deadlineTime()))
	defer timer.Stop()
	select {
	case b := <-t.blocks:
		m.tokens.pending = b
		return t.valid()
	case <-t.over:
	case <-timer.C:
	}
	return false
}

// fence stops the manager serving for the rest of the term: it forgets every
// waiter without a reply (so that locks orphaned from now on go to nobody),
// drops the term's tokens and tells the node, which closes every connection.
func (m *manager) fence(t *term) {
	l := m.leader
	if l.fenced {
		return
	}
	l.fenced = true
	m.tokens = tokenSource{}
	for _, table := range []map[string]*waitQueue{m.waiters, m.sharedWaiters} {
		for name, q := range table {
			for !q.empty() {
				w := q.pop()
				m.finishWait(w)
				if w.async {
					// Its connection is closed with the others.
					w.conn.box.drop()
					continue
				}
				if l.dropped == nil {
					l.dropped = make(map[*connState]bool)
				}
				l.dropped[w.conn] = true
			}
			delete(table, name)
		}
	}
	if t != nil {
		t.end("the lock manager found the deadline passed")
	}
}

// haNode runs the election for a Server.
type haNode struct {
	srv  *Server
	cfg  HAConfig
	log  *slog.Logger
	lead *leadership

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

	// Hand-overs to a new binary (upgrade.go). handingOver, guarded by mu,
	// keeps a node that is not serving from starting to serve meanwhile;
	// handedOff, once the new process confirmed, keeps this one from
	// touching the lease, the listeners or the connections again.
	handingOver bool
	handedOff   atomic.Bool
	// resumed is the new process's term, taken over from the old one's
	// leader before Start; run serves it first.
	resumed *term
}

// enableHA makes s a node of an active/standby group; Start begins its
// campaign.
func (s *Server) enableHA(cfg HAConfig) error {
	tlsConfig, err := etcdTLS(cfg)
	if err != nil {
		return err
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         tlsConfig,
		DialTimeout: cfg.LeaseTTL,
		// A connection to etcd that went silent (a partition that drops
		// packets) is replaced rather than waited on; 10 s is gRPC's least.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: cfg.LeaseTTL,
		Logger:               etcdLogger(s.cfg.Logger),
		// gRPC's reconnection backoff grows to 2 minutes: a node would
		// then notice etcd's return long after it came back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.LeaseTTL,
		})},
	})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &haNode{
		srv:            s,
		cfg:            cfg,
		log:            s.cfg.Logger,
		lead:           &leadership{base: time.Now()},
		electionPrefix: cfg.Prefix + "election",
		tokensKey:      cfg.Prefix + "tokens",
		client:         client,
		ctx:            ctx,
		cancel:         cancel,
		role:           "standby",
	}
	n.isLeader, n.elections, n.stepDowns = newHAMetrics()
	s.metrics.registry.MustRegister(n.isLeader, n.elections, n.stepDowns)
	s.manager.leader = n.lead
	s.ha = n
	return nil
}

// newHAMetrics makes the metrics of a high-availability node.
func newHAMetrics() (isLeader prometheus.Gauge, elections, stepDowns prometheus.Counter) {
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

// etcdLogger passes the etcd client's warnings and errors to our log (a
// failed TLS handshake, say, which our own errors only show as a timeout),
// each kind at most once every 10 seconds: while etcd is down the client
// warns at every retry.
func etcdLogger(log *slog.Logger) *zap.Logger {
	return zap.New(zapcore.NewSamplerWithOptions(zapToSlog{log: log}, 10*time.Second, 1, 0))
}

// zapToSlog is a zapcore.Core writing to a slog.Logger.
type zapToSlog struct {
	log    *slog.Logger
	fields []zapcore.Field
}

func (z zapToSlog) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (z zapToSlog) With(fields []zapcore.Field) zapcore.Core {
	return zapToSlog{log: z.log, fields: append(slices.Clip(z.fields), fields...)}
}

func (z zapToSlog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if z.Enabled(e.Level) {
		return ce.AddCore(e, z)
	}
	return ce
}

func (z zapToSlog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clip(z.fields), fields...) {
		f.AddTo(enc)
	}
	keys := slices.Sorted(maps.Keys(enc.Fields))
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, enc.Fields[k])
	}
	level := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	z.log.Log(context.Background(), level, "etcd client: "+e.Message, args...)
	return nil
}

func (z zapToSlog) Sync() error { return nil }

func etcdTLS(cfg HAConfig) (*tls.Config, error) {
	if cfg.CertFile == "" && cfg.CAFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("-etcd-cert/-etcd-key: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("-etcd-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-etcd-ca %s: no certificate", cfg.CAFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}

func (n *haNode) start() {
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

// stop steps down if leading, resigns, and closes the etcd client.
func (n *haNode) stop() {
	n.once.Do(func() {
		n.cancel()
		n.wg.Wait()
		n.client.Close()
	})
}

func (n *haNode) setRole(role string) {
	n.mu.Lock()
	n.role = role
	n.mu.Unlock()
}

// run campaigns, leads, steps down and campaigns again until the server
// closes.
func (n *haNode) run() {
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
func (n *haNode) runTerm() error {
	ttl := n.cfg.LeaseTTL
	t := newTerm(n.lead)
	sent := time.Now()
	gctx, cancel := context.WithTimeout(n.ctx, ttl)
	grant, err := n.client.Grant(gctx, int64(ttl/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("lease grant: %w", err)
	}
	leaseTTL := min(ttl, time.Duration(grant.TTL)*time.Second)
	t.deadline.Store(int64(sent.Sub(n.lead.base) + leaseTTL - leaseMargin(leaseTTL)))

	tctx, stopTerm := context.WithCancel(n.ctx)
	var wg sync.WaitGroup
	defer func() {
		t.end("term over")
		stopTerm()
		wg.Wait()
		if !n.handedOff.Load() { // the new process renews it now
			n.revoke(grant.ID)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.keepLease(tctx, t, grant.ID, leaseTTL, time.Now().Add(renewEvery(leaseTTL)))
	}()

	session, err := n.electionSession(grant.ID, leaseTTL)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-n.ctx.Done():
			t.end("shutting down")
		case <-t.over:
		}
	}()

	// Campaign until elected or the term ends: a candidate whose lease
	// lapsed must not go on to believe it won.
	election := concurrency.NewElection(session, n.electionPrefix)
	cctx, stopCampaign := context.WithCancel(tctx)
	campaign := make(chan error, 1)
	go func() { campaign <- election.Campaign(cctx, n.cfg.Advertise) }()
	select {
	case err = <-campaign:
	case <-t.over:
		stopCampaign()
		<-campaign
		return errors.New(t.reason)
	}
	stopCampaign()
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	key, rev := election.Key(), election.Rev()
	if !t.valid() {
		return errors.New("lease deadline passed during the campaign")
	}
	// The first block is reserved by a transaction that succeeds only while
	// the election key is ours: it also confirms the election.
	if t.first, err = n.reserveBlock(tctx, key, rev); err != nil {
		return fmt.Errorf("token block: %w", err)
	}
	t.lease, t.ttl, t.key, t.rev = grant.ID, leaseTTL, key, rev
	n.elections.Inc()
	n.won.Add(1)
	n.setRole("elected")
	n.log.Info("elected leader", "advertise", n.cfg.Advertise, "takeover_delay", n.cfg.TakeoverDelay, "first_token", t.first.start)
	defer n.stepDown(t)

	wg.Add(2)
	go func() {
		defer wg.Done()
		n.watchKey(tctx, t, key, rev)
	}()
	go func() {
		defer wg.Done()
		n.reserveBlocks(tctx, t, key, rev)
	}()

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
func (n *haNode) electionSession(id clientv3.LeaseID, ttl time.Duration) (*concurrency.Session, error) {
	over, cancel := context.WithCancel(context.Background())
	cancel()
	return concurrency.NewSession(n.client, concurrency.WithLease(id),
		concurrency.WithTTL(int(ttl/time.Second)), concurrency.WithContext(over))
}

// revoke ends a lease at once rather than at its expiry, so that a standby
// takes over sooner; everything is closed by now. When etcd cannot be
// reached, it tries again in the background: a lease outlives an etcd
// restart, and would hold up the next election by its whole TTL.
func (n *haNode) revoke(id clientv3.LeaseID) {
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
func (n *haNode) tryRevoke(id clientv3.LeaseID) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := n.client.Revoke(ctx, id)
	return err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound)
}

// serve publishes the term to the manager and opens the lock listeners,
// unless a hand-over to a new binary is under way: the new process
// campaigns afresh.
func (n *haNode) serve(t *term) error {
	n.mu.Lock()
	if n.handingOver {
		n.mu.Unlock()
		return errors.New("a hand-over to a new binary is under way: not taking over")
	}
	n.lead.current.Store(t)
	n.mu.Unlock()
	n.srv.mu.Lock()
	var err error
	if !n.srv.lockOpen { // open already for a term resumed after a hand-over
		err = n.srv.openLockListeners()
	}
	n.srv.mu.Unlock()
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	n.setRole("leader")
	n.isLeader.Set(1)
	n.log.Info("serving as leader", "advertise", n.cfg.Advertise, "deadline_in", time.Until(t.deadlineTime()).Round(time.Millisecond))
	return nil
}

// stepDown ends serving: no request is answered from the first line on, then
// the listeners and every connection close, their locks orphaned.
func (n *haNode) stepDown(t *term) {
	t.end("stepping down")
	handedOff := n.handedOff.Load() // the listeners and connections are the new process's
	if n.ctx.Err() != nil && t.valid() && !handedOff {
		// Stopping while still the leader: waiters learn that they did
		// not get their lock, as from a single node that stops.
		answerWaiters(n.srv.lockConns(), closeGrace)
	}
	n.lead.current.Store(nil)
	n.isLeader.Set(0)
	wasOpen := false
	if !handedOff {
		wasOpen = n.closeLock()
	}
	n.stepDowns.Inc()
	n.setRole("standby")
	n.log.Warn("stepped down", "reason", t.reason, "served", wasOpen)
}

// closeLock closes the lock listeners and every connection; it reports
// whether the listeners were open.
func (n *haNode) closeLock() bool {
	n.srv.mu.Lock()
	wasOpen := n.srv.lockOpen
	n.srv.lockOpen = false
	if wasOpen {
		n.srv.closeLockListeners()
	}
	n.srv.mu.Unlock()
	n.srv.closeLockConns()
	return wasOpen
}

// closeLockConns closes every client connection and waits until all have
// ended. Connections that were being accepted while the listeners closed
// show up on a later pass.
func (s *Server) closeLockConns() {
	for {
		conns := s.lockConns()
		if len(conns) == 0 {
			return
		}
		for _, c := range conns {
			c.t.Close()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *Server) lockConns() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// keepLease renews the lease with one KeepAliveOnce at a time, so that it
// knows when each successful renewal was sent, and ends the term when the
// deadline passes or etcd no longer knows the lease.
func (n *haNode) keepLease(ctx context.Context, t *term, id clientv3.LeaseID, ttl time.Duration, next time.Time) {
	every := renewEvery(ttl)
	for {
		if !t.valid() {
			t.end("lease deadline passed: no renewal from etcd in time")
			return
		}
		timer := time.NewTimer(min(time.Until(next), time.Until(t.deadlineTime())))
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
		rctx, cancel := context.WithDeadline(ctx, t.deadlineTime())
		resp, err := n.client.KeepAliveOnce(rctx, id)
		cancel()
		switch {
		case err == nil:
			t.extend(sent, min(ttl, time.Duration(resp.TTL)*time.Second))
			next = sent.Add(every)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			t.end("etcd no longer knows the lease")
			return
		default:
			next = time.Now().Add(min(every, 100*time.Millisecond))
		}
	}
}

// watchKey ends the term when the election key goes: a lease revoked, or
// the key deleted by hand.
func (n *haNode) watchKey(ctx context.Context, t *term, key string, rev int64) {
	for ctx.Err() == nil {
		wch := n.client.Watch(ctx, key, clientv3.WithRev(rev+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					t.end("the election key was deleted")
					return
				}
				rev = ev.Kv.ModRevision
			}
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// reserveBlocks reserves the next block of tokens whenever the manager asks.
func (n *haNode) reserveBlocks(ctx context.Context, t *term, key string, rev int64) {
	for {
		select {
		case <-t.want:
		case <-t.over:
			return
		}
		for {
			b, err := n.reserveBlock(ctx, key, rev)
			if err == nil {
				select {
				case t.blocks <- b: // empty: the manager asks again only after taking the last
				case <-t.over:
					return
				}
				break
			}
			if errors.Is(err, errNotLeader) {
				t.end("the election key is no longer ours")
				return
			}
			if ctx.Err() != nil || t.ended() {
				return
			}
			n.log.Warn("token block", "err", err)
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
}

var errNotLeader = errors.New("not the leader")

// reserveBlock reserves the next tokenBlockSize tokens: it moves the
// counter in etcd, the end of the highest block ever reserved, by a
// transaction that succeeds only while key (created at rev) is still the
// leader's. A new leader therefore starts above every token an earlier
// one could hand out.
func (n *haNode) reserveBlock(ctx context.Context, key string, rev int64) (tokenBlock, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
		b, done, err := n.tryReserveBlock(rctx, key, rev)
		cancel()
		if done || err != nil {
			return b, err
		}
	}
}

func (n *haNode) tryReserveBlock(ctx context.Context, key string, rev int64) (b tokenBlock, done bool, err error) {
	get, err := n.client.Get(ctx, n.tokensKey)
	if err != nil {
		return b, false, err
	}
	var modRev int64
	if len(get.Kvs) == 0 {
		// The first block ever starts at the clock seed, above the tokens
		// of a single node that moves to -etcd.
		b.start = clockTokenSeed(time.Now())
	} else {
		kv := get.Kvs[0]
		modRev = kv.ModRevision
		if b.start, err = strconv.ParseUint(string(kv.Value), 10, 64); err != nil {
			return b, false, fmt.Errorf("%s holds %q: %w", n.tokensKey, kv.Value, err)
		}
	}
	if b.start > maxToken {
		return b, false, fmt.Errorf("tokens exhausted: %s is %d", n.tokensKey, b.start)
	}
	b.end = min(b.start+tokenBlockSize, maxToken+1)
	resp, err := n.client.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(key), "=", rev),
		clientv3.Compare(clientv3.ModRevision(n.tokensKey), "=", modRev),
	).Then(
		clientv3.OpPut(n.tokensKey, strconv.FormatUint(b.end, 10)),
	).Else(
		clientv3.OpGet(key),
	).Commit()
	if err != nil {
		return b, false, err
	}
	if resp.Succeeded {
		return b, true, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].CreateRevision != rev {
		return b, false, errNotLeader
	}
	return b, false, nil // the counter moved under us: read it again
}

// observe follows who leads, for /healthz.
func (n *haNode) observe() {
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

func (n *haNode) setLeaderAddr(addr string) {
	n.mu.Lock()
	n.leaderAddr = addr
	n.mu.Unlock()
}

// healthz answers for a node that does not serve: 503, its role and the
// leader's address. It reports false on the leader, whose /healthz is the
// single node's.
func (n *haNode) healthz(w http.ResponseWriter) bool {
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
