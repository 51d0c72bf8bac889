package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/glockd/glockd/tester/load"
)

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tester load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var where targetFlags
	where.register(fs)
	var opts load.Options
	fs.StringVar(&opts.Workload, "workload", "cycle", "one of "+strings.Join(load.Workloads(), ", "))
	fs.IntVar(&opts.Conns, "c", 50, "connections")
	fs.DurationVar(&opts.Duration, "d", 10*time.Second, "how long to run, unless -n is set")
	fs.Int64Var(&opts.Ops, "n", 0, "run exactly this many operations in all")
	fs.IntVar(&opts.Pipeline, "pipeline", 1, "commands per write on each connection")
	fs.IntVar(&opts.Keys, "keys", 8, "contend, shared, inspect: number of lock names")
	fs.DurationVar(&opts.Timeout, "timeout", 5*time.Second, "time limit of each dial and each batch's replies")
	reconnect := fs.Bool("reconnect", false, "use sessions (heartbeats); after a loss connect again, trying the addresses in order (the default with several addresses)")
	fs.DurationVar(&opts.SessionTimeout, "session-timeout", 0, "with -reconnect: silence after which a session is lost (0: the client's default, 3s)")
	fs.DurationVar(&opts.Interval, "interval", 0, "with -reconnect: time between heartbeats (0: the client's default, 1s)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	secure := secureFlags(fs, &opts) // TLS and auth: load_secure.go
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tester load [flags]\n\nWorkloads: cycle (g/r on each connection's own lock), contend (g/r on a few\nhot names), shared (sg/sr), inspect (i on names half of which are held).\n\nThe target may list several comma-separated addresses (-host a:1,b:2): each\nconnection takes the first that answers and, after a loss, tries them again.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	targets := where.targets()
	if len(targets) > 1 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "tester load: give one target (-host, -unix or -ws) and no arguments")
		return 2
	}
	opts.Network, opts.Addrs = targets[0].network, strings.Split(targets[0].addr, ",")
	opts.Reconnect = *reconnect || len(opts.Addrs) > 1 && !flagSet(fs, "reconnect")
	// One address that answers is enough to start.
	var err error
	for _, addr := range opts.Addrs {
		if err = checkConnect(ctx, target{opts.Network, addr}, opts.Timeout); err == nil {
			break
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tester load: %v\n", err)
		return 2
	}
	if err := secure(); err != nil {
		fmt.Fprintln(stderr, "tester load:", err)
		return 2
	}
	if isTerminal(os.Stderr) && stderr == os.Stderr {
		opts.Progress = stderr
	}
	res, err := load.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	} else {
		printResult(stdout, res)
	}
	if res.Mismatches > 0 || res.ConnErrors > 0 {
		return 1
	}
	return 0
}

// flagSet reports whether the flag name was given.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// isTerminal reports whether f is a terminal (a character device), where
// a progress bar that redraws itself makes sense.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func printResult(w io.Writer, r load.Result) {
	fmt.Fprintf(w, "workload %s, %d connections, pipeline %d, %s %s\n", r.Workload, r.Conns, r.Pipeline, r.Network, r.Addr)
	fmt.Fprintf(w, "ops          %d in %.2fs = %.0f ops/s\n", r.Ops, r.Seconds, r.OpsPerSec)
	fmt.Fprintf(w, "latency      p50 %.1fµs  p99 %.1fµs  p99.9 %.1fµs  max %.1fµs\n", r.P50us, r.P99us, r.P999us, r.MaxUs)
	if r.Workload == "contend" {
		fmt.Fprintf(w, "g outcomes   %d acquired, %d busy\n", r.Acquired, r.Busy)
	}
	fmt.Fprintf(w, "mismatches   %d, connection errors %d\n", r.Mismatches, r.ConnErrors)
	if r.SessionsLost > 0 {
		fmt.Fprintf(w, "sessions     %d lost; loss to next grant p50 %.1fms  p99 %.1fms  max %.1fms (%d recovered)\n",
			r.SessionsLost, r.RecoveryP50ms, r.RecoveryP99ms, r.RecoveryMaxMs, r.Recoveries)
	}
	for _, e := range r.FirstErrors {
		fmt.Fprintf(w, "  %s\n", e)
	}
}
