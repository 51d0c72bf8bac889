package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/transport"
	"github.com/glockd/glockd/internal/wire"
)

// Config is everything a Server needs; main builds it from the flags.
type Config struct {
	TCPAddr  string // line protocol over TCP, "host:port"; "" disables
	WSAddr   string // HTTP: websocket and console on "/", /metrics, /healthz; "" disables
	UnixPath string // line protocol over a unix socket; "" disables
	UnixMode os.FileMode

	Registry bool // iam and who
	Dump     bool // d, sd, dump and who
	Verbose  bool // log connects, disconnects, acquisitions, releases, orphans
	Logger   *slog.Logger

	MaxLine         int // longest command line, in bytes
	MaxConns        int // live connections over all transports
	MaxLocksPerConn int // exclusive plus shared locks one connection may hold
	MaxWaitsPerConn int // pending !gw and !sgw of one connection
	// MaxBuffered bounds the bytes held for all connections together
	// (limits.go); 0 means a quarter of the memory available.
	MaxBuffered int64

	// Deadlocks: what a wait that closes a cycle of waiters gets
	// (deadlocks.go). The zero value breaks the cycle.
	Deadlocks DeadlockMode

	// MaxHTTPConns bounds the HTTP connections (on WSAddr and MetricsAddr)
	// that are not websockets: browsers, scrapers, health checks. Over it
	// the oldest idle one is closed to make room, or the new one when
	// none is idle. A websocket leaves this budget for MaxConns.
	MaxHTTPConns int
	// HTTPIdleTimeout closes an HTTP connection that sends no complete
	// request for this long; it also bounds reading and writing one.
	HTTPIdleTimeout time.Duration

	// Dead-peer detection on TCP connections (websocket included).
	KeepAlive   net.KeepAliveConfig
	UserTimeout time.Duration // TCP_USER_TIMEOUT; 0 leaves the system's default

	// WSOrigins are the browser origins allowed to open a websocket; empty
	// or "*" allows any.
	WSOrigins []string

	// MetricsAddr serves /metrics and /healthz on an address of their own,
	// "host:port"; "" disables (WSAddr serves them too).
	MetricsAddr string

	// Security: TLS, identities and kill (security.go); off when zero.
	Security SecurityConfig

	// HA elects one serving node among several through etcd; nil: a
	// single node. See internal/ha.
	HA *ha.Config
}

// Server is one glockd: its listeners, connections and lock manager.
type Server struct {
	cfg     Config
	manager *manager

	tcp  net.Listener
	unix net.Listener
	ws   net.Listener
	http *http.Server

	build       buildInfo // what this binary is: version.go
	metrics     *metrics
	metricsLn   net.Listener
	metricsHTTP *http.Server
	httpConns   *transport.HTTPBudget // both HTTP servers' connections, websockets aside

	ha *ha.Node // nil without -etcd; see internal/ha and fence.go

	mu    sync.Mutex
	conns map[*conn]struct{}
	// connsWG counts the connections in conns: Add under mu as one joins
	// (track, adopt), Done as it leaves (untrack). closeConns waits on it
	// once no connection can join any more (closed, or !lockOpen).
	connsWG sync.WaitGroup
	// answering counts answerWaiters' goroutines; closeConns waits on it.
	answering sync.WaitGroup
	live      int // conns less those closed to make room (auth.go)
	// maxConns is -max-conns, or less when the file-descriptor limit
	// cannot hold that many (limits.go).
	maxConns int
	unauth   unauthConns
	started  bool
	closed   bool
	wg       sync.WaitGroup // accept loops, handshakes and HTTP servers

	// lockOpen, guarded by mu, is whether the lock listeners are open: with
	// -etcd, only while this node leads.
	lockOpen bool

	readBuffers sync.Pool        // stream transports' read buffers, see transport.Stream
	dumpBuffers sync.Pool        // streamed dumps' reply buffers, see conn.appendDump
	budget      transport.Budget // -max-buffered (limits.go)

	sec serverSecurity // TLS (security.go)

	up upgrader // hand-overs to a new binary (upgrade.go)
}

// NewServer checks cfg and makes a server; Start opens its listeners.
func NewServer(cfg Config) (*Server, error) {
	// Zero means the default; less is a mistake.
	if cfg.MaxLine < 0 || cfg.MaxConns < 0 || cfg.MaxLocksPerConn < 0 || cfg.MaxWaitsPerConn < 0 || cfg.MaxHTTPConns < 0 || cfg.HTTPIdleTimeout < 0 || cfg.MaxBuffered < 0 {
		return nil, errors.New("glockd: negative limit in Config")
	}
	cfg = cfg.withDefaults()
	for _, origin := range cfg.WSOrigins {
		if err := checkOriginSyntax(origin); err != nil {
			return nil, err
		}
	}
	sec, acl, err := newSecurity(cfg)
	if err != nil {
		return nil, err
	}
	m := newManager(cfg)
	m.sec = newManagerSecurity(cfg, acl)
	build := readBuildInfo()
	maxConns := connCap(cfg)
	s := &Server{
		cfg:       cfg,
		sec:       sec,
		manager:   m,
		build:     build,
		maxConns:  maxConns,
		metrics:   newMetrics(m, maxConns, build),
		conns:     make(map[*conn]struct{}),
		httpConns: transport.NewHTTPBudget(cfg.MaxHTTPConns),
	}
	m.sec.authFailures, m.sec.authRefused = s.metrics.authFailures, s.metrics.authRefused
	s.unauth.max = cfg.Security.MaxUnauthConns
	if s.unauth.max <= 0 {
		s.unauth.max = max(1, maxConns/unauthShare)
	}
	s.metrics.registry.MustRegister(s.unauthGauge())
	s.budget.Max = cfg.MaxBuffered
	s.metrics.registry.MustRegister(s.budgetMetrics()...)
	s.up.init(s)
	if cfg.HA != nil {
		n, err := ha.New(*cfg.HA, cfg.Logger, haHooks{s})
		if err != nil {
			return nil, err
		}
		s.metrics.registry.MustRegister(n.Collectors()...)
		m.leader = &leadership{node: n.Leadership()}
		s.ha = n
	}
	return s, nil
}

// Start opens the configured listeners and starts serving. On error nothing
// is left open.
func (s *Server) Start() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("glockd: server already started")
	}
	defer func() {
		if err != nil {
			s.closeListeners()
		}
	}()
	if s.cfg.MetricsAddr != "" {
		lc := net.ListenConfig{KeepAliveConfig: s.cfg.KeepAlive, Control: transport.TCPOptions(s.cfg.UserTimeout)}
		if s.metricsLn, err = s.listen(&lc, "metrics", s.cfg.MetricsAddr); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	// HA: the node opens them only while it leads (haHooks.Lead), or at
	// once for a term taken over from the old process (upgrade.go, adoptHA).
	if s.ha == nil || s.ha.Resumed() {
		if err := s.openLockListeners(); err != nil {
			return err
		}
	}
	s.started = true
	go s.manager.run()
	s.serveAdopted() // after a hand-over (upgrade.go)
	if s.metricsLn != nil {
		mux := http.NewServeMux()
		s.addMetricsRoutes(mux)
		s.metricsHTTP = s.newHTTPServer(mux)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.metricsHTTP.Serve(s.metricsLn)
		}()
	}
	if s.ha != nil {
		s.ha.Start()
	}
	return nil
}

// openLockListeners opens the listeners that clients use (TCP, websocket,
// unix) and serves them. On error none is left open. Called with s.mu held.
func (s *Server) openLockListeners() (err error) {
	defer func() {
		if err != nil {
			s.closeLockListeners()
		}
	}()
	lc := net.ListenConfig{KeepAliveConfig: s.cfg.KeepAlive, Control: transport.TCPOptions(s.cfg.UserTimeout)}
	if s.cfg.TCPAddr != "" {
		if s.tcp, err = s.listen(&lc, "tcp", s.cfg.TCPAddr); err != nil {
			return fmt.Errorf("tcp: %w", err)
		}
	}
	if s.cfg.WSAddr != "" {
		if s.ws, err = s.listen(&lc, "websocket", s.cfg.WSAddr); err != nil {
			return fmt.Errorf("websocket: %w", err)
		}
	}
	if s.cfg.UnixPath != "" {
		if s.unix, err = s.listenUnixSocket(); err != nil {
			return fmt.Errorf("unix socket: %w", err)
		}
	}
	if err = s.listenSecure(&lc); err != nil {
		return err
	}
	s.lockOpen = true
	if s.tcp != nil {
		s.wg.Add(1)
		go s.acceptLoop(s.tcp, "tcp")
	}
	if s.unix != nil {
		s.wg.Add(1)
		go s.acceptLoop(s.unix, "unix")
	}
	if s.sec.tlsLn != nil {
		s.wg.Add(1)
		go s.acceptLoop(s.sec.tlsLn, "tls")
	}
	if s.ws != nil {
		s.http = s.newHTTPServer(s.httpHandler())
		s.wg.Add(1)
		go func(h *http.Server, l net.Listener) {
			defer s.wg.Done()
			h.Serve(l)
		}(s.http, s.ws)
	}
	return nil
}

// TCPAddr is the address of the TCP listener, nil when disabled (or, with
// -etcd, never opened yet).
func (s *Server) TCPAddr() net.Addr { return s.listenerAddr(&s.tcp) }

// WSAddr is the address of the HTTP/websocket listener, nil when disabled.
func (s *Server) WSAddr() net.Addr { return s.listenerAddr(&s.ws) }

// MetricsAddr is the address of the -metrics-addr listener, nil when disabled.
func (s *Server) MetricsAddr() net.Addr { return s.listenerAddr(&s.metricsLn) }

// listenerAddr reads a listener under s.mu: with -etcd, the lock listeners
// are opened again at each election.
func (s *Server) listenerAddr(l *net.Listener) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return listenerAddr(*l)
}

func listenerAddr(l net.Listener) net.Addr {
	if l == nil {
		return nil
	}
	return l.Addr()
}

// Close stops accepting, ends every connection (orphaning their locks), stops
// the manager and removes the unix socket file.
func (s *Server) Close() error {
	if s.ha != nil {
		s.ha.Stop() // steps down first: from then on only this goroutine opens or closes
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if !s.started {
		s.mu.Unlock()
		return nil
	}
	s.closeHandshakes()
	s.mu.Unlock()

	s.closeListeners()
	s.answerWaiters(closeGrace)
	s.closeConns()
	s.wg.Wait()
	s.manager.send(request{kind: requestStop})
	<-s.manager.stopped
	s.manager.sec.authLog.stop()
	return nil
}

// connList is the connections, at the time of the call.
func (s *Server) connList() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// closeConns closes every client connection and waits until all have ended
// and answerWaiters' goroutines with them: at shutdown (Close) and at an HA
// step-down (haHooks.StepDown). The caller has closed the door first
// (s.closed or !s.lockOpen, set under s.mu): track refuses every
// connection from then on, so the set only shrinks, and connsWG is not
// added to while it is waited on.
func (s *Server) closeConns() {
	for _, c := range s.connList() {
		c.t.Close()
	}
	s.connsWG.Wait()
	s.answering.Wait()
}

// answerWaiters ends the pending waits of every connection (asynchronous
// ones too) as timeouts, as at the end of a client's input, and gives their
// replies up to grace to be written: a client waiting when the server stops
// learns that it did not get the lock before its connection closes. Most
// connections are idle, and what to wait for is taken from them at once. A
// connection busy writing to a client that does not read holds its mutex:
// it is waited on by a goroutine of its own, so that there are as many
// goroutines as busy connections, never past grace; closeConns, which must
// follow, ends those goroutines by closing the connections.
func (s *Server) answerWaiters(grace time.Duration) {
	conns := s.connList()
	for _, c := range conns {
		s.manager.send(request{kind: requestEndOfInput, conn: c.state})
	}
	var pending []chan struct{}
	busy := make(chan struct{}, len(conns))
	nbusy := 0
	for _, c := range conns {
		if !c.mu.TryLock() {
			nbusy++
			s.answering.Add(1)
			go func() {
				defer s.answering.Done()
				c.awaitAnswers()
				busy <- struct{}{}
			}()
			continue
		}
		pending = append(pending, c.answersLocked()...)
		c.mu.Unlock()
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for _, done := range pending {
		select {
		case <-done:
		case <-timer.C:
			return
		}
	}
	for range nbusy {
		select {
		case <-busy:
		case <-timer.C:
			return
		}
	}
}

// awaitAnswers waits until the connection's pending waits have been
// answered and their replies written, or the connection has ended.
func (c *conn) awaitAnswers() {
	c.mu.Lock()
	done := c.answersLocked()
	c.mu.Unlock()
	for _, d := range done {
		<-d
	}
}

// answersLocked ends a failed auth's delay and returns what closes once the
// connection's pending waits are answered: the exit of the goroutine of its
// gw or sgw (conn.awaiting), and of the one delivering the outcomes of its
// !gw and !sgw. Each closes when the connection ends too. c.mu is held.
func (c *conn) answersLocked() []chan struct{} {
	c.endAuthDelayLocked()
	var done []chan struct{}
	if d := c.awaiting.done(); d != nil {
		done = append(done, d)
	}
	if d := c.delivering.done(); d != nil {
		done = append(done, d)
	}
	return done
}

// haHooks are the Server's side of an HA node (internal/ha): the node
// reports its leadership through them.
type haHooks struct{ s *Server }

// Lead opens the lock listeners, unless they are open already for a term
// resumed after a hand-over.
func (h haHooks) Lead() error {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lockOpen {
		return nil
	}
	return s.openLockListeners()
}

// AnswerWaiters answers the waiters of a leader that stops, as a single
// node's Close does.
func (h haHooks) AnswerWaiters() { h.s.answerWaiters(closeGrace) }

// StepDown closes the lock listeners and every connection.
func (h haHooks) StepDown() bool { return h.s.closeLock() }

// closeLock closes the lock listeners and every connection, and waits until
// the connections have ended; it reports whether the listeners were open.
func (s *Server) closeLock() bool {
	s.mu.Lock()
	wasOpen := s.lockOpen
	s.lockOpen = false
	if wasOpen {
		s.closeLockListeners()
	}
	s.mu.Unlock()
	s.closeConns()
	return wasOpen
}

func (s *Server) closeListeners() {
	s.closeLockListeners()
	if s.metricsHTTP != nil {
		s.metricsHTTP.Close() // closes s.metricsLn too
	} else if s.metricsLn != nil {
		s.metricsLn.Close()
	}
}

// closeLockListeners closes the listeners that clients use; their
// connections go on.
func (s *Server) closeLockListeners() {
	if s.http != nil {
		s.http.Close() // closes s.ws too
	} else if s.ws != nil {
		s.ws.Close()
	}
	if s.tcp != nil {
		s.tcp.Close()
	}
	if s.unix != nil {
		s.unix.Close() // and removes the socket file
	}
	if s.sec.tlsLn != nil {
		s.sec.tlsLn.Close()
	}
}

// refusal is why a connection is turned away, or admitted.
type refusal uint8

const (
	admitted     refusal = iota
	refusedClose         // the server is closing, or a standby: closed without a word
	refusedFull          // -max-conns reached: told so, then closed
)

// track registers a new connection, unless the server is closing or full.
func (s *Server) track(c *conn) refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed, !s.lockOpen: // HA: lockOpen is false on a standby
		return refusedClose
	case s.up.paused(): // a hand-over has stopped everything (upgrade.go)
		return refusedClose
	}
	acl := s.cfg.Security.ACLFile != ""
	if acl {
		s.admitUnauth(func() bool { return s.live >= s.maxConns })
	}
	if s.live >= s.maxConns {
		return refusedFull
	}
	s.conns[c] = struct{}{}
	s.live++
	if acl {
		c.unauthElem = s.unauth.list.PushBack(c)
		c.listedUnauth = true
	}
	s.connsWG.Add(1)
	return admitted
}

// admit is how every transport's connection comes in: tracked, or refused
// (told why when it can be, without letting a client that does not read hold
// up the caller) and closed. An admitted connection must then be served by
// serveAdmitted.
func (s *Server) admit(c *conn) bool {
	switch s.track(c) {
	case admitted:
		return true
	case refusedFull:
		c.t.Refuse(wire.TooManyConns)
	default:
		c.t.Refuse("")
	}
	return false
}

// serveAdmitted serves an admitted connection to its end and forgets it
// (conn.finish; a TLS one may end on another goroutine, conn.serveInput).
func (s *Server) serveAdmitted(c *conn) {
	c.admitted = true
	if s.cfg.Security.ACLFile != "" {
		c.authDeadline = c.startAuthTimer()
	}
	c.serve()
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.forgetUnauth(c)
	if !c.evicted {
		s.live--
	}
	s.mu.Unlock()
	s.connsWG.Done()
}

// acceptLoop serves a stream listener until it is closed.
func (s *Server) acceptLoop(l net.Listener, transportName string) {
	defer s.wg.Done()
	unixSeq := s.up.unixSeqStart // after a hand-over, above the old process's
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, most likely: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.cfg.Logger.Warn("accept", "transport", transportName, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		name := nc.RemoteAddr().String()
		if transportName == "unix" {
			unixSeq++
			name = fmt.Sprintf("unix:%d", unixSeq)
		}
		if tc, ok := nc.(*transport.TLSConn); ok {
			s.startHandshake(tc) // admitted once it completes (tls.go)
			continue
		}
		c := newConn(s, name, transportName, transport.NewStream(nc, s.cfg.MaxLine, &s.readBuffers))
		if s.admit(c) {
			go s.serveAdmitted(c)
		}
	}
}
