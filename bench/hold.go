package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rssKB is the server's resident set size, or -1 without -pid.
func rssKB(pid int) (int64, error) {
	if pid == 0 {
		return -1, nil
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// perItem is the growth from before to after, in bytes, per item; -1 when
// unknown.
func perItem(before, after int64, n int) int64 {
	if before < 0 || after < 0 {
		return -1
	}
	return (after - before) * 1024 / int64(n)
}

// settled lets the server finish what it is doing, checks that it holds
// the locks it should, and reads its RSS.
func settled(cfg *config, ctl *conn, exclusive, shared int64, errs *errorLog) int64 {
	time.Sleep(cfg.settle)
	if cfg.proto == "glockd" {
		x, s, err := ctl.locks()
		if err != nil {
			errs.add("lock count: %v", err)
		} else if x != exclusive || s != shared {
			errs.add("the server holds %d locks and %d shared ones, want %d and %d", x, s, exclusive, shared)
		}
	}
	rss, err := rssKB(cfg.pid)
	if err != nil {
		errs.add("rss: %v", err)
		return -1
	}
	return rss
}

// released waits until the server holds no more locks than base and
// reports how long that took from since, in ms. Redis releases nothing at
// a disconnect: its keys are deleted instead, and the time is "na".
func released(cfg *config, ctl *conn, baseX, baseS int64, since time.Time, prefix string, n int, errs *errorLog) any {
	if cfg.proto != "glockd" {
		if err := deleteKeys(ctl, prefix, n); err != nil {
			errs.add("deleting the keys: %v", err)
		}
		return "na"
	}
	for {
		x, s, err := ctl.locks()
		if err != nil {
			errs.add("lock count: %v", err)
			return "na"
		}
		if x <= baseX && s <= baseS {
			return float64(time.Since(since).Microseconds()) / 1e3
		}
		if time.Since(since) > cfg.wait {
			errs.add("%d locks and %d shared ones still held after %v", x-baseX, s-baseS, cfg.wait)
			return "na"
		}
		time.Sleep(time.Millisecond)
	}
}

// deleteKeys deletes prefix0 to prefix(n-1) on a RESP server.
func deleteKeys(c *conn, prefix string, n int) error {
	for i := 0; i < n; {
		args := []string{"DEL"}
		for ; len(args) <= 1000 && i < n; i++ {
			args = append(args, prefix+strconv.Itoa(i))
		}
		if err := c.write(appendCommand(nil, args...)); err != nil {
			return err
		}
		c.nc.SetReadDeadline(time.Now().Add(c.timeout))
		if _, err := readLine(c.r); err != nil {
			return err
		}
	}
	return nil
}

// runHold opens cfg.conns connections that each take a lock and stay idle:
// the server's memory per connection, then the time to release them all
// once they close.
func runHold(cfg *config, p protocol) (result, error) {
	errs := newErrorLog(cfg)
	ctl, err := dial(cfg, p)
	if err != nil {
		return nil, err
	}
	defer ctl.nc.Close()
	baseX, baseS, err := ctl.locks()
	if err != nil {
		return nil, err
	}
	rss0, err := rssKB(cfg.pid)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	conns, err := dialAll(cfg, p, cfg.conns)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				o := op{get, "h" + strconv.Itoa(i)}
				if n, err := conns[i].call(o); err != nil || n != 1 {
					errs.add("%v: %d, %v", o, n, err)
				}
			}
		})
	}
	for i := range conns {
		next <- i
	}
	close(next)
	wg.Wait()
	connect := time.Since(start)
	rss1 := settled(cfg, ctl, baseX+int64(cfg.conns), baseS, errs)
	t1 := time.Now()
	closeAll(conns)
	rel := released(cfg, ctl, baseX, baseS, t1, "h", cfg.conns, errs)
	return result{
		{"conns", cfg.conns}, {"connect_s", connect.Seconds()},
		{"rss_before_kb", rss0}, {"rss_held_kb", rss1},
		{"bytes_per_conn", perItem(rss0, rss1, cfg.conns)},
		{"release_ms", rel}, {"errors", errs.count()},
	}, nil
}

// take has c take prefix0 to prefix(n-1), pipeline at a time, each reply
// checked by ok.
func take(c *conn, pipeline int, k kind, prefix string, n int, ok func(int64) bool, errs *errorLog) error {
	batch := make([]op, 0, pipeline)
	for i := 0; i < n; {
		batch = batch[:0]
		for ; len(batch) < pipeline && i < n; i++ {
			batch = append(batch, op{k, prefix + strconv.Itoa(i)})
		}
		if err := c.send(batch...); err != nil {
			return err
		}
		c.nc.SetReadDeadline(time.Now().Add(c.timeout))
		for _, o := range batch {
			got, err := c.p.reply(c.r, o)
			if err != nil {
				return err
			}
			if !ok(got) {
				errs.add("%v: %d", o, got)
			}
		}
	}
	return nil
}

// runOrphan has one connection take cfg.locks locks and disconnect: the
// server's memory per lock, the time to release them, and meanwhile the
// round trips of a bystander's g and r.
func runOrphan(cfg *config, p protocol) (result, error) {
	errs := newErrorLog(cfg)
	ctl, err := dial(cfg, p)
	if err != nil {
		return nil, err
	}
	defer ctl.nc.Close()
	var pr *probe
	if cfg.proto == "glockd" {
		// The probe's lock is held by a connection of its own, so that its
		// g and r change no count.
		if pr, err = startProbe(cfg, p, true); err != nil {
			return nil, err
		}
		defer pr.stop()
	}
	baseX, baseS, err := ctl.locks()
	if err != nil {
		return nil, err
	}
	rss0, err := rssKB(cfg.pid)
	if err != nil {
		return nil, err
	}
	c, err := dial(cfg, p)
	if err != nil {
		return nil, err
	}
	defer c.nc.Close()
	start := time.Now()
	if err := take(c, cfg.pipeline, get, "o", cfg.locks, func(n int64) bool { return n == 1 }, errs); err != nil {
		return nil, err
	}
	acquire := time.Since(start)
	rss1 := settled(cfg, ctl, baseX+int64(cfg.locks), baseS, errs)
	if pr != nil {
		pr.markNow()
	}
	t1 := time.Now()
	c.nc.Close()
	rel := released(cfg, ctl, baseX, baseS, t1, "o", cfg.locks, errs)
	res := result{
		{"locks", cfg.locks}, {"pipeline", cfg.pipeline},
		{"acquire_ops_per_s", float64(cfg.locks) / acquire.Seconds()},
		{"rss_before_kb", rss0}, {"rss_held_kb", rss1},
		{"bytes_per_lock", perItem(rss0, rss1, cfg.locks)},
		{"release_ms", rel},
	}
	if pr != nil {
		all, during := pr.stop()
		res = append(res, field{"probe_p50_us", all.quantile(0.5)}, field{"probe_p99_us", all.quantile(0.99)},
			field{"probe_max_us", all.maxUs()}, field{"probe_release_max_us", during.maxUs()})
		errs.n += pr.errs.count()
	}
	return append(res, field{"errors", errs.count()}), nil
}

// runSharedOrphan is orphan with shared locks, held twice: one connection
// takes cfg.locks shared locks, a second one takes them all too, and both
// disconnect. The server's memory per name with one holder and per extra
// holder, and the time to release them all.
func runSharedOrphan(cfg *config, p protocol) (result, error) {
	if cfg.proto != "glockd" {
		return nil, errors.New("sharedorphan needs -proto glockd: Redis has no shared locks")
	}
	errs := newErrorLog(cfg)
	ctl, err := dial(cfg, p)
	if err != nil {
		return nil, err
	}
	defer ctl.nc.Close()
	baseX, baseS, err := ctl.locks()
	if err != nil {
		return nil, err
	}
	rss := []int64{0, 0, 0}
	if rss[0], err = rssKB(cfg.pid); err != nil {
		return nil, err
	}
	var holders []*conn
	defer func() { closeAll(holders) }()
	for i := range 2 {
		c, err := dial(cfg, p)
		if err != nil {
			return nil, err
		}
		holders = append(holders, c)
		want := int64(i + 1)
		if err := take(c, cfg.pipeline, sharedGet, "o", cfg.locks, func(n int64) bool { return n == want }, errs); err != nil {
			return nil, err
		}
		rss[i+1] = settled(cfg, ctl, baseX, baseS+int64(cfg.locks), errs)
	}
	t1 := time.Now()
	closeAll(holders)
	rel := released(cfg, ctl, baseX, baseS, t1, "o", cfg.locks, errs)
	return result{
		{"locks", cfg.locks}, {"pipeline", cfg.pipeline},
		{"rss_before_kb", rss[0]}, {"rss_one_holder_kb", rss[1]}, {"rss_two_holders_kb", rss[2]},
		{"bytes_per_name", perItem(rss[0], rss[1], cfg.locks)},
		{"bytes_per_extra_holder", perItem(rss[1], rss[2], cfg.locks)},
		{"release_ms", rel}, {"errors", errs.count()},
	}, nil
}

// probe is a bystander: one connection that takes and releases a lock, one
// command in flight and a pause of cfg.probeEvery between commands, timing
// each round trip.
type probe struct {
	halt   chan struct{}
	done   chan struct{}
	all    hist
	during hist // the round trips that began after mark
	mark   time.Time
	mu     sync.Mutex
	errs   *errorLog
	conns  []*conn
	key    string
	once   sync.Once
}

// startProbe starts a probe. With busy, its lock is held by another
// connection of the probe's, so that its get and release fail (the
// server's lock count does not move) but still take the server's path.
func startProbe(cfg *config, p protocol, busy bool) (*probe, error) {
	pr := &probe{halt: make(chan struct{}), done: make(chan struct{}), errs: newErrorLog(cfg)}
	c, err := dial(cfg, p)
	if err != nil {
		return nil, err
	}
	pr.conns = append(pr.conns, c)
	key := fmt.Sprintf("bench-probe-%d", os.Getpid())
	pr.key = key
	want := int64(1)
	if busy {
		holder, err := dial(cfg, p)
		if err != nil {
			closeAll(pr.conns)
			return nil, err
		}
		pr.conns = append(pr.conns, holder)
		if n, err := holder.call(op{get, key}); err != nil || n != 1 {
			closeAll(pr.conns)
			return nil, fmt.Errorf("the probe's lock: %d, %v", n, err)
		}
		want = 0
	}
	go func() {
		defer close(pr.done)
		ops := [2]op{{get, key}, {release, key}}
		pause := time.NewTimer(cfg.probeEvery) // one, reset: the probe allocates nothing
		defer pause.Stop()
		for i := 0; ; i++ {
			pause.Reset(cfg.probeEvery)
			select {
			case <-pr.halt:
				if i%2 == 1 && !busy { // it holds its lock
					c.call(ops[1])
				}
				return
			case <-pause.C:
			}
			t0 := time.Now()
			n, err := c.call(ops[i%2])
			d := time.Since(t0)
			if err != nil {
				pr.errs.add("probe: %v", err)
				return
			}
			if n != want {
				pr.errs.add("probe: %v: %d", ops[i%2], n)
			}
			pr.mu.Lock()
			pr.all.record(d)
			if !pr.mark.IsZero() && !t0.Before(pr.mark) {
				pr.during.record(d)
			}
			pr.mu.Unlock()
		}
	}()
	return pr, nil
}

// markNow starts the probe's second count.
func (pr *probe) markNow() {
	pr.mu.Lock()
	pr.mark = time.Now()
	pr.mu.Unlock()
}

// stop ends the probe (once) and returns its counts. The probe's lock is
// released before its connections close, so that the next run does not
// find it held.
func (pr *probe) stop() (all, during *hist) {
	pr.once.Do(func() {
		close(pr.halt)
		<-pr.done
		if len(pr.conns) > 1 {
			if n, err := pr.conns[1].call(op{release, pr.key}); err != nil || n != 1 {
				pr.errs.add("releasing the probe's lock: %d, %v", n, err)
			}
		}
		closeAll(pr.conns)
	})
	return &pr.all, &pr.during
}
