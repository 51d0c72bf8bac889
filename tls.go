package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
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

// tlsConn is a line-protocol connection over TLS. The stream transport reads
// and writes it through the net.Conn methods: a *tls.Conn has no file
// descriptor of its own for the raw-syscall path.
type tlsConn struct {
	*tls.Conn
	raw net.Conn
}

// Close sends close_notify, but does not let a client that does not read
// hold it up: crypto/tls would wait up to 5 s for the alert to be written.
func (c *tlsConn) Close() error {
	t := time.AfterFunc(closeGrace, func() { c.raw.Close() })
	defer t.Stop()
	return c.Conn.Close()
}

// tlsListener wraps accepted TCP connections in TLS. The handshake happens
// on the connection's own goroutine (see Server.handshake), never in the
// accept loop.
type tlsListener struct {
	net.Listener
	config *tls.Config
}

func (l *tlsListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tlsConn{Conn: tls.Server(nc, l.config), raw: nc}, nil
}

// DefaultHandshakeTimeout bounds a TLS handshake: a client that connects and
// sends nothing must not hold a goroutine and a connection slot for ever.
const DefaultHandshakeTimeout = 10 * time.Second

// handshake completes the TLS handshake of a line-protocol connection before
// it is served, and notes the client certificate's identity. A connection
// that is not TLS passes at once; one whose handshake fails is closed.
func (s *Server) handshake(c *conn, nc net.Conn) bool {
	tc, ok := nc.(*tlsConn)
	if !ok {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Security.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.metrics.tlsHandshakeFailures.Inc()
		if s.cfg.Verbose {
			s.cfg.Logger.Info("tls handshake failed", "conn", c.state.name, "err", err)
		}
		tc.Close()
		return false
	}
	c.state.certName = peerName(tc.ConnectionState())
	return true
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
