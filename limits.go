package main

import (
	"bufio"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/transport"
	"github.com/glockd/glockd/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// What connections may cost, and the limits' defaults: -max-buffered, the
// one memory budget of all connections; the connection cap the
// file-descriptor limit allows; the other limits' defaults.

// Defaults of the limits, also the flags' defaults.
const (
	DefaultMaxLine         = 64 << 10
	DefaultMaxConns        = 100000
	DefaultMaxLocksPerConn = 1000000
	DefaultMaxWaitsPerConn = 1024
	DefaultMaxHTTPConns    = 1024
	DefaultHTTPIdleTimeout = 30 * time.Second
)

// One memory budget, -max-buffered, for the bytes held for connections: the
// lines queued behind a wait or a failed auth's delay, a websocket message
// being received, a stream's read buffer grown past the pooled one (a burst,
// a long line) and the replies pending a write. Each holder charges what it
// holds to the budget before it grows; past the budget, the connection that
// asked for more is told wire.QueueFull and closed (its locks orphaned, as
// on any disconnect), and nobody else is slowed: the budget is one atomic
// counter, never a lock, and the manager never touches it.
//
// What is not charged is small and bounded per connection: the pooled 4 KiB
// read buffer (held only while input is there), a batch's commands, the
// goroutine stacks. docs/security.md gives the overhead in numbers.

// defaultMaxBuffered is -max-buffered's default: a quarter of the memory the
// process may use, the smaller of the machine's and its cgroup's limit; 1 GiB
// when neither can be read.
func defaultMaxBuffered() int64 {
	limit := memTotal()
	if cg := cgroupMemoryLimit(); cg > 0 && (limit <= 0 || cg < limit) {
		limit = cg
	}
	if limit <= 0 {
		return 1 << 30
	}
	return limit / 4
}

// memTotal is MemTotal of /proc/meminfo, in bytes; 0 if unknown.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// cgroupMemoryLimit is the memory limit of the process's cgroup (v2: its own
// as /proc/self/cgroup names it, or the namespace's root; else v1), in bytes;
// 0 if there is none or it cannot be read.
func cgroupMemoryLimit() int64 {
	paths := []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if dir, ok := strings.CutPrefix(line, "0::"); ok && dir != "/" {
				paths = append([]string{"/sys/fs/cgroup" + dir + "/memory.max"}, paths...)
			}
		}
	}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 { // "max", or v1's "no limit"
			return 0
		}
		return n
	}
	return 0
}

// tellOverBudget tells the client that its connection ends because its
// reader asked for more than the budget had left.
func (c *conn) tellOverBudget() {
	c.srv.metrics.overBudget.Inc()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t.Write([]byte(wire.QueueFull), []int{len(wire.QueueFull)})
}

// chargeReplies charges the pending replies' buffer, once it is bigger than
// the one every connection keeps (chargeOrEnd).
func (c *conn) chargeReplies() error { return c.chargeOrEnd(&c.outMem, int64(cap(c.b.out))) }

// chargeQueue charges the lines queued behind a wait that has just begun:
// the rest of its batch (queueBehindWait charges what is read during the
// wait; chargeOrEnd).
func (c *conn) chargeQueue() error { return c.chargeOrEnd(&c.queueMem, int64(c.queue.size())) }

// chargeOrEnd sets what ch holds to n; over the budget, the replies are
// written, then wire.QueueFull, and the connection ends. Called with c.mu
// held; kept out of line for the idle-stack rule (docs/design.md).
//
//go:noinline
func (c *conn) chargeOrEnd(ch *transport.Charge, n int64) error {
	if ch.Set(n) {
		return nil
	}
	c.srv.metrics.overBudget.Inc()
	if err := c.flush(); err != nil {
		return err
	}
	c.t.Write([]byte(wire.QueueFull), []int{len(wire.QueueFull)})
	return transport.ErrOverBudget
}

// releaseCharges gives back everything c held, once its goroutines are done.
func (c *conn) releaseCharges() {
	c.mu.Lock()
	c.queueMem.Release()
	c.outMem.Release()
	c.mu.Unlock()
	c.t.Release()
}

// budgetMetrics export the budget and its use.
func (s *Server) budgetMetrics() []prometheus.Collector {
	limit := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "glockd_max_buffered_bytes",
		Help: "The -max-buffered budget: bytes that may be held for all connections together.",
	})
	limit.Set(float64(s.budget.Max))
	used := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "glockd_buffered_bytes",
		Help: "Bytes held for connections, charged to -max-buffered: queued lines, websocket messages being received, grown read buffers, pending replies.",
	}, func() float64 { return float64(s.budget.Used.Load()) })
	return []prometheus.Collector{limit, used}
}

// connCap is the connection limit actually enforced: -max-conns, or less
// when the file-descriptor limit (RLIMIT_NOFILE, as main has raised it)
// cannot hold that many, each connection being one descriptor beside the
// HTTP connections and fdReserve. Past it accept would fail at random; under
// it a client is told "0 Too Many Connections", and glockd_max_connections
// shows the real cap, so the near-limit alert fires in time.
func connCap(cfg Config) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<40 {
		return cfg.MaxConns // unknown, or unlimited
	}
	allowed := int64(rl.Cur) - int64(cfg.MaxHTTPConns) - fdReserve
	if allowed >= int64(cfg.MaxConns) {
		return cfg.MaxConns
	}
	return int(max(allowed, 1))
}

// withDefaults gives every limit (and the logger) a Config leaves zero its
// default.
func (cfg Config) withDefaults() Config {
	positiveOr(&cfg.MaxLine, DefaultMaxLine)
	positiveOr(&cfg.MaxConns, DefaultMaxConns)
	positiveOr(&cfg.MaxLocksPerConn, DefaultMaxLocksPerConn)
	positiveOr(&cfg.MaxWaitsPerConn, DefaultMaxWaitsPerConn)
	positiveOr(&cfg.MaxHTTPConns, DefaultMaxHTTPConns)
	if cfg.MaxBuffered <= 0 { // computed only when needed: it reads the machine's memory
		cfg.MaxBuffered = defaultMaxBuffered()
	}
	positiveOr(&cfg.HTTPIdleTimeout, DefaultHTTPIdleTimeout)
	if cfg.UnixMode == 0 {
		cfg.UnixMode = 0o666
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Security = cfg.Security.withDefaults()
	return cfg
}

// positiveOr sets *v to def unless it is above zero: a limit that a Config
// leaves zero (or sets negative) gets its default.
func positiveOr[T ~int | ~int64 | ~float64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
