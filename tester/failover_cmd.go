package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/glockd/glockd/tester/failover"
)

// runFailover is "tester failover": the high-availability checker. Its last
// line is the summary; the exit status is 1 when it saw a violation, 2
// when the run could not be carried out.
func runFailover(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tester failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := failover.Defaults()
	fs.StringVar(&opts.Glockd, "glockd", "", "glockd binary to run (default: go build of the repository)")
	fs.StringVar(&opts.Etcd, "etcd", "etcd", "etcd binary")
	fs.IntVar(&opts.Nodes, "nodes", opts.Nodes, "glockd nodes")
	fs.IntVar(&opts.EtcdMembers, "etcd-members", opts.EtcdMembers, "etcd members (3 or more for the etcd fault)")
	fs.DurationVar(&opts.LeaseTTL, "lease-ttl", opts.LeaseTTL, "the nodes' -lease-ttl")
	fs.DurationVar(&opts.TakeoverDelay, "takeover-delay", opts.TakeoverDelay, "the nodes' -takeover-delay")
	fs.IntVar(&opts.Sessions, "sessions", opts.Sessions, "client sessions at a time")
	fs.IntVar(&opts.SharedWorkers, "shared-workers", opts.SharedWorkers, "one more client whose session this many goroutines use at once, so it has many asynchronous waits (!gw) pending (0: none)")
	fs.IntVar(&opts.Locks, "locks", opts.Locks, "hot lock names")
	fs.DurationVar(&opts.SessionTimeout, "session-timeout", opts.SessionTimeout, "the sessions' timeout")
	fs.DurationVar(&opts.Interval, "interval", 0, "the sessions' heartbeat interval (0: a quarter of -session-timeout)")
	fs.DurationVar(&opts.LockWait, "lock-wait", opts.LockWait, "how long a client waits for a lock before trying another")
	fs.DurationVar(&opts.ReleaseWait, "release-wait", opts.ReleaseWait, "how long a client waits for the reply to its release before it gives its session up")
	fs.DurationVar(&opts.Hold, "hold", opts.Hold, "a hold lasts up to this long...")
	fs.DurationVar(&opts.LongHold, "long-hold", 0, "...or, one time in -long-hold-every, up to this long (0: 2 × (lease TTL + takeover delay))")
	fs.IntVar(&opts.LongHoldEvery, "long-hold-every", opts.LongHoldEvery, "see -long-hold")
	fs.Float64Var(&opts.Churn, "churn", opts.Churn, "chance that a client closes its session after a release and opens a new one")
	fs.IntVar(&opts.RawClients, "raw-clients", opts.RawClients, "raw clients: no session, no heartbeat, pipelined batches of g, sg and t and their releases")
	fs.IntVar(&opts.RawBatchMin, "raw-batch-min", opts.RawBatchMin, "fewest g, sg and t in a raw client's batch")
	fs.IntVar(&opts.RawBatchMax, "raw-batch-max", opts.RawBatchMax, "most g, sg and t in a raw client's batch")
	fs.DurationVar(&opts.RawGap, "raw-gap", opts.RawGap, "a raw client waits up to this long between batches")
	faults := fs.String("faults", strings.Join(opts.Faults, ","), "the fault schedule, cycled through: "+strings.Join(failover.FaultKinds(), ", "))
	fs.IntVar(&opts.Rounds, "rounds", opts.Rounds, "how many faults")
	fs.DurationVar(&opts.Pause, "pause", 0, "how long a paused leader stays stopped (0: max(3 × lease TTL, TTL + takeover delay + 2s))")
	fs.DurationVar(&opts.Settle, "settle", opts.Settle, "time with grants flowing before each fault")
	fs.Uint64Var(&opts.Seed, "seed", 1, "seed of the clients' random choices")
	fs.StringVar(&opts.Dir, "dir", "", "work directory for logs and etcd data (default: a temporary one, removed)")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the temporary work directory, with every process's log (kept anyway after a violation or an error)")
	short := fs.Bool("short", false, "the CI form: each kind of fault once, kill and pause twice (under 2 minutes)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tester failover [flags]\n\nStarts an etcd cluster and glockd nodes elected through it, runs client\nsessions on a few hot locks while killing, pausing and restarting the leader\nand an etcd member, and checks that no two clients ever believed they held\nthe same lock at once. The last line is\n  failover: G grants, F failovers, L sessions lost, V violations\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tester failover: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	opts.Faults = strings.Split(*faults, ",")
	if *short {
		opts = failover.Short(opts)
	}
	opts.Out = stdout
	res, err := failover.Run(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "tester failover: %v\n", err)
		if errors.Is(err, failover.ErrNoEtcd) || res.Grants == 0 {
			return 2
		}
	}
	fmt.Fprintln(stdout, res.Summary())
	switch {
	case len(res.Violations) > 0:
		return 1
	case err != nil:
		return 2
	}
	return 0
}
