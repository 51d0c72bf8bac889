"""The exceptions of the glockd client."""

from typing import List, Optional


class GlockdError(Exception):
    """Base class of every error raised by this package."""


class SessionLost(GlockdError, ConnectionError):
    """The connection failed, or the server answered nothing within the
    session's timeout, or no address could be reached. Every lock taken
    through the session must be taken to be gone (or someone else's)."""


class LockTimeout(GlockdError, TimeoutError):
    """The lock could not be taken within the timeout. The session and its
    other locks are kept."""


class Cancelled(GlockdError):
    """The wait was given up with Session.cancel(); the session and its
    other locks are kept, and the lock is not held."""


class PermissionDenied(GlockdError, PermissionError):
    """The server's ACL does not let this identity do that (on that name)."""

    def __init__(self, name: Optional[str], cmd: str, reply: str):
        super().__init__("glockd: %r: %s" % (cmd, reply))
        self.name = name  # the lock name refused, None for d, q, ...
        self.reply = reply


class AuthFailed(GlockdError):
    """The server refused the token, or wants one and none was given."""


class Disabled(GlockdError):
    """The server was started without that command (-dump=false, ...)."""


class NotHeld(GlockdError):
    """The lock was already released through this handle, or the server
    says this connection does not hold it."""


class ReplyError(GlockdError):
    """A reply the protocol does not allow for the command sent."""

    def __init__(self, cmd: str, lines: List[str]):
        super().__init__("glockd: %r: unexpected reply %r" % (cmd, lines))
        self.cmd = cmd
        self.lines = list(lines)
