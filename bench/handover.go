package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// runHandover queues cfg.conns-1 connections on one lock while one holds
// it, and times each hand-over: from the holder's write of its release to
// the next waiter reading its grant. The holder queues again at once, so
// the queue stays as long. glockd: g, then "gw -1"; r hands over. Redis: a
// list holding one token, BLPOP to wait for it and RPUSH to give it back.
// Meanwhile a probe connection takes and releases another lock.
func runHandover(cfg *config, p protocol) (result, error) {
	const key = "bench-hot"
	errs := newErrorLog(cfg)
	ctl, err := dial(cfg, p)
	if err != nil {
		return nil, err
	}
	defer ctl.nc.Close()
	if cfg.proto == "resp" {
		if _, err := ctl.call(op{release, key}); err != nil {
			return nil, err
		}
	}
	conns, err := dialAll(cfg, p, cfg.conns)
	if err != nil {
		return nil, err
	}
	var closing atomic.Bool
	defer func() {
		closing.Store(true)
		closeAll(conns)
	}()
	granted := make(chan int, len(conns))
	queued := make(chan struct{}, len(conns))
	for i, c := range conns {
		go func() {
			for {
				err := readHandover(c, cfg.proto, key, func() { granted <- i }, func() { queued <- struct{}{} })
				if err != nil {
					if !closing.Load() {
						errs.add("connection %d: %v", i, err)
					}
					return
				}
			}
		}()
	}
	var release []byte
	switch cfg.proto {
	case "glockd":
		if err := conns[0].write([]byte("g " + key + "\n")); err != nil {
			return nil, err
		}
		if err := await(granted, cfg.timeout, 0); err != nil {
			return nil, err
		}
		// One write, so one batch: the reply to sg comes once the gw
		// after it is queued.
		wait := []byte("sg bench-queued\ngw -1 " + key + "\n")
		for _, c := range conns[1:] {
			if err := c.write(wait); err != nil {
				return nil, err
			}
		}
		for range len(conns) - 1 {
			select {
			case <-queued:
			case <-time.After(cfg.wait):
				return nil, errors.New("the waiters were not all queued in time")
			}
		}
		release = []byte("r " + key + "\ngw -1 " + key + "\n")
	case "resp":
		wait := appendCommand(nil, "BLPOP", key, "0")
		for _, c := range conns[1:] {
			if err := c.write(wait); err != nil {
				return nil, err
			}
		}
		if err := awaitBlocked(cfg, ctl, len(conns)-1); err != nil {
			return nil, err
		}
		release = append(appendCommand(nil, "RPUSH", key, "token"), wait...)
	}
	pr, err := startProbe(cfg, p, false)
	if err != nil {
		return nil, err
	}
	defer pr.stop()
	var h hist
	holder := 0
	timeout := time.NewTimer(cfg.timeout) // one, reset: see readHandover
	defer timeout.Stop()
	measure := time.Now().Add(cfg.warmup)
	stop := measure.Add(cfg.duration)
	for {
		t0 := time.Now()
		if !t0.Before(stop) {
			break
		}
		if !t0.Before(measure) {
			pr.markNow()
		}
		if err := conns[holder].write(release); err != nil {
			return nil, err
		}
		timeout.Reset(cfg.timeout)
		select {
		case holder = <-granted:
		case <-timeout.C:
			return nil, fmt.Errorf("no waiter was granted the lock within %v", cfg.timeout)
		}
		if !t0.Before(measure) {
			h.record(time.Since(t0))
		}
	}
	_, probes := pr.stop()
	return result{
		{"conns", cfg.conns}, {"handovers", h.n},
		{"handovers_per_s", float64(h.n) / cfg.duration.Seconds()},
		{"p50_us", h.quantile(0.5)}, {"p99_us", h.quantile(0.99)},
		{"p999_us", h.quantile(0.999)}, {"max_us", h.maxUs()},
		{"probe_p50_us", probes.quantile(0.5)}, {"probe_p99_us", probes.quantile(0.99)},
		{"probe_max_us", probes.maxUs()},
		{"errors", errs.count() + pr.errs.count()},
	}, nil
}

// readHandover reads one reply of a hand-over connection and calls
// granted or queued for the ones that say so.
func readHandover(c *conn, proto, key string, granted, queued func()) error {
	c.nc.SetReadDeadline(time.Time{})
	line, err := readLine(c.r)
	if err != nil {
		return err
	}
	// Compared without allocating: with 10,000 goroutines to scan, a
	// collection here would stall the probe for milliseconds and be counted
	// as the server's (docs/performance.md, "Hand-over").
	text, name, _ := bytes.Cut(line, []byte(": "))
	switch {
	case proto == "glockd" && string(text) == "1 Lock Get Success" && string(name) == key:
		granted()
	case proto == "glockd" && bytes.HasSuffix(text, []byte(" Shared Lock Get Success")) && string(name) == "bench-queued":
		queued()
	case proto == "glockd" && string(text) == "1 Lock Release Success" && string(name) == key:
	case proto == "resp" && string(line) == "*2":
		if err := expectBulk(c.r, key); err != nil {
			return fmt.Errorf("BLPOP's reply: %w", err)
		}
		if err := expectBulk(c.r, "token"); err != nil {
			return fmt.Errorf("BLPOP's reply: %w", err)
		}
		granted()
	case proto == "resp" && len(line) > 0 && line[0] == ':': // RPUSH's
	default:
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

// await waits for connection i's grant.
func await(granted <-chan int, timeout time.Duration, i int) error {
	select {
	case got := <-granted:
		if got != i {
			return fmt.Errorf("connection %d was granted the lock, not %d", got, i)
		}
		return nil
	case <-time.After(timeout):
		return errors.New("the first connection did not get the lock")
	}
}

// awaitBlocked waits until Redis has n clients blocked.
func awaitBlocked(cfg *config, ctl *conn, n int) error {
	deadline := time.Now().Add(cfg.wait)
	for {
		if err := ctl.write(appendCommand(nil, "INFO", "clients")); err != nil {
			return err
		}
		ctl.nc.SetReadDeadline(time.Now().Add(ctl.timeout))
		info, err := readBulk(ctl.r)
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "blocked_clients:"); ok {
				if b, err := strconv.Atoi(v); err == nil && b >= n {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fewer than %d clients blocked after %v", n, cfg.wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
