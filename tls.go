package main

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
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
// descriptor of its own for the raw-syscall path. What makes an idle one
// cheap is waitInput (see recordReader).
type tlsConn struct {
	*tls.Conn
	raw    net.Conn
	reader *recordReader // nil when raw has no file descriptor
	// full: the last Read filled its buffer, so crypto/tls may hold more
	// of the record it decrypted.
	full bool
	// fresh: the goroutine reading it has not used crypto/tls since it
	// started (see waitInput). Both are the reader goroutine's own.
	fresh bool
	// killed is set by a kill (abortFunc) before its deadline: waitInput,
	// which sets and clears read deadlines, must not undo one.
	killed atomic.Bool
	// pending, guarded by Server.mu, is its place among the handshakes
	// under way; nil once its handshake is over (or it was closed).
	pending *list.Element
}

func (c *tlsConn) Read(p []byte) (int, error) {
	c.fresh = false
	n, err := c.Conn.Read(p)
	c.full = n == len(p)
	return n, err
}

// waitInput returns once there is input to read, without a buffer and
// outside crypto/tls. It returns at once when input may be buffered already.
//
// crypto/tls's read and write paths grow the goroutine's stack to 8 KiB, and
// the runtime shrinks an idle goroutine's stack to 4 KiB, not to the 2 KiB
// it starts with (it halves a stack only while under a quarter of it is in
// use, and the frames parked here use more than a quarter of 2 KiB). So a
// goroutine that has used crypto/tls waits at most tlsRest here, and then
// returns errRest: conn.serveInput goes on on a fresh goroutine, whose wait
// has no deadline, and the old one, with its stack, ends. A connection that
// is busy pays two deadline changes per wait, one that is idle a goroutine
// start per tlsRest of idleness at most.
func (c *tlsConn) waitInput() error {
	if c.reader == nil || c.full || c.reader.buffered() {
		return nil
	}
	if c.fresh {
		return c.reader.fill()
	}
	c.raw.SetReadDeadline(time.Now().Add(tlsRest))
	err := c.reader.fill()
	c.raw.SetReadDeadline(time.Time{})
	if c.killed.Load() {
		// A kill set its deadline, maybe before the line above cleared
		// it: the connection ends.
		return os.ErrDeadlineExceeded
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.fresh = true
		return errRest
	}
	return err
}

// tlsRest is how long a TLS connection's goroutine waits for input after
// using crypto/tls before a fresh one takes over the wait (waitInput).
const tlsRest = time.Second

// errRest: the connection goes on on a fresh goroutine (tlsConn.waitInput).
var errRest = errors.New("tls connection at rest")

// waitForInput is waitInput for the stream transport's connections without
// a file descriptor: TLS ones wait there, any other reads at once.
func waitForInput(nc net.Conn) error {
	if c, ok := nc.(*tlsConn); ok {
		return c.waitInput()
	}
	return nil
}

// recordReader is the TCP connection under a TLS one. It reads the socket
// only once input has arrived, into a pooled buffer that it gives back when
// empty, and hands crypto/tls at most the rest of one TLS record per Read:
// crypto/tls then never holds input beyond the record it is decrypting
// (its own buffer would hide it from waitInput), and whatever else has
// arrived stays here, where buffered sees it.
type recordReader struct {
	net.Conn
	rc         syscall.RawConn
	pool       *sync.Pool // of *[recordBuffer]byte
	buf        []byte     // nil when empty
	start, end int
	onReadable func(fd uintptr) bool // readReady, bound once
	readN      int
	readErr    syscall.Errno

	// Where the stream is in its records: header bytes handed over (0-5)
	// and, once all 5 are, body bytes still to hand over.
	header   [5]byte
	inHeader int
	bodyLeft int
}

// recordBuffer holds a whole TLS record (16 KiB of data and its overhead).
const recordBuffer = 16<<10 + 512

func newRecordReader(nc net.Conn, pool *sync.Pool) *recordReader {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &recordReader{Conn: nc, rc: rc, pool: pool}
	r.onReadable = r.readReady
	return r
}

func (r *recordReader) buffered() bool { return r.start < r.end }

func (r *recordReader) Read(p []byte) (int, error) {
	if !r.buffered() {
		if err := r.fill(); err != nil {
			return 0, err
		}
	}
	limit := r.bodyLeft
	if r.inHeader < len(r.header) {
		limit = len(r.header) - r.inHeader
	}
	n := copy(p[:min(len(p), limit)], r.buf[r.start:r.end])
	if r.inHeader < len(r.header) {
		copy(r.header[r.inHeader:], r.buf[r.start:r.start+n])
		r.inHeader += n
		if r.inHeader == len(r.header) {
			r.bodyLeft = int(r.header[3])<<8 | int(r.header[4])
		}
	} else {
		r.bodyLeft -= n
	}
	if r.inHeader == len(r.header) && r.bodyLeft == 0 {
		r.inHeader = 0 // the next record begins
	}
	r.start += n
	if r.start == r.end {
		r.release()
	}
	return n, nil
}

// fill blocks until input arrives and reads it into an empty buffer.
func (r *recordReader) fill() error {
	r.readN, r.readErr = 0, 0
	if err := r.rc.Read(r.onReadable); err != nil {
		return err
	}
	switch {
	case r.readErr != 0:
		return r.readErr
	case r.readN == 0:
		return io.EOF
	}
	return nil
}

// readReady is fill's callback (see streamTransport.readReady): a buffer is
// taken only when there is something to put in it.
func (r *recordReader) readReady(fd uintptr) bool {
	if r.buf == nil {
		p, _ := r.pool.Get().(*[recordBuffer]byte)
		if p == nil {
			p = new([recordBuffer]byte)
		}
		r.buf = p[:]
	}
	for {
		n, errno := rawRead(fd, r.buf)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			r.release()
			return false
		case 0:
			r.readN, r.start, r.end = n, 0, n
			if n == 0 {
				r.release()
			}
		default:
			r.readErr = errno
			r.release()
		}
		return true
	}
}

func (r *recordReader) release() {
	if r.buf != nil {
		r.pool.Put((*[recordBuffer]byte)(r.buf))
	}
	r.buf, r.start, r.end = nil, 0, 0
}

// Close sends close_notify, but does not let a client that does not read
// hold it up: crypto/tls would wait up to 5 s for the alert to be written.
func (c *tlsConn) Close() error {
	t := time.AfterFunc(closeGrace, func() { c.raw.Close() })
	defer t.Stop()
	return c.Conn.Close()
}

// tlsListener wraps accepted TCP connections in TLS. The handshake happens
// on a goroutine of its own (see Server.startHandshake), never in the
// accept loop.
type tlsListener struct {
	net.Listener
	config  *tls.Config
	buffers sync.Pool // recordReaders' buffers
}

func (l *tlsListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &tlsConn{raw: nc, reader: newRecordReader(nc, &l.buffers)}
	if c.reader != nil {
		c.Conn = tls.Server(c.reader, l.config)
	} else {
		c.Conn = tls.Server(nc, l.config)
	}
	return c, nil
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
	list list.List // of *tlsConn
}

// startHandshake makes the TLS handshake of a connection the TLS listener
// accepted, on a goroutine of its own, and then admits and serves it as any
// other connection.
func (s *Server) startHandshake(tc *tlsConn) {
	s.mu.Lock()
	if s.closed || !s.lockOpen {
		s.mu.Unlock()
		tc.raw.Close()
		return
	}
	p := &s.sec.handshakes
	for p.list.Len() >= p.max {
		oldest := p.list.Remove(p.list.Front()).(*tlsConn)
		oldest.pending = nil
		oldest.raw.Close()
		s.metrics.tlsHandshakesEvicted.Inc()
	}
	tc.pending = p.list.PushBack(tc)
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		certName, ok := s.handshake(tc)
		s.mu.Lock()
		if tc.pending != nil {
			p.list.Remove(tc.pending)
			tc.pending = nil
		}
		s.mu.Unlock()
		if !ok {
			return
		}
		c := newConn(s, tc.RemoteAddr().String(), "tls", newStreamTransport(tc, s.cfg.MaxLine, &s.readBuffers))
		c.state.certName = certName
		if s.admit(c) {
			// On a fresh goroutine: the handshake grew this one's
			// stack (see waitInput).
			tc.fresh = true
			go s.serveAdmitted(c)
		}
	}()
}

// closeHandshakes aborts the handshakes under way, at shutdown. Called with
// s.mu held.
func (s *Server) closeHandshakes() {
	for e := s.sec.handshakes.list.Front(); e != nil; e = e.Next() {
		e.Value.(*tlsConn).raw.Close()
	}
}

// handshake completes the TLS handshake of a line-protocol connection before
// it is admitted, and returns the client certificate's identity. One whose
// handshake fails is closed.
func (s *Server) handshake(tc *tlsConn) (certName string, ok bool) {
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
