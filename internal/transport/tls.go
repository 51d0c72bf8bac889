package transport

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// TLSConn is a line-protocol connection over TLS. The stream transport reads
// and writes it through the net.Conn methods: a *tls.Conn has no file
// descriptor of its own for the raw-syscall path. What makes an idle one
// cheap is waitInput (see recordReader).
type TLSConn struct {
	*tls.Conn
	raw    net.Conn
	reader *recordReader // nil when raw has no file descriptor
	// full: the last Read filled its buffer, so crypto/tls may hold more
	// of the record it decrypted.
	full bool
	// fresh: the goroutine reading it has not used crypto/tls since it
	// started (see waitInput). Both are the reader goroutine's own.
	fresh bool
	// killed is set by a kill (Stream.Abort) before its deadline: waitInput,
	// which sets and clears read deadlines, must not undo one.
	killed atomic.Bool
}

func (c *TLSConn) Read(p []byte) (int, error) {
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
// goroutine that has used crypto/tls waits at most TLSRest here, and then
// returns ErrRest: the daemon's reader goes on on a fresh goroutine, whose wait
// has no deadline, and the old one, with its stack, ends. A connection that
// is busy pays two deadline changes per wait, one that is idle a goroutine
// start per TLSRest of idleness at most.
func (c *TLSConn) waitInput() error {
	if c.reader == nil || c.full || c.reader.buffered() {
		return nil
	}
	if c.fresh {
		return c.reader.fill()
	}
	c.raw.SetReadDeadline(time.Now().Add(TLSRest))
	err := c.reader.fill()
	c.raw.SetReadDeadline(time.Time{})
	if c.killed.Load() {
		// A kill set its deadline, maybe before the line above cleared
		// it: the connection ends.
		return os.ErrDeadlineExceeded
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.fresh = true
		return ErrRest
	}
	return err
}

// TLSRest is how long a TLS connection's goroutine waits for input after
// using crypto/tls before a fresh one takes over the wait (waitInput).
const TLSRest = time.Second

// ErrRest: the connection goes on on a fresh goroutine (TLSConn.waitInput).
var ErrRest = errors.New("tls connection at rest")

// waitForInput is waitInput for the stream transport's connections without
// a file descriptor: TLS ones wait there, any other reads at once.
func waitForInput(nc net.Conn) error {
	if c, ok := nc.(*TLSConn); ok {
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

// readReady is fill's callback (see Stream.readReady): a buffer is
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
func (c *TLSConn) Close() error {
	t := time.AfterFunc(CloseGrace, func() { c.raw.Close() })
	defer t.Stop()
	return c.Conn.Close()
}

// NewTLSListener wraps the connections l accepts in TLS, as *TLSConn. Their
// handshakes are the caller's to run, on goroutines of their own, never in
// the accept loop.
func NewTLSListener(l net.Listener, config *tls.Config) net.Listener {
	return &tlsListener{Listener: l, config: config}
}

// tlsListener is NewTLSListener's listener.
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
	c := &TLSConn{raw: nc, reader: newRecordReader(nc, &l.buffers)}
	if c.reader != nil {
		c.Conn = tls.Server(c.reader, l.config)
	} else {
		c.Conn = tls.Server(nc, l.config)
	}
	return c, nil
}

// Abandon closes the TCP connection under c without a close_notify: a
// handshake that is given up, or never started.
func (c *TLSConn) Abandon() { c.raw.Close() }

// MarkFresh tells c that the goroutine that reads it next has not used
// crypto/tls (see waitInput): the handshake's goroutine hands it to a new one.
func (c *TLSConn) MarkFresh() { c.fresh = true }
