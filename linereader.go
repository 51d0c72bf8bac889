package main

import (
	"bytes"
	"net"
)

// streamTransport speaks the line protocol on a TCP or unix connection.
type streamTransport struct {
	nc      net.Conn
	maxLine int
	buf     []byte
	start   int // buf[start:end] is read but not yet parsed
	end     int
	// discarding is set after a too-long line was answered: the rest of it,
	// up to its newline, is dropped as it arrives, never buffered.
	discarding bool
	filled     bool   // the last read filled buf
	scratch    []byte // normalised arguments of the current read
}

// Read buffer sizes: an idle connection keeps a small buffer; a burst gets a
// bigger one. A line longer than maxReadBuffer (with a larger -max-line) grows
// the buffer further, up to what that line needs.
const (
	minReadBuffer = 512
	maxReadBuffer = 64 << 10
)

func newStreamTransport(nc net.Conn, maxLine int) *streamTransport {
	return &streamTransport{nc: nc, maxLine: maxLine}
}

// maxBatch bounds the commands of one batch, so that a flood of short lines
// costs bounded memory per connection and holds the manager for a bounded
// time; the rest stays in the buffer for the next batch.
const maxBatch = 1024

func (t *streamTransport) read(cmds []command) ([]command, error) {
	t.scratch = t.scratch[:0]
	if cmds = t.parse(cmds); len(cmds) > 0 {
		return cmds, nil // lines left over by a batch that was full
	}
	for {
		t.makeRoom()
		n, err := t.nc.Read(t.buf[t.end:])
		t.filled = t.end+n == len(t.buf)
		t.end += n
		cmds = t.parse(cmds)
		if len(cmds) > 0 || err != nil {
			// An error with commands is returned again by the next Read.
			if len(cmds) > 0 {
				err = nil
			}
			return cmds, err
		}
	}
}

// makeRoom ensures free space at the end of buf. An empty buffer is resized
// for the next read: doubled when the last read filled it (a burst is
// arriving), back to the minimum when it did not (the connection is idle).
// An incomplete line is moved to the front, or the buffer grows for it.
func (t *streamTransport) makeRoom() {
	if t.start == t.end {
		t.start, t.end = 0, 0
		switch {
		case t.buf == nil:
			t.buf = make([]byte, minReadBuffer)
		case t.filled && len(t.buf) < maxReadBuffer:
			t.buf = make([]byte, 2*len(t.buf))
		case !t.filled && len(t.buf) > minReadBuffer:
			t.buf = make([]byte, minReadBuffer)
		}
		return
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
		grown := make([]byte, min(2*len(t.buf), t.maxLine+2))
		t.end = copy(grown, t.buf[t.start:t.end])
		t.start = 0
		t.buf = grown
	}
}

// parse appends the commands of the complete lines in the buffer, up to
// maxBatch of them.
func (t *streamTransport) parse(cmds []command) []command {
	for t.start < t.end && len(cmds) < maxBatch {
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
			if len(data) > t.maxLine+1 { // too long even if a "\r\n" comes next
				cmds = append(cmds, command{verb: verbTooLong})
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
func (t *streamTransport) appendLine(cmds []command, line []byte) []command {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > t.maxLine {
		return append(cmds, command{verb: verbTooLong})
	}
	var cmd command
	cmd, t.scratch = parseCommand(line, t.scratch)
	return append(cmds, cmd)
}

func (t *streamTransport) write(out []byte, _ []int) error {
	if len(out) == 0 {
		return nil
	}
	_, err := t.nc.Write(out)
	return err
}

func (t *streamTransport) close() error { return t.nc.Close() }
