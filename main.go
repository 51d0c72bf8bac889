// Command glockd is a network lock daemon: named exclusive and counted shared
// locks over TCP, websocket and a unix socket, each released as soon as the
// server reads the end of the connection that took it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/handover"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options are the flags that do not end up in Config.
type options struct {
	args           []string      // the command line's, for a new binary on SIGUSR2
	upgradeTimeout time.Duration // -upgrade-timeout
	pidfile        string
	version        bool   // print the build and exit
	healthcheck    string // ask this URL and exit: 0 if it answered 200
}

// rawFlags are the flags parsed into something other than their final form:
// Config gets them from finishFlags.
type rawFlags struct {
	port, wsPort, tlsPort int
	bind, unixMode        string
	wsOrigins             string
	etcd                  string
	verbose               bool
	logFormat             string
}

func parseFlags(args []string, stderr io.Writer) (Config, options, error) {
	fs := flag.NewFlagSet("glockd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg  Config
		opts options
		raw  rawFlags
	)
	defineFlags(fs, &cfg, &opts, &raw)
	if err := fs.Parse(args); err != nil {
		return cfg, opts, err
	}
	if fs.NArg() > 0 {
		return cfg, opts, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	setFlags := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	err := finishFlags(&cfg, opts, raw, setFlags, stderr)
	return cfg, opts, err
}

// defineFlags registers every flag of the daemon on fs: those that end up in
// cfg or opts directly, and the rest in raw, for finishFlags.
func defineFlags(fs *flag.FlagSet, cfg *Config, opts *options, raw *rawFlags) {
	fs.IntVar(&raw.port, "port", 9999, "TCP port for the line protocol (0 disables)")
	fs.IntVar(&raw.wsPort, "ws", 9998, "HTTP port for websocket clients and the web console on /, and /metrics and /healthz (0 disables)")
	fs.StringVar(&raw.bind, "bind", "", "address to listen on for -port and -ws (default all interfaces)")
	fs.StringVar(&raw.unixMode, "unix-mode", "0666", "permissions of the -unix socket file, octal")
	fs.StringVar(&raw.wsOrigins, "ws-origin", "*", "comma-separated browser origins (scheme://host[:port]) allowed to open a websocket, or * for any")
	fs.BoolVar(&raw.verbose, "verbose", false, "log connects, disconnects, acquisitions, releases, waits and orphans, with each connection's registered name")
	fs.StringVar(&raw.logFormat, "log-format", "text", "log format: text or json (log/slog's handlers)")
	fs.BoolVar(&opts.version, "version", false, "print the version, VCS revision and Go version, and exit")
	fs.StringVar(&opts.healthcheck, "healthcheck", "", "GET this URL (e.g. http://127.0.0.1:9998/healthz) and exit 0 if it answers 200, 1 otherwise: a container's HEALTHCHECK")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "also serve /metrics and /healthz on this host:port (empty: only on -ws)")
	fs.StringVar(&cfg.UnixPath, "unix", "", "path of a unix socket for the line protocol (empty disables)")
	fs.StringVar(&opts.pidfile, "pidfile", "", "write the pid here and hold an exclusive flock on it (empty: none)")
	fs.DurationVar(&opts.upgradeTimeout, "upgrade-timeout", DefaultUpgradeTimeout, "on SIGUSR2, how long the new binary has to get ready and to confirm the hand-over before the old process gives up and goes on serving")
	fs.BoolVar(&cfg.Registry, "registry", true, "enable iam and who")
	fs.BoolVar(&cfg.Dump, "dump", true, "enable d, sd, dump, dl, dw and who")
	fs.IntVar(&cfg.MaxLine, "max-line", DefaultMaxLine, "longest command line in bytes; longer ones get \"0 Line Too Long\"")
	fs.IntVar(&cfg.MaxConns, "max-conns", DefaultMaxConns, "most live connections over all transports")
	fs.IntVar(&cfg.MaxHTTPConns, "max-http-conns", DefaultMaxHTTPConns, "most HTTP connections that are not websockets (console, /metrics, /healthz); over it the oldest idle one is closed")
	fs.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", DefaultHTTPIdleTimeout, "close an HTTP connection that sends no complete request for this long")
	fs.IntVar(&cfg.MaxLocksPerConn, "max-locks-per-conn", DefaultMaxLocksPerConn, "most locks (exclusive plus shared) one connection may hold")
	fs.IntVar(&cfg.MaxWaitsPerConn, "max-waits-per-conn", DefaultMaxWaitsPerConn, "most asynchronous waits (!gw, !sgw) one connection may have pending")
	fs.Int64Var(&cfg.MaxBuffered, "max-buffered", 0, "bytes held for all connections together (queued lines, partial messages, grown read buffers, pending replies); past it the connection asking for more is closed (0: a quarter of RAM or of the cgroup's memory limit)")
	fs.Var(&cfg.Deadlocks, "deadlocks", "a wait that closes a cycle of waiters: break (refuse it with a Deadlock reply) or report (only log and count it)")
	fs.DurationVar(&cfg.KeepAlive.Idle, "keepalive-idle", 15*time.Second, "TCP keepalive: idle time before the first probe")
	fs.DurationVar(&cfg.KeepAlive.Interval, "keepalive-interval", 5*time.Second, "TCP keepalive: time between probes")
	fs.IntVar(&cfg.KeepAlive.Count, "keepalive-count", 3, "TCP keepalive: unanswered probes before the peer is declared dead")
	fs.DurationVar(&cfg.UserTimeout, "user-timeout", 0, "TCP_USER_TIMEOUT: how long sent data may stay unacknowledged (default keepalive-idle + keepalive-interval × keepalive-count; 0: the system's)")
	// TLS, identities, kill (security.go, docs/security.md).
	sc := &cfg.Security
	fs.IntVar(&raw.tlsPort, "tls-port", 0, "TCP port for the line protocol over TLS (0 disables; needs -tls-cert and -tls-key)")
	fs.StringVar(&sc.CertFile, "tls-cert", "", "PEM certificate chain of the server, for -tls-port and -ws-tls (reloaded on SIGHUP)")
	fs.StringVar(&sc.KeyFile, "tls-key", "", "PEM private key of -tls-cert")
	fs.BoolVar(&sc.WSTLS, "ws-tls", false, "serve HTTPS and WSS on the -ws port: console, websocket, /metrics, /healthz")
	fs.StringVar(&sc.ClientCAFile, "tls-client-ca", "", "PEM CA certificates: require client certificates they signed (mutual TLS); a certificate's first DNS name, else its CN, is the client's identity")
	fs.StringVar(&sc.ACLFile, "acl-file", "", "identities and their permissions (see docs/security.md); clients must then auth (reloaded on SIGHUP)")
	fs.BoolVar(&sc.Admin, "admin", false, "without -acl-file: allow kill and kill-holder on the -unix socket (never over the network)")
	fs.DurationVar(&sc.AuthFailureDelay, "auth-failure-delay", DefaultAuthFailureDelay, "delay before answering a wrong auth token")
	fs.DurationVar(&sc.AuthTimeout, "auth-timeout", DefaultAuthTimeout, "with -acl-file: close a connection that has not authenticated within this long")
	fs.IntVar(&sc.MaxUnauthConns, "max-unauth-conns", 0, "with -acl-file: most connections not yet authenticated; a new one closes the oldest (default a quarter of -max-conns)")
	// High availability through etcd (internal/ha, docs/ha.md).
	cfg.HA = &ha.Config{}
	fs.StringVar(&raw.etcd, "etcd", "", "comma-separated etcd endpoints: run as one node of an active/standby group (empty: a single node)")
	fs.StringVar(&cfg.HA.Prefix, "etcd-prefix", ha.DefaultEtcdPrefix, "etcd key prefix of this group of nodes")
	fs.DurationVar(&cfg.HA.LeaseTTL, "lease-ttl", ha.DefaultLeaseTTL, "etcd lease TTL, whole seconds: a dead leader is replaced after about this long plus -takeover-delay")
	fs.DurationVar(&cfg.HA.TakeoverDelay, "takeover-delay", ha.DefaultTakeoverDelay, "how long a newly elected leader waits before serving; keep clients' session timeout below it")
	fs.StringVar(&cfg.HA.Advertise, "advertise", "", "host:port clients should use to reach this node, shown by standbys' /healthz (default: the -port listener's address)")
	fs.StringVar(&cfg.HA.CertFile, "etcd-cert", "", "client certificate for etcd, PEM")
	fs.StringVar(&cfg.HA.KeyFile, "etcd-key", "", "key of -etcd-cert, PEM")
	fs.StringVar(&cfg.HA.CAFile, "etcd-ca", "", "CA certificates that sign etcd's, PEM (default: the system's)")
}

// finishFlags checks the parsed flags and completes cfg from them; setFlags
// names the flags given on the command line.
func finishFlags(cfg *Config, opts options, raw rawFlags, setFlags map[string]bool, stderr io.Writer) error {
	mode, err := strconv.ParseUint(raw.unixMode, 8, 32)
	if err != nil || mode > 0o777 {
		return fmt.Errorf("-unix-mode %q: want octal permissions like 0660", raw.unixMode)
	}
	cfg.UnixMode = os.FileMode(mode)
	if err := checkLimits(*cfg, opts); err != nil {
		return err
	}
	if err := finishAddrs(cfg, raw); err != nil {
		return err
	}
	for _, o := range strings.Split(raw.wsOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			if err := checkOriginSyntax(o); err != nil {
				return err
			}
			cfg.WSOrigins = append(cfg.WSOrigins, o)
		}
	}
	if cfg.TCPAddr == "" && cfg.WSAddr == "" && cfg.UnixPath == "" && cfg.Security.TLSAddr == "" {
		return errors.New("nothing to serve: -port 0 and -ws 0 without -unix or -tls-port")
	}
	cfg.KeepAlive.Enable = true
	// Linux applies TCP_USER_TIMEOUT to keepalive too, in place of the probe
	// count: a fixed default would override shorter keepalive settings.
	if !setFlags["user-timeout"] {
		ka := cfg.KeepAlive
		cfg.UserTimeout = ka.Idle + ka.Interval*time.Duration(ka.Count)
	}
	if cfg.HA, err = cfg.HA.Finish(raw.etcd, setFlags, cfg.MetricsAddr, cfg.TCPAddr); err != nil {
		return err
	}
	cfg.Verbose = raw.verbose
	switch raw.logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(stderr, nil))
	default:
		return fmt.Errorf("-log-format %q: want text or json", raw.logFormat)
	}
	return nil
}

// checkLimits refuses a limit of zero or less: that is a slip, not a wish
// for the default.
func checkLimits(cfg Config, opts options) error {
	for _, limit := range []struct {
		flag  string
		value int64
	}{
		{"max-line", int64(cfg.MaxLine)},
		{"max-conns", int64(cfg.MaxConns)},
		{"max-locks-per-conn", int64(cfg.MaxLocksPerConn)},
		{"max-waits-per-conn", int64(cfg.MaxWaitsPerConn)},
		{"max-http-conns", int64(cfg.MaxHTTPConns)},
		{"http-idle-timeout", int64(cfg.HTTPIdleTimeout)},
		{"upgrade-timeout", int64(opts.upgradeTimeout)},
	} {
		if limit.value <= 0 {
			return fmt.Errorf("-%s must be positive", limit.flag)
		}
	}
	sc := cfg.Security
	if sc.AuthTimeout <= 0 {
		return errors.New("-auth-timeout must be positive")
	}
	if sc.MaxUnauthConns < 0 {
		return errors.New("-max-unauth-conns must not be negative")
	}
	return nil
}

// finishAddrs turns the port flags and -bind into the listeners' addresses.
func finishAddrs(cfg *Config, raw rawFlags) error {
	for _, p := range []int{raw.port, raw.wsPort} {
		if p < 0 || p > 65535 {
			return fmt.Errorf("port %d out of range", p)
		}
	}
	if raw.tlsPort < 0 || raw.tlsPort > 65535 {
		return fmt.Errorf("-tls-port %d out of range", raw.tlsPort)
	}
	if raw.port != 0 {
		cfg.TCPAddr = net.JoinHostPort(raw.bind, strconv.Itoa(raw.port))
	}
	if raw.wsPort != 0 {
		cfg.WSAddr = net.JoinHostPort(raw.bind, strconv.Itoa(raw.wsPort))
	}
	if raw.tlsPort != 0 {
		cfg.Security.TLSAddr = net.JoinHostPort(raw.bind, strconv.Itoa(raw.tlsPort))
	}
	return nil
}

// run is main without the exit, so that tests can drive it.
func run(args []string, stderr io.Writer) int {
	return runTo(args, os.Stdout, stderr)
}

// runTo is run with the standard output too (-version writes there).
func runTo(args []string, stdout, stderr io.Writer) int {
	cfg, opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "glockd:", err)
		return 2
	}
	opts.args = args
	switch {
	case opts.version:
		fmt.Fprint(stdout, readBuildInfo())
		return 0
	case opts.healthcheck != "":
		if err := healthcheck(opts.healthcheck); err != nil {
			fmt.Fprintln(stderr, "glockd: healthcheck:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, opts); err != nil {
		fmt.Fprintln(stderr, "glockd:", err)
		return 1
	}
	return 0
}

// serve runs a server until ctx is done, holding the pidfile meanwhile, or
// until it hands over to a new binary on SIGUSR2 (upgrade.go). Started for a
// hand-over, it first takes over from the old process.
func serve(ctx context.Context, cfg Config, opts options) error {
	hangups := notifyHangup() // SIGHUP reloads (security.go)
	defer signal.Stop(hangups)
	upgrades := make(chan os.Signal, 1)
	signal.Notify(upgrades, syscall.SIGUSR2)
	defer signal.Stop(upgrades)
	var h *handover.Heir
	var ph *phases // the steps of a take-over, for its log line
	gcOn := func() {}
	if fd, ok := os.LookupEnv(handover.Env); ok {
		os.Unsetenv(handover.Env)
		// No garbage collection until the server is built and serves:
		// the heap grows from nothing to the whole state (its encoding,
		// the decoded state, then the tables: about 150 bytes a lock),
		// which would take a collection at each doubling, all of them in
		// the pause. GOMEMLIMIT still holds.
		gcOn = collectorOff()
		defer gcOn()
		var err error
		if h, err = handover.Receive(fd, readBuildInfo().Version); err != nil {
			return fmt.Errorf("upgrade: %w", err)
		}
		ph = newPhases(h.Received)
		ph.mark("decode")
	}
	var pf *pidfile
	handedOver := false
	defer func() {
		if pf != nil && !handedOver {
			pf.remove()
		}
	}()
	if opts.pidfile != "" && h == nil {
		var err error
		if pf, err = lockPidfile(opts.pidfile); err != nil {
			return err
		}
	}
	checkFileLimit(cfg)
	srv, err := NewServer(cfg)
	if err != nil {
		if h != nil {
			h.Fail(err)
		}
		return err
	}
	if h != nil {
		if pf, err = adoptHandover(srv, h, ph, opts.pidfile); err != nil {
			return err
		}
	}
	if err := srv.Start(); err != nil {
		return err
	}
	if h != nil {
		ph.mark("start")
		gcOn()
	}
	logStarted(cfg, srv, h, ph)
	req := handoverRequest{args: opts.args, timeout: opts.upgradeTimeout, pauseGC: true}
	if pf != nil {
		req.pidfile = pf.f
	}
	if handedOver = serveSignals(ctx, srv, hangups, upgrades, req); handedOver {
		return nil // the new process serves everything: touch nothing
	}
	cfg.Logger.Info("glockd shutting down")
	return srv.Close()
}

// adoptHandover builds srv, before it starts, from the hand-over h,
// confirms to the old process and takes its go; it returns the pidfile the
// old process passed on (with this process's pid written in it), if any.
func adoptHandover(srv *Server, h *handover.Heir, ph *phases, path string) (*pidfile, error) {
	ph.mark("new_server")
	pidFile := h.TakePidfile()
	if err := srv.adopt(h, ph); err != nil {
		h.Fail(err)
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	goMsg, at, err := h.Confirm()
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err) // the old process serves on
	}
	ph.mark("confirm_go")
	srv.startResumed(goMsg, at)
	if pidFile == nil {
		return nil, nil
	}
	return &pidfile{f: pidFile, path: path}, nil
}

// logStarted says how the server started: taking over from an old process
// (h), as a standby of an -etcd group, or listening.
func logStarted(cfg Config, srv *Server, h *handover.Heir, ph *phases) {
	build := srv.build.logAttrs()
	switch {
	case h != nil:
		cfg.Logger.Info("glockd took over from the old process", append(append(build, "pause", time.Since(h.PauseStart), "received", h.Received.Sub(h.PauseStart).Round(time.Microsecond), "connections", len(h.State.Conns), "locks", len(h.State.Locks), "shared_holds", len(h.State.Shared), "waiters", len(h.State.Waiters)), ph.attrs...)...)
	case cfg.HA != nil: // the lock listeners open when it is elected
		cfg.Logger.Info("glockd started as a standby", append(build, "etcd", strings.Join(cfg.HA.Endpoints, ","), "advertise", cfg.HA.Advertise, "metrics", addrString(srv.MetricsAddr()))...)
	default:
		cfg.Logger.Info("glockd listening", append(build, "tcp", addrString(srv.TCPAddr()), "tls", addrString(srv.TLSAddr()), "websocket", addrString(srv.WSAddr()), "websocket_tls", cfg.Security.WSTLS, "unix", cfg.UnixPath, "metrics", addrString(srv.MetricsAddr()))...)
	}
}

// serveSignals reloads on SIGHUP and hands over to a new binary on SIGUSR2,
// until ctx is done or a hand-over succeeds, which it reports.
func serveSignals(ctx context.Context, srv *Server, hup, usr2 <-chan os.Signal, req handoverRequest) bool {
	log := srv.cfg.Logger
	var result chan error // non-nil while a hand-over is under way
	// A SIGHUP during a hand-over is put off until its end: the manager
	// may be frozen for it, and a reload waiting for the manager would then
	// wait for ever once the hand-over succeeds, and this process would
	// never exit. It is applied here if the hand-over fails, and passed on
	// to the new process (which handles SIGHUP before it confirms) if it
	// succeeds.
	reloadAfter := false
	for {
		select {
		case <-ctx.Done():
			if result != nil { // let it finish: it may already have handed over
				handed := <-result == nil
				if handed && reloadAfter {
					srv.up.passHangup(log)
				}
				return handed
			}
			return false
		case <-hup:
			if result != nil {
				log.Info("SIGHUP during a hand-over: reloading after it")
				reloadAfter = true
				continue
			}
			log.Info("SIGHUP: reloading")
			srv.Reload()
		case <-usr2:
			if result != nil {
				srv.up.handovers.WithLabelValues("refused").Inc()
				log.Warn("SIGUSR2 refused: a hand-over is under way")
				continue
			}
			exe, err := os.Executable()
			if err != nil {
				log.Error("SIGUSR2: cannot find the executable; still serving", "err", err)
				continue
			}
			log.Info("SIGUSR2: handing over to a new binary", "path", exe)
			r := req
			r.exe = exe
			result = make(chan error, 1)
			go func() { result <- srv.Upgrade(r) }()
		case err := <-result:
			result = nil
			if err == nil {
				if reloadAfter {
					srv.up.passHangup(log)
				}
				return true
			}
			log.Error("upgrade failed; still serving", "err", err)
			if reloadAfter {
				reloadAfter = false
				log.Info("SIGHUP: reloading")
				srv.Reload()
			}
		}
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// fdReserve is what the daemon needs besides its connections' descriptors:
// listeners, the pidfile, standard streams, the runtime's poller, a margin
// for connections being refused.
const fdReserve = 64

// checkFileLimit makes sure the process may open enough files for its
// connection limits, every connection being one descriptor: it raises the
// soft RLIMIT_NOFILE to the hard one when the soft one is too low (Go's
// runtime already does so at start on most systems, but not everywhere),
// and warns when even that is not enough, since the daemon would then run
// out of descriptors before -max-conns and refuse lock clients at random.
func checkFileLimit(cfg Config) {
	need := uint64(cfg.MaxConns) + uint64(cfg.MaxHTTPConns) + fdReserve
	limit, err := raiseFileLimit(need)
	if err != nil {
		cfg.Logger.Warn("cannot raise the limit on open files", "err", err)
	}
	if limit > 0 && limit < need {
		allowed := int64(limit) - int64(cfg.MaxHTTPConns) - fdReserve
		cfg.Logger.Warn("-max-conns is above what the file descriptor limit (RLIMIT_NOFILE) allows: connections are capped at conns_allowed (glockd_max_connections); raise the limit or lower -max-conns",
			"max_conns", cfg.MaxConns, "max_http_conns", cfg.MaxHTTPConns, "nofile", limit, "conns_allowed", max(allowed, 1))
	}
}

// raiseFileLimit raises the soft limit on open files to the hard one when it
// is below need, and returns the soft limit in force (0 if unknown).
func raiseFileLimit(need uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur >= need || rl.Cur >= rl.Max {
		return rl.Cur, nil
	}
	raised := rl
	raised.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		return rl.Cur, err
	}
	return raised.Cur, nil
}

// pidfile is a file holding our pid, flock'ed for as long as we run, so that a
// second daemon with the same pidfile refuses to start.
type pidfile struct {
	f    *os.File
	path string
}

func lockPidfile(path string) (*pidfile, error) {
	// O_NOFOLLOW: a link planted at the path by whoever can write its
	// directory would have the daemon truncate any file, or create one.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("pidfile %s is a symbolic link: refusing to follow it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfile: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("pidfile %s is not a regular file", path)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			owner := make([]byte, 32)
			n, _ := f.ReadAt(owner, 0)
			return nil, fmt.Errorf("pidfile %s is locked: another glockd (pid %s) is running", path, strings.TrimSpace(string(owner[:n])))
		}
		return nil, fmt.Errorf("pidfile %s: flock: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfile: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfile: %w", err)
	}
	return &pidfile{f: f, path: path}, nil
}

// remove deletes the file while still holding the lock, so that no other
// daemon can lock the path in between and lose its file to us.
func (p *pidfile) remove() {
	os.Remove(p.path)
	p.f.Close()
}

// healthcheckTimeout bounds glockd -healthcheck: a container runtime kills
// a check that hangs, but reports a clearer failure when it ends itself.
const healthcheckTimeout = 5 * time.Second

// healthcheck asks url (GET) and returns nil if it answered 200 OK. It lets
// an image with no shell and no curl (distroless) declare a HEALTHCHECK
// that runs the daemon's own binary against /healthz.
func healthcheck(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
