package transport

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// Stream speaks the line protocol on a TCP or unix connection.
type Stream struct {
	nc      net.Conn
	maxLine int
	buf     []byte
	start   int // buf[start:end] is read but not yet parsed
	end     int
	// discarding is set after a too-long line was answered: the rest of it,
	// up to its newline, is dropped as it arrives, never buffered.
	discarding bool
	filled     bool // the last read filled buf
	// identified, with an ACL file: until it is set, lines are at most
	// UnauthMaxLine and the buffer never grows (Limits.Identified).
	identified *atomic.Bool
	// mem charges a buffer grown past the pooled one to -max-buffered;
	// overBudget: Restore could not charge the buffer it was handed.
	mem        Charge
	overBudget bool
	scratch    []byte // normalised arguments of the current batch

	// An empty buffer is not kept between reads: it goes back to pool, and
	// the read callback takes one only once input has arrived, so that an
	// idle connection holds no read buffer. pooled says where buf is from.
	pool   *sync.Pool // of *[pooledReadBuffer]byte
	pooled bool

	// rc does the reads and writes, as raw syscalls in callbacks (see
	// rawio_linux.go); nil when nc has no file descriptor, and then nc does.
	rc         syscall.RawConn
	onReadable func(fd uintptr) bool // readReady, bound once
	onWritable func(fd uintptr) bool // writeReady, bound once
	readN      int
	readErr    syscall.Errno
	unwritten  []byte
	writeErr   syscall.Errno // apart from readErr: a wait's goroutine may write during a read
}

// Read buffer sizes: a read takes a pooled buffer; a burst that fills it gets
// a bigger one of its own, doubled per filled read. A line longer than
// maxReadBuffer (with a larger -max-line) grows the buffer further, up to
// what that line needs.
const (
	pooledReadBuffer = 4 << 10
	maxReadBuffer    = 64 << 10
)

func NewStream(nc net.Conn, maxLine int, pool *sync.Pool) *Stream {
	t := &Stream{nc: nc, maxLine: maxLine, pool: pool}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			t.rc = rc
			t.onReadable, t.onWritable = t.readReady, t.writeReady
		}
	}
	return t
}

// MaxBatch bounds the commands of one batch, so that a flood of short lines
// costs bounded memory per connection and holds the manager for a bounded
// time; the rest stays in the buffer for the next batch.
const MaxBatch = 1024

// Read blocks until input arrives and appends every complete command in it
// (up to MaxBatch) to cmds, which alias buf until the next Read.
//
// Each read is a RawConn read whose callback (readReady) does the read(2)
// itself. The commands run outside the callback: a RawConn read holds the
// socket for its whole length (net.Conn.Close waits for it), and the
// deepest call path of an idle connection's goroutine must stay within the
// smallest stack (docs/design.md, "The idle-stack rule").
func (t *Stream) Read(cmds []proto.Command) ([]proto.Command, error) {
	t.scratch = t.scratch[:0]
	if t.overBudget {
		return cmds, ErrOverBudget
	}
	if cmds = t.parse(cmds); len(cmds) > 0 {
		return cmds, nil // lines left over by a batch that was full
	}
	for {
		if !t.makeRoom() {
			return cmds, ErrOverBudget
		}
		n, err := t.fill()
		t.filled = n > 0 && t.end+n == len(t.buf)
		t.end += n
		cmds = t.parse(cmds)
		if len(cmds) > 0 || err != nil {
			// An error with commands is returned again by the next read.
			if len(cmds) > 0 {
				err = nil
			}
			return cmds, err
		}
	}
}

// fill reads what has arrived into buf[end:], taking a pooled buffer if
// there is none: with a file descriptor, only once there is input.
func (t *Stream) fill() (int, error) {
	if t.rc == nil {
		if t.buf == nil {
			// TLS: wait for input before taking a buffer (tls.go).
			if err := waitForInput(t.nc); err != nil {
				return 0, err
			}
			t.takeBuffer()
		}
		return t.nc.Read(t.buf[t.end:])
	}
	t.readN, t.readErr = 0, 0
	if err := t.rc.Read(t.onReadable); err != nil {
		return 0, err
	}
	switch {
	case t.readErr != 0:
		return 0, t.readErr
	case t.readN == 0:
		return 0, io.EOF
	}
	return t.readN, nil
}

// readReady is fill's callback: it reads into buf, taking a pooled buffer if
// there is none, and returns false, to be called again once the socket is
// readable, when nothing has arrived; a buffer it took then goes back, so
// that a connection waiting for input holds none.
func (t *Stream) readReady(fd uintptr) bool {
	took := t.buf == nil
	if took {
		t.takeBuffer()
	}
	for {
		n, errno := rawRead(fd, t.buf[t.end:])
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if took {
				t.releaseBuffer()
			}
			return false
		case 0:
			t.readN = n
		default:
			t.readErr = errno
		}
		return true
	}
}

func (t *Stream) takeBuffer() {
	p, _ := t.pool.Get().(*[pooledReadBuffer]byte)
	if p == nil {
		p = new([pooledReadBuffer]byte)
	}
	t.buf, t.pooled = p[:], true
}

// releaseBuffer drops buf, back to the pool if it came from there. Commands
// alias buf, so this is done only when the next read begins.
func (t *Stream) releaseBuffer() {
	if t.pooled {
		t.pool.Put((*[pooledReadBuffer]byte)(t.buf))
	}
	t.buf, t.pooled = nil, false
}

// makeRoom ensures free space at the end of buf. An empty buffer is given
// up, for the read to take a pooled one when input arrives, unless the last
// read filled it: then a burst is arriving and a buffer twice the size is
// made for it. An incomplete line is moved to the front, or the buffer grows
// for it. A buffer of its own is charged to -max-buffered; makeRoom reports
// false when growing it would go over.
func (t *Stream) makeRoom() bool {
	if t.start == t.end {
		t.start, t.end = 0, 0
		switch {
		case t.buf == nil:
		case !t.filled, !t.mayGrow():
			t.releaseBuffer()
			t.mem.Release()
		case len(t.buf) < maxReadBuffer:
			size := 2 * len(t.buf)
			if !t.mem.Set(int64(size)) {
				return false
			}
			t.releaseBuffer()
			t.buf = make([]byte, size)
		}
		return true
	}
	switch {
	case t.end < len(t.buf):
	case t.start > 0:
		t.end = copy(t.buf, t.buf[t.start:t.end])
		t.start = 0
	default:
		// One incomplete line fills the buffer. parse has already answered
		// one longer than max-line, "\r" and "\n" could be, so this one may
		// still be valid: grow towards that size.
		size := min(2*len(t.buf), t.lineLimit()+2)
		if !t.mem.Set(int64(size)) {
			return false
		}
		grown := make([]byte, size)
		t.end = copy(grown, t.buf[t.start:t.end])
		t.start = 0
		t.releaseBuffer()
		t.buf = grown
	}
	return true
}

// parse appends the commands of the complete lines in the buffer, up to
// MaxBatch of them.
func (t *Stream) parse(cmds []proto.Command) []proto.Command {
	for t.start < t.end && len(cmds) < MaxBatch {
		data := t.buf[t.start:t.end]
		i := bytes.IndexByte(data, '\n')
		if t.discarding {
			if i < 0 {
				t.start = t.end
				return cmds
			}
			t.start += i + 1
			t.discarding = false
			continue
		}
		if i < 0 {
			if len(data) > t.lineLimit()+1 { // too long even if a "\r\n" comes next
				cmds = append(cmds, proto.Command{Verb: proto.VerbTooLong})
				t.discarding = true
				t.start = t.end
			}
			return cmds
		}
		t.start += i + 1
		cmds = t.appendLine(cmds, data[:i])
	}
	return cmds
}

// appendLine parses one line (without "\n") unless it is over max-line.
func (t *Stream) appendLine(cmds []proto.Command, line []byte) []proto.Command {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > t.lineLimit() {
		return append(cmds, proto.Command{Verb: proto.VerbTooLong})
	}
	cmds = append(cmds, proto.Command{})
	t.scratch = proto.ParseInto(&cmds[len(cmds)-1], line, t.scratch)
	return cmds
}

func (t *Stream) Write(out []byte, _ []int) error {
	if len(out) == 0 {
		return nil
	}
	if t.rc == nil {
		_, err := t.nc.Write(out)
		return err
	}
	t.unwritten, t.writeErr = out, 0
	err := t.rc.Write(t.onWritable)
	t.unwritten = nil
	if err == nil && t.writeErr != 0 {
		err = t.writeErr
	}
	return err
}

// writeReady is write's callback: it writes until all is written, or
// returns false, to be called again once the socket is writable.
func (t *Stream) writeReady(fd uintptr) bool {
	for len(t.unwritten) > 0 {
		n, errno := rawWrite(fd, t.unwritten)
		switch errno {
		case 0:
			t.unwritten = t.unwritten[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			t.writeErr = errno
			return true
		}
	}
	return true
}

// mayGrow reports whether the read buffer may grow past the pooled one:
// not before authentication.
func (t *Stream) mayGrow() bool {
	return t.identified == nil || t.identified.Load()
}

// lineLimit is the longest line: -max-line, or before authentication
// UnauthMaxLine.
func (t *Stream) lineLimit() int {
	if t.identified != nil && !t.identified.Load() {
		return min(t.maxLine, UnauthMaxLine)
	}
	return t.maxLine
}

func (t *Stream) SplitsReplies() bool { return true }

func (t *Stream) Close() error { return t.nc.Close() }

// Refuse sends reply with a deadline, so that a client that does not read
// cannot hold up the accept loop, and closes. (A TLS connection is admitted
// once its handshake is done, so it gets the reply too.)
func (t *Stream) Refuse(reply string) {
	if reply != "" {
		t.nc.SetWriteDeadline(time.Now().Add(time.Second))
		t.nc.Write([]byte(reply))
	}
	t.nc.Close()
}
