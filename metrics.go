package main

import (
	"net/http"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is a Server's Prometheus instrumentation. Each Server has its own
// registry, so that two servers in one process do not share or clash.
type metrics struct {
	registry *prometheus.Registry

	// batchSeconds is observed once per round trip of a batch to the lock
	// manager, not once per command: a batch is every command a connection
	// read in one go (usually one), and the hot path can afford one
	// observation per round trip but not one per pipelined command.
	batchSeconds prometheus.Histogram
	// waitGranted and waitTimeout are observed when a wait (gw, sgw, !gw,
	// !sgw) that had to queue ends; a waiter that disconnects is not
	// observed.
	waitGranted prometheus.Observer
	waitTimeout prometheus.Observer

	// Security (docs/security.md).
	authFailures         prometheus.Counter
	authRefused          prometheus.Counter
	unauthClosed         *prometheus.CounterVec
	tlsHandshakeFailures prometheus.Counter
	tlsHandshakesEvicted prometheus.Counter
	overBudget           prometheus.Counter
}

// Timeouts for asking the manager for its counters: a scrape may take a
// little longer than a health check, which must answer quickly.
const (
	scrapeTimeout  = 3 * time.Second
	healthzTimeout = time.Second
)

func newMetrics(m *manager, maxConns int, build buildInfo) *metrics {
	batch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "glockd_command_batch_duration_seconds",
		Help: "Time from handing a batch of commands to the lock manager until it answered: one observation per batch (every command a connection read in one go, usually one).",
		Buckets: []float64{
			10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
			1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1,
		},
	})
	wait := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "glockd_wait_duration_seconds",
		Help: "How long waits (gw, sgw, !gw, !sgw) that had to queue waited, by outcome (granted or timeout).",
		Buckets: []float64{
			1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 250e-3, 500e-3,
			1, 2.5, 5, 10, 30, 60, 300,
		},
	}, []string{"outcome"})
	limit := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "glockd_max_connections",
		Help: "The connection limit enforced: -max-conns, or less when the file-descriptor limit (RLIMIT_NOFILE) cannot hold that many. Live connections beyond it are refused.",
	})
	limit.Set(float64(maxConns))
	authFailures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glockd_auth_failures_total",
		Help: "auth commands whose token was tried and found wrong (the first few of each 10 s logged with the client's address, the rest counted in the log).",
	})
	authRefused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glockd_auth_refused_total",
		Help: "auth commands refused without trying the token: read during an earlier failure's delay, or over the failure rate of the client's address or of the server.",
	})
	unauthClosed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "glockd_unauthenticated_closed_total",
		Help: "Connections closed before they authenticated (with -acl-file), by reason: evicted (the oldest, to make room for a new connection) or auth_timeout.",
	}, []string{"reason"})
	for _, reason := range []string{"evicted", "auth_timeout"} {
		unauthClosed.WithLabelValues(reason) // exported at 0 from the start, for rate() and alerts
	}
	handshakeFailures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glockd_tls_handshake_failures_total",
		Help: "TLS handshakes of line-protocol connections that failed or timed out (refused client certificates among them).",
	})
	handshakesEvicted := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glockd_tls_handshakes_evicted_total",
		Help: "TLS handshakes of line-protocol connections closed, the oldest under way, to make room for a new one past the handshake budget.",
	})
	overBudget := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "glockd_over_budget_closed_total",
		Help: "Connections closed, after \"0 Too Many Queued Commands\", because they asked for more memory than -max-buffered had left.",
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		build.collector(),
		limit,
		newStatsCollector(m),
		batch,
		wait,
		authFailures,
		authRefused,
		unauthClosed,
		handshakeFailures,
		handshakesEvicted,
		overBudget,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &metrics{
		registry:     reg,
		batchSeconds: batch,
		waitGranted:  wait.WithLabelValues("granted"),
		waitTimeout:  wait.WithLabelValues("timeout"),

		authFailures:         authFailures,
		authRefused:          authRefused,
		unauthClosed:         unauthClosed,
		tlsHandshakeFailures: handshakeFailures,
		tlsHandshakesEvicted: handshakesEvicted,
		overBudget:           overBudget,
	}
}

// observeWait records how a queued wait ended.
func (mt *metrics) observeWait(res waitResult) {
	switch {
	case res.deadlock:
		return // counted in glockd_deadlocks_total
	case res.granted:
		mt.waitGranted.Observe(res.waited.Seconds())
	default:
		mt.waitTimeout.Observe(res.waited.Seconds())
	}
}

// handler serves the registry in the Prometheus exposition formats.
func (mt *metrics) handler() http.Handler {
	return promhttp.HandlerFor(mt.registry, promhttp.HandlerOpts{
		Registry:            mt.registry, // promhttp_metric_handler_errors_total
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
}

// statsCollector exports the manager's counters. Each scrape takes one O(1)
// snapshot from the manager; it never walks a table.
type statsCollector struct {
	manager *manager

	commands, invalid, orphans, sharedOrphans *prometheus.Desc
	connections, locks, sharedLocks, waiters  *prometheus.Desc
	managerUp                                 *prometheus.Desc
	holdSeconds, oldestHold, oldestWait       *prometheus.Desc
	deadlocks                                 *prometheus.Desc
}

func newStatsCollector(m *manager) *statsCollector {
	return &statsCollector{
		manager: m,
		commands: prometheus.NewDesc("glockd_commands_total",
			"Commands run, by verb (the command_* counters of q).", []string{"verb"}, nil),
		invalid: prometheus.NewDesc("glockd_invalid_commands_total",
			"Unknown commands and blank lines (invalid_commands of q).", nil, nil),
		orphans: prometheus.NewDesc("glockd_orphans_total",
			"Exclusive locks released because their holder disconnected (orphans of q).", nil, nil),
		sharedOrphans: prometheus.NewDesc("glockd_shared_orphans_total",
			"Shared locks released because their holder disconnected (shared_orphans of q).", nil, nil),
		connections: prometheus.NewDesc("glockd_connections",
			"Live connections, by transport.", []string{"transport"}, nil),
		locks: prometheus.NewDesc("glockd_locks",
			"Exclusive locks held now (locks of q).", nil, nil),
		sharedLocks: prometheus.NewDesc("glockd_shared_locks",
			"Names with at least one shared holder now (shared_locks of q).", nil, nil),
		waiters: prometheus.NewDesc("glockd_waiters",
			"Waits queued now: gw, sgw, !gw and !sgw.", nil, nil),
		holdSeconds: prometheus.NewDesc("glockd_lock_hold_duration_seconds",
			"How long locks were held, observed when released or orphaned, by kind (exclusive, or shared: one observation per holder).", []string{"kind"}, nil),
		oldestHold: prometheus.NewDesc("glockd_oldest_hold_seconds",
			"Age of the oldest lock held now, by kind; 0 when none is held.", []string{"kind"}, nil),
		oldestWait: prometheus.NewDesc("glockd_oldest_wait_seconds",
			"How long the longest current wait (gw, sgw, !gw, !sgw) has waited; 0 when none waits.", nil, nil),
		deadlocks: prometheus.NewDesc("glockd_deadlocks_total",
			"Cycles of waiters found: each closing wait (gw, sgw, !gw, !sgw) was refused with a Deadlock reply (-deadlocks break) or only logged (-deadlocks report).", nil, nil),
		managerUp: prometheus.NewDesc("glockd_manager_up",
			"1 when the lock manager answered this scrape in time; 0 when it did not, and the other glockd_ gauges and counters are then missing from the scrape.", nil, nil),
	}
}

func (sc *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		sc.commands, sc.invalid, sc.orphans, sc.sharedOrphans,
		sc.connections, sc.locks, sc.sharedLocks, sc.waiters, sc.managerUp,
		sc.holdSeconds, sc.oldestHold, sc.oldestWait, sc.deadlocks,
	} {
		ch <- d
	}
}

func (sc *statsCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	s, ok := sc.manager.askStats(scrapeTimeout)
	if !ok {
		gauge(sc.managerUp, 0)
		return
	}
	gauge(sc.managerUp, 1)
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		counter(sc.commands, s.commands[v], v.String())
	}
	counter(sc.invalid, s.invalid)
	counter(sc.orphans, s.orphans)
	counter(sc.sharedOrphans, s.sharedOrphans)
	// Every transport is listed, at 0 when none is connected.
	for _, t := range []string{"tcp", "tls", "unix", "websocket"} {
		gauge(sc.connections, s.connsByTransport[t], t)
	}
	gauge(sc.locks, s.locks)
	gauge(sc.sharedLocks, s.sharedLocks)
	gauge(sc.waiters, s.waiters)
	counter(sc.deadlocks, s.deadlocks)
	for _, k := range []holdKind{exclusiveHold, sharedHold} {
		h := s.holds[k]
		buckets := make(map[float64]uint64, len(holdBuckets))
		var cumulative uint64
		for i, bound := range holdBuckets {
			cumulative += h.counts[i]
			buckets[bound] = cumulative
		}
		count := cumulative + h.counts[len(holdBuckets)]
		ch <- prometheus.MustNewConstHistogram(sc.holdSeconds, count, h.sum, buckets, k.String())
		ch <- prometheus.MustNewConstMetric(sc.oldestHold, prometheus.GaugeValue, s.oldestHold[k].Seconds(), k.String())
	}
	ch <- prometheus.MustNewConstMetric(sc.oldestWait, prometheus.GaugeValue, s.oldestWait.Seconds())
}

// serveHealthz answers 200 while the lock manager answers, 503 otherwise.
func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.ha != nil && s.ha.Healthz(w) { // HA: a node that does not serve, internal/ha
		return
	}
	if _, ok := s.manager.askStats(healthzTimeout); !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("lock manager not answering\n"))
		return
	}
	w.Write([]byte("ok"))
}

// addMetricsRoutes adds /metrics and /healthz to mux: the -ws server and
// the -metrics-addr server both serve them.
func (s *Server) addMetricsRoutes(mux *http.ServeMux) {
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /healthz", s.serveHealthz)
}
