package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

var (
	// ErrLocked is returned by TryLock and TryAcquire when others hold the
	// lock (or, for TryLock, another handle of the same session does).
	ErrLocked = errors.New("glockd: locked")
	// ErrNotHeld is returned by Unlock on a handle already unlocked.
	ErrNotHeld = errors.New("glockd: lock not held")
)

// Lock is a lock held through a Session: exclusive (Lock, TryLock), or
// shared (LockShared, Acquire, TryAcquire). It is held until Unlock, or
// until the session is lost, when Lost is closed.
type Lock struct {
	s       *Session
	name    string // normalised, as the server knows it
	shared  bool
	token   uint64
	holders int
	st      *nameState

	mu       sync.Mutex // serialises Unlock
	unlocked bool
}

// Name returns the lock's name as the server knows it (see [Normalize]).
func (l *Lock) Name() string { return l.name }

// Token returns the fencing token of an exclusive lock: it strictly
// increases with every acquisition of the lock, so a resource guarded by
// it can refuse a write that carries a token lower than one it has seen.
// It is 0 for a shared lock.
func (l *Lock) Token() uint64 { return l.token }

// Holders returns, for a shared lock, the number of connections that held
// it when this session took it, this one included; 1 for an exclusive one.
func (l *Lock) Holders() int { return l.holders }

// Lost returns a channel that is closed when the session that took the
// lock is lost or closed: from then on the lock must be taken to be held
// by no one, or by someone else. It is the session's Done channel.
func (l *Lock) Lost() <-chan struct{} { return l.s.done }

// Lock takes the exclusive lock name, waiting for it until ctx ends, with
// an asynchronous wait (!gw): the session's other calls, from other
// goroutines, go on meanwhile. The wait's limit sent to the server is the
// time left before ctx's deadline, or none without one; when ctx is
// cancelled first, the wait is cancelled, the session kept, and a grant
// that crossed the cancellation released, and Lock returns ctx's error. The
// handle also carries the lock's fencing token, from the grant.
func (s *Session) Lock(ctx context.Context, name string) (*Lock, error) {
	return s.lockExclusive(ctx, name, true)
}

// TryLock takes the exclusive lock name if it is free (g), and returns
// ErrLocked if it is not.
func (s *Session) TryLock(ctx context.Context, name string) (*Lock, error) {
	return s.lockExclusive(ctx, name, false)
}

// LockShared takes the shared lock name (sg), which never waits: shared
// locks exclude no one, but the server lists their holders (sd, si).
func (s *Session) LockShared(ctx context.Context, name string) (*Lock, error) {
	return s.lockShared(ctx, name, 0, false)
}

func checkMax(maxHolders int) error {
	if maxHolders < 1 {
		return fmt.Errorf("glockd: %d holders at most: want 1 or more", maxHolders)
	}
	return nil
}

// Acquire takes the shared lock name while fewer than maxHolders
// connections hold it, waiting for that (sgw) until ctx ends, as Lock
// does: name is a counting semaphore. A session that holds it already
// gets another handle at once, since the server counts each connection
// once.
func (s *Session) Acquire(ctx context.Context, name string, maxHolders int) (*Lock, error) {
	if err := checkMax(maxHolders); err != nil {
		return nil, err
	}
	return s.lockShared(ctx, name, maxHolders, true)
}

// TryAcquire is Acquire without waiting: it returns ErrLocked when
// maxHolders connections hold name.
func (s *Session) TryAcquire(ctx context.Context, name string, maxHolders int) (*Lock, error) {
	if err := checkMax(maxHolders); err != nil {
		return nil, err
	}
	return s.lockShared(ctx, name, maxHolders, false)
}

func (s *Session) lockExclusive(ctx context.Context, name string, wait bool) (*Lock, error) {
	cmd, norm := nameCommand[bool]("g", name)
	if cmd.err != nil {
		return nil, cmd.err
	}
	st := s.enter(s.exclusive, norm)
	if wait {
		if err := s.takeTurn(ctx, st); err != nil {
			s.leave(s.exclusive, norm, st)
			return nil, err
		}
	} else {
		select {
		case st.turn <- struct{}{}:
		default:
			s.leave(s.exclusive, norm, st)
			return nil, ErrLocked
		}
	}
	token, err := s.take(ctx, name, wait)
	if err != nil {
		<-st.turn
		s.leave(s.exclusive, norm, st)
		return nil, err
	}
	return &Lock{s: s, name: norm, token: token, holders: 1, st: st}, nil
}

// take sends g, with t, or waits with !gw, and returns the token of the lock
// granted. The caller holds the name's turn.
func (s *Session) take(ctx context.Context, name string, wait bool) (uint64, error) {
	if err := s.Err(); err != nil {
		return 0, err
	}
	if wait {
		return s.waitFor(ctx, name, 0)
	}
	granted, n, interrupted, err := s.exchange(ctx, getCmd(name), tokenCmd(name), releaseCmd(name))
	switch {
	case err != nil:
		return 0, err
	case granted:
		return n, nil
	case interrupted:
		return 0, ctxCause(ctx)
	}
	return 0, ErrLocked
}

// exchange sends a command that takes a lock without waiting (g, sg, sgw
// 0; the session waits with !gw and !sgw, in waitFor), followed by extra (t
// or nothing), and returns whether the lock was granted and extra's value.
// When ctx ends once they are sent, every reply is still read (for up to
// the session timeout); a grant is then released with undo before anything
// else is sent, and reported as not granted but interrupted.
func (s *Session) exchange(ctx context.Context, get command[bool], extra command[uint64], undo command[bool]) (granted bool, val uint64, interrupted bool, err error) {
	c := s.c
	if err := c.takeTurn(ctx); err != nil {
		return false, 0, false, s.failure(err)
	}
	defer c.endTurn()
	reqs := []request{get.request()}
	if extra.line != "" {
		reqs = append(reqs, extra.request())
	}
	cl, err := c.start(ctx, reqs)
	if err == nil {
		interrupted, err = c.await(ctx, cl, true)
	}
	if err != nil {
		return false, 0, interrupted, s.failure(fmt.Errorf("glockd %q: %w", get.line, err))
	}
	if granted, err = get.parse(reqs[0].lines); err != nil {
		return false, 0, interrupted, err
	}
	if granted && interrupted {
		if err := c.undo(undo); err != nil {
			return false, 0, true, s.failure(err)
		}
		return false, 0, true, nil
	}
	if granted && extra.line != "" {
		if val, err = extra.parse(reqs[1].lines); err != nil {
			return false, 0, false, err
		}
	}
	if granted {
		// Past the timeout, the session is lost even if the watchdog has
		// not said so yet.
		if err := s.alive(); err != nil {
			return false, 0, false, err
		}
	}
	return granted, val, interrupted, nil
}

// waitFor takes a lock with an asynchronous wait, !gw (maxHolders 0) or
// !sgw, until ctx ends, and returns the grant's token (!gw) or holders
// (!sgw). A wait the server ends early, before ctx does (it refused it, at
// its limit of waits per connection, or a cancellation of another wait on
// the same name ended it too), is sent again after a pause. A grant that
// crossed a cancellation is given back before waitFor returns ctx's error.
// The caller holds the name's turn.
func (s *Session) waitFor(ctx context.Context, name string, maxHolders int) (uint64, error) {
	undo := releaseCmd(name)
	if maxHolders > 0 {
		undo = sharedReleaseCmd(name)
	}
	pause := 10 * time.Millisecond
	for {
		if err := s.Err(); err != nil {
			return 0, err
		}
		ms, _, err := untilDeadline(ctx, -1)
		if err != nil {
			return 0, err
		}
		granted, n, interrupted, err := s.c.waitAsync(ctx, ms, maxHolders, name)
		switch {
		case err != nil:
			return 0, s.failure(fmt.Errorf("glockd wait for %q: %w", name, err))
		case granted && interrupted:
			if err := s.c.undoAsync(undo); err != nil {
				return 0, s.failure(err)
			}
			return 0, ctxCause(ctx)
		case granted:
			// Past the timeout, the session is lost even if the
			// watchdog has not said so yet.
			if err := s.alive(); err != nil {
				return 0, err
			}
			return n, nil
		case interrupted:
			return 0, ctxCause(ctx)
		}
		// The wait ended without a grant. At ctx's deadline that is the
		// timeout. Before it, the server refused the wait, and its line
		// does not say why, so the same take is tried once in order (g
		// with t, or sgw 0), whose reply does: a permission denied ends
		// the wait, a lock freed meanwhile is granted, and a busy one is
		// waited for again. The try never waits, so ctx's end does not cut
		// it short (that would cost the session its connection).
		if ctx.Err() != nil {
			return 0, ctxCause(ctx)
		}
		n, done, err := s.tryInOrder(context.WithoutCancel(ctx), name, maxHolders)
		if done || err != nil {
			return n, err
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return 0, ctxCause(ctx)
		case <-s.done:
			return 0, s.Err()
		}
		pause = min(2*pause, time.Second)
	}
}

// tryInOrder takes name without waiting, in order (g and t, or sgw 0 with
// maxHolders), for waitFor after the server refused its wait early. It
// reports done with the token or holders when granted, or an error (the
// server's reply, such as ErrPermissionDenied, or ctx's).
func (s *Session) tryInOrder(ctx context.Context, name string, maxHolders int) (n uint64, done bool, err error) {
	var granted, interrupted bool
	if maxHolders > 0 {
		var holders int
		granted, _, interrupted, err = s.exchange(ctx, sharedGet(name, maxHolders, &holders), command[uint64]{}, sharedReleaseCmd(name))
		n = uint64(holders)
	} else {
		granted, n, interrupted, err = s.exchange(ctx, getCmd(name), tokenCmd(name), releaseCmd(name))
	}
	switch {
	case err != nil:
		return 0, false, err
	case interrupted:
		return 0, false, ctxCause(ctx)
	}
	return n, granted, nil
}

// ctxCause is ctx's error, or the deadline's if ctx has not seen it yet.
func ctxCause(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

// sharedGet is sg, or sgw 0 (which never waits), as a command that
// reports a grant, keeping the holder count for the handle.
func sharedGet(name string, maxHolders int, holders *int) command[bool] {
	cmd := sharedGetCmd(name)
	if maxHolders > 0 {
		cmd = sharedGetWaitCmd(0, maxHolders, name)
		cmd.wait = false
	}
	return command[bool]{line: cmd.line, wait: cmd.wait, name: cmd.name, err: cmd.err,
		parse: func(lines []string) (bool, error) {
			n, err := cmd.parse(lines)
			*holders = n
			return n > 0, err
		}}
}

// lockShared takes a shared lock: with maxHolders 0 by sg, else by !sgw
// (waiting) or sgw 0.
func (s *Session) lockShared(ctx context.Context, name string, maxHolders int, wait bool) (*Lock, error) {
	probe, norm := nameCommand[bool]("sg", name)
	if probe.err != nil {
		return nil, probe.err
	}
	st := s.enter(s.shared, norm)
	if err := s.takeTurn(ctx, st); err != nil {
		s.leave(s.shared, norm, st)
		return nil, err
	}
	defer func() { <-st.turn }()
	if err := s.Err(); err != nil {
		s.leave(s.shared, norm, st)
		return nil, err
	}
	if st.holds > 0 {
		st.holds++
		return &Lock{s: s, name: norm, shared: true, holders: st.holders, st: st}, nil
	}
	if wait && maxHolders > 0 {
		n, err := s.waitFor(ctx, name, maxHolders)
		if err != nil {
			s.leave(s.shared, norm, st)
			return nil, err
		}
		st.holds, st.holders = 1, int(n)
		return &Lock{s: s, name: norm, shared: true, holders: int(n), st: st}, nil
	}
	var holders int
	granted, _, interrupted, err := s.exchange(ctx, sharedGet(name, maxHolders, &holders), command[uint64]{}, sharedReleaseCmd(name))
	switch {
	case err != nil:
	case granted:
		st.holds, st.holders = 1, holders
		return &Lock{s: s, name: norm, shared: true, holders: holders, st: st}, nil
	case interrupted:
		err = ctxCause(ctx)
	default:
		err = ErrLocked
	}
	s.leave(s.shared, norm, st)
	return nil, err
}

// Unlock releases the lock (r, or sr when the session's last handle on a
// shared lock is unlocked). When ctx ends before the release is sent, the
// lock is still held and Unlock may be called again; once it is sent, its
// reply is awaited (up to the session timeout) even if ctx ends. After the
// session is lost, Unlock returns the session's error: the lock was
// already gone.
func (l *Lock) Unlock(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unlocked {
		return ErrNotHeld
	}
	s := l.s
	table := s.exclusive
	if l.shared {
		table = s.shared
	}
	if err := s.Err(); err != nil {
		l.unlocked = true
		return err
	}
	if !l.shared {
		sent, err := s.release(ctx, releaseCmd(l.name))
		if !sent {
			return err
		}
		l.unlocked = true
		<-l.st.turn
		s.leave(table, l.name, l.st)
		return err
	}
	if err := s.takeTurn(ctx, l.st); err != nil {
		return err
	}
	defer func() { <-l.st.turn }()
	if l.st.holds > 1 {
		l.st.holds--
		l.unlocked = true
		s.leave(table, l.name, l.st)
		return nil
	}
	sent, err := s.release(ctx, sharedReleaseCmd(l.name))
	if !sent {
		return err
	}
	l.st.holds = 0
	l.unlocked = true
	s.leave(table, l.name, l.st)
	return err
}

// release sends r or sr and reports whether it was sent.
func (s *Session) release(ctx context.Context, cmd command[bool]) (sent bool, err error) {
	c := s.c
	if err := c.takeTurn(ctx); err != nil {
		return false, s.failure(err)
	}
	defer c.endTurn()
	reqs := []request{cmd.request()}
	cl, err := c.start(ctx, reqs)
	if err != nil {
		// Unless the connection failed, nothing was sent.
		return s.Err() != nil || c.deadErr() != nil, s.failure(fmt.Errorf("glockd %q: %w", cmd.line, err))
	}
	if _, err := c.await(ctx, cl, true); err != nil {
		return true, s.failure(fmt.Errorf("glockd %q: %w", cmd.line, err))
	}
	released, err := cmd.parse(reqs[0].lines)
	if err == nil && !released {
		err = fmt.Errorf("glockd %q: %w by the server", cmd.line, ErrNotHeld)
	}
	return true, err
}
