"""One connection to glockd, served by one I/O thread.

The thread does all the socket's reads and writes (so a TLS connection is
never used by two threads at once), routes every reply line to the call
that waits for it, and, in a session, sends the heartbeat and declares the
connection lost when nothing was answered within the timeout.
"""

import collections
import selectors
import socket
import ssl
import threading
import time
from typing import Callable, List, Optional, Sequence

from . import _proto as proto
from .errors import AuthFailed, GlockdError, SessionLost


class Request:
    """One command line sent, and the reply lines read for it."""

    __slots__ = ("line", "multi", "wait", "name", "lines", "done", "sent", "cancelled")

    def __init__(self, line: str, multi: bool = False, wait: bool = False, name: str = ""):
        if "\n" in line or "\r" in line:
            raise ValueError("glockd: a command cannot contain a newline: %r" % line)
        self.line = line
        self.multi = multi  # zero or more lines with no terminator: fenced
        self.wait = wait  # gw or sgw on name
        self.name = name
        self.lines: List[str] = []
        self.done = False
        self.sent = 0.0
        self.cancelled = False  # !cancel was sent for this wait


class Conn:
    """A connected socket (TLS handshake done) and its I/O thread."""

    def __init__(self, sock: socket.socket, address: str, timeout: float):
        self.address = address
        self.timeout = timeout
        self.interval: Optional[float] = None  # heartbeat off until started
        self.lost = threading.Event()
        self.on_lost: Optional[Callable[[], None]] = None
        self._sock = sock
        sock.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._cv = threading.Condition()
        self._out = bytearray()
        self._pending: collections.deque = collections.deque()
        self._pings: collections.deque = collections.deque()  # send times
        self._pongs = 0
        self._alive = time.monotonic()  # when the latest command or ping answered was sent
        self._next_ping = 0.0
        self._err: Optional[GlockdError] = None
        self._busy = False  # a call holds the turn
        fence = proto.fence_name()
        self._fence_line = ("i " + fence + "\n").encode()
        self._fence_replies = proto.fence_replies(fence)
        self._thread = threading.Thread(target=self._run, name="glockd-io " + address, daemon=True)
        self._thread.start()

    # ---- state shared with callers (under _cv) ----

    @property
    def error(self) -> Optional[GlockdError]:
        with self._cv:
            return self._err

    def fail(self, err: GlockdError) -> None:
        """Declare the connection lost (once): first lost is set, then the
        socket is closed by the I/O thread, so the server can release no
        lock while the caller may still believe it holds it."""
        with self._cv:
            if not self._lose_locked(err):
                return
        self._wake()
        if self.on_lost is not None:
            self.on_lost()

    def _lose_locked(self, err: GlockdError) -> bool:
        if self._err is not None:
            return False
        self._err = err
        self.lost.set()
        self._cv.notify_all()
        return True

    def close(self) -> None:
        self.fail(SessionLost("glockd: closed"))
        if threading.current_thread() is not self._thread:
            self._thread.join(5)

    def start_heartbeat(self, interval: float) -> None:
        with self._cv:
            self.interval = interval
            self._next_ping = time.monotonic() + interval
        self._wake()

    def check_alive(self) -> None:
        """Raise the error of a lost connection, declaring it lost first when
        its timeout passed though the I/O thread has not noticed yet: a grant
        read after that moment must not be believed."""
        with self._cv:
            if (self._err is None and self.interval is not None
                    and time.monotonic() - self._alive >= self.timeout):
                self._lose_locked(self._silence())
            err = self._err
        if err is not None:
            if self.on_lost is not None:
                self.on_lost()
            raise err

    def _silence(self) -> SessionLost:
        return SessionLost("glockd: no answer from %s for %gs" % (self.address, self.timeout))

    # ---- calls ----

    def acquire_turn(self) -> None:
        """Take the right to send commands: a wait holds back every later
        command on the connection, so one call at a time."""
        with self._cv:
            while self._busy and self._err is None:
                self._cv.wait()
            if self._err is not None:
                raise self._err
            self._busy = True

    def release_turn(self) -> None:
        with self._cv:
            self._busy = False
            self._cv.notify_all()

    def exchange(self, reqs: Sequence[Request], deadline: Optional[float] = None) -> None:
        """Send reqs in one write and wait for all their replies. The caller
        holds the turn. Without a heartbeat, a reply later than deadline
        (default: the timeout; waits: their own limit plus the timeout)
        ends the connection, since the server is too slow to trust."""
        now = time.monotonic()
        with self._cv:
            if self._err is not None:
                raise self._err
            for r in reqs:
                r.sent = now
                self._pending.append(r)
                self._out += r.line.encode(proto.ENCODING, proto.ERRORS) + b"\n"
                if r.multi:
                    self._out += self._fence_line
        self._wake()
        last = reqs[-1]
        with self._cv:
            while not last.done and self._err is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._lose_locked(SessionLost(
                        "glockd: %r: no reply from %s in time" % (last.line, self.address)))
                    break
                self._cv.wait(left)
            err = None if last.done else self._err
        if err is not None:
            self._wake()
            if self.on_lost is not None:
                self.on_lost()
            raise err

    def call(self, reqs: Sequence[Request], deadline: Optional[float] = None) -> None:
        self.acquire_turn()
        try:
            self.exchange(reqs, deadline)
        finally:
            self.release_turn()

    def default_deadline(self) -> float:
        return time.monotonic() + self.timeout

    def cancel(self, name: Optional[str] = None) -> bool:
        """Send !cancel for the pending wait (only if it waits for name,
        when given); it then ends as a timeout. Out of band: does not take
        the turn. Returns whether a wait was pending."""
        with self._cv:
            if self._err is not None:
                return False
            for r in self._pending:
                if r.wait and not r.done and (name is None or r.name == proto.normalize(name)):
                    r.cancelled = True
                    self._out += ("!cancel " + r.name).rstrip().encode(proto.ENCODING, proto.ERRORS) + b"\n"
                    break
            else:
                return False
        self._wake()
        return True

    def ping(self, timeout: float) -> None:
        """A !ping round trip, answered by the server at once even during a wait."""
        deadline = time.monotonic() + timeout
        with self._cv:
            if self._err is not None:
                raise self._err
            seen = self._pongs
            self._pings.append(time.monotonic())
            self._out += b"!ping\n"
        self._wake()
        with self._cv:
            while self._pongs == seen and self._err is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._lose_locked(SessionLost("glockd: no answer to !ping from %s within %gs"
                                                  % (self.address, timeout)))
                    break
                self._cv.wait(left)
            err = self._err
        if err is not None:
            self._wake()
            raise err

    # ---- the I/O thread ----

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed

    def _route(self, text: str) -> None:
        """Hand one reply line to whoever waits for it. Called under _cv."""
        if text == proto.PONG:
            if self._pings:
                self._alive = max(self._alive, self._pings.popleft())
            self._pongs += 1
            return
        if text in proto.CANCEL_REPLIES:
            return  # the wait's own reply follows (or came before)
        if not self._pending:
            return  # nothing asked for it; the protocol sends none
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

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sock = self._sock
        try:
            sel.register(self._wake_r, selectors.EVENT_READ)
            sel.register(sock, selectors.EVENT_READ)
            buf = bytearray()
            write_needs_read = False
            while True:
                with self._cv:
                    if self._err is not None:
                        return
                    tmo = None
                    if self.interval is not None:
                        now = time.monotonic()
                        if now - self._alive >= self.timeout:
                            self._lose_locked(self._silence())
                            break
                        if now >= self._next_ping:
                            self._pings.append(now)
                            self._out += b"!ping\n"
                            self._next_ping = now + self.interval
                        tmo = max(0.0, min(self._next_ping, self._alive + self.timeout) - now)
                    writing = bool(self._out)
                events = selectors.EVENT_READ
                if writing and not write_needs_read:
                    events |= selectors.EVENT_WRITE
                sel.modify(sock, events)
                for key, _ in sel.select(tmo):
                    if key.fileobj is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except (BlockingIOError, InterruptedError):
                            pass
                if writing:
                    with self._cv:
                        data = bytes(self._out)
                    n = 0
                    write_needs_read = False
                    try:
                        n = sock.send(data)
                    except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                        pass
                    except ssl.SSLWantReadError:
                        write_needs_read = True
                    if n:
                        with self._cv:
                            del self._out[:n]
                while True:
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        break
                    if not data:
                        raise ConnectionResetError("the server closed the connection")
                    buf += data
                    if b"\n" in data:
                        *full, rest = bytes(buf).split(b"\n")
                        buf = bytearray(rest)
                        with self._cv:
                            for ln in full:
                                self._route(ln.decode(proto.ENCODING, proto.ERRORS))
                            self._cv.notify_all()
        except (OSError, ValueError) as e:
            with self._cv:
                self._lose_locked(SessionLost("glockd: connection to %s failed: %s" % (self.address, e)))
        finally:
            try:
                sel.close()
            finally:
                try:
                    sock.close()
                finally:
                    self._wake_r.close()
                    self._wake_w.close()
            if self.on_lost is not None:
                self.on_lost()


def open_socket(addr: str, timeout: float, ssl_context: Optional[ssl.SSLContext]) -> socket.socket:
    a = proto.parse_address(addr)
    if a.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(a.host)
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((a.host, a.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=a.host)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(addresses: Sequence[str], timeout: float, ssl_context: Optional[ssl.SSLContext],
            token: Optional[str]) -> Conn:
    """Connect to the first address that accepts, takes the token (auth,
    sent first on every connection) and answers a !ping within timeout: a
    stopped server still accepts connections in its kernel, but is passed
    over. A refused token is not tried elsewhere: it is raised at once."""
    if isinstance(addresses, str):
        addresses = [addresses]
    if not addresses:
        raise ValueError("glockd: no address")
    if token is not None and ("\n" in token or "\r" in token or not token):
        raise ValueError("glockd: bad token")
    for a in addresses:
        proto.parse_address(a)  # a typo is the caller's error, not the server's
    errs = []
    for addr in addresses:
        try:
            sock = open_socket(addr, timeout, ssl_context)
        except OSError as e:
            errs.append("%s: %s" % (addr, e))
            continue
        conn = Conn(sock, addr, timeout)
        try:
            if token is not None:
                req = Request("auth " + token)
                # A refused token is answered after the server's delay (1 s by default).
                conn.call([req], time.monotonic() + timeout + 2)
                proto.auth_reply("auth", req.lines)
            conn.ping(timeout)
        except AuthFailed:
            conn.close()
            raise
        except GlockdError as e:
            conn.close()
            errs.append("%s: %s" % (addr, e))
            continue
        return conn
    raise SessionLost("glockd: no address answered: " + "; ".join(errs))
