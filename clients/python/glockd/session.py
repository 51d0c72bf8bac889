"""glockd.Session: a connection that knows when its locks are lost."""

import ssl
import threading
import time
from typing import Dict, List, Optional

from . import _proto as proto
from ._conn import Conn, Request, connect
from .client import Client
from .errors import Cancelled, LockTimeout, NotHeld, SessionLost


class Session:
    """A connection to glockd that knows when its locks are lost.

    It connects to the first of addresses that accepts, takes the token
    and answers a heartbeat within timeout, then sends ``!ping`` every
    interval seconds; the server answers it at once, even during a wait.
    When nothing has been answered for timeout seconds (counted from the
    sending of the latest command or ping answered), or the connection
    fails, the session is lost: ``lost`` is set (it is every lock's
    ``lost`` too) and only then is the connection closed. A lost session
    stays lost; start a new one (it tries the addresses again from the
    first) and take the locks anew, with new tokens.

    One wait at a time: while lock() or acquire() waits, the session's
    other calls (release() too) wait for their turn. A thread that waits
    for locks while another holds some should use a session of its own.
    """

    def __init__(self, addresses, timeout: float = 3.0, interval: float = 1.0,
                 ssl_context: Optional[ssl.SSLContext] = None, token: Optional[str] = None):
        if timeout <= 0 or interval <= 0:
            raise ValueError("glockd: timeout and interval must be positive")
        self.timeout = timeout
        self.interval = interval
        self._conn: Conn = connect(addresses, timeout, ssl_context, token)
        self._names = threading.Condition()
        self._held: set = set()  # exclusive names with a handle
        self._shared: Dict[str, List[int]] = {}  # name: [handles, holders when taken]
        self._shared_mu = threading.Lock()
        self._conn.on_lost = self._wake_names
        self._conn.start_heartbeat(interval)
        self.client = Client._wrap(self._conn)
        """The session's connection, for commands that take no lock (t, q, dl, ...)."""

    def _wake_names(self) -> None:
        with self._names:
            self._names.notify_all()

    @property
    def lost(self) -> threading.Event:
        """Set when the session is lost or closed."""
        return self._conn.lost

    @property
    def error(self) -> Optional[SessionLost]:
        """None while the session stands; then why it ended."""
        return self._conn.error

    @property
    def address(self) -> str:
        """The address the session connected to."""
        return self._conn.address

    def close(self) -> None:
        """End the session and close its connection, which releases its locks."""
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cancel(self) -> bool:
        """Give up the session's pending lock() or acquire() wait, from
        another thread: the waiting call raises Cancelled, and the session
        and its other locks are kept. Returns whether a wait was pending."""
        return self._conn.cancel()

    # ---- exclusive locks ----

    def lock(self, name: str, timeout: Optional[float] = None) -> "Lock":
        """Take the exclusive lock name, waiting (gw) up to timeout seconds
        (None: until it is granted, the session is lost or cancel() is
        called). Raises LockTimeout, Cancelled, SessionLost, PermissionDenied.
        The returned Lock carries its fencing token, asked for in the same
        write (t); use it as a context manager to release it."""
        lk = self._lock(name, timeout, True)
        assert lk is not None
        return lk

    def try_lock(self, name: str) -> Optional["Lock"]:
        """Take the exclusive lock name if it is free (g); None otherwise."""
        return self._lock(name, 0, False)

    def _take_name(self, norm: str, deadline: Optional[float]) -> bool:
        """Within a session an exclusive lock has one handle at a time: a
        second lock() on it waits for the first handle's release."""
        with self._names:
            while norm in self._held:
                err = self._conn.error
                if err is not None:
                    raise err
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._names.wait(left)
            self._held.add(norm)
            return True

    def _drop_name(self, norm: str) -> None:
        with self._names:
            self._held.discard(norm)
            self._names.notify_all()

    def _lock(self, name: str, timeout: Optional[float], wait: bool) -> Optional["Lock"]:
        norm = proto.check_name(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._take_name(norm, deadline if wait else time.monotonic()):
            if wait:
                raise LockTimeout("glockd: lock %r: held by another handle of this session" % norm)
            return None
        try:
            if wait:
                left = None if deadline is None else deadline - time.monotonic()
                get = Request("gw %d %s" % (proto.wait_ms(left), name), wait=True, name=norm)
            else:
                get = Request(proto.line("g", name))
            tok = Request(proto.line("t", name))
            granted, cancelled = self._exchange(get, [tok], proto.line("r", name), norm, proto.get_reply)
            if not granted:
                if cancelled:
                    raise Cancelled("glockd: lock %r: cancelled" % norm)
                if wait:
                    raise LockTimeout("glockd: lock %r: not granted within %ss" % (norm, timeout))
                self._drop_name(norm)
                return None
            return Lock(self, norm, proto.token(tok.line, tok.lines, norm))
        except BaseException:
            self._drop_name(norm)
            raise

    def _exchange(self, get: Request, extra: List[Request], undo: str, norm: str, parse):
        """Send a command that takes a lock, with extra, and return (granted,
        cancelled). A grant that crossed a cancellation is released before
        anything else is sent. A grant read after the session's timeout
        passed is not believed."""
        conn = self._conn
        conn.acquire_turn()
        try:
            conn.exchange([get] + extra, None if get.wait else conn.default_deadline())
            granted = parse(get.line, get.lines, norm)
            if granted and get.cancelled:
                r = Request(undo)
                conn.exchange([r], conn.default_deadline())
                return False, True
        finally:
            conn.release_turn()
        if granted:
            conn.check_alive()
        return granted, get.cancelled

    def _release(self, line: str, norm: str, yes: str, no: str) -> None:
        req = Request(line)
        self._conn.call([req], self._conn.default_deadline())
        if not proto.flag(line, req.lines, norm, yes, no):
            raise NotHeld("glockd: %r: the server says this connection does not hold it" % line)

    # ---- shared locks and semaphores ----

    def acquire(self, name: str, limit: int, timeout: Optional[float] = None) -> "SharedLock":
        """Take the shared lock name while fewer than limit connections hold
        it, waiting (sgw) up to timeout seconds: name is a counting
        semaphore. Raises LockTimeout, Cancelled, SessionLost,
        PermissionDenied. A session that holds it already gets another
        handle at once (the server counts each connection once)."""
        sem = self._shared_lock(name, limit, timeout, True)
        assert sem is not None
        return sem

    def try_acquire(self, name: str, limit: int) -> Optional["SharedLock"]:
        """acquire() without waiting: None when limit connections hold it."""
        return self._shared_lock(name, limit, 0, False)

    def lock_shared(self, name: str) -> "SharedLock":
        """Take the shared lock name (sg), which never waits."""
        sem = self._shared_lock(name, 0, None, False)
        assert sem is not None
        return sem

    def _shared_lock(self, name: str, limit: int, timeout: Optional[float], wait: bool):
        norm = proto.check_name(name)
        if limit < 0 or (limit == 0 and wait):
            raise ValueError("glockd: limit must be 1 or more")
        with self._shared_mu:
            err = self._conn.error
            if err is not None:
                raise err
            st = self._shared.get(norm)
            if st is not None:
                st[0] += 1
                return SharedLock(self, norm, st[1])
            if limit == 0:
                get = Request(proto.line("sg", name))
            else:
                ms = proto.wait_ms(timeout) if wait else 0
                get = Request("sgw %d %d %s" % (ms, limit, name), wait=wait, name=norm)
            holders = []

            def parse(line, lines, n):
                holders.append(proto.shared_get_reply(line, lines, n))
                return holders[-1] > 0

            granted, cancelled = self._exchange(get, [], proto.line("sr", name), norm, parse)
            if not granted:
                if cancelled:
                    raise Cancelled("glockd: acquire %r: cancelled" % norm)
                if wait:
                    raise LockTimeout("glockd: acquire %r: not granted within %ss" % (norm, timeout))
                return None
            self._shared[norm] = [1, holders[-1]]
            return SharedLock(self, norm, holders[-1])

    def _shared_release(self, norm: str) -> None:
        with self._shared_mu:
            st = self._shared[norm]
            if st[0] > 1:
                st[0] -= 1
                return
            del self._shared[norm]
            self._release(proto.line("sr", norm), norm, "1 Shared Lock Release Success: ",
                          "0 Shared Lock Release Failure: ")


class _Handle:
    def __init__(self, session: Session, name: str):
        self._session = session
        self.name = name
        """The lock's name as the server knows it (normalised)."""
        self._mu = threading.Lock()
        self._released = False

    @property
    def lost(self) -> threading.Event:
        """Set when the session that took the lock is lost or closed: from
        then on the lock must be taken to be held by no one, or someone else."""
        return self._session.lost

    @property
    def held(self) -> bool:
        """Neither released nor lost."""
        return not self._released and not self.lost.is_set()

    def release(self) -> None:
        """Release the lock. Raises SessionLost when the session was lost
        (the lock was gone already), NotHeld when released already."""
        with self._mu:
            if self._released:
                raise NotHeld("glockd: %r: already released" % self.name)
            err = self._session.error
            if err is not None:
                self._released = True
                raise err
            self._release()
            self._released = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._released:
            return
        if exc_type is None:
            self.release()
            return
        try:
            self.release()
        except Exception:
            pass  # the body's exception says more


class Lock(_Handle):
    """An exclusive lock held through a Session, with its fencing token."""

    def __init__(self, session: Session, name: str, token: int):
        super().__init__(session, name)
        self.token = token
        """The fencing token: pass it with every write to what the lock
        guards, which should refuse a token lower than one it has seen."""

    def _release(self) -> None:
        try:
            self._session._release(proto.line("r", self.name), self.name,
                                   "1 Lock Release Success: ", "0 Lock Release Failure: ")
        finally:
            self._session._drop_name(self.name)

    def __repr__(self):
        return "<glockd.Lock %r token=%d%s>" % (self.name, self.token, "" if self.held else " gone")


class SharedLock(_Handle):
    """A shared lock or semaphore held through a Session."""

    def __init__(self, session: Session, name: str, count: int):
        super().__init__(session, name)
        self.count = count
        """How many connections held it when this session took it, this one included."""

    def _release(self) -> None:
        self._session._shared_release(self.name)

    def __repr__(self):
        return "<glockd.SharedLock %r count=%d%s>" % (self.name, self.count, "" if self.held else " gone")
