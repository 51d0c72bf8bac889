//go:build unix

package failover

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoEtcd is returned when the etcd binary cannot be found.
var ErrNoEtcd = errors.New("etcd is not installed (apt-get install -y --no-install-recommends etcd-server)")

// run is the state of one Run.
type run struct {
	opts  Options
	out   io.Writer
	t0    time.Time
	etcd  []*etcdMember
	nodes []*node
	rec   *record
	mon   *monitor
	times map[string][]time.Duration
	rng   *mrand.Rand // of the faults' timing

	deposals []deposal
	inFlight []int // raw batches caught by each pause
}

// Run starts etcd and the nodes, runs the clients and the faults, stops
// everything and checks what the clients saw. An error means the run could
// not be carried out (etcd missing, a process that would not start); the
// violations are in the Result.
func Run(ctx context.Context, opts Options) (res Result, err error) {
	if err := opts.fill(); err != nil {
		return Result{}, err
	}
	etcdBin, err := exec.LookPath(opts.Etcd)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrNoEtcd, err)
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "glockd-failover-"); err != nil {
			return Result{}, err
		}
		// Kept when something went wrong: the processes' logs are there.
		defer func() {
			if opts.Keep || err != nil || len(res.Violations) > 0 {
				fmt.Fprintf(out, "logs and etcd data kept in %s\n", dir)
				return
			}
			os.RemoveAll(dir)
		}()
	}
	bin := opts.Glockd
	if bin == "" {
		fmt.Fprintf(out, "building glockd ...\n")
		if bin, err = buildGlockd(ctx, dir); err != nil {
			return Result{}, err
		}
	}
	r := &run{opts: opts, out: out, rec: newRecord(), times: map[string][]time.Duration{},
		rng: mrand.New(mrand.NewPCG(opts.Seed, opts.Seed^0x853c49e6748fea9b))}
	if r.etcd, err = startEtcd(ctx, etcdBin, dir, opts.EtcdMembers); err != nil {
		return Result{}, err
	}
	defer stopAll(r.etcd)
	defer func() {
		for _, n := range r.nodes {
			n.stop(5 * time.Second)
		}
	}()
	if err := r.startNodes(bin, dir); err != nil {
		return Result{}, err
	}
	fmt.Fprintf(out, "failover: %d etcd members, %d glockd nodes (-lease-ttl %v -takeover-delay %v), %d sessions and one shared by %d goroutines on %d locks (-session-timeout %v -interval %v), %d raw clients (batches of %d to %d)\n",
		opts.EtcdMembers, opts.Nodes, opts.LeaseTTL, opts.TakeoverDelay, opts.Sessions, opts.SharedWorkers, opts.Locks, opts.SessionTimeout, opts.Interval,
		opts.RawClients, opts.RawBatchMin, opts.RawBatchMax)

	r.t0 = time.Now()
	r.mon = newMonitor(r.nodes)
	monCtx, stopMon := context.WithCancel(context.Background())
	var monWG sync.WaitGroup
	monWG.Go(func() { r.mon.run(monCtx) })
	defer func() {
		stopMon()
		monWG.Wait()
	}()
	if _, err := r.waitLeader(ctx, nil, opts.LeaseTTL+opts.TakeoverDelay+30*time.Second); err != nil {
		return Result{}, err
	}

	wctx, stopClients := context.WithCancel(ctx)
	w := &workload{opts: opts, rec: r.rec}
	for _, n := range r.nodes {
		w.addrs = append(w.addrs, n.addr)
	}
	for i := range opts.Locks {
		w.locks = append(w.locks, "hot-"+strconv.Itoa(i+1))
	}
	var clients sync.WaitGroup
	for i := range opts.Sessions {
		seed := opts.Seed*1000003 + uint64(i)
		clients.Go(func() { w.run(wctx, seed) })
	}
	if opts.SharedWorkers > 0 {
		seed := opts.Seed*1000003 + uint64(opts.Sessions)
		clients.Go(func() { w.runShared(wctx, seed, opts.SharedWorkers) })
	}
	for i := range opts.RawClients {
		seed := opts.Seed*1000033 + uint64(i)
		clients.Go(func() { w.runRaw(wctx, i+1, seed) })
	}

	runErr := r.faults(ctx)
	if runErr == nil {
		// A last stretch with grants flowing, so that the last fault's
		// aftermath is seen too.
		runErr = r.settle(ctx, time.Time{})
	}
	stopClients()
	clients.Wait()
	end := time.Now()

	return r.result(end), runErr
}

func (r *run) startNodes(bin, dir string) error {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	prefix := fmt.Sprintf("/glockd-failover-%x/", b)
	var eps []string
	for _, m := range r.etcd {
		eps = append(eps, m.client)
	}
	for i := range r.opts.Nodes {
		p, err := freePort()
		if err != nil {
			return err
		}
		mp, err := freePort()
		if err != nil {
			return err
		}
		name := string(rune('a' + i))
		n := &node{addr: loopback(p), metrics: loopback(mp)}
		n.name = "node " + name
		n.log = filepath.Join(dir, "glockd-"+name+".log")
		n.argv = []string{bin,
			"-etcd", strings.Join(eps, ","), "-etcd-prefix", prefix,
			"-bind", "127.0.0.1", "-port", strconv.Itoa(p), "-ws", "0", "-metrics-addr", n.metrics,
			"-lease-ttl", r.opts.LeaseTTL.String(), "-takeover-delay", r.opts.TakeoverDelay.String(),
		}
		if err := n.start(); err != nil {
			return err
		}
		r.nodes = append(r.nodes, n)
	}
	for _, n := range r.nodes {
		if err := n.waitAnswering(30 * time.Second); err != nil {
			return err
		}
	}
	return nil
}

// since is a time of the run, printed as seconds since its start.
func (r *run) since(t time.Time) string { return fmt.Sprintf("%.2fs", t.Sub(r.t0).Seconds()) }

// waitLeader waits until a node other than not serves, and returns it.
func (r *run) waitLeader(ctx context.Context, not *node, within time.Duration) (*node, error) {
	end := time.Now().Add(within)
	hc := newHTTPClient(time.Second)
	for {
		// Asked again: the monitor's view may be a round old.
		if n := r.mon.leader(); n != nil && n != not && n.role(hc) == leader {
			return n, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(end) {
			return nil, fmt.Errorf("no node serving after %v (logs: %s)", within, r.nodes[0].log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle lets the clients work for opts.Settle and until a grant after
// since has been made, so that the next fault hits a working system.
func (r *run) settle(ctx context.Context, since time.Time) error {
	sleep(ctx, r.opts.Settle)
	end := time.Now().Add(r.opts.LeaseTTL + r.opts.TakeoverDelay + 30*time.Second)
	for r.rec.firstGrantAfter(since, "") == nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(end) {
			return fmt.Errorf("no grant since %s", r.since(since))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ctx.Err()
}

// faults runs the fault schedule.
func (r *run) faults(ctx context.Context) error {
	var last time.Time
	for i := range r.opts.Rounds {
		if err := r.settle(ctx, last); err != nil {
			return err
		}
		kind := r.opts.Faults[i%len(r.opts.Faults)]
		prefix := fmt.Sprintf("fault %d/%d %s:", i+1, r.opts.Rounds, kind)
		var err error
		switch kind {
		case FaultKill:
			last, err = r.killLeader(ctx, prefix)
		case FaultPause:
			last, err = r.pauseLeader(ctx, prefix)
		case FaultEtcd:
			last, err = r.killEtcdMember(ctx, prefix)
		case FaultRestart:
			last, err = r.restartNodes(ctx, prefix)
		}
		if err != nil {
			return fmt.Errorf("%s %w", prefix, err)
		}
	}
	return nil
}

// failoverWithin bounds how long a failover may take before the run is
// abandoned as broken (not a violation: slowness is not unsafety).
func (r *run) failoverWithin() time.Duration {
	return r.opts.LeaseTTL + r.opts.TakeoverDelay + 30*time.Second
}

// tookOver waits until a node other than old serves and has granted a lock
// after t, records the time from t to that grant under kind, and says so.
func (r *run) tookOver(ctx context.Context, prefix, kind string, old *node, t time.Time) error {
	next, err := r.waitLeader(ctx, old, r.failoverWithin())
	if err != nil {
		return err
	}
	return r.firstGrant(ctx, prefix, kind, old, next, t)
}

// firstGrant waits until next has granted a lock after t, records the
// time from t to that grant under kind, and says so.
func (r *run) firstGrant(ctx context.Context, prefix, kind string, old, next *node, t time.Time) error {
	end := time.Now().Add(30 * time.Second)
	var first *belief
	for first = r.rec.firstGrantAfter(t, old.addr); first == nil; first = r.rec.firstGrantAfter(t, old.addr) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s serves, but granted nothing within 30s", next.name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := first.start.Sub(t)
	r.times[kind] = append(r.times[kind], took)
	fmt.Fprintf(r.out, "%s %s took over; its first grant came %.2fs after the fault\n", prefix, next.name, took.Seconds())
	return nil
}

func (r *run) killLeader(ctx context.Context, prefix string) (time.Time, error) {
	old, err := r.waitLeader(ctx, nil, r.failoverWithin())
	if err != nil {
		return time.Time{}, err
	}
	t := time.Now()
	old.kill()
	fmt.Fprintf(r.out, "%s kill -9 the leader, %s, at %s\n", prefix, old.name, r.since(t))
	if err := r.tookOver(ctx, prefix, FaultKill, old, t); err != nil {
		return t, err
	}
	if err := old.start(); err != nil {
		return t, err
	}
	return t, old.waitAnswering(30 * time.Second)
}

func (r *run) pauseLeader(ctx context.Context, prefix string) (time.Time, error) {
	old, err := r.waitLeader(ctx, nil, r.failoverWithin())
	if err != nil {
		return time.Time{}, err
	}
	// At a random instant: the raw clients' batches are then caught at
	// every stage, in the socket, in the lock manager, before the write.
	sleep(ctx, randDuration(r.rng, time.Second))
	t := time.Now()
	if err := old.signal(syscall.SIGSTOP); err != nil {
		return t, err
	}
	inFlight := r.rec.rawInFlight(old.addr)
	r.inFlight = append(r.inFlight, inFlight)
	fmt.Fprintf(r.out, "%s SIGSTOP the leader, %s, at %s for %v (%d raw batches in flight)\n", prefix, old.name, r.since(t), r.opts.Pause, inFlight)
	next, err := r.waitLeader(ctx, old, r.failoverWithin())
	sleep(ctx, time.Until(t.Add(r.opts.Pause)))
	if cerr := old.signal(syscall.SIGCONT); err == nil {
		err = cerr
	}
	if err == nil {
		// Measured only now: a bad setup may make it wait for the resume.
		err = r.firstGrant(ctx, prefix, FaultPause, old, next, t)
	}
	if err != nil {
		return t, err
	}
	// Resumed past its deadline, it must step down.
	hc := newHTTPClient(time.Second)
	end := time.Now().Add(30 * time.Second)
	for old.role(hc) != standby {
		if time.Now().After(end) {
			return t, fmt.Errorf("%s is not a standby 30s after it was resumed", old.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.deposals = append(r.deposals, deposal{fault: strings.TrimSuffix(prefix, ":"), node: old.addr, name: old.name, at: t, standby: time.Now()})
	return t, nil
}

func (r *run) killEtcdMember(ctx context.Context, prefix string) (time.Time, error) {
	victim := r.etcd[0]
	for _, m := range r.etcd {
		if ok, err := m.isLeader(); err == nil && ok {
			victim = m
			break
		}
	}
	before := r.mon.failovers()
	t := time.Now()
	victim.kill()
	fmt.Fprintf(r.out, "%s kill -9 %s (the etcd leader) at %s, start it again %v later\n", prefix, victim.name, r.since(t), 2*r.opts.LeaseTTL)
	sleep(ctx, 2*r.opts.LeaseTTL)
	if err := victim.start(); err != nil {
		return t, err
	}
	if err := victim.waitHealthy(ctx, 30*time.Second); err != nil {
		return t, err
	}
	fmt.Fprintf(r.out, "%s %s healthy again; %d failovers meanwhile\n", prefix, victim.name, r.mon.failovers()-before)
	return t, nil
}

func (r *run) restartNodes(ctx context.Context, prefix string) (time.Time, error) {
	old, err := r.waitLeader(ctx, nil, r.failoverWithin())
	if err != nil {
		return time.Time{}, err
	}
	for _, n := range r.nodes {
		if n == old {
			continue
		}
		n.stop(10 * time.Second)
		if err := n.start(); err != nil {
			return time.Time{}, err
		}
		if err := n.waitAnswering(30 * time.Second); err != nil {
			return time.Time{}, err
		}
	}
	t := time.Now()
	fmt.Fprintf(r.out, "%s restarted the standbys; SIGTERM the leader, %s, at %s\n", prefix, old.name, r.since(t))
	old.stop(10 * time.Second)
	if err := old.start(); err != nil {
		return t, err
	}
	if err := r.tookOver(ctx, prefix, FaultRestart, old, t); err != nil {
		return t, err
	}
	return t, old.waitAnswering(30 * time.Second)
}

// result gathers the run's figures and checks the beliefs.
func (r *run) result(end time.Time) Result {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	for _, b := range r.rec.beliefs {
		if b.end.IsZero() { // not possible once every client has returned
			b.end, b.how = end, "run over"
		}
	}
	res := Result{
		Grants:        len(r.rec.beliefs),
		Failovers:     r.mon.failovers(),
		Sessions:      r.rec.sessions,
		SessionsLost:  r.rec.lost,
		Writes:        r.rec.writes,
		Violations:    append(verify(r.t0, r.rec.beliefs, r.rec.rejections), r.rec.lateGrants(r.t0, r.deposals)...),
		FailoverTimes: r.times,
		RawBatches:    len(r.rec.rawRounds),
		RawInFlight:   r.inFlight,
	}
	for _, round := range r.rec.rawRounds {
		res.RawGrants += round.grants
	}
	for _, kind := range FaultKinds() {
		ts := r.times[kind]
		if len(ts) == 0 {
			continue
		}
		fmt.Fprintf(r.out, "%-8s %3d failovers: fault to first grant by the new leader p50 %.2fs max %.2fs\n",
			kind, len(ts), Percentile(ts, 50).Seconds(), slices.Max(ts).Seconds())
	}
	var why []string
	for _, k := range slices.Sorted(maps.Keys(r.rec.lostWhy)) {
		why = append(why, fmt.Sprintf("%s %d", k, r.rec.lostWhy[k]))
	}
	shared := 0
	for _, b := range r.rec.beliefs {
		if b.shared {
			shared++
		}
	}
	fmt.Fprintf(r.out, "sessions %d started, %d lost (%s), %d given up after a Lock that hung; %d writes to the fenced register; %d grants through the shared session\n",
		res.Sessions, res.SessionsLost, strings.Join(why, ", "), r.rec.abandons, res.Writes, shared)
	if r.opts.RawClients > 0 {
		caught := 0
		for _, n := range r.inFlight {
			if n > 0 {
				caught++
			}
		}
		fmt.Fprintf(r.out, "raw clients: %d batches, %d grant replies; %d of %d pauses caught raw batches in flight\n",
			res.RawBatches, res.RawGrants, caught, len(r.inFlight))
	}
	const maxShown = 20
	for i, v := range res.Violations {
		if i == maxShown {
			fmt.Fprintf(r.out, "... and %d more violations\n", len(res.Violations)-maxShown)
			break
		}
		fmt.Fprintln(r.out, v)
	}
	return res
}

// Percentile returns the p-th percentile of ds (nearest rank).
func Percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
