package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
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
	// all (authlimit.go); 0 means the defaults.
	AuthFailuresPerAddr, AuthFailuresPerSecond float64

	HandshakeTimeout time.Duration // 0 means DefaultHandshakeTimeout
	MaxHandshakes    int           // TLS handshakes under way at once; 0 means DefaultMaxHandshakes

	// With ACLFile, a connection that has not authenticated within
	// AuthTimeout is closed (0 means DefaultAuthTimeout), and at most
	// MaxUnauthConns are unauthenticated at once (0 means a quarter of
	// MaxConns); see unauth.go.
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
	if sc.AuthFailureDelay <= 0 {
		sc.AuthFailureDelay = DefaultAuthFailureDelay
	}
	if sc.HandshakeTimeout <= 0 {
		sc.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if sc.MaxHandshakes <= 0 {
		sc.MaxHandshakes = DefaultMaxHandshakes
	}
	if sc.AuthTimeout <= 0 {
		sc.AuthTimeout = DefaultAuthTimeout
	}
	if sc.AuthFailuresPerAddr <= 0 {
		sc.AuthFailuresPerAddr = DefaultAuthFailuresPerAddr
	}
	if sc.AuthFailuresPerSecond <= 0 {
		sc.AuthFailuresPerSecond = DefaultAuthFailuresPerSecond
	}
	if sc.KillBound <= 0 {
		sc.KillBound = DefaultKillBound
	}
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
