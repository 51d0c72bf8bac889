"""Client of the glockd network lock daemon.

    import glockd

    with glockd.Session(["10.0.0.1:9999", "10.0.0.2:9999"]) as s:
        with s.lock("nightly-report", timeout=5.0) as lk:
            write_report(fencing_token=lk.token)   # check lk.lost before each critical step

See README.md. glockd.aio has the same API for asyncio.
"""

from ._proto import LockDetail, Waiter, normalize
from .client import Client
from .errors import (
    AuthFailed,
    Cancelled,
    Disabled,
    GlockdError,
    LockTimeout,
    NotHeld,
    PermissionDenied,
    ReplyError,
    SessionLost,
)
from .session import Lock, Session, SharedLock

__version__ = "0.3.0"

__all__ = [
    "AuthFailed", "Cancelled", "Client", "Disabled", "GlockdError", "Lock", "LockDetail",
    "LockTimeout", "NotHeld", "PermissionDenied", "ReplyError", "Session", "SessionLost",
    "SharedLock", "Waiter", "normalize", "__version__",
]
