// Command bench is a load generator for glockd and, for comparison, Redis:
// the same workloads over glockd's line protocol and over RESP. Every reply
// is checked; a wrong one is counted as an error, and a missing one ends
// its connection. It prints what it measured, then one line for scripts:
//
//	RESULT proto=glockd workload=cycle conns=50 pipeline=1 ops=412345 ops_per_s=82469 p50_us=512.0 ... errors=0
//
// Workloads (Redis's equivalent in brackets):
//
//	cycle         each connection takes and releases its own lock: g, r (SET NX, DEL)
//	contend       connections try-lock names from a few (-keys) and release the ones they got
//	shared        sg, sr of one name by every connection (INCR, DECR of a counter)
//	hold          -conns idle connections holding a lock each: RSS per connection, release at close
//	orphan        one connection takes -locks locks and disconnects: RSS per lock, the
//	              release, and a bystander's g/r meanwhile (glockd)
//	sharedorphan  orphan with shared locks, each held by two connections: RSS per name
//	              and per extra holder (glockd only)
//	handover      -conns connections queued on one lock, each hand-over timed, and a
//	              bystander's lock meanwhile: gw, r (BLPOP, RPUSH of a token)
//	dump          one connection takes -locks locks, -conns connections list them in a
//	              loop: a bystander's g/r meanwhile, and the server's RSS growth per
//	              dumping connection: d (SCAN COUNT 1000 until the cursor is 0)
//
// With -tls every connection speaks TLS (glockd's -tls-port; the server's
// certificate is not verified: loopback only).
//
// It runs from a clone of the repository: go run ./bench -h.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

type config struct {
	proto, addr, workload string
	tls                   bool
	conns, pipeline       int
	keys, locks           int
	duration, warmup      time.Duration
	timeout, wait, settle time.Duration
	probeEvery            time.Duration
	pid                   int
	stderr                io.Writer // for the first errors of a run
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.proto, "proto", "glockd", "glockd, or resp (Redis)")
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:9999", "server address: host:port or unix:/path")
	fs.StringVar(&cfg.workload, "workload", "cycle", "cycle, contend, shared, hold, orphan, sharedorphan, handover or dump")
	fs.BoolVar(&cfg.tls, "tls", false, "connect over TLS (the server's certificate is not verified)")
	fs.IntVar(&cfg.conns, "conns", 50, "connections (hold: idle holders; handover: the holder and its waiters; dump: the dumping ones)")
	fs.IntVar(&cfg.pipeline, "pipeline", 1, "commands per write on each connection (orphan: locks per write)")
	fs.IntVar(&cfg.keys, "keys", 8, "contend: lock names that every connection uses")
	fs.IntVar(&cfg.locks, "locks", 1000000, "orphan, sharedorphan, dump: locks the connection takes")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "cycle, contend, shared, handover: measured time")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured time before it")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "dial and reply timeout")
	fs.DurationVar(&cfg.wait, "wait", 2*time.Minute, "hold, orphan, handover: how long to wait for a release or a queue")
	fs.DurationVar(&cfg.settle, "settle", 500*time.Millisecond, "pause before the server's RSS is read")
	fs.DurationVar(&cfg.probeEvery, "probe-interval", time.Millisecond, "the bystander's pause between commands")
	fs.IntVar(&cfg.pid, "pid", 0, "the server's pid, to read its RSS from /proc/PID/status (hold, orphan)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || cfg.conns < 1 || cfg.pipeline < 1 || cfg.keys < 1 || cfg.locks < 1 || cfg.duration <= 0 {
		fmt.Fprintln(stderr, "bench: -conns, -pipeline, -keys, -locks and -duration must be positive; no arguments")
		return 2
	}
	p, err := newProtocol(cfg.proto)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	workloads := map[string]func(*config, protocol) (result, error){
		"cycle": runLoad, "contend": runLoad, "shared": runLoad,
		"hold": runHold, "orphan": runOrphan, "sharedorphan": runSharedOrphan, "handover": runHandover,
		"dump": runDump,
	}
	w := workloads[cfg.workload]
	if w == nil {
		fmt.Fprintf(stderr, "bench: unknown -workload %q\n", cfg.workload)
		return 2
	}
	cfg.stderr = stderr
	res, err := w(&cfg, p)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %s on %s\n", cfg.proto, cfg.workload, cfg.addr)
	line := []string{"RESULT", "proto=" + cfg.proto, "workload=" + cfg.workload}
	for _, f := range res {
		fmt.Fprintf(stdout, "  %-24s %s\n", f.name, f.text())
		line = append(line, f.name+"="+f.text())
	}
	fmt.Fprintln(stdout, strings.Join(line, " "))
	if res.errors() > 0 {
		return 1
	}
	return 0
}

// result is what a workload measured, in order.
type result []field

type field struct {
	name  string
	value any
}

func (f field) text() string {
	switch v := f.value.(type) {
	case float64:
		if strings.HasSuffix(f.name, "_per_s") {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.1f", v)
	case int64:
		if v < 0 {
			return "na"
		}
	}
	return fmt.Sprint(f.value)
}

func (r result) errors() int {
	for _, f := range r {
		if n, ok := f.value.(int); ok && f.name == "errors" {
			return n
		}
	}
	return 0
}
