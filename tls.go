package main

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/glockd/glockd/internal/transport"
)

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
