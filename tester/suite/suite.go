// Package suite is a conformance suite for glockd servers: it connects to a
// live server and checks every command of the glockd protocol with several
// clients, printing "ok  NAME" or "FAIL NAME: WHY" per check.
//
// Every lock and registered name it uses is unique to the run, and counter
// checks compare before and after, so the suite can run against a server
// that others use too. Options.Exclusive and Options.Fresh turn on the
// checks that need a server nobody else touches.
package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"time"

	"golang.org/x/net/websocket"
)

// Options say which server to check and how it runs.
type Options struct {
	Network string // "tcp", "unix" or "ws"
	Addr    string // host:port, socket path, or ws://host:port/ URL

	Dump     bool // the server runs with -dump=true (d, sd, dump, who)
	Registry bool // the server runs with -registry=true (iam, who)
	Ext      bool // check the extension verbs: gw, sgw, t, ping, dl, !ping, !cancel, !gw, !sgw

	// Exclusive says no one else uses the server during the run: counters
	// are checked for exact rather than minimum changes, and the tables for
	// being empty.
	Exclusive bool
	// Fresh says, beyond Exclusive, that the server has seen no command
	// yet: q is checked for the original's 16 keys at start-up. Set it for
	// the first Run on a new server only.
	Fresh bool

	Timeout time.Duration // for each check; 0 means 10s
	Run     string        // if set, only checks whose name this regexp matches
	Out     io.Writer     // where results are printed; nil for nowhere
}

// A check is one named scenario.
type check struct {
	name string
	run  func(t *checkRun)
	// when reports whether the check applies to a server run with opts.
	when func(opts Options) bool
}

func always(Options) bool          { return true }
func fresh(o Options) bool         { return o.Fresh }
func ext(o Options) bool           { return o.Ext }
func lineProto(o Options) bool     { return o.Network != "ws" }
func websocketOnly(o Options) bool { return o.Network == "ws" }

// checks lists every check in the order they run. The start-up one must be
// first: it needs a server that has seen no command yet.
func checks() []check {
	return []check{
		{"stats/startup", checkStartup, fresh},
		{"exclusive/get-release", checkGetRelease, always},
		{"exclusive/empty-name", checkEmptyName, always},
		{"shared/counts", checkSharedCounts, always},
		{"shared/separate-namespace", checkSharedNamespace, always},
		{"parse/whitespace", checkWhitespace, always},
		{"parse/line-too-long", checkLineTooLong, always},
		{"invalid/no-reply", checkInvalid, always},
		{"orphan/exclusive", checkOrphanExclusive, always},
		{"orphan/shared", checkOrphanShared, always},
		{"registry/me-iam", checkMeIam, always},
		{"registry/who", checkWho, always},
		{"registry/owner-in-dumps", checkOwnerInDumps, always},
		{"dump/disabled", checkDumpDisabled, func(o Options) bool { return !o.Dump }},
		{"dump/d-order", checkDebugOrder, func(o Options) bool { return o.Dump }},
		{"dump/sd-order", checkSharedDebugOrder, func(o Options) bool { return o.Dump }},
		{"dump/dump", checkDump, func(o Options) bool { return o.Dump }},
		{"stats/format", checkStatsFormat, always},
		{"stats/deltas", checkStatsDeltas, always},
		{"stats/connections", checkConnections, always},
		{"pipeline/10000", checkPipeline10000, always},
		{"pipeline/mixed", checkPipelineMixed, always},
		{"transport/newline-only", checkNewlineOnly, lineProto},
		{"transport/ws-one-message-per-line", checkWebsocketMessages, websocketOnly},
		{"ext/ping", checkPing, ext},
		{"ext/token", checkToken, ext},
		{"ext/gw", checkGetWait, ext},
		{"ext/gw-fifo-handoff", checkGetWaitFIFO, ext},
		{"ext/gw-pipelined-after", checkGetWaitPipelined, ext},
		{"ext/gw-waiter-disconnects", checkGetWaitDisconnect, ext},
		{"ext/gw-orphan-handoff", checkGetWaitOrphan, ext},
		{"ext/sgw", checkSharedGetWait, ext},
		{"ext/invalid-argument", checkInvalidArgument, ext},
		{"ext/oob-ping", checkOutOfBandPing, ext},
		{"ext/oob-cancel", checkOutOfBandCancel, ext},
		{"ext/gw-end-of-input", checkEndOfInputDuringWait, func(o Options) bool { return o.Ext && lineProto(o) }},
		{"ext/dl", checkDetailed, ext},
		{"ext/async-gw", checkAsyncWait, ext},
		{"ext/async-cancel", checkAsyncCancel, ext},
		{"ext/async-many", checkAsyncMany, ext},
		{"ext/deadlock", checkDeadlock, ext},
		{"ext/deadlock-semaphore", checkDeadlockSemaphore, ext},
		{"ext/deadlock-async", checkDeadlockAsync, ext},
		{"ext/dw", checkWaiters, ext},
	}
}

// Run runs the checks that apply to opts against the server and returns
// how many passed and failed. It prints a line per check to opts.Out, but
// no total: a caller running several transports sums them. A server that
// cannot be reached at all counts as one failed check, "connect".
func Run(ctx context.Context, opts Options) (passed, failed int) {
	passed, failed, err := RunChecks(ctx, opts)
	if err != nil {
		fmt.Fprintf(output(opts), "FAIL connect: %v\n", err)
		failed++
	}
	return passed, failed
}

// RunChecks is Run for callers that tell an unreachable server from a
// failing one: when the first check that runs cannot connect, it stops
// there, prints nothing for it, and returns a *ConnectError. A server that
// is down or a wrong address would otherwise fail every check alike.
func RunChecks(ctx context.Context, opts Options) (passed, failed int, err error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	out := output(opts)
	var only *regexp.Regexp
	if opts.Run != "" {
		var err error
		if only, err = regexp.Compile(opts.Run); err != nil {
			fmt.Fprintf(out, "FAIL options: -run: %v\n", err)
			return 0, 1, nil
		}
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	runID := "suite-" + hex.EncodeToString(b[:])

	for i, c := range checks() {
		if !c.when(opts) || only != nil && !only.MatchString(c.name) {
			continue
		}
		if ctx.Err() != nil {
			fmt.Fprintf(out, "FAIL %s: %v\n", c.name, ctx.Err())
			failed++
			continue
		}
		prefix := fmt.Sprintf("%s-%d-", runID, i)
		why, connectErr := runCheck(ctx, opts, prefix, c.run)
		switch {
		case connectErr != nil && passed+failed == 0:
			return 0, 0, connectErr
		case why != "":
			fmt.Fprintf(out, "FAIL %s: %s\n", c.name, why)
			failed++
		default:
			fmt.Fprintf(out, "ok  %s\n", c.name)
			passed++
		}
	}
	return passed, failed, nil
}

func output(opts Options) io.Writer {
	if opts.Out == nil {
		return io.Discard
	}
	return opts.Out
}

// ConnectError says that a check could not connect to the server.
type ConnectError struct {
	Addr string // as in Options.Addr
	Err  error
}

// Error names the address once: the dialers' own errors repeat it.
func (e *ConnectError) Error() string {
	reason := e.Err
	var wsErr *websocket.DialError
	if errors.As(reason, &wsErr) {
		reason = wsErr.Err
	}
	var opErr *net.OpError
	if errors.As(reason, &opErr) && opErr.Op == "dial" {
		reason = opErr.Err
	}
	return fmt.Sprintf("cannot connect to %s: %v", e.Addr, reason)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// runCheck runs one check on its own goroutine, so that Fatalf can end it,
// and returns why it failed, or "", and whether that was a failure to
// connect.
func runCheck(ctx context.Context, opts Options, prefix string, run func(*checkRun)) (string, *ConnectError) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	t := &checkRun{ctx: ctx, opts: opts, prefix: prefix}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.closeAll()
		defer func() {
			if p := recover(); p != nil {
				t.failure = fmt.Sprintf("panic: %v", p)
			}
		}()
		run(t)
	}()
	<-done
	return t.failure, t.connectErr
}
