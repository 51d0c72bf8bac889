"""Each verb as a command line and the parser of its reply, used by both
glockd.Client and glockd.aio.Client."""

from typing import Any, Callable, List, NamedTuple, Optional

from . import _proto as proto


class Cmd(NamedTuple):
    line: str
    parse: Callable[[List[str]], Any]
    multi: bool = False
    wait_s: Optional[float] = None  # a wait (gw, sgw): its limit in seconds, -1 for none
    name: str = ""  # of a wait: the normalised name


def _named(verb: str, name: str):
    return proto.line(verb, name), proto.check_name(name)


def get(name: str) -> Cmd:
    line, n = _named("g", name)
    return Cmd(line, lambda ls: proto.get_reply(line, ls, n))


def _wait_s(ms: int) -> float:
    return ms / 1000 if ms >= 0 else -1


def get_wait(name: str, timeout: Optional[float]) -> Cmd:
    n = proto.check_name(name)
    ms = proto.wait_ms(timeout)
    line = "gw %d %s" % (ms, name)
    return Cmd(line, lambda ls: proto.get_reply(line, ls, n), wait_s=_wait_s(ms), name=n)


def release(name: str) -> Cmd:
    line, n = _named("r", name)
    return Cmd(line, lambda ls: proto.flag(line, ls, n, "1 Lock Release Success: ", "0 Lock Release Failure: "))


def is_locked(name: str) -> Cmd:
    line, n = _named("i", name)
    return Cmd(line, lambda ls: proto.flag(line, ls, n, "1 Lock Is Locked: ", "0 Lock Not Locked: "))


def token(name: str) -> Cmd:
    line, n = _named("t", name)
    return Cmd(line, lambda ls: proto.token(line, ls, n))


def shared_get(name: str) -> Cmd:
    line, n = _named("sg", name)
    return Cmd(line, lambda ls: proto.shared_get_reply(line, ls, n))


def shared_get_wait(name: str, limit: int, timeout: Optional[float]) -> Cmd:
    if limit < 1:
        raise ValueError("glockd: limit must be 1 or more")
    n = proto.check_name(name)
    ms = proto.wait_ms(timeout)
    line = "sgw %d %d %s" % (ms, limit, name)
    return Cmd(line, lambda ls: proto.shared_get_reply(line, ls, n), wait_s=_wait_s(ms), name=n)


def shared_release(name: str) -> Cmd:
    line, n = _named("sr", name)
    return Cmd(line, lambda ls: proto.flag(line, ls, n, "1 Shared Lock Release Success: ",
                                           "0 Shared Lock Release Failure: "))


def shared_count(name: str) -> Cmd:
    line, n = _named("si", name)
    return Cmd(line, lambda ls: proto.count(line, ls, n, " Shared Lock Is Locked: ", "0 Shared Lock Not Locked: "))


def me() -> Cmd:
    return Cmd("me", lambda ls: proto.me("me", ls))


def iam(name: str) -> Cmd:
    line, _ = _named("iam", name)
    return Cmd(line, lambda ls: proto.exact(line, ls, "1 ok"))


def who(name: str) -> Cmd:
    line, n = _named("who", name)
    return Cmd(line, lambda ls: [(c, r) for c, r in proto.pairs(line, ls) if not n or r == n], multi=True)


def locks(name: str) -> Cmd:
    line, n = _named("d", name)
    return Cmd(line, lambda ls: proto.pairs(line, ls, n), multi=True)


def shared_locks(name: str) -> Cmd:
    line, n = _named("sd", name)
    return Cmd(line, lambda ls: proto.pairs(line, ls, n), multi=True)


def details(name: str) -> Cmd:
    line, n = _named("dl", name)
    return Cmd(line, lambda ls: proto.details(line, ls, n), multi=True)


def waiters(name: str) -> Cmd:
    line, n = _named("dw", name)
    return Cmd(line, lambda ls: proto.waiters(line, ls, n), multi=True)


def _dump_reply(line: str, ls: List[str]) -> str:
    reply = proto.single(line, ls)
    proto.check_common(line, reply)
    if not (reply.startswith("map[") and reply.endswith("]")):
        raise proto.ReplyError(line, ls)
    return reply


def dump() -> Cmd:
    return Cmd("dump", lambda ls: _dump_reply("dump", ls))


def dump_shared() -> Cmd:
    return Cmd("dump shared", lambda ls: _dump_reply("dump shared", ls))


def stats() -> Cmd:
    return Cmd("q", lambda ls: proto.stats("q", ls), multi=True)


def ping() -> Cmd:
    return Cmd("ping", lambda ls: proto.exact("ping", ls, "1 pong"))


def auth(tok: str) -> Cmd:
    if not tok or "\n" in tok or "\r" in tok:
        raise ValueError("glockd: bad token")
    return Cmd("auth " + tok, lambda ls: proto.auth_reply("auth", ls))


def _perms(ls: List[str]) -> str:
    reply = proto.single("perms", ls)
    if reply.startswith("1 "):
        return reply[2:]
    proto.check_common("perms", reply)
    raise proto.ReplyError("perms", ls)


def perms() -> Cmd:
    return Cmd("perms", _perms)


def kill(conn: str) -> Cmd:
    line, _ = _named("kill", conn)

    def parse(ls):
        reply = proto.single(line, ls)
        if reply == "1 ok":
            return True
        if reply.startswith("0 No Such Connection: "):
            return False
        proto.check_common(line, reply)
        raise proto.ReplyError(line, ls)
    return Cmd(line, parse)


def kill_holder(name: str) -> Cmd:
    line, n = _named("kill-holder", name)

    def parse(ls):
        reply = proto.single(line, ls)
        if reply == "1 ok":
            return True
        if reply == "0 Lock Not Locked: " + n:
            return False
        proto.check_common(line, reply)
        raise proto.ReplyError(line, ls)
    return Cmd(line, parse)
