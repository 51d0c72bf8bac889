// Package load drives a glockd server with many connections and reports
// throughput and latency. Every reply is checked, for its form by package
// client and for its meaning by the workload.
package load

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/glockd/glockd/client"
)

// Options describe a load run.
type Options struct {
	Network string   // "tcp", "unix" or "ws"
	Addrs   []string // tried in order by each connection (see client.Dial)

	// Reconnect runs each connection as a client.Session and, when the
	// session is lost, connects again (trying Addrs again) and goes on.
	// The server must know the heartbeat (!ping).
	Reconnect      bool
	SessionTimeout time.Duration // 0 means client.DefaultTimeout
	Interval       time.Duration // heartbeat; 0 means client.DefaultInterval

	Workload string        // one of Workloads()
	Conns    int           // connections; 0 means 1
	Duration time.Duration // run this long, unless Ops is set
	Ops      int64         // run exactly this many operations in all
	Pipeline int           // commands per write on each connection; 0 means 1
	Keys     int           // contend, shared, inspect: the number of names; 0 means 8
	Timeout  time.Duration // for each batch's replies and each dial; 0 means 5s

	Progress io.Writer // if set, a progress bar is drawn on it

	// Security (secure.go): TLS speaks TLS to a "tcp" Addr; Auth is a token
	// each connection sends with auth first.
	TLS  *tls.Config
	Auth string
}

// Result is what a run measured. Latencies are in microseconds: each
// operation's, from the write of its batch to the end of the batch's
// replies.
type Result struct {
	Workload   string  `json:"workload"`
	Network    string  `json:"network"`
	Addr       string  `json:"addr"`
	Conns      int     `json:"connections"`
	Pipeline   int     `json:"pipeline"`
	Ops        int64   `json:"ops"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	Mismatches int64   `json:"mismatches"`        // replies that were wrong
	ConnErrors int64   `json:"connection_errors"` // connections lost or never made
	Acquired   int64   `json:"acquired,omitempty"`
	Busy       int64   `json:"busy,omitempty"`
	// With Reconnect: sessions lost, and the time from each loss to the
	// next grant on a new session (for inspect, the next reply), in ms.
	SessionsLost  int64   `json:"sessions_lost,omitempty"`
	Recoveries    int64   `json:"recoveries,omitempty"`
	RecoveryP50ms float64 `json:"recovery_p50_ms,omitempty"`
	RecoveryP99ms float64 `json:"recovery_p99_ms,omitempty"`
	RecoveryMaxMs float64 `json:"recovery_max_ms,omitempty"`
	// FirstErrors quotes the first few mismatches and connection errors.
	FirstErrors []string `json:"first_errors,omitempty"`
}

const keepErrors = 5

// run is the state shared by the connections of one run.
type run struct {
	opts   Options
	prefix string
	start  time.Time
	done   atomic.Int64 // operations completed
	budget atomic.Int64 // operations claimed, with Ops set

	mu         sync.Mutex
	hist       histogram
	recovery   histogram
	lost       int64
	mismatches int64
	connErrors int64
	acquired   int64
	busy       int64
	first      []string
}

// Run drives the server until opts.Duration has passed, opts.Ops operations
// are done or ctx ends. It returns an error only when the run could not
// start; wrong replies and lost connections are counted in the Result.
func Run(ctx context.Context, opts Options) (Result, error) {
	if !slices.Contains(Workloads(), opts.Workload) {
		return Result{}, fmt.Errorf("load: unknown workload %q (want one of %q)", opts.Workload, Workloads())
	}
	opts.Conns = max(opts.Conns, 1)
	opts.Pipeline = max(opts.Pipeline, 1)
	if opts.Keys <= 0 {
		opts.Keys = 8
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Ops <= 0 && opts.Duration <= 0 {
		return Result{}, errors.New("load: set a duration or an op count")
	}
	if len(opts.Addrs) == 0 {
		return Result{}, errors.New("load: no address")
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	r := &run{opts: opts, prefix: "load-" + hex.EncodeToString(b[:]) + "-"}

	names := make([]string, opts.Keys)
	for k := range names {
		names[k] = fmt.Sprintf("%s%s%d", r.prefix, opts.Workload, k)
	}
	if opts.Workload == "inspect" {
		holder, err := r.dial(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("load: set-up connection: %w", err)
		}
		defer holder.Close()
		p := holder.Pipeline()
		for k := 0; k < len(names); k += 2 {
			p.Get(names[k])
		}
		setup, cancel := context.WithTimeout(ctx, opts.Timeout)
		err = p.Exec(setup)
		cancel()
		if err != nil {
			return Result{}, fmt.Errorf("load: taking the inspected locks: %w", err)
		}
	}

	if opts.Ops <= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	r.start = time.Now()
	stopProgress := r.progress()
	var wg sync.WaitGroup
	for i := range opts.Conns {
		wg.Go(func() {
			w := &worker{workload: opts.Workload, own: fmt.Sprintf("%sk%d", r.prefix, i),
				names: names, conns: opts.Conns, seq: 2 * i}
			r.drive(ctx, w)
		})
	}
	wg.Wait()
	elapsed := time.Since(r.start)
	stopProgress()
	return r.result(elapsed), nil
}

func (r *run) dial(ctx context.Context) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	if r.opts.TLS != nil || r.opts.Auth != "" {
		return r.dialSecure(ctx)
	}
	return client.Dial(ctx, r.opts.Network, r.opts.Addrs...)
}

// session starts a session, trying again after a pause until it succeeds
// or ctx ends: while a server fails over, no address may answer for a
// while.
func (r *run) session(ctx context.Context) (*client.Session, error) {
	pause := 10 * time.Millisecond
	for {
		dctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		s, err := client.NewSession(dctx, r.opts.Network, r.opts.Addrs,
			client.SessionOptions{Interval: r.opts.Interval, Timeout: r.opts.SessionTimeout})
		cancel()
		if err == nil || ctx.Err() != nil {
			return s, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pause):
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// claim returns how many operations the next batch may do, at most
// limit, or 0 to stop.
func (r *run) claim(limit int) int {
	n := int64(min(r.opts.Pipeline, limit))
	if r.opts.Ops <= 0 {
		return int(n)
	}
	claimed := r.budget.Add(n)
	left := r.opts.Ops - (claimed - n)
	return int(max(0, min(n, left)))
}

// drive runs one connection until the run ends or the connection fails;
// with Reconnect, until the run ends, starting a new session after each
// loss.
func (r *run) drive(ctx context.Context, w *worker) {
	var local, recovery histogram
	var lost int64
	defer func() {
		r.mu.Lock()
		r.hist.merge(&local)
		r.recovery.merge(&recovery)
		r.lost += lost
		r.acquired += w.acquired
		r.busy += w.busy
		r.mu.Unlock()
	}()
	if !r.opts.Reconnect {
		c, err := r.dial(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.connError(fmt.Errorf("dial: %w", err))
			}
			return
		}
		defer c.Close()
		if err := r.batches(ctx, w, c, &local, nil); err != nil {
			r.connError(err)
		}
		return
	}
	var lostAt time.Time // of the session lost last, until a grant
	for ctx.Err() == nil {
		s, err := r.session(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.connError(fmt.Errorf("session: %w", err))
			}
			return
		}
		w.reset()
		granted := func() {
			if !lostAt.IsZero() {
				recovery.add(time.Since(lostAt), 1)
				lostAt = time.Time{}
			}
		}
		err = r.batches(ctx, w, s.Client(), &local, granted)
		if err == nil || ctx.Err() != nil {
			s.Close()
			return
		}
		// A batch failed because the session was lost, or because its
		// connection failed, which loses it: its locks are gone, start over.
		<-s.Done()
		lost++
		if lostAt.IsZero() {
			lostAt = time.Now()
		}
	}
}

// batches runs batches on c until the run ends (nil) or the connection
// fails (its error). granted, if set, is called after each batch that got
// a lock.
func (r *run) batches(ctx context.Context, w *worker, c *client.Client, local *histogram, granted func()) error {
	w.c = c
	checks := make([]func() string, 0, r.opts.Pipeline)
	for ctx.Err() == nil {
		n := r.claim(w.maxBatch())
		if n == 0 {
			return nil
		}
		p := c.Pipeline()
		checks = w.batch(p, n, checks[:0])
		// A batch in flight when the run ends is finished, not cut short:
		// its time limit is its own.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.Timeout)
		t0 := time.Now()
		err := p.Exec(bctx)
		d := time.Since(t0)
		cancel()
		w.granted = false
		var bad []string
		for _, check := range checks {
			if why := check(); why != "" {
				bad = append(bad, why)
			}
		}
		var replyErr *client.ReplyError
		// A refusal of access control is a reply too: the connection stands.
		refused := errors.Is(err, client.ErrPermissionDenied) || errors.Is(err, client.ErrAuthRequired)
		if err != nil && !errors.As(err, &replyErr) && !errors.Is(err, client.ErrDisabled) && !refused {
			// The connection is gone: its replies are not mismatches, and
			// its ops were not done.
			r.unclaim(n)
			return err
		}
		local.add(d, n)
		r.done.Add(int64(n))
		if len(bad) > 0 {
			r.mismatch(bad)
		}
		if granted != nil && (w.granted || w.workload == "inspect") {
			granted()
		}
	}
	return nil
}

// unclaim gives back the ops of a batch that failed, so that a run of Ops
// operations still does them all after a reconnection.
func (r *run) unclaim(n int) {
	if r.opts.Ops > 0 {
		r.budget.Add(-int64(n))
	}
}

func (r *run) connError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connErrors++
	if len(r.first) < keepErrors {
		r.first = append(r.first, "connection: "+err.Error())
	}
}

func (r *run) mismatch(why []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mismatches += int64(len(why))
	for _, w := range why {
		if len(r.first) >= keepErrors {
			break
		}
		r.first = append(r.first, w)
	}
}

func (r *run) result(elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	res := Result{
		Workload: r.opts.Workload, Network: r.opts.Network, Addr: strings.Join(r.opts.Addrs, ","),
		Conns: r.opts.Conns, Pipeline: r.opts.Pipeline,
		Ops: r.done.Load(), Seconds: elapsed.Seconds(),
		P50us: us(r.hist.quantile(0.5)), P99us: us(r.hist.quantile(0.99)),
		P999us: us(r.hist.quantile(0.999)), MaxUs: us(r.hist.max),
		Mismatches: r.mismatches, ConnErrors: r.connErrors,
		Acquired: r.acquired, Busy: r.busy, FirstErrors: r.first,
		SessionsLost: r.lost, Recoveries: int64(r.recovery.total),
		RecoveryP50ms: ms(r.recovery.quantile(0.5)), RecoveryP99ms: ms(r.recovery.quantile(0.99)),
		RecoveryMaxMs: ms(r.recovery.max),
	}
	if elapsed > 0 {
		res.OpsPerSec = float64(res.Ops) / elapsed.Seconds()
	}
	return res
}
