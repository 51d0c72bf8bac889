"""The wire protocol: addresses, command lines and reply parsing.

Shared by the threaded client (glockd.Client, glockd.Session) and the
asyncio one (glockd.aio). Nothing here does I/O.
"""

import math
import re
import secrets
from typing import List, NamedTuple, Optional, Tuple

from .errors import (
    AuthFailed,
    Disabled,
    GlockdError,
    PermissionDenied,
    ReplyError,
)

ENCODING = "utf-8"
ERRORS = "surrogateescape"  # a name may hold any byte but a newline

MAX_TOKEN = 2**53 - 1


class Address(NamedTuple):
    """A parsed address: ("tcp", host, port) or ("unix", path, None)."""

    kind: str
    host: str
    port: Optional[int]


def parse_address(addr: str) -> Address:
    """Parse "host:port", "[v6]:port" or "unix:/path"."""
    if addr.startswith("unix:"):
        path = addr[len("unix:"):]
        if path.startswith("//"):  # unix:///path, as PHP writes it
            path = path[2:]
        if not path:
            raise ValueError("glockd: empty unix socket path in %r" % addr)
        return Address("unix", path, None)
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
    else:
        host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError("glockd: address %r is not host:port or unix:/path" % addr)
    return Address("tcp", host, int(port))


def normalize(name: str) -> str:
    """The name as the server sees it: outer white space removed, inner runs
    made one space. Replies carry the normalised name."""
    return " ".join(name.split())


def check_name(name: str) -> str:
    if "\n" in name or "\r" in name:
        raise ValueError("glockd: a lock name cannot contain a newline: %r" % name)
    return normalize(name)


def line(verb: str, arg: str = "") -> str:
    return verb + " " + arg if arg else verb


def wait_ms(timeout: Optional[float]) -> int:
    """The MS of gw/sgw for a timeout in seconds (None: no limit)."""
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    return max(1, math.ceil(timeout * 1000))


def fence_name() -> str:
    """A lock name no one else uses: "i NAME" ends a multi-line reply."""
    return "glockd-client-fence-" + secrets.token_hex(8)


def fence_replies(name: str) -> Tuple[str, ...]:
    # With an ACL the fence may be outside the identity's patterns.
    return ("0 Lock Not Locked: " + name, "1 Lock Is Locked: " + name,
            "0 Permission Denied: " + name)


# Out-of-band replies, recognised by their exact text.
PONG = "!pong"
CANCEL_REPLIES = {"!cancel 0": False, "!cancel 1": True}


def check_common(cmd: str, reply: str) -> None:
    """Raise the typed error of a reply that refuses any command."""
    if reply == "0 Permission Denied" or reply.startswith("0 Permission Denied: "):
        raise PermissionDenied(reply[len("0 Permission Denied: "):] or None, cmd, reply)
    if reply == "0 Auth Required":
        raise AuthFailed("glockd: %r: the server requires auth (pass token=)" % cmd)
    if reply == "0 disabled":
        raise Disabled("glockd: %r: disabled on this server" % cmd)


def single(cmd: str, lines: List[str]) -> str:
    if len(lines) != 1:
        raise ReplyError(cmd, lines)
    return lines[0]


def flag(cmd: str, lines: List[str], name: str, yes: str, no: str) -> bool:
    """A reply that is yes+name or no+name."""
    reply = single(cmd, lines)
    if reply == yes + name:
        return True
    if reply == no + name:
        return False
    check_common(cmd, reply)
    raise ReplyError(cmd, lines)


_COUNT = re.compile(r"(0|[1-9][0-9]*)")


def count(cmd: str, lines: List[str], name: str, text: str, zero: str = "") -> int:
    """A reply "N"+text+name, or zero+name meaning 0."""
    reply = single(cmd, lines)
    if zero and reply == zero + name:
        return 0
    if reply.endswith(text + name):
        n = reply[: len(reply) - len(text) - len(name)]
        if _COUNT.fullmatch(n):
            return int(n)
    check_common(cmd, reply)
    raise ReplyError(cmd, lines)


def token(cmd: str, lines: List[str], name: str) -> Optional[int]:
    """The reply to t: the token, or None when no one holds the lock."""
    reply = single(cmd, lines)
    if reply == "0 Lock Not Locked: " + name:
        return None
    n = count(cmd, lines, name, " Lock Token: ")
    if not 0 < n <= MAX_TOKEN:
        raise ReplyError(cmd, lines)
    return n


def get_reply(cmd: str, lines: List[str], name: str) -> bool:
    """g or gw: granted or not (Failure and Timeout both mean not)."""
    reply = single(cmd, lines)
    if reply == "1 Lock Get Success: " + name:
        return True
    if reply in ("0 Lock Get Failure: " + name, "0 Lock Get Timeout: " + name):
        return False
    if reply.startswith("0 Too Many Locks"):
        raise GlockdError("glockd: %r: %s" % (cmd, reply))
    check_common(cmd, reply)
    raise ReplyError(cmd, lines)


def shared_get_reply(cmd: str, lines: List[str], name: str) -> int:
    """sg or sgw: the holders now, or 0 when the wait ran out."""
    reply = single(cmd, lines)
    if reply == "0 Shared Lock Get Timeout: " + name:
        return 0
    if reply.startswith("0 Too Many Locks"):
        raise GlockdError("glockd: %r: %s" % (cmd, reply))
    n = count(cmd, lines, name, " Shared Lock Get Success: ")
    if n < 1:
        raise ReplyError(cmd, lines)
    return n


def exact(cmd: str, lines: List[str], want: str) -> None:
    reply = single(cmd, lines)
    if reply != want:
        check_common(cmd, reply)
        raise ReplyError(cmd, lines)


def multi_lines(cmd: str, lines: List[str]) -> List[str]:
    """A multi-line reply: "0 disabled" or a refusal is one line with no ": "."""
    if len(lines) == 1 and lines[0] in ("0 disabled", "0 Permission Denied", "0 Auth Required"):
        check_common(cmd, lines[0])
    return lines


def pairs(cmd: str, lines: List[str], name: str = "") -> List[Tuple[str, str]]:
    """d, sd and who: "KEY: VALUE" per line."""
    out = []
    for ln in multi_lines(cmd, lines):
        if name:
            ok = ln.startswith(name + ": ")
            key, value = name, ln[len(name) + 2:]
        else:
            key, sep, value = ln.partition(": ")
            ok = bool(sep)
        if not ok or not value:
            raise ReplyError(cmd, lines)
        out.append((key, value))
    return out


class LockDetail(NamedTuple):
    """One line of dl: an exclusive lock, or one holder of a shared lock."""

    lock: str
    owner: str
    shared: bool
    token: int  # exclusive: the holder's fencing token; 0 for shared
    held: float  # seconds held, to the millisecond
    holders: int  # shared: how many hold it; 1 for exclusive
    waiters: int


def _field(f: List[str], i: int, key: str) -> int:
    if len(f) < i or not f[-i].startswith(key + "="):
        raise ValueError(key)
    v = f[-i][len(key) + 1:]
    if not _COUNT.fullmatch(v):
        raise ValueError(key)
    return int(v)


def details(cmd: str, lines: List[str], name: str = "") -> List[LockDetail]:
    """dl: fields read from the end of each line, since an owner may hold spaces."""
    out = []
    for lock, rest in pairs(cmd, lines, name):
        f = rest.split(" ")
        try:
            waiters = _field(f, 1, "waiters")
            if len(f) >= 5 and f[-4] == "shared":
                d = LockDetail(lock, " ".join(f[:-4]), True, 0,
                               _field(f, 3, "held_ms") / 1000, _field(f, 2, "holders"), waiters)
            elif len(f) >= 4:
                d = LockDetail(lock, " ".join(f[:-3]), False, _field(f, 3, "token"),
                               _field(f, 2, "held_ms") / 1000, 1, waiters)
            else:
                raise ValueError("short")
        except ValueError:
            raise ReplyError(cmd, lines) from None
        if not d.owner:
            raise ReplyError(cmd, lines)
        out.append(d)
    return out


class Waiter(NamedTuple):
    """One line of dw: a connection queued for a lock (gw, sgw, !gw, !sgw)."""

    lock: str
    waiter: str  # its registered name (iam), or its connection name
    shared: bool  # queued for the shared lock (sgw, !sgw)
    queued: float  # seconds it has waited, to the millisecond
    deadlock: int  # with -deadlocks report: the deadlock it is in; 0 for none


def waiters(cmd: str, lines: List[str], name: str = "") -> List[Waiter]:
    """dw: "LOCK: WAITER [shared ]queued_ms=MS[ deadlock=N]", read from the
    end of each line, since a waiter's name may hold spaces."""
    out = []
    for lock, rest in pairs(cmd, lines, name):
        f = rest.split(" ")
        try:
            deadlock = 0
            if f[-1].startswith("deadlock="):
                deadlock = _field(f, 1, "deadlock")
                f = f[:-1]
            queued = _field(f, 1, "queued_ms") / 1000
            f = f[:-1]
        except ValueError:
            raise ReplyError(cmd, lines) from None
        shared = len(f) > 1 and f[-1] == "shared"
        if shared:
            f = f[:-1]
        w = Waiter(lock, " ".join(f), shared, queued, deadlock)
        if not w.waiter:
            raise ReplyError(cmd, lines)
        out.append(w)
    return out


def stats(cmd: str, lines: List[str]) -> dict:
    out = {}
    for key, value in pairs(cmd, lines):
        if not _COUNT.fullmatch(value) or key in out:
            raise ReplyError(cmd, lines)
        out[key] = int(value)
    if not out:
        raise ReplyError(cmd, lines)
    return out


def me(cmd: str, lines: List[str]) -> Tuple[str, str]:
    reply = single(cmd, lines)
    if reply.startswith("1 "):
        conn, sep, name = reply[2:].partition(" ")
        if sep and conn and name:
            return conn, name
    check_common(cmd, reply)
    raise ReplyError(cmd, lines)


def auth_reply(cmd: str, lines: List[str]) -> None:
    """auth: "1 ok"; "0 disabled" (no ACL on the server) is accepted."""
    reply = single(cmd, lines)
    if reply in ("1 ok", "0 disabled"):
        return
    if reply == "0 Auth Failure":
        raise AuthFailed("glockd: auth failed: the server refused the token")
    raise ReplyError("auth ...", lines)
