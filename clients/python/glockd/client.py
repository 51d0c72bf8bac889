"""glockd.Client: one connection, one method per verb."""

import ssl
import threading
import time
from typing import List, Optional, Sequence, Tuple

from . import _verbs as verbs
from ._conn import Conn, Request, connect
from ._proto import LockDetail, Waiter


class Client:
    """One connection to a glockd server, with one method per verb.

    Locks belong to the connection: they are released when it ends. The
    Client connects to the first of addresses ("host:port", "[::1]:port"
    or "unix:/path") that accepts, sends ``auth TOKEN`` first when token is
    given, and answers a ``!ping`` within timeout. A reply that does not
    come within timeout (for a wait: its own limit plus timeout) ends the
    connection with SessionLost: the server is too slow to trust.

    Calls from several threads are run one after another. Commands a
    naive client gets wrong are handled here: a multi-line reply (d, sd,
    who, dl, q) has no terminator, so it is followed by ``i FENCE`` on a
    name no one uses and read up to that reply; and no unknown verb is ever
    sent, since the server would not answer it.

    It has no heartbeat: use Session to learn when locks are lost.
    """

    def __init__(self, addresses, timeout: float = 3.0,
                 ssl_context: Optional[ssl.SSLContext] = None, token: Optional[str] = None):
        self._conn: Conn = connect(addresses, timeout, ssl_context, token)

    @classmethod
    def _wrap(cls, conn: Conn) -> "Client":
        c = cls.__new__(cls)
        c._conn = conn
        return c

    # ---- the connection ----

    @property
    def address(self) -> str:
        """The address this client connected to."""
        return self._conn.address

    @property
    def lost(self) -> threading.Event:
        """Set when the connection is lost or closed."""
        return self._conn.lost

    @property
    def error(self):
        """Why the connection ended, or None while it stands."""
        return self._conn.error

    def close(self) -> None:
        """Close the connection, which releases its locks."""
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _do(self, cmd: "verbs.Cmd"):
        wait = cmd.wait_s is not None
        req = Request(cmd.line, multi=cmd.multi, wait=wait, name=cmd.name)
        if not wait:
            deadline = self._conn.default_deadline()
        elif cmd.wait_s < 0:
            deadline = None
        else:
            deadline = time.monotonic() + cmd.wait_s + self._conn.timeout
        if cmd.line.startswith("auth "):
            deadline += 2  # a refused token is answered after the server's delay
        self._conn.call([req], deadline)
        return cmd.parse(req.lines)

    # ---- exclusive locks ----

    def get(self, name: str) -> bool:
        """g: take the exclusive lock name if it is free (or already ours)."""
        return self._do(verbs.get(name))

    def get_wait(self, name: str, timeout: Optional[float] = None) -> bool:
        """gw: take the lock, waiting up to timeout seconds for it (None: no
        limit). False when the wait ran out (or was cancelled)."""
        return self._do(verbs.get_wait(name, timeout))

    def release(self, name: str) -> bool:
        """r: release the lock; False when this connection does not hold it."""
        return self._do(verbs.release(name))

    def is_locked(self, name: str) -> bool:
        """i: whether anyone holds the exclusive lock name."""
        return self._do(verbs.is_locked(name))

    def token(self, name: str) -> Optional[int]:
        """t: the fencing token of the lock's holder, None when unlocked."""
        return self._do(verbs.token(name))

    # ---- shared locks and semaphores ----

    def shared_get(self, name: str) -> int:
        """sg: take the shared lock name; returns how many hold it now."""
        return self._do(verbs.shared_get(name))

    def shared_get_wait(self, name: str, limit: int, timeout: Optional[float] = None) -> int:
        """sgw: take the shared lock while fewer than limit hold it, waiting
        up to timeout seconds; returns the holders now, 0 when it ran out."""
        return self._do(verbs.shared_get_wait(name, limit, timeout))

    def shared_release(self, name: str) -> bool:
        """sr: release the shared lock; False when not held."""
        return self._do(verbs.shared_release(name))

    def shared_count(self, name: str) -> int:
        """si: how many connections hold the shared lock name."""
        return self._do(verbs.shared_count(name))

    def cancel(self, name: Optional[str] = None) -> bool:
        """!cancel: end this connection's pending wait (only if it waits for
        name, when given) at once, as a timeout; its other locks are kept.
        Meant to be called from another thread than the one waiting.
        Returns whether a wait was pending."""
        return self._conn.cancel(name)

    # ---- naming and inspecting ----

    def me(self) -> Tuple[str, str]:
        """me: (connection name, registered name)."""
        return self._do(verbs.me())

    def iam(self, name: str = "") -> None:
        """iam: register a name for this connection ("" removes it)."""
        return self._do(verbs.iam(name))

    def who(self, name: str = "") -> List[Tuple[str, str]]:
        """who: (connection name, registered name) per registered connection."""
        return self._do(verbs.who(name))

    def locks(self, name: str = "") -> List[Tuple[str, str]]:
        """d: (lock, owner) per exclusive lock, in the server's table order."""
        return self._do(verbs.locks(name))

    def shared_locks(self, name: str = "") -> List[Tuple[str, str]]:
        """sd: (lock, owner) per holder of each shared lock."""
        return self._do(verbs.shared_locks(name))

    def details(self, name: str = "") -> List[LockDetail]:
        """dl: each lock's holder, token, time held and waiters."""
        return self._do(verbs.details(name))

    def waiters(self, name: str = "") -> List[Waiter]:
        """dw: who waits for each lock (every lock, or name's), in queue
        order, and for how long."""
        return self._do(verbs.waiters(name))

    def dump(self) -> str:
        """dump: the exclusive table as the server prints it (map[...])."""
        return self._do(verbs.dump())

    def dump_shared(self) -> str:
        """dump shared: the shared table as the server prints it."""
        return self._do(verbs.dump_shared())

    def stats(self) -> dict:
        """q: the server's counters."""
        return self._do(verbs.stats())

    def ping(self) -> None:
        """ping: an application-level round trip, in order with the commands."""
        return self._do(verbs.ping())

    def heartbeat(self) -> None:
        """!ping: a round trip the server answers at once, even during a wait."""
        self._conn.ping(self._conn.timeout)

    # ---- access control and operations ----

    def auth(self, token: str) -> None:
        """auth: identify the connection (token= does it on every connect).
        Raises AuthFailed."""
        return self._do(verbs.auth(token))

    def perms(self) -> str:
        """perms: "IDENTITY PERMISSIONS PATTERN..." of this connection."""
        return self._do(verbs.perms())

    def kill(self, conn: str) -> bool:
        """kill: close another connection (admin); False when there is none."""
        return self._do(verbs.kill(conn))

    def kill_holder(self, name: str) -> bool:
        """kill-holder: close the connection holding lock name (admin)."""
        return self._do(verbs.kill_holder(name))


__all__: Sequence[str] = ["Client"]
