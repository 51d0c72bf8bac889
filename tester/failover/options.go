// Package failover checks that glockd's high-availability setup keeps its
// promise under faults: no two clients ever believe they hold the same
// lock at the same time.
//
// Run starts an etcd cluster and several glockd nodes elected through it
// (real processes, on loopback ports, in a temporary directory), runs
// client sessions that take a few hot locks, and meanwhile kills, pauses
// and restarts the leader, and kills and restarts an etcd member. Each
// client records its belief intervals (from the grant to the release it
// sent, or to the last moment it saw its session alive) and writes to a
// fenced register while it believes; at the end the run is checked for
// overlapping beliefs, tokens out of order, and refused writes.
package failover

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Fault kinds, in the order of the default schedule.
const (
	FaultKill    = "kill"    // kill -9 the leader, start it again once another serves
	FaultPause   = "pause"   // SIGSTOP the leader beyond its lease, then SIGCONT
	FaultEtcd    = "etcd"    // kill -9 the etcd leader member, start it again
	FaultRestart = "restart" // restart every node in turn (SIGTERM), the leader last
)

// FaultKinds lists the kinds of fault Options.Faults may name.
func FaultKinds() []string { return []string{FaultKill, FaultPause, FaultEtcd, FaultRestart} }

// Options describe a run.
type Options struct {
	Glockd      string // the glockd binary; "" builds the module's
	Etcd        string // the etcd binary; "" is etcd on the PATH
	Nodes       int    // glockd nodes
	EtcdMembers int    // etcd members; 3 lets a member be killed without losing quorum

	LeaseTTL      time.Duration // glockd -lease-ttl
	TakeoverDelay time.Duration // glockd -takeover-delay

	Sessions       int           // clients, each a session at a time
	SharedWorkers  int           // one more client whose session this many goroutines use at once; 0 for none
	Locks          int           // hot lock names
	SessionTimeout time.Duration // client.SessionOptions.Timeout
	Interval       time.Duration // heartbeat interval; 0 is SessionTimeout/4
	LockWait       time.Duration // how long a Lock call waits before giving up
	ReleaseWait    time.Duration // how long an Unlock waits for its reply before giving the session up
	Hold           time.Duration // a hold lasts up to this long ...
	LongHold       time.Duration // ... or, one time in LongHoldEvery, up to this long
	LongHoldEvery  int
	Churn          float64 // chance that a client ends its session after a release

	// Raw clients: no session, no heartbeat; each pipelines batches of
	// RawBatchMin to RawBatchMax g, sg and t (and their releases), with
	// up to RawGap between batches.
	RawClients               int
	RawBatchMin, RawBatchMax int
	RawGap                   time.Duration

	Faults []string      // the schedule, cycled through
	Rounds int           // how many faults
	Pause  time.Duration // how long a paused leader stays stopped; 0 is max(3 × TTL, TTL + takeover + 2s)
	Settle time.Duration // time with grants flowing before each fault

	Seed uint64    // of the clients' choices
	Dir  string    // work directory (logs, etcd data); "" is a new temporary one
	Keep bool      // keep the work directory
	Out  io.Writer // progress lines; nil for none
}

// Defaults returns the options of a full run.
func Defaults() Options {
	return Options{
		Nodes: 2, EtcdMembers: 3,
		LeaseTTL: 2 * time.Second, TakeoverDelay: 2 * time.Second,
		Sessions: 8, Locks: 3, SharedWorkers: 8,
		SessionTimeout: time.Second,
		LockWait:       2 * time.Second,
		ReleaseWait:    time.Second,
		Hold:           100 * time.Millisecond,
		LongHoldEvery:  8,
		Churn:          0.05,
		RawClients:     4,
		RawBatchMin:    100,
		RawBatchMax:    1000,
		RawGap:         5 * time.Millisecond,
		Faults:         FaultKinds(),
		Rounds:         8,
		Settle:         time.Second,
	}
}

// Short returns opts changed to the CI form: each kind of fault once, and
// the leader killed and paused once more, in well under two minutes, with
// two raw clients rather than four.
func Short(opts Options) Options {
	opts.Faults = []string{FaultKill, FaultPause, FaultEtcd, FaultRestart}
	opts.Rounds = 6
	opts.RawClients = min(opts.RawClients, 2)
	return opts
}

func (o *Options) fill() error {
	if o.Nodes < 2 {
		return fmt.Errorf("-nodes %d: want at least 2", o.Nodes)
	}
	if o.EtcdMembers < 1 {
		return fmt.Errorf("-etcd-members %d: want at least 1", o.EtcdMembers)
	}
	if o.Sessions < 1 || o.Locks < 1 {
		return fmt.Errorf("want at least one session and one lock")
	}
	if o.SharedWorkers < 0 {
		return fmt.Errorf("-shared-workers %d: want 0 or more", o.SharedWorkers)
	}
	if o.LeaseTTL < time.Second || o.LeaseTTL%time.Second != 0 {
		return fmt.Errorf("-lease-ttl %v: want whole seconds, at least 1s", o.LeaseTTL)
	}
	if o.SessionTimeout <= 0 {
		return fmt.Errorf("-session-timeout %v: want more than 0", o.SessionTimeout)
	}
	if o.RawClients < 0 || (o.RawClients > 0 && (o.RawBatchMin < 1 || o.RawBatchMax < o.RawBatchMin)) {
		return fmt.Errorf("raw clients %d with batches of %d to %d: want 0 clients, or batches of 1 or more", o.RawClients, o.RawBatchMin, o.RawBatchMax)
	}
	if o.Interval <= 0 {
		o.Interval = o.SessionTimeout / 4
	}
	if o.LongHold <= 0 {
		o.LongHold = 2 * (o.LeaseTTL + o.TakeoverDelay)
	}
	if o.Pause <= 0 {
		o.Pause = max(3*o.LeaseTTL, o.LeaseTTL+o.TakeoverDelay+2*time.Second)
	}
	if o.LockWait <= 0 {
		o.LockWait = 2 * time.Second
	}
	if o.ReleaseWait <= 0 {
		o.ReleaseWait = time.Second
	}
	if len(o.Faults) == 0 {
		o.Faults = FaultKinds()
	}
	for _, f := range o.Faults {
		if !strings.Contains(" "+strings.Join(FaultKinds(), " ")+" ", " "+f+" ") {
			return fmt.Errorf("fault %q: want one of %s", f, strings.Join(FaultKinds(), ", "))
		}
		if f == FaultEtcd && o.EtcdMembers < 3 {
			return fmt.Errorf("the etcd fault needs -etcd-members 3 or more, to keep a quorum")
		}
	}
	if o.Etcd == "" {
		o.Etcd = "etcd"
	}
	return nil
}

// Result is what a run saw.
type Result struct {
	Grants       int
	Failovers    int // times a node started serving after another had
	Sessions     int // sessions started
	SessionsLost int
	Writes       int64 // to the fenced register
	RawBatches   int   // batches the raw clients sent
	RawGrants    int   // grant replies they received
	// RawInFlight holds, per pause, the raw batches sent to the leader
	// and not yet answered when it was stopped.
	RawInFlight []int
	Violations  []Violation
	// FailoverTimes holds, per kind of fault, the time from each fault to
	// the first grant by the node that took over.
	FailoverTimes map[string][]time.Duration
}

// Summary is the last line of a run.
func (r Result) Summary() string {
	return fmt.Sprintf("failover: %d grants, %d failovers, %d sessions lost, %d violations",
		r.Grants, r.Failovers, r.SessionsLost, len(r.Violations))
}
