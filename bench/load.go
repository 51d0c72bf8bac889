package main

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// gen makes one connection's commands and checks what their replies mean.
type gen interface {
	// next appends the next batch, at most n commands.
	next(ops []op, n int) []op
	// judge checks the reply number of o.
	judge(o op, n int64) error
	// finish appends what gives back what the connection holds.
	finish(ops []op) []op
}

// cycleGen takes and releases the connection's own lock.
type cycleGen struct {
	key  string
	held bool
}

func (g *cycleGen) next(ops []op, n int) []op {
	return alternate(ops, n, &g.held, get, release, g.key)
}

// alternate appends n operations on key that take it and give it back in
// turn, held saying which comes next.
func alternate(ops []op, n int, held *bool, take, give kind, key string) []op {
	for range n {
		k := take
		if *held {
			k = give
		}
		ops = append(ops, op{k, key})
		*held = !*held
	}
	return ops
}

func (g *cycleGen) judge(o op, n int64) error {
	if n != 1 {
		return fmt.Errorf("%v: refused (%d), but nobody else uses it", o, n)
	}
	return nil
}

func (g *cycleGen) finish(ops []op) []op {
	if g.held {
		g.held = false
		ops = append(ops, op{release, g.key})
	}
	return ops
}

// contendGen try-locks names from a small set that every connection uses,
// and releases the ones it got at the start of its next batch. A batch
// asks for each name at most once, so that glockd's re-entrant get and
// Redis's SET NX are asked the same questions.
type contendGen struct {
	keys      []string
	held      []string
	rng       uint64
	got, busy int64
}

func (g *contendGen) next(ops []op, n int) []op {
	for len(g.held) > 0 && len(ops) < n {
		ops = append(ops, op{release, g.held[len(g.held)-1]})
		g.held = g.held[:len(g.held)-1]
	}
	g.rng ^= g.rng << 13
	g.rng ^= g.rng >> 7
	g.rng ^= g.rng << 17
	start := int(g.rng % uint64(len(g.keys)))
	for i := range min(n-len(ops), len(g.keys)) {
		ops = append(ops, op{get, g.keys[(start+i)%len(g.keys)]})
	}
	return ops
}

func (g *contendGen) judge(o op, n int64) error {
	switch {
	case o.kind == get && n == 1:
		g.got++
		g.held = append(g.held, o.key)
	case o.kind == get:
		g.busy++
	case n != 1:
		return fmt.Errorf("%v: not released, though this connection holds it", o)
	}
	return nil
}

func (g *contendGen) finish(ops []op) []op {
	for _, k := range g.held {
		ops = append(ops, op{release, k})
	}
	g.held = g.held[:0]
	return ops
}

// sharedGen takes and releases a shared lock that every connection uses.
type sharedGen struct {
	key   string
	conns int
	held  bool
}

func (g *sharedGen) next(ops []op, n int) []op {
	return alternate(ops, n, &g.held, sharedGet, sharedRelease, g.key)
}

func (g *sharedGen) judge(o op, n int64) error {
	switch {
	case o.kind == sharedGet && (n < 1 || n > int64(g.conns)):
		return fmt.Errorf("%v: %d holders, want 1 to %d", o, n, g.conns)
	case o.kind == sharedRelease && n != 1:
		return fmt.Errorf("%v: not released, though this connection holds it", o)
	}
	return nil
}

func (g *sharedGen) finish(ops []op) []op {
	if g.held {
		g.held = false
		ops = append(ops, op{sharedRelease, g.key})
	}
	return ops
}

// worker drives one connection.
type worker struct {
	c    *conn
	g    gen
	h    hist
	errs *errorLog
}

// run sends batches of up to pipeline commands until stop, timing the
// replies of the batches that start between measure and stop.
func (w *worker) run(pipeline int, measure, stop time.Time) {
	batch := make([]op, 0, pipeline)
	for {
		t0 := time.Now()
		if !t0.Before(stop) {
			break
		}
		batch = w.g.next(batch[:0], pipeline)
		if !w.exchange(batch, t0, !t0.Before(measure)) {
			return
		}
	}
	if batch = w.g.finish(batch[:0]); len(batch) > 0 {
		w.exchange(batch, time.Now(), false)
	}
}

// exchange sends a batch and reads and judges its replies; it reports
// false when the connection can no longer be used.
func (w *worker) exchange(batch []op, t0 time.Time, measured bool) bool {
	if err := w.c.send(batch...); err != nil {
		w.errs.add("write: %v", err)
		return false
	}
	w.c.nc.SetReadDeadline(t0.Add(w.c.timeout))
	for _, o := range batch {
		n, err := w.c.p.reply(w.c.r, o)
		if err != nil {
			w.errs.add("%v", err)
			return false
		}
		if measured {
			w.h.record(time.Since(t0))
		}
		if err := w.g.judge(o, n); err != nil {
			w.errs.add("%v", err)
		}
	}
	return true
}

func runLoad(cfg *config, p protocol) (result, error) {
	conns, err := dialAll(cfg, p, cfg.conns)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	keys := make([]string, cfg.keys)
	for i := range keys {
		keys[i] = "c" + strconv.Itoa(i)
	}
	errs := newErrorLog(cfg)
	workers := make([]*worker, len(conns))
	for i, c := range conns {
		w := &worker{c: c, errs: errs}
		switch cfg.workload {
		case "cycle":
			w.g = &cycleGen{key: "k" + strconv.Itoa(i)}
		case "contend":
			w.g = &contendGen{keys: keys, rng: uint64(i)*0x9e3779b97f4a7c15 + 1}
		case "shared":
			w.g = &sharedGen{key: "s", conns: cfg.conns}
		}
		workers[i] = w
	}
	measure := time.Now().Add(cfg.warmup)
	stop := measure.Add(cfg.duration)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.run(cfg.pipeline, measure, stop) })
	}
	wg.Wait()

	var h hist
	var got, busy int64
	for _, w := range workers {
		h.merge(&w.h)
		if g, ok := w.g.(*contendGen); ok {
			got, busy = got+g.got, busy+g.busy
		}
	}
	res := result{
		{"conns", cfg.conns}, {"pipeline", cfg.pipeline},
		{"ops", h.n}, {"ops_per_s", float64(h.n) / cfg.duration.Seconds()},
		{"p50_us", h.quantile(0.5)}, {"p99_us", h.quantile(0.99)},
		{"p999_us", h.quantile(0.999)}, {"max_us", h.maxUs()},
	}
	if cfg.workload == "contend" {
		res = append(res, field{"keys", cfg.keys}, field{"acquired", got}, field{"busy", busy})
	}
	return append(res, field{"errors", errs.count()}), nil
}

// dialAll opens n connections, 32 at a time.
func dialAll(cfg *config, p protocol, n int) ([]*conn, error) {
	conns := make([]*conn, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(n, 32) {
		wg.Go(func() {
			for i := range next {
				conns[i], errs[i] = dial(cfg, p)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			closeAll(conns)
			return nil, fmt.Errorf("connection %d of %d: %w", i, n, err)
		}
	}
	return conns, nil
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.nc.Close()
		}
	}
}

// errorLog counts the errors of a run and prints the first few.
type errorLog struct {
	w  io.Writer
	mu sync.Mutex
	n  int
}

func newErrorLog(cfg *config) *errorLog { return &errorLog{w: cfg.stderr} }

func (l *errorLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n++; l.n <= 5 && l.w != nil {
		fmt.Fprintf(l.w, "bench: "+format+"\n", args...)
	}
}

func (l *errorLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}
