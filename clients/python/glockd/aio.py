"""glockd for asyncio: the API of glockd.Session and glockd.Client, awaited.

    import glockd.aio

    async with glockd.aio.Session(["10.0.0.1:9999", "10.0.0.2:9999"]) as s:
        async with s.lock("nightly-report", timeout=5.0) as lk:
            await write_report(fencing_token=lk.token)   # lk.lost is an asyncio.Event

Cancelling a task that waits in lock() or acquire() sends !cancel: the wait
is given up, and the session and its other locks are kept.
"""

import asyncio
import collections
import ssl
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import _proto as proto
from . import _verbs as verbs
from ._proto import LockDetail, Waiter
from .errors import AuthFailed, Cancelled, GlockdError, LockTimeout, NotHeld, SessionLost

__all__ = ["Client", "Lock", "Session", "SharedLock", "connect"]


class _Request:
    __slots__ = ("line", "multi", "wait", "name", "lines", "done", "sent", "cancelled", "fut")

    def __init__(self, line: str, multi: bool = False, wait: bool = False, name: str = ""):
        if "\n" in line or "\r" in line:
            raise ValueError("glockd: a command cannot contain a newline: %r" % line)
        self.line, self.multi, self.wait, self.name = line, multi, wait, name
        self.lines: List[str] = []
        self.done = False
        self.sent = 0.0
        self.cancelled = False
        self.fut: Optional[asyncio.Future] = None


class _Conn:
    """A connection, its reader task and, in a session, its heartbeat task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 address: str, timeout: float):
        self.address = address
        self.timeout = timeout
        self.interval: Optional[float] = None
        self.lost = asyncio.Event()
        self.turn = asyncio.Lock()
        self._reader, self._writer = reader, writer
        self._pending: collections.deque = collections.deque()
        self._pings: collections.deque = collections.deque()
        self._pong_waiters: List[asyncio.Future] = []
        self._alive = time.monotonic()
        self._err: Optional[GlockdError] = None
        fence = proto.fence_name()
        self._fence_line = ("i " + fence + "\n").encode()
        self._fence_replies = proto.fence_replies(fence)
        self._tasks = [asyncio.ensure_future(self._read_loop())]

    @property
    def error(self) -> Optional[GlockdError]:
        return self._err

    def fail(self, err: GlockdError) -> None:
        """Declare the connection lost (once): lost is set first, then the
        connection closed."""
        if self._err is not None:
            return
        self._err = err
        self.lost.set()
        for r in self._pending:
            if not r.fut.done():
                r.fut.set_result(None)
        for f in self._pong_waiters:
            if not f.done():
                f.set_result(None)
        self._writer.close()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()

    async def close(self) -> None:
        self.fail(SessionLost("glockd: closed"))
        current = asyncio.current_task()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        try:
            await self._writer.wait_closed()
        except (OSError, asyncio.CancelledError, ssl.SSLError):
            pass

    def _silence(self) -> SessionLost:
        return SessionLost("glockd: no answer from %s for %gs" % (self.address, self.timeout))

    def check_alive(self) -> None:
        if (self._err is None and self.interval is not None
                and time.monotonic() - self._alive >= self.timeout):
            self.fail(self._silence())
        if self._err is not None:
            raise self._err

    def _route(self, text: str) -> None:
        if text == proto.PONG:
            if self._pings:
                self._alive = max(self._alive, self._pings.popleft())
            waiters, self._pong_waiters = self._pong_waiters, []
            for f in waiters:
                if not f.done():
                    f.set_result(None)
            return
        if text in proto.CANCEL_REPLIES or not self._pending:
            return
        r = self._pending[0]
        if r.multi and text in self._fence_replies:
            pass
        elif r.multi:
            r.lines.append(text)
            return
        else:
            r.lines.append(text)
        r.done = True
        self._pending.popleft()
        self._alive = max(self._alive, r.sent)
        if not r.fut.done():
            r.fut.set_result(None)

    async def _read_loop(self) -> None:
        try:
            while True:
                raw = await self._reader.readline()
                if not raw.endswith(b"\n"):
                    raise ConnectionResetError("the server closed the connection")
                self._route(raw[:-1].decode(proto.ENCODING, proto.ERRORS))
        except asyncio.CancelledError:
            raise
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            self.fail(SessionLost("glockd: connection to %s failed: %s" % (self.address, e)))

    def start_heartbeat(self, interval: float) -> None:
        self.interval = interval
        self._tasks.append(asyncio.ensure_future(self._heartbeat()))

    async def _heartbeat(self) -> None:
        next_ping = time.monotonic() + self.interval
        while self._err is None:
            now = time.monotonic()
            if now - self._alive >= self.timeout:
                self.fail(self._silence())
                return
            if now >= next_ping:
                self._write(b"!ping\n", ping=now)
                next_ping = now + self.interval
            await asyncio.sleep(max(0.0, min(next_ping, self._alive + self.timeout) - now))

    def _write(self, data: bytes, ping: Optional[float] = None) -> None:
        if self._err is not None:
            raise self._err
        if ping is not None:
            self._pings.append(ping)
        try:
            self._writer.write(data)
        except (OSError, RuntimeError) as e:
            self.fail(SessionLost("glockd: connection to %s failed: %s" % (self.address, e)))
            raise self._err

    def send(self, reqs: Sequence[_Request]) -> None:
        """Queue reqs in one write. The caller holds the turn."""
        if self._err is not None:
            raise self._err
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        data = bytearray()
        for r in reqs:
            r.sent = now
            r.fut = loop.create_future()
            self._pending.append(r)
            data += r.line.encode(proto.ENCODING, proto.ERRORS) + b"\n"
            if r.multi:
                data += self._fence_line
        self._write(bytes(data))

    async def wait(self, req: _Request, timeout: Optional[float]) -> None:
        """Wait for req's reply; a cancellation of the caller leaves it
        pending. Past timeout the server is too slow to trust: the
        connection is lost."""
        try:
            await asyncio.wait_for(asyncio.shield(req.fut), timeout)
        except asyncio.TimeoutError:
            self.fail(SessionLost("glockd: %r: no reply from %s in time" % (req.line, self.address)))
        if not req.done:
            raise self._err

    def cancel(self, name: Optional[str] = None) -> bool:
        if self._err is not None:
            return False
        for r in self._pending:
            if r.wait and not r.done and (name is None or r.name == proto.normalize(name)):
                r.cancelled = True
                self._write(("!cancel " + r.name).rstrip().encode(proto.ENCODING, proto.ERRORS) + b"\n")
                return True
        return False

    async def ping(self, timeout: float) -> None:
        f = asyncio.get_running_loop().create_future()
        self._pong_waiters.append(f)
        self._write(b"!ping\n", ping=time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(f), timeout)
        except asyncio.TimeoutError:
            self.fail(SessionLost("glockd: no answer to !ping from %s within %gs" % (self.address, timeout)))
        if self._err is not None:
            raise self._err

    async def call(self, reqs: Sequence[_Request], timeout: Optional[float]) -> None:
        """Send reqs and wait for their replies, holding the turn. If the
        caller is cancelled, the replies are still read (a grant that
        crossed the cancellation is not believed by anyone, and the
        connection is closed, since no handle can release it)."""
        async with self.turn:
            self.send(reqs)
            try:
                await self.wait(reqs[-1], timeout)
            except asyncio.CancelledError:
                self.fail(SessionLost("glockd: %r: cancelled while its reply was awaited" % reqs[0].line))
                raise


async def _open(addr: str, timeout: float, ssl_context: Optional[ssl.SSLContext]):
    a = proto.parse_address(addr)
    limit = 1 << 24  # a dump is one line
    if a.kind == "unix":
        return await asyncio.wait_for(asyncio.open_unix_connection(a.host, limit=limit), timeout)
    return await asyncio.wait_for(asyncio.open_connection(
        a.host, a.port, ssl=ssl_context, server_hostname=a.host if ssl_context else None,
        limit=limit), timeout)


async def _connect(addresses, timeout: float, ssl_context, token: Optional[str]) -> _Conn:
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses:
        raise ValueError("glockd: no address")
    for a in addresses:
        proto.parse_address(a)
    auth = verbs.auth(token) if token is not None else None
    errs = []
    for addr in addresses:
        try:
            reader, writer = await _open(addr, timeout, ssl_context)
        except (OSError, asyncio.TimeoutError) as e:
            errs.append("%s: %s" % (addr, e or type(e).__name__))
            continue
        conn = _Conn(reader, writer, addr, timeout)
        try:
            if auth is not None:
                req = _Request(auth.line)
                await conn.call([req], timeout + 2)
                auth.parse(req.lines)
            await conn.ping(timeout)
        except AuthFailed:
            await conn.close()
            raise
        except GlockdError as e:
            await conn.close()
            errs.append("%s: %s" % (addr, e))
            continue
        except BaseException:
            await conn.close()
            raise
        return conn
    raise SessionLost("glockd: no address answered: " + "; ".join(errs))


class Client:
    """glockd.Client for asyncio: one connection, one coroutine per verb.
    Open it with ``await Client.open(addresses, ...)`` or ``async with
    Client(addresses, ...)``."""

    def __init__(self, addresses, timeout: float = 3.0,
                 ssl_context: Optional[ssl.SSLContext] = None, token: Optional[str] = None):
        self._args = (addresses, timeout, ssl_context, token)
        self._conn: Optional[_Conn] = None

    @classmethod
    async def open(cls, addresses, timeout: float = 3.0,
                   ssl_context: Optional[ssl.SSLContext] = None, token: Optional[str] = None) -> "Client":
        c = cls(addresses, timeout, ssl_context, token)
        await c.connect()
        return c

    async def connect(self) -> None:
        if self._conn is None:
            self._conn = await _connect(*self._args)

    @classmethod
    def _wrap(cls, conn: _Conn) -> "Client":
        c = cls.__new__(cls)
        c._conn = conn
        return c

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def address(self) -> str:
        return self._conn.address

    @property
    def lost(self) -> asyncio.Event:
        return self._conn.lost

    @property
    def error(self):
        return self._conn.error

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def _do(self, cmd: verbs.Cmd):
        wait = cmd.wait_s is not None
        req = _Request(cmd.line, multi=cmd.multi, wait=wait, name=cmd.name)
        if not wait:
            timeout = self._conn.timeout
        elif cmd.wait_s < 0:
            timeout = None
        else:
            timeout = cmd.wait_s + self._conn.timeout
        if cmd.line.startswith("auth "):
            timeout += 2
        await self._conn.call([req], timeout)
        return cmd.parse(req.lines)

    async def get(self, name: str) -> bool:
        return await self._do(verbs.get(name))

    async def get_wait(self, name: str, timeout: Optional[float] = None) -> bool:
        return await self._do(verbs.get_wait(name, timeout))

    async def release(self, name: str) -> bool:
        return await self._do(verbs.release(name))

    async def is_locked(self, name: str) -> bool:
        return await self._do(verbs.is_locked(name))

    async def token(self, name: str) -> Optional[int]:
        return await self._do(verbs.token(name))

    async def shared_get(self, name: str) -> int:
        return await self._do(verbs.shared_get(name))

    async def shared_get_wait(self, name: str, limit: int, timeout: Optional[float] = None) -> int:
        return await self._do(verbs.shared_get_wait(name, limit, timeout))

    async def shared_release(self, name: str) -> bool:
        return await self._do(verbs.shared_release(name))

    async def shared_count(self, name: str) -> int:
        return await self._do(verbs.shared_count(name))

    def cancel(self, name: Optional[str] = None) -> bool:
        return self._conn.cancel(name)

    async def me(self) -> Tuple[str, str]:
        return await self._do(verbs.me())

    async def iam(self, name: str = "") -> None:
        return await self._do(verbs.iam(name))

    async def who(self, name: str = "") -> List[Tuple[str, str]]:
        return await self._do(verbs.who(name))

    async def locks(self, name: str = "") -> List[Tuple[str, str]]:
        return await self._do(verbs.locks(name))

    async def shared_locks(self, name: str = "") -> List[Tuple[str, str]]:
        return await self._do(verbs.shared_locks(name))

    async def details(self, name: str = "") -> List[LockDetail]:
        return await self._do(verbs.details(name))

    async def waiters(self, name: str = "") -> List[Waiter]:
        """dw: who waits for each lock, in queue order (see Client.waiters)."""
        return await self._do(verbs.waiters(name))

    async def dump(self) -> str:
        return await self._do(verbs.dump())

    async def dump_shared(self) -> str:
        return await self._do(verbs.dump_shared())

    async def stats(self) -> dict:
        return await self._do(verbs.stats())

    async def ping(self) -> None:
        return await self._do(verbs.ping())

    async def heartbeat(self) -> None:
        await self._conn.ping(self._conn.timeout)

    async def auth(self, token: str) -> None:
        return await self._do(verbs.auth(token))

    async def perms(self) -> str:
        return await self._do(verbs.perms())

    async def kill(self, conn: str) -> bool:
        return await self._do(verbs.kill(conn))

    async def kill_holder(self, name: str) -> bool:
        return await self._do(verbs.kill_holder(name))


class Session:
    """glockd.Session for asyncio. ``async with Session(addresses, ...) as
    s`` or ``s = await Session.open(addresses, ...)``; lost is an
    asyncio.Event. Cancel a waiting lock() or acquire() by cancelling its
    task (asyncio.wait_for, asyncio.timeout, task.cancel())."""

    def __init__(self, addresses, timeout: float = 3.0, interval: float = 1.0,
                 ssl_context: Optional[ssl.SSLContext] = None, token: Optional[str] = None):
        if timeout <= 0 or interval <= 0:
            raise ValueError("glockd: timeout and interval must be positive")
        self.timeout, self.interval = timeout, interval
        self._args = (addresses, timeout, ssl_context, token)
        self._conn: Optional[_Conn] = None
        self._held: Dict[str, asyncio.Event] = {}  # exclusive name: set when released
        self._shared: Dict[str, List[int]] = {}
        self._shared_mu: Optional[asyncio.Lock] = None  # made in the loop (Python 3.9)
        self.client: Optional[Client] = None

    @classmethod
    async def open(cls, addresses, timeout: float = 3.0, interval: float = 1.0,
                   ssl_context: Optional[ssl.SSLContext] = None, token: Optional[str] = None) -> "Session":
        s = cls(addresses, timeout, interval, ssl_context, token)
        await s.connect()
        return s

    async def connect(self) -> None:
        if self._conn is None:
            self._conn = await _connect(*self._args)
            self._shared_mu = asyncio.Lock()
            self._conn.start_heartbeat(self.interval)
            self.client = Client._wrap(self._conn)

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def lost(self) -> asyncio.Event:
        return self._conn.lost

    @property
    def error(self) -> Optional[GlockdError]:
        return self._conn.error

    @property
    def address(self) -> str:
        return self._conn.address

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def cancel(self) -> bool:
        """Give up the pending wait, as cancelling its task does."""
        return self._conn.cancel()

    def lock(self, name: str, timeout: Optional[float] = None) -> "_Taking":
        """Take the exclusive lock, waiting up to timeout seconds: ``await``
        it for a Lock, or ``async with`` it to release it at the end."""
        return _Taking(self._lock(name, timeout, True))

    async def try_lock(self, name: str) -> Optional["Lock"]:
        return await self._lock(name, 0, False)

    def acquire(self, name: str, limit: int, timeout: Optional[float] = None) -> "_Taking":
        """Take the semaphore name (sgw), as lock() does."""
        return _Taking(self._shared_lock(name, limit, timeout, True))

    async def try_acquire(self, name: str, limit: int) -> Optional["SharedLock"]:
        return await self._shared_lock(name, limit, 0, False)

    async def lock_shared(self, name: str) -> "SharedLock":
        return await self._shared_lock(name, 0, None, False)

    async def _take_name(self, norm: str, deadline: Optional[float], wait: bool) -> bool:
        while norm in self._held:
            if not wait:
                return False
            self._conn.check_alive()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            released = asyncio.ensure_future(self._held[norm].wait())
            lost = asyncio.ensure_future(self._conn.lost.wait())
            try:
                await asyncio.wait({released, lost}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                released.cancel()
                lost.cancel()
        self._conn.check_alive()
        self._held[norm] = asyncio.Event()
        return True

    def _drop_name(self, norm: str) -> None:
        ev = self._held.pop(norm, None)
        if ev is not None:
            ev.set()

    async def _lock(self, name: str, timeout: Optional[float], wait: bool) -> Optional["Lock"]:
        norm = proto.check_name(name)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not await self._take_name(norm, deadline, wait):
            if wait:
                raise LockTimeout("glockd: lock %r: held by another handle of this session" % norm)
            return None
        try:
            if wait:
                left = None if deadline is None else deadline - time.monotonic()
                get = _Request("gw %d %s" % (proto.wait_ms(left), name), wait=True, name=norm)
            else:
                get = _Request(proto.line("g", name))
            tok = _Request(proto.line("t", name))
            granted, cancelled = await self._exchange(get, [tok], proto.line("r", name), norm, proto.get_reply)
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

    async def _exchange(self, get: _Request, extra: List[_Request], undo: str, norm: str, parse):
        """Send a command that takes a lock, with extra; return (granted,
        cancelled). When the calling task is cancelled during a wait, the
        wait is cancelled (!cancel), its reply still read, a grant that
        crossed the cancellation released, and CancelledError raised."""
        conn = self._conn
        async with conn.turn:
            reqs = [get] + extra
            conn.send(reqs)
            interrupted = None
            try:
                await conn.wait(reqs[-1], None if get.wait else conn.timeout)
            except asyncio.CancelledError as e:
                interrupted = e
                if get.wait:
                    conn.cancel(get.name)
                try:
                    # Past the session timeout the session is lost anyway.
                    await conn.wait(reqs[-1], conn.timeout)
                except asyncio.CancelledError:
                    conn.fail(SessionLost("glockd: %r: cancelled twice" % get.line))
                    raise
            granted = parse(get.line, get.lines, norm)
            if granted and (get.cancelled or interrupted is not None):
                r = _Request(undo)
                conn.send([r])
                try:
                    await conn.wait(r, conn.timeout)
                except asyncio.CancelledError:
                    conn.fail(SessionLost("glockd: %r: cancelled twice" % get.line))
                    raise
                granted = False
            if interrupted is not None:
                raise interrupted
        if granted:
            conn.check_alive()
        return granted, get.cancelled

    async def _release(self, line: str, norm: str, yes: str, no: str) -> None:
        req = _Request(line)
        await self._conn.call([req], self._conn.timeout)
        if not proto.flag(line, req.lines, norm, yes, no):
            raise NotHeld("glockd: %r: the server says this connection does not hold it" % line)

    async def _shared_lock(self, name: str, limit: int, timeout: Optional[float], wait: bool):
        norm = proto.check_name(name)
        if limit < 0 or (limit == 0 and wait):
            raise ValueError("glockd: limit must be 1 or more")
        async with self._shared_mu:
            self._conn.check_alive()
            st = self._shared.get(norm)
            if st is not None:
                st[0] += 1
                return SharedLock(self, norm, st[1])
            if limit == 0:
                get = _Request(proto.line("sg", name))
            else:
                ms = proto.wait_ms(timeout) if wait else 0
                get = _Request("sgw %d %d %s" % (ms, limit, name), wait=wait, name=norm)
            holders = []

            def parse(line, lines, n):
                holders.append(proto.shared_get_reply(line, lines, n))
                return holders[-1] > 0

            granted, cancelled = await self._exchange(get, [], proto.line("sr", name), norm, parse)
            if not granted:
                if cancelled:
                    raise Cancelled("glockd: acquire %r: cancelled" % norm)
                if wait:
                    raise LockTimeout("glockd: acquire %r: not granted within %ss" % (norm, timeout))
                return None
            self._shared[norm] = [1, holders[-1]]
            return SharedLock(self, norm, holders[-1])

    async def _shared_release(self, norm: str) -> None:
        async with self._shared_mu:
            st = self._shared[norm]
            if st[0] > 1:
                st[0] -= 1
                return
            del self._shared[norm]
            await self._release(proto.line("sr", norm), norm, "1 Shared Lock Release Success: ",
                                "0 Shared Lock Release Failure: ")


class _Taking:
    """lock() and acquire(): awaitable, or an async context manager."""

    def __init__(self, coro):
        self._coro = coro
        self._handle = None

    def __await__(self):
        return self._coro.__await__()

    async def __aenter__(self):
        self._handle = await self._coro
        return self._handle

    async def __aexit__(self, exc_type, exc, tb):
        await self._handle.__aexit__(exc_type, exc, tb)


class _Handle:
    def __init__(self, session: Session, name: str):
        self._session = session
        self.name = name
        self._released = False

    @property
    def lost(self) -> asyncio.Event:
        """Set when the session is lost or closed."""
        return self._session.lost

    @property
    def held(self) -> bool:
        return not self._released and not self.lost.is_set()

    async def release(self) -> None:
        if self._released:
            raise NotHeld("glockd: %r: already released" % self.name)
        self._released = True
        err = self._session.error
        if err is not None:
            raise err
        await self._release()

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if self._released:
            return
        if exc_type is None:
            await self.release()
            return
        try:
            await self.release()
        except Exception:
            pass


class Lock(_Handle):
    """An exclusive lock held through an aio Session, with its fencing token."""

    def __init__(self, session: Session, name: str, token: int):
        super().__init__(session, name)
        self.token = token

    async def _release(self) -> None:
        try:
            await self._session._release(proto.line("r", self.name), self.name,
                                         "1 Lock Release Success: ", "0 Lock Release Failure: ")
        finally:
            self._session._drop_name(self.name)

    def __repr__(self):
        return "<glockd.aio.Lock %r token=%d%s>" % (self.name, self.token, "" if self.held else " gone")


class SharedLock(_Handle):
    """A shared lock or semaphore held through an aio Session."""

    def __init__(self, session: Session, name: str, count: int):
        super().__init__(session, name)
        self.count = count

    async def _release(self) -> None:
        await self._session._shared_release(self.name)

    def __repr__(self):
        return "<glockd.aio.SharedLock %r count=%d%s>" % (self.name, self.count, "" if self.held else " gone")


connect = Session.open
