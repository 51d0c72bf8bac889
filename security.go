package main

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/acl"
	"github.com/glockd/glockd/internal/transport"
)

// SecurityConfig turns on TLS, client identities with per-name permissions
// and the operator's kill (docs/security.md). Its zero value turns on
// nothing: the server then behaves as one without these features.
type SecurityConfig struct {
	TLSAddr string // the line protocol over TLS, "host:port"; "" disables
	WSTLS   bool   // the WSAddr listener speaks HTTPS and WSS

	CertFile, KeyFile string // the server's certificate chain and key, PEM
	ClientCAFile      string // require client certificates signed by these CAs (PEM)

	ACLFile string // identities and their permissions; "" disables access control
	Admin   bool   // without ACLFile: allow kill and kill-holder on the unix socket

	AuthFailureDelay time.Duration // before "0 Auth Failure"; 0 means DefaultAuthFailureDelay
	// Failed auths allowed per second from one source address, and in
	// all (auth.go); 0 means the defaults.
	AuthFailuresPerAddr, AuthFailuresPerSecond float64

	HandshakeTimeout time.Duration // 0 means DefaultHandshakeTimeout
	MaxHandshakes    int           // TLS handshakes under way at once; 0 means DefaultMaxHandshakes

	// With ACLFile, a connection that has not authenticated within
	// AuthTimeout is closed (0 means DefaultAuthTimeout), and at most
	// MaxUnauthConns are unauthenticated at once (0 means a quarter of
	// MaxConns); see auth.go.
	AuthTimeout    time.Duration
	MaxUnauthConns int

	// KillBound is how long kill and kill-holder wait for the victim's
	// locks to be released before answering that the release is still
	// pending (admin.go); 0 means DefaultKillBound.
	KillBound time.Duration
}

// DefaultAuthFailureDelay slows a guesser down to one guess a second per
// connection.
const DefaultAuthFailureDelay = time.Second

func (sc SecurityConfig) withDefaults() SecurityConfig {
	positiveOr(&sc.AuthFailureDelay, DefaultAuthFailureDelay)
	positiveOr(&sc.HandshakeTimeout, DefaultHandshakeTimeout)
	positiveOr(&sc.MaxHandshakes, DefaultMaxHandshakes)
	positiveOr(&sc.AuthTimeout, DefaultAuthTimeout)
	positiveOr(&sc.AuthFailuresPerAddr, DefaultAuthFailuresPerAddr)
	positiveOr(&sc.AuthFailuresPerSecond, DefaultAuthFailuresPerSecond)
	positiveOr(&sc.KillBound, DefaultKillBound)
	return sc
}

// check rejects settings that would not do what the operator meant.
func (sc SecurityConfig) check(cfg Config) error {
	usesCert := sc.TLSAddr != "" || sc.WSTLS
	switch {
	case usesCert && (sc.CertFile == "" || sc.KeyFile == ""):
		return errNoCertificate
	case !usesCert && (sc.CertFile != "" || sc.KeyFile != "" || sc.ClientCAFile != ""):
		return errors.New("-tls-cert, -tls-key and -tls-client-ca need -tls-port or -ws-tls to serve TLS on")
	case sc.WSTLS && cfg.WSAddr == "":
		return errors.New("-ws-tls needs the -ws port")
	case sc.Admin && sc.ACLFile != "":
		return errors.New("-admin is for servers without -acl-file: give an identity the admin permission instead")
	case sc.Admin && cfg.UnixPath == "":
		return errors.New("-admin allows kill only on the unix socket: it needs -unix")
	}
	return nil
}

// serverSecurity is a Server's TLS state.
type serverSecurity struct {
	tls        *tlsStore    // nil without TLS
	tlsLn      net.Listener // -tls-port
	handshakes pendingHandshakes
}

// newSecurity checks cfg's security settings and loads their files.
func newSecurity(cfg Config) (serverSecurity, *acl.List, error) {
	var sec serverSecurity
	sc := cfg.Security
	if err := sc.check(cfg); err != nil {
		return sec, nil, err
	}
	if sc.CertFile != "" {
		st, err := newTLSStore(sc)
		if err != nil {
			return sec, nil, err
		}
		sec.tls = st
	}
	sec.handshakes.max = sc.MaxHandshakes
	var list *acl.List
	if sc.ACLFile != "" {
		var err error
		if list, err = acl.Load(sc.ACLFile); err != nil {
			return sec, nil, fmt.Errorf("acl file: %w", err)
		}
	}
	return sec, list, nil
}

// listenSecure opens the TLS listener and puts the websocket one under TLS.
// Called by Start with s.mu held.
func (s *Server) listenSecure(lc *net.ListenConfig) error {
	if s.sec.tls == nil {
		return nil
	}
	if s.cfg.Security.WSTLS {
		s.ws = tls.NewListener(s.ws, s.sec.tls.config(true))
	}
	if addr := s.cfg.Security.TLSAddr; addr != "" {
		ln, err := s.listen(lc, "tls", addr)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		s.sec.tlsLn = transport.NewTLSListener(ln, s.sec.tls.config(false))
	}
	return nil
}

// TLSAddr is the address of the -tls-port listener, nil when disabled.
func (s *Server) TLSAddr() net.Addr { return s.listenerAddr(&s.sec.tlsLn) }

// Reload reads the TLS certificate, key and client CA, and the ACL file,
// again. Connections are not touched, except those whose identity the new
// ACL file no longer has (see manager.setACL). A file that fails to load
// keeps the one in use; the error says why.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("glockd: server closed")
	}
	log := s.cfg.Logger
	var errs []error
	if st := s.sec.tls; st != nil {
		if err := st.reload(); err != nil {
			errs = append(errs, err)
		} else if leaf := st.current.Load().leaf; leaf != nil {
			log.Info("tls certificate reloaded", "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
		}
	}
	if path := s.cfg.Security.ACLFile; path != "" {
		list, err := acl.Load(path)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("acl file: %w", err))
		case s.started:
			s.manager.call(func(m *manager) { m.setACL(list) })
			log.Info("acl file reloaded", "identities", list.Len())
		default:
			s.manager.sec.acl = list // the manager does not run yet
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		log.Error("reload failed: keeping what was in use", "err", err)
	}
	return err
}

// notifyHangup routes SIGHUP to a channel, so that it reloads instead of
// killing the daemon.
func notifyHangup() chan os.Signal {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	return hup
}

// tlsMaterial is one loading of the certificate, its key and the client CA,
// with the configurations made from them. It is never changed: a reload
// makes a new one and swaps it in, so a handshake sees the old or the new,
// never a mix, and connections already made are not touched.
type tlsMaterial struct {
	stream *tls.Config // the line protocol
	http   *tls.Config // HTTPS/WSS: HTTP/1.1 only (the websocket upgrade needs it)
	leaf   *x509.Certificate
}

// tlsStore holds the current material for every listener that speaks TLS.
type tlsStore struct {
	certFile, keyFile, clientCAFile string
	current                         atomic.Pointer[tlsMaterial]
}

func newTLSStore(sc SecurityConfig) (*tlsStore, error) {
	st := &tlsStore{certFile: sc.CertFile, keyFile: sc.KeyFile, clientCAFile: sc.ClientCAFile}
	if err := st.reload(); err != nil {
		return nil, err
	}
	return st, nil
}

// reload loads the files again; on an error the current material stays.
func (st *tlsStore) reload() error {
	cert, err := tls.LoadX509KeyPair(st.certFile, st.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	base := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if st.clientCAFile != "" {
		pem, err := os.ReadFile(st.clientCAFile)
		if err != nil {
			return fmt.Errorf("tls client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls client CA: %s holds no PEM certificate", st.clientCAFile)
		}
		base.ClientCAs = pool
		base.ClientAuth = tls.RequireAndVerifyClientCert
	}
	http := base.Clone()
	http.NextProtos = []string{"http/1.1"}
	st.current.Store(&tlsMaterial{stream: base, http: http, leaf: cert.Leaf})
	return nil
}

// config is what a listener hands crypto/tls: each handshake picks up the
// current material, so a reload applies to the next handshake.
func (st *tlsStore) config(forHTTP bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := st.current.Load()
			if forHTTP {
				return m.http, nil
			}
			return m.stream, nil
		},
	}
}

// DefaultHandshakeTimeout bounds a TLS handshake: a client that connects and
// sends nothing must not hold a goroutine and a handshake slot for long.
const DefaultHandshakeTimeout = 5 * time.Second

// DefaultMaxHandshakes is how many TLS handshakes of line-protocol
// connections may be under way at once (0 in SecurityConfig.MaxHandshakes).
const DefaultMaxHandshakes = 1024

// pendingHandshakes are the TLS handshakes under way, oldest first, guarded
// by Server.mu. They are not connections yet: they do not count against
// -max-conns, but against a budget of their own, in which a new handshake
// closes the oldest to make room, so that clients that connect and send
// nothing never keep out one that completes its handshake, nor any client
// of another transport.
type pendingHandshakes struct {
	max  int
	list list.List // of *transport.TLSConn
}

// startHandshake makes the TLS handshake of a connection the TLS listener
// accepted, on a goroutine of its own, and then admits and serves it as any
// other connection.
func (s *Server) startHandshake(tc *transport.TLSConn) {
	s.mu.Lock()
	if s.closed || !s.lockOpen {
		s.mu.Unlock()
		tc.Abandon()
		return
	}
	p := &s.sec.handshakes
	for p.list.Len() >= p.max {
		p.list.Remove(p.list.Front()).(*transport.TLSConn).Abandon()
		s.metrics.tlsHandshakesEvicted.Inc()
	}
	pending := p.list.PushBack(tc) // its place among the handshakes under way
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		certName, ok := s.handshake(tc)
		s.mu.Lock()
		p.list.Remove(pending) // unless evicted: then it is not in the list
		s.mu.Unlock()
		if !ok {
			return
		}
		c := newConn(s, tc.RemoteAddr().String(), "tls", transport.NewStream(tc, s.cfg.MaxLine, &s.readBuffers))
		c.state.certName = certName
		if s.admit(c) {
			// On a fresh goroutine: the handshake grew this one's
			// stack (see TLSConn.waitInput).
			tc.MarkFresh()
			go s.serveAdmitted(c)
		}
	}()
}

// closeHandshakes aborts the handshakes under way, at shutdown. Called with
// s.mu held.
func (s *Server) closeHandshakes() {
	for e := s.sec.handshakes.list.Front(); e != nil; e = e.Next() {
		e.Value.(*transport.TLSConn).Abandon()
	}
}

// handshake completes the TLS handshake of a line-protocol connection before
// it is admitted, and returns the client certificate's identity. One whose
// handshake fails is closed.
func (s *Server) handshake(tc *transport.TLSConn) (certName string, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Security.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.metrics.tlsHandshakeFailures.Inc()
		if s.cfg.Verbose {
			s.cfg.Logger.Info("tls handshake failed", "conn", tc.RemoteAddr().String(), "err", err)
		}
		tc.Close()
		return "", false
	}
	return peerName(tc.ConnectionState()), true
}

// peerName is the identity of a verified client certificate: its first DNS
// name, else its common name; "" when the client sent none.
func peerName(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return ""
	}
	leaf := cs.PeerCertificates[0]
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames[0]
	}
	return leaf.Subject.CommonName
}

// errNoCertificate: a TLS listener without -tls-cert.
var errNoCertificate = errors.New("-tls-port and -ws-tls need -tls-cert and -tls-key")
