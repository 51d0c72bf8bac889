"""glockd.Client: one connection, one method per verb."""

import ssl
import threading
import time
from typing import List, Optional, Sequence, Tuple

from . import _proto as proto
from ._conn import Conn, Request, connect
from ._proto import LockDetail


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

    def _one(self, line: str, multi: bool = False, wait_s: Optional[float] = None,
             name: str = "") -> List[str]:
        wait = wait_s is not None
        req = Request(line, multi=multi, wait=wait, name=name)
        if not wait:
            deadline = self._conn.default_deadline()
        elif wait_s < 0:
            deadline = None
        else:
            deadline = time.monotonic() + wait_s + self._conn.timeout
        self._conn.call([req], deadline)
        return req.lines

    # ---- exclusive locks ----

    def get(self, name: str) -> bool:
        """g: take the exclusive lock name if it is free (or already ours)."""
        n = proto.check_name(name)
        cmd = proto.line("g", name)
        return proto.get_reply(cmd, self._one(cmd), n)

    def get_wait(self, name: str, timeout: Optional[float] = None) -> bool:
        """gw: take the lock, waiting up to timeout seconds for it (None: no
        limit). False when the wait ran out (or was cancelled)."""
        n = proto.check_name(name)
        ms = proto.wait_ms(timeout)
        cmd = "gw %d %s" % (ms, name)
        return proto.get_reply(cmd, self._one(cmd, wait_s=ms / 1000 if ms >= 0 else -1, name=n), n)

    def release(self, name: str) -> bool:
        """r: release the lock; False when this connection does not hold it."""
        n = proto.check_name(name)
        cmd = proto.line("r", name)
        return proto.flag(cmd, self._one(cmd), n, "1 Lock Release Success: ", "0 Lock Release Failure: ")

    def is_locked(self, name: str) -> bool:
        """i: whether anyone holds the exclusive lock name."""
        n = proto.check_name(name)
        cmd = proto.line("i", name)
        return proto.flag(cmd, self._one(cmd), n, "1 Lock Is Locked: ", "0 Lock Not Locked: ")

    def token(self, name: str) -> Optional[int]:
        """t: the fencing token of the lock's holder, None when unlocked."""
        n = proto.check_name(name)
        cmd = proto.line("t", name)
        return proto.token(cmd, self._one(cmd), n)

    # ---- shared locks and semaphores ----

    def shared_get(self, name: str) -> int:
        """sg: take the shared lock name; returns how many hold it now."""
        n = proto.check_name(name)
        cmd = proto.line("sg", name)
        return proto.shared_get_reply(cmd, self._one(cmd), n)

    def shared_get_wait(self, name: str, limit: int, timeout: Optional[float] = None) -> int:
        """sgw: take the shared lock while fewer than limit hold it, waiting
        up to timeout seconds; returns the holders now, 0 when it ran out."""
        if limit < 1:
            raise ValueError("glockd: limit must be 1 or more")
        n = proto.check_name(name)
        ms = proto.wait_ms(timeout)
        cmd = "sgw %d %d %s" % (ms, limit, name)
        return proto.shared_get_reply(cmd, self._one(cmd, wait_s=ms / 1000 if ms >= 0 else -1, name=n), n)

    def shared_release(self, name: str) -> bool:
        """sr: release the shared lock; False when not held."""
        n = proto.check_name(name)
        cmd = proto.line("sr", name)
        return proto.flag(cmd, self._one(cmd), n, "1 Shared Lock Release Success: ",
                          "0 Shared Lock Release Failure: ")

    def shared_count(self, name: str) -> int:
        """si: how many connections hold the shared lock name."""
        n = proto.check_name(name)
        cmd = proto.line("si", name)
        return proto.count(cmd, self._one(cmd), n, " Shared Lock Is Locked: ", "0 Shared Lock Not Locked: ")

    def cancel(self, name: Optional[str] = None) -> bool:
        """!cancel: end this connection's pending wait (only if it waits for
        name, when given) at once, as a timeout; its other locks are kept.
        Meant to be called from another thread than the one waiting."""
        return self._conn.cancel(name)

    # ---- naming and inspecting ----

    def me(self) -> Tuple[str, str]:
        """me: (connection name, registered name)."""
        return proto.me("me", self._one("me"))

    def iam(self, name: str = "") -> None:
        """iam: register a name for this connection ("" removes it)."""
        cmd = proto.line("iam", proto.check_name(name) and name)
        proto.exact(cmd, self._one(cmd), "1 ok")

    def who(self, name: str = "") -> List[Tuple[str, str]]:
        """who: (connection name, registered name) per registered connection."""
        n = proto.check_name(name)
        cmd = proto.line("who", name)
        return [(c, r) for c, r in proto.pairs(cmd, self._one(cmd, multi=True)) if not n or r == n]

    def locks(self, name: str = "") -> List[Tuple[str, str]]:
        """d: (lock, owner) per exclusive lock, sorted by name."""
        n = proto.check_name(name)
        cmd = proto.line("d", name)
        return proto.pairs(cmd, self._one(cmd, multi=True), n)

    def shared_locks(self, name: str = "") -> List[Tuple[str, str]]:
        """sd: (lock, owner) per holder of each shared lock."""
        n = proto.check_name(name)
        cmd = proto.line("sd", name)
        return proto.pairs(cmd, self._one(cmd, multi=True), n)

    def details(self, name: str = "") -> List[LockDetail]:
        """dl: who holds each lock, with its token, how long, and its waiters."""
        n = proto.check_name(name)
        cmd = proto.line("dl", name)
        return proto.details(cmd, self._one(cmd, multi=True), n)

    def dump(self) -> str:
        """dump: the exclusive table as the server prints it (map[...])."""
        reply = proto.single("dump", self._one("dump"))
        proto.check_common("dump", reply)
        return reply

    def dump_shared(self) -> str:
        """dump shared: the shared table as the server prints it."""
        reply = proto.single("dump shared", self._one("dump shared"))
        proto.check_common("dump shared", reply)
        return reply

    def stats(self) -> dict:
        """q: the server's counters."""
        return proto.stats("q", self._one("q", multi=True))

    def ping(self) -> None:
        """ping: an application-level round trip, in order with the commands."""
        proto.exact("ping", self._one("ping"), "1 pong")

    def heartbeat(self) -> None:
        """!ping: a round trip the server answers at once, even during a wait."""
        self._conn.ping(self._conn.timeout)

    # ---- access control and operations ----

    def auth(self, token: str) -> None:
        """auth: identify the connection (the constructor's token= does it
        on connect). Raises AuthFailed."""
        if not token or "\n" in token or "\r" in token:
            raise ValueError("glockd: bad token")
        req = Request("auth " + token)
        self._conn.call([req], self._conn.default_deadline() + 2)
        proto.auth_reply("auth", req.lines)

    def perms(self) -> str:
        """perms: "IDENTITY PERMISSIONS PATTERN..." of this connection."""
        reply = proto.single("perms", self._one("perms"))
        if reply.startswith("1 "):
            return reply[2:]
        proto.check_common("perms", reply)
        raise proto.ReplyError("perms", [reply])

    def kill(self, conn: str) -> bool:
        """kill: close another connection (admin); False when there is none."""
        cmd = proto.line("kill", proto.check_name(conn) and conn)
        reply = proto.single(cmd, self._one(cmd))
        if reply == "1 ok":
            return True
        if reply.startswith("0 No Such Connection"):
            return False
        proto.check_common(cmd, reply)
        raise proto.ReplyError(cmd, [reply])

    def kill_holder(self, name: str) -> bool:
        """kill-holder: close the connection holding lock name (admin)."""
        n = proto.check_name(name)
        cmd = proto.line("kill-holder", name)
        reply = proto.single(cmd, self._one(cmd))
        if reply == "1 ok":
            return True
        if reply == "0 Lock Not Locked: " + n:
            return False
        proto.check_common(cmd, reply)
        raise proto.ReplyError(cmd, [reply])


__all__: Sequence[str] = ["Client"]
