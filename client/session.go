package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrSessionLost is the error (wrapped) of a session declared lost: the
// server did not answer in time or the connection failed. Every lock taken
// through the session is then gone, or must be taken to be.
var ErrSessionLost = errors.New("glockd session lost")

// Defaults of SessionOptions.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = 3 * time.Second
)

// SessionOptions tune a Session.
type SessionOptions struct {
	// Interval is the time between heartbeats; 0 means DefaultInterval.
	Interval time.Duration
	// Timeout is how long the server may leave the session unanswered
	// before it is declared lost; 0 means DefaultTimeout. It is counted
	// from the sending of the latest command or heartbeat answered, so a
	// lock is never believed held longer than Timeout after the server was
	// last known to serve the connection.
	Timeout time.Duration
	// Dialer connects to the server; nil means a zero net.Dialer. Its
	// Resolver, if set, resolves host names.
	Dialer *net.Dialer
	// TLSConfig, if set, makes "tcp" connections TLS (the server's
	// -tls-port), and configures wss:// URLs (which use TLS with the
	// system's roots without it). Its ServerName defaults to the host of
	// each address; a client certificate (Certificates) is the identity
	// for a server with -tls-client-ca.
	TLSConfig *tls.Config
	// Token, if set, is sent with auth on every connection the session
	// makes, before anything else: for a server with -acl-file. A wrong
	// token fails with ErrAuthFailed.
	Token string
}

// Session is one connection to a glockd server that knows when it is
// lost. It sends a heartbeat ("!ping") every Interval on the connection,
// pipelined with the commands, which the server answers at once even while
// a wait is pending; when no answer to anything comes for Timeout, or the
// connection fails, the session is lost: Done is closed, Err says why, the
// Lost channel of every lock taken through it is closed at that moment,
// and the connection is closed, which makes the server release them if it
// still can. A lost session stays lost: its locks are never taken again
// behind the caller's back. Start a new Session to go on.
//
// Locks are taken through Lock, TryLock, LockShared, Acquire and
// TryAcquire, each returning a handle. Within one session an exclusive
// lock has one handle at a time: a second Lock on the same name waits for
// the first handle to be unlocked, as it would in another session (the
// server itself would let a connection take a lock it holds again). Shared
// locks and semaphores are counted once per session, however many handles
// it has on them.
//
// A Session is safe for many goroutines at once, as etcd's
// concurrency.Session is: Lock and Acquire wait with asynchronous waits
// (!gw, !sgw), whose outcome the server reports out of band, so one
// goroutine's wait holds back none of the others' calls, an Unlock or a
// TryLock included, and many goroutines may wait for many names on one
// session. The server bounds the waits pending on one connection
// (-max-waits-per-conn, 1024 by default); a wait past it is sent again
// after a pause, until its context ends.
//
// The server's deadlock detection sees a session as one connection: every
// lock it holds, whichever goroutine took it, keeps every wait it has
// pending. Two sessions whose goroutines take the same names in opposite
// orders (one holds X and waits for Y while the other holds Y and waits
// for X) can therefore have a wait refused with ErrDeadlock although each
// holder would have let go on its own. Such a wait may be retried; a
// server run with -deadlocks report never refuses one.
type Session struct {
	c    *Client
	opts SessionOptions

	done     chan struct{}
	watchdog *time.Timer
	pinger   sync.WaitGroup

	mu        sync.Mutex
	err       error
	exclusive map[string]*nameState
	shared    map[string]*nameState
}

// nameState is the session's own view of one lock name.
type nameState struct {
	// turn, a token in a channel, is held by whoever changes the lock at
	// the server: for an exclusive lock, from the Lock that takes it to the
	// Unlock that releases it; for a shared one, during a change only.
	turn    chan struct{}
	holds   int // shared: this session's handles on it
	holders int // shared: holders reported when the session took it
	users   int // goroutines and handles that use this state; 0 deletes it
}

// NewSession connects to the first of addrs that accepts and answers a
// heartbeat within the session timeout (a server that accepts connections
// but is stopped does not), and starts the heartbeat. Network and addrs
// are as for [Dial]. The context bounds the set-up only.
func NewSession(ctx context.Context, network string, addrs []string, opts SessionOptions) (*Session, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	d := opts.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	c, err := dialFirst(ctx, d, opts.TLSConfig, network, addrs, func(ctx context.Context, c *Client) error {
		ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
		if opts.Token != "" {
			if err := c.Auth(ctx, opts.Token); err != nil {
				return err
			}
		}
		return c.pingWait(ctx)
	})
	if err != nil {
		return nil, err
	}
	// Past the timeout the session is lost anyway; no need to wait longer
	// for the reply to a cancelled wait.
	c.grace = opts.Timeout
	s := &Session{
		c: c, opts: opts, done: make(chan struct{}),
		exclusive: map[string]*nameState{}, shared: map[string]*nameState{},
	}
	s.mu.Lock()
	s.watchdog = time.AfterFunc(opts.Timeout, s.check)
	s.mu.Unlock()
	goWait(&s.pinger, s.heartbeat)
	return s, nil
}

// heartbeat pings the server every Interval until the session ends.
func (s *Session) heartbeat() {
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-s.c.dead:
			s.lose(fmt.Errorf("%w: %w", ErrSessionLost, s.c.deadErr()))
			return
		case <-tick.C:
			if err := s.c.heartbeat(nil); err != nil {
				s.lose(fmt.Errorf("%w: %w", ErrSessionLost, err))
				return
			}
		}
	}
}

// check runs when the server may have been silent for Timeout.
func (s *Session) check() {
	left := s.opts.Timeout - time.Since(s.c.lastAlive())
	if left <= 0 {
		s.lose(fmt.Errorf("%w: no answer from the server for %v", ErrSessionLost, s.opts.Timeout))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.watchdog.Reset(left)
	}
}

// lose ends the session, once: first it is declared lost, then the
// connection is closed, so the server can release no lock while the caller
// may still believe it holds it.
func (s *Session) lose(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	close(s.done)
	s.watchdog.Stop()
	s.mu.Unlock()
	s.c.Close()
}

// Done returns a channel that is closed when the session is lost or
// closed.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns nil while the session lives; then ErrClosed after Close, or
// an error wrapping ErrSessionLost that says why it was lost.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session and closes its connection, which releases its
// locks; their Lost channels are closed too.
func (s *Session) Close() error {
	s.lose(ErrClosed)
	s.pinger.Wait()
	return nil
}

// Client returns the session's connection, for commands that take no lock
// (t, q, d, ...). Locks taken through it directly are not tracked by the
// session, but are lost with it all the same; a call on it whose context
// ends while a reply other than a wait's is awaited closes the connection
// and so loses the session.
func (s *Session) Client() *Client { return s.c }

// alive reports whether the session still stands, declaring it lost when
// its timeout has passed though the watchdog has not run yet: a grant read
// after that moment must not be believed.
func (s *Session) alive() error {
	if time.Since(s.c.lastAlive()) >= s.opts.Timeout {
		s.lose(fmt.Errorf("%w: no answer from the server for %v", ErrSessionLost, s.opts.Timeout))
	}
	return s.Err()
}

// failure turns an error of the connection into the session's error once
// the session is lost, which it then is.
func (s *Session) failure(err error) error {
	select {
	case <-s.c.dead:
		s.lose(fmt.Errorf("%w: %w", ErrSessionLost, s.c.deadErr()))
	default:
	}
	if serr := s.Err(); serr != nil {
		return serr
	}
	return err
}

// enter returns the state of a name, counting the caller as a user.
func (s *Session) enter(table map[string]*nameState, name string) *nameState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := table[name]
	if st == nil {
		st = &nameState{turn: make(chan struct{}, 1)}
		table[name] = st
	}
	st.users++
	return st
}

// leave undoes enter.
func (s *Session) leave(table map[string]*nameState, name string, st *nameState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.users--; st.users == 0 {
		delete(table, name)
	}
}

// takeTurn takes the turn of a name, or returns why not.
func (s *Session) takeTurn(ctx context.Context, st *nameState) error {
	select {
	case st.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return s.Err()
	}
}
