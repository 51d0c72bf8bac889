"""Runs real glockd daemons for the tests.

The daemon is $GLOCKD_BIN, or else built once from the repository this
directory is in (go build). Each Server listens on 127.0.0.1 only, on a
free port found by binding port 0 and releasing it.
"""

import atexit
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_tmp = tempfile.mkdtemp(prefix="glockd-py-tests-")
atexit.register(shutil.rmtree, _tmp, True)
_bin = None
_certs = None


def repo_root() -> str:
    d = HERE
    while not os.path.exists(os.path.join(d, "go.mod")):
        parent = os.path.dirname(d)
        if parent == d:
            raise unittest.SkipTest("not inside the glockd repository and GLOCKD_BIN not set")
        d = parent
    return d


def glockd_bin() -> str:
    global _bin
    if _bin is None:
        _bin = os.environ.get("GLOCKD_BIN")
        if not _bin:
            _bin = os.path.join(_tmp, "glockd")
            subprocess.run(["go", "build", "-o", _bin, "."], cwd=repo_root(), check=True)
    return _bin


def certs() -> str:
    """A CA and a server certificate for 127.0.0.1, by scripts/make-certs.sh."""
    global _certs
    if _certs is None:
        d = os.path.join(_tmp, "certs")
        subprocess.run(["sh", os.path.join(repo_root(), "scripts", "make-certs.sh"), d],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _certs = d
    return _certs


def acl_file(lines) -> str:
    """An ACL file: lines of (identity, token, permissions, patterns)."""
    fd, path = tempfile.mkstemp(dir=_tmp, suffix=".acl")
    with os.fdopen(fd, "w") as f:
        for ident, tok, perms, patterns in lines:
            f.write("%s sha256:%s %s %s\n" % (ident, hashlib.sha256(tok.encode()).hexdigest(), perms, patterns))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A glockd process: plain TCP on .port (or TLS only, tls=True), and a
    unix socket at .unix_path when unix=True."""

    def __init__(self, *extra, tls=False, unix=False):
        self.stopped = False
        for _ in range(5):
            self.port = free_port()
            args = [glockd_bin(), "-bind", "127.0.0.1", "-ws", "0", "-auth-failure-delay", "100ms"]
            if tls:
                c = certs()
                args += ["-port", "0", "-tls-port", str(self.port),
                         "-tls-cert", os.path.join(c, "server.crt"), "-tls-key", os.path.join(c, "server.key")]
            else:
                args += ["-port", str(self.port)]
            self.unix_path = None
            if unix:
                self.unix_path = os.path.join(tempfile.mkdtemp(dir=_tmp), "glockd.sock")
                args += ["-unix", self.unix_path]
            args += list(extra)
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if self._ready():
                return
            self.proc.kill()
            self.proc.wait()
        raise RuntimeError("glockd did not start: %s" % self.proc.stderr.read().decode(errors="replace"))

    def _ready(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # the port was taken meanwhile
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.unix_path is None or os.path.exists(self.unix_path):
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    @property
    def addr(self) -> str:
        return "127.0.0.1:%d" % self.port

    @property
    def unix_addr(self) -> str:
        return "unix:" + self.unix_path

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True
        # The signal is delivered asynchronously: wait until it has stopped.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                if f.read().rpartition(")")[2].split()[0] == "T":
                    return
            time.sleep(0.001)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.stopped:
                self.cont()
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()


def dead_addr() -> str:
    """An address where nothing listens."""
    return "127.0.0.1:%d" % free_port()
