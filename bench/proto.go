package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// kind is what a command does, whatever the protocol.
type kind uint8

const (
	get           kind = iota // exclusive try-lock: 1 granted, 0 busy
	release                   // 1 released, 0 not held
	sharedGet                 // the number of holders after it
	sharedRelease             // 1 released, 0 not held (glockd); the holders left (redis)
	waitGet                   // a lock, waiting as long as it takes: 1
	handOver                  // a release that hands the lock to the oldest waiter: 1
)

type op struct {
	kind kind
	key  string
}

func (o op) String() string {
	return [...]string{"get", "release", "shared get", "shared release", "wait", "hand over"}[o.kind] + " " + o.key
}

// protocol writes commands and reads and checks their replies.
type protocol interface {
	// append adds the command of o to b.
	append(b []byte, o op) []byte
	// reply reads the reply to o: its number (see kind). A reply of the
	// wrong form is an error.
	reply(r *bufio.Reader, o op) (int64, error)
	// locks is the number of locks the server holds, exclusive and shared,
	// by the command stats gives (nil when the server cannot tell).
	stats() []byte
	locks(r *bufio.Reader) (exclusive, shared int64, err error)
}

func newProtocol(name string) (protocol, error) {
	switch name {
	case "glockd":
		return glockd{}, nil
	case "resp":
		return resp{}, nil
	}
	return nil, fmt.Errorf("unknown -proto %q: want glockd or resp", name)
}

// glockd speaks the glockd line protocol.
type glockd struct{}

func (glockd) append(b []byte, o op) []byte {
	switch o.kind {
	case get:
		b = append(b, "g "...)
	case release, handOver:
		b = append(b, "r "...)
	case sharedGet:
		b = append(b, "sg "...)
	case sharedRelease:
		b = append(b, "sr "...)
	case waitGet:
		b = append(b, "gw -1 "...)
	}
	b = append(b, o.key...)
	return append(b, '\n')
}

// glockdReplies are the texts of each kind's replies, granted then not.
var glockdReplies = [...][2]string{
	get:           {"Lock Get Success", "Lock Get Failure"},
	release:       {"Lock Release Success", "Lock Release Failure"},
	sharedGet:     {"Shared Lock Get Success", "Too Many Locks"},
	sharedRelease: {"Shared Lock Release Success", "Shared Lock Release Failure"},
	waitGet:       {"Lock Get Success", "Lock Get Timeout"},
	handOver:      {"Lock Release Success", "Lock Release Failure"},
}

func (glockd) reply(r *bufio.Reader, o op) (int64, error) {
	line, err := readLine(r)
	if err != nil {
		return 0, err
	}
	// "<n> <text>: <key>", read without allocating.
	num, rest, ok := bytes.Cut(line, []byte{' '})
	n, isNum := parseUint(num)
	text, key, _ := bytes.Cut(rest, []byte(": "))
	texts := glockdReplies[o.kind]
	switch {
	case !ok || !isNum || string(key) != o.key:
	case string(text) == texts[0] && (n > 0 || o.kind != sharedGet):
		if o.kind == sharedGet {
			return n, nil
		}
		return 1, nil
	case string(text) == texts[1] && n == 0:
		return 0, nil
	}
	return 0, fmt.Errorf("%v: unexpected reply %q", o, line)
}

// parseUint parses a decimal number without allocating.
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func (glockd) stats() []byte { return []byte("q\ni bench-fence\n") }

// locks reads q's reply, up to the reply to the i command that follows it
// in stats (q's reply has no end of its own).
func (glockd) locks(r *bufio.Reader) (exclusive, shared int64, err error) {
	exclusive, shared = -1, -1
	for {
		line, err := readLine(r)
		if err != nil {
			return 0, 0, err
		}
		s := string(line)
		switch {
		case strings.HasSuffix(s, ": bench-fence"):
			if exclusive < 0 || shared < 0 {
				return 0, 0, errors.New("q: no locks or shared_locks line")
			}
			return exclusive, shared, nil
		case strings.HasPrefix(s, "locks: "):
			exclusive, err = strconv.ParseInt(s[len("locks: "):], 10, 64)
		case strings.HasPrefix(s, "shared_locks: "):
			shared, err = strconv.ParseInt(s[len("shared_locks: "):], 10, 64)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("q: %q: %w", s, err)
		}
	}
}

// resp speaks Redis's RESP, with the usual one-key lock of Redis: SET NX
// takes it, DEL drops it. Shared locks have no equivalent; a counter of
// holders (INCR, DECR) does the same round trips and is how a reader lock
// is built on Redis. A lock handed to waiters in order is a list holding
// one token: BLPOP waits for it, RPUSH gives it back, and Redis serves
// blocked clients first come, first served.
type resp struct{}

func appendBulk(b []byte, s string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, "\r\n"...)
	b = append(b, s...)
	return append(b, "\r\n"...)
}

func appendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, "\r\n"...)
	for _, a := range args {
		b = appendBulk(b, a)
	}
	return b
}

func (resp) append(b []byte, o op) []byte {
	switch o.kind {
	case get:
		return appendCommand(b, "SET", o.key, "1", "NX")
	case release:
		return appendCommand(b, "DEL", o.key)
	case sharedGet:
		return appendCommand(b, "INCR", o.key)
	case sharedRelease:
		return appendCommand(b, "DECR", o.key)
	case waitGet:
		return appendCommand(b, "BLPOP", o.key, "0")
	default: // handOver
		return appendCommand(b, "RPUSH", o.key, "token")
	}
}

func (resp) reply(r *bufio.Reader, o op) (int64, error) {
	line, err := readLine(r)
	if err != nil {
		return 0, err
	}
	switch o.kind {
	case get:
		switch string(line) {
		case "+OK":
			return 1, nil
		case "$-1", "_":
			return 0, nil
		}
	case release, sharedGet, sharedRelease, handOver:
		var n int64
		ok := len(line) > 1 && line[0] == ':'
		if ok && line[1] == '-' {
			n, ok = parseUint(line[2:])
			n = -n
		} else if ok {
			n, ok = parseUint(line[1:])
		}
		switch {
		case !ok:
		case o.kind == release && n <= 1:
			return n, nil
		case o.kind == sharedGet:
			return n, nil
		case o.kind == sharedRelease:
			// The holders left: below 0, a release without a get.
			return int64(btoi(n >= 0)), nil
		case o.kind == handOver:
			return int64(btoi(n >= 1)), nil
		}
	case waitGet:
		// *2, then the list's name and the token, as bulk strings.
		if string(line) != "*2" {
			break
		}
		if err := expectBulk(r, o.key); err != nil {
			return 0, fmt.Errorf("%v: %w", o, err)
		}
		if err := expectBulk(r, "token"); err != nil {
			return 0, fmt.Errorf("%v: %w", o, err)
		}
		return 1, nil
	}
	return 0, fmt.Errorf("%v: unexpected reply %q", o, line)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readBulk reads a bulk string.
func readBulk(r *bufio.Reader) (string, error) {
	line, err := readLine(r)
	if err != nil {
		return "", err
	}
	n, ok := bulkLength(line)
	if !ok {
		return "", fmt.Errorf("want a bulk string, got %q", line)
	}
	b := make([]byte, n+2)
	if _, err := readFull(r, b); err != nil {
		return "", err
	}
	return string(b[:n]), nil
}

// bulkLength parses a bulk string's header, "$N", without allocating.
func bulkLength(line []byte) (int, bool) {
	if len(line) < 2 || line[0] != '$' {
		return 0, false
	}
	n, ok := parseUint(line[1:])
	return int(n), ok
}

// expectBulk reads a bulk string and checks that it is want, without
// allocating (a reply on a hot path: see readHandover).
func expectBulk(r *bufio.Reader, want string) error {
	line, err := readLine(r)
	if err != nil {
		return err
	}
	if n, ok := bulkLength(line); !ok || n != len(want) {
		return fmt.Errorf("want the bulk string %q, got %q", want, line)
	}
	b, err := r.Peek(len(want) + 2)
	if err != nil {
		return err
	}
	if string(b[:len(want)]) != want || string(b[len(want):]) != "\r\n" {
		return fmt.Errorf("want the bulk string %q, got %q", want, b)
	}
	_, err = r.Discard(len(b))
	return err
}

func readFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (resp) stats() []byte { return appendCommand(nil, "DBSIZE") }

// locks is the number of keys: Redis does not tell locks from other keys,
// nor release anything on disconnect.
func (resp) locks(r *bufio.Reader) (exclusive, shared int64, err error) {
	line, err := readLine(r)
	if err != nil {
		return 0, 0, err
	}
	if len(line) < 2 || line[0] != ':' {
		return 0, 0, fmt.Errorf("DBSIZE: %q", line)
	}
	n, err := strconv.ParseInt(string(line[1:]), 10, 64)
	return n, 0, err
}

// readLine reads one reply line, without its "\n" or "\r\n". It aliases
// r's buffer until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, fmt.Errorf("reply line over %d bytes", r.Size())
	}
	if err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'}), nil
}

// conn is one client connection.
type conn struct {
	nc      net.Conn
	r       *bufio.Reader
	p       protocol
	buf     []byte
	timeout time.Duration
}

// dial connects to cfg.addr, over TLS with cfg.tls (the handshake done
// before it returns).
func dial(cfg *config, p protocol) (*conn, error) {
	network, addr := "tcp", cfg.addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
	}
	nc, err := net.DialTimeout(network, addr, cfg.timeout)
	if err != nil {
		return nil, err
	}
	if cfg.tls {
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		tc.SetDeadline(time.Now().Add(cfg.timeout))
		if err := tc.Handshake(); err != nil {
			nc.Close()
			return nil, err
		}
		tc.SetDeadline(time.Time{})
		nc = tc
	}
	return &conn{nc: nc, r: bufio.NewReader(nc), p: p, timeout: cfg.timeout}, nil
}

// send writes ops as one write.
func (c *conn) send(ops ...op) error {
	c.buf = c.buf[:0]
	for _, o := range ops {
		c.buf = c.p.append(c.buf, o)
	}
	return c.write(c.buf)
}

func (c *conn) write(b []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := c.nc.Write(b)
	return err
}

// call runs one command and returns its reply's number.
func (c *conn) call(o op) (int64, error) {
	if err := c.send(o); err != nil {
		return 0, err
	}
	c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	return c.p.reply(c.r, o)
}

// locks asks the server how many locks it holds.
func (c *conn) locks() (exclusive, shared int64, err error) {
	if err := c.write(c.p.stats()); err != nil {
		return 0, 0, err
	}
	c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	return c.p.locks(c.r)
}
