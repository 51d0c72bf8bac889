// Command tester checks that a live glockd server follows the glockd
// protocol, loads it with traffic, or checks a high-availability setup
// under faults (failover: it starts etcd and the nodes itself).
//
//	go run ./tester -host 127.0.0.1:9999 [-unix PATH] [-ws ws://127.0.0.1:9998/] [-ext]
//	go run ./tester load -host 127.0.0.1:9999 -c 50 -d 10s -workload cycle
//	go run ./tester failover -short
//
// The conformance run prints "ok  NAME" or "FAIL NAME: WHY" per check and
// ends with "N passed, M failed"; its exit status is 1 if any check failed,
// and 2, after one "cannot connect" line, if the server cannot be reached.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/glockd/glockd/client"
	"github.com/glockd/glockd/tester/suite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "load" {
		return runLoad(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "failover" {
		return runFailover(ctx, args[1:], stdout, stderr)
	}
	return runSuite(ctx, args, stdout, stderr)
}

// target is one transport to a server.
type target struct{ network, addr string }

// targetFlags are the flags that say where the server is.
type targetFlags struct{ host, unix, ws string }

func (f *targetFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.host, "host", "", "TCP `host:port` of the server (127.0.0.1:9999 when no target is given)")
	fs.StringVar(&f.unix, "unix", "", "unix socket `path` of the server")
	fs.StringVar(&f.ws, "ws", "", "websocket `URL` of the server, such as ws://127.0.0.1:9998/")
}

func (f *targetFlags) targets() []target {
	var ts []target
	if f.host != "" {
		ts = append(ts, target{"tcp", f.host})
	}
	if f.unix != "" {
		ts = append(ts, target{"unix", f.unix})
	}
	if f.ws != "" {
		ts = append(ts, target{"ws", f.ws})
	}
	if len(ts) == 0 {
		ts = append(ts, target{"tcp", "127.0.0.1:9999"})
	}
	return ts
}

func runSuite(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tester", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var where targetFlags
	where.register(fs)
	dump := fs.Bool("dump", true, "the server runs with -dump=true (else check its \"0 disabled\" replies)")
	registry := fs.Bool("registry", true, "the server runs with -registry=true (else check its \"0 disabled\" replies)")
	ext := fs.Bool("ext", false, "also check the extension verbs gw, sgw, t, ping, dl, !ping and !cancel")
	exclusive := fs.Bool("exclusive", false, "no one else uses the server: check exact counter changes")
	fresh := fs.Bool("fresh", false, "the server has just started and no one else uses it: also check q at start-up (first target only)")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit of each check")
	only := fs.String("run", "", "run only the checks whose name matches this `regexp`")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tester [flags]            conformance checks\n       tester load [flags]       load generator (tester load -h)\n       tester failover [flags]   high-availability checker (tester failover -h)\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tester: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	targets := where.targets()
	passed, failed := 0, 0
	for i, tg := range targets {
		if len(targets) > 1 {
			fmt.Fprintf(stdout, "# %s %s\n", tg.network, tg.addr)
		}
		p, f, err := suite.RunChecks(ctx, suite.Options{
			Network: tg.network, Addr: tg.addr,
			Dump: *dump, Registry: *registry, Ext: *ext,
			Exclusive: *exclusive || *fresh, Fresh: *fresh && i == 0,
			Timeout: *timeout, Run: *only, Out: stdout,
		})
		if err != nil {
			fmt.Fprintf(stderr, "tester: %v\n", err)
			return 2
		}
		passed += p
		failed += f
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

// checkConnect opens and closes one connection to tg, so that a server that
// is down is reported once rather than as every connection's error.
func checkConnect(ctx context.Context, tg target, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := client.Dial(ctx, tg.network, tg.addr)
	if err != nil {
		return &suite.ConnectError{Addr: tg.addr, Err: err}
	}
	// Connecting was the check. Closing a websocket can race with the
	// server's own close and report the connection already closed.
	_ = c.Close()
	return nil
}
