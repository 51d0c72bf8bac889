"""glockd.Session against real glockd daemons."""

import os
import ssl
import threading
import time
import unittest

import glockd
from harness import Server, acl_file, certs, dead_addr


def waiters(client, name):
    """How many wait for the exclusive lock name, from dl."""
    for d in client.details(name):
        return d.waiters
    return 0


def eventually(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


class SessionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(unix=True)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def session(self, addrs=None, **kw):
        s = glockd.Session(addrs or [self.server.addr], **kw)
        self.addCleanup(s.close)
        return s

    def test_lock_try_lock_release_and_tokens_increase(self):
        a, b = self.session(), self.session()
        tokens = []
        for _ in range(3):
            with a.lock("py/basic", timeout=5.0) as lk:
                self.assertIsInstance(lk.token, int)
                self.assertIs(lk.lost, a.lost)
                self.assertFalse(lk.lost.is_set())
                self.assertIsNone(b.try_lock("py/basic"))
                self.assertEqual(b.client.token("py/basic"), lk.token)
                tokens.append(lk.token)
            self.assertFalse(lk.held)
        self.assertEqual(tokens, sorted(set(tokens)), "tokens must strictly increase")
        lk = b.try_lock("py/basic")
        self.assertIsNotNone(lk)
        self.assertGreater(lk.token, tokens[-1])
        self.assertLessEqual(lk.token, 2**53 - 1)
        lk.release()
        with self.assertRaises(glockd.NotHeld):
            lk.release()
        self.assertFalse(a.client.is_locked("py/basic"))

    def test_names_are_normalised(self):
        s = self.session()
        with s.lock("  py/a   b ") as lk:
            self.assertEqual(lk.name, "py/a b")
            self.assertTrue(s.client.is_locked("py/a b"))

    def test_semaphore(self):
        a, b, c = self.session(), self.session(), self.session()
        s1 = a.acquire("py/sem", limit=2, timeout=2.0)
        s2 = b.acquire("py/sem", limit=2, timeout=2.0)
        self.assertEqual((s1.count, s2.count), (1, 2))
        self.assertIsNone(c.try_acquire("py/sem", 2))
        t0 = time.monotonic()
        with self.assertRaises(glockd.LockTimeout):
            c.acquire("py/sem", limit=2, timeout=0.3)
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        # A second handle of the same session is granted at once; the
        # server counts the connection once.
        again = a.acquire("py/sem", limit=2, timeout=0)
        self.assertEqual(c.client.shared_count("py/sem"), 2)
        s1.release()
        self.assertEqual(c.client.shared_count("py/sem"), 2)
        again.release()
        with c.acquire("py/sem", limit=2, timeout=2.0) as s3:
            self.assertEqual(s3.count, 2)
        s2.release()
        self.assertEqual(c.client.shared_count("py/sem"), 0)

    def test_wait_timed_out_keeps_the_other_locks(self):
        holder, waiter = self.session(), self.session()
        held = holder.lock("py/to/contended")
        mine = waiter.lock("py/to/mine")
        t0 = time.monotonic()
        with self.assertRaises(glockd.LockTimeout):
            waiter.lock("py/to/contended", timeout=0.3)
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertFalse(waiter.lost.is_set())
        self.assertEqual(holder.client.token("py/to/mine"), mine.token)
        self.assertEqual(holder.client.token("py/to/contended"), held.token)
        # The session still works, and takes the lock once it is free.
        held.release()
        with waiter.lock("py/to/contended", timeout=2.0):
            pass
        mine.release()

    def test_wait_cancelled_keeps_the_other_locks(self):
        holder, waiter = self.session(), self.session()
        held = holder.lock("py/cancel/contended")
        mine = waiter.lock("py/cancel/mine")
        result = []

        def wait():
            try:
                result.append(waiter.lock("py/cancel/contended"))
            except Exception as e:
                result.append(e)
        th = threading.Thread(target=wait)
        th.start()
        self.assertTrue(eventually(lambda: waiters(holder.client, "py/cancel/contended") == 1))
        self.assertTrue(waiter.cancel())
        th.join(10)
        self.assertIsInstance(result[0], glockd.Cancelled)
        self.assertFalse(waiter.lost.is_set())
        self.assertEqual(waiters(holder.client, "py/cancel/contended"), 0)
        self.assertEqual(holder.client.token("py/cancel/mine"), mine.token)
        self.assertFalse(waiter.cancel(), "nothing waits any more")
        held.release()
        mine.release()

    def test_heartbeat_keeps_a_long_wait_alive(self):
        holder = self.session()
        waiter = self.session(timeout=0.6, interval=0.15)
        held = holder.lock("py/long")
        with self.assertRaises(glockd.LockTimeout):
            waiter.lock("py/long", timeout=1.5)  # longer than the session timeout
        self.assertFalse(waiter.lost.is_set())
        held.release()

    def test_a_second_handle_waits_for_the_first(self):
        s = self.session()
        first = s.lock("py/twice")
        self.assertIsNone(s.try_lock("py/twice"))
        with self.assertRaises(glockd.LockTimeout):
            s.lock("py/twice", timeout=0.2)
        threading.Timer(0.2, first.release).start()
        second = s.lock("py/twice", timeout=5)
        self.assertGreater(second.token, first.token)
        second.release()

    def test_unix_socket(self):
        s = self.session([self.server.unix_addr])
        with s.lock("py/unix") as lk:
            self.assertTrue(self.session().client.is_locked("py/unix"))
            self.assertGreater(lk.token, 0)

    def test_close_sets_lost_and_releases(self):
        s = glockd.Session([self.server.addr])
        lk = s.lock("py/close")
        s.close()
        self.assertTrue(lk.lost.is_set())
        with self.assertRaises(glockd.SessionLost):
            lk.release()
        with self.assertRaises(glockd.SessionLost):
            s.lock("py/other")
        other = self.session()
        self.assertIsNotNone(other.lock("py/close", timeout=5))


class FaultTest(unittest.TestCase):
    """Each test with servers of its own, which it kills or stops."""

    def server(self, *args, **kw):
        srv = Server(*args, **kw)
        self.addCleanup(srv.close)
        return srv

    def test_kill9_is_seen_within_100ms(self):
        srv = self.server()
        s = glockd.Session([srv.addr])
        self.addCleanup(s.close)
        lk = s.lock("py/kill")
        t0 = time.monotonic()
        srv.kill9()
        self.assertTrue(lk.lost.wait(5))
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 0.1, "lost %.3fs after kill -9" % elapsed)
        self.assertIsInstance(s.error, glockd.SessionLost)
        with self.assertRaises(glockd.SessionLost):
            lk.release()

    def test_sigstop_is_seen_within_the_timeout(self):
        srv = self.server()
        s = glockd.Session([srv.addr], timeout=1.0, interval=0.25)
        self.addCleanup(s.close)
        lk = s.lock("py/stop")
        t0 = time.monotonic()
        srv.stop()
        self.assertTrue(lk.lost.wait(10))
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 1.0 + 1.0, "lost %.3fs after SIGSTOP" % elapsed)
        self.assertIn("no answer", str(s.error))

    def test_sigstop_during_a_wait(self):
        srv = self.server()
        holder = glockd.Session([srv.addr])
        self.addCleanup(holder.close)
        holder.lock("py/stopwait")
        s = glockd.Session([srv.addr], timeout=1.0, interval=0.25)
        self.addCleanup(s.close)
        result = []
        th = threading.Thread(target=lambda: result.append(self.raises(lambda: s.lock("py/stopwait"))))
        th.start()
        self.assertTrue(eventually(lambda: waiters(holder.client, "py/stopwait") == 1))
        t0 = time.monotonic()
        srv.stop()
        th.join(10)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertIsInstance(result[0], glockd.SessionLost)

    @staticmethod
    def raises(f):
        try:
            return f()
        except Exception as e:
            return e

    def test_failover_to_the_second_address(self):
        first, second = self.server(), self.server()
        addrs = [dead_addr(), first.addr, second.addr]
        s = glockd.Session(addrs)
        self.addCleanup(s.close)
        self.assertEqual(s.address, first.addr)
        lk = s.lock("py/failover")
        first.kill9()
        self.assertTrue(lk.lost.wait(5))
        s2 = glockd.Session(addrs)
        self.addCleanup(s2.close)
        self.assertEqual(s2.address, second.addr)
        with s2.lock("py/failover", timeout=5) as lk2:
            self.assertGreater(lk2.token, 0)

    def test_a_stopped_first_address_is_passed_over(self):
        first, second = self.server(), self.server()
        first.stop()
        t0 = time.monotonic()
        s = glockd.Session([first.addr, second.addr], timeout=0.5)
        self.addCleanup(s.close)
        self.assertEqual(s.address, second.addr)
        self.assertLess(time.monotonic() - t0, 5)
        with s.lock("py/passed"):
            pass

    def test_no_address_answers(self):
        with self.assertRaises(glockd.SessionLost):
            glockd.Session([dead_addr(), dead_addr()])

    def test_tls(self):
        srv = self.server(tls=True)
        ctx = ssl.create_default_context(cafile=os.path.join(certs(), "ca.crt"))
        s = glockd.Session([srv.addr], ssl_context=ctx)
        self.addCleanup(s.close)
        with s.lock("py/tls") as lk:
            self.assertGreater(lk.token, 0)
            self.assertEqual(s.client.details("py/tls")[0].token, lk.token)
        # A client that does not trust the server's CA does not connect.
        with self.assertRaises(glockd.SessionLost) as cm:
            glockd.Session([srv.addr], ssl_context=ssl.create_default_context())
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(cm.exception))
        # The heartbeat runs over TLS: the session outlives its timeout.
        s3 = glockd.Session([srv.addr], ssl_context=ctx, timeout=0.5, interval=0.1)
        self.addCleanup(s3.close)
        self.assertFalse(s3.lost.wait(1.2))

    def test_acl(self):
        acl = acl_file([("app", "app-token", "lock", "py/app/*"),
                        ("ops", "ops-token", "lock,inspect", "*")])
        srv = self.server("-acl-file", acl)
        s = glockd.Session([srv.addr], token="app-token")
        self.addCleanup(s.close)
        with s.lock("py/app/x") as lk:
            self.assertGreater(lk.token, 0)
        with self.assertRaises(glockd.PermissionDenied) as cm:
            s.lock("py/other", timeout=1)
        self.assertEqual(cm.exception.name, "py/other")
        with self.assertRaises(glockd.PermissionDenied):
            s.try_lock("py/other")
        with self.assertRaises(glockd.PermissionDenied):
            s.acquire("py/other", 2)
        with self.assertRaises(glockd.PermissionDenied):
            s.client.details()  # no inspect
        self.assertFalse(s.lost.is_set(), "a refusal keeps the session")
        self.assertEqual(s.client.perms(), "app lock py/app/*")
        ops = glockd.Session([srv.addr], token="ops-token")
        self.addCleanup(ops.close)
        with s.lock("py/app/y"):
            self.assertEqual(ops.client.locks("py/app/y"), [("py/app/y", "app")])
        with self.assertRaises(glockd.AuthFailed):
            glockd.Session([srv.addr], token="wrong")
        anon = glockd.Session([srv.addr])
        self.addCleanup(anon.close)
        with self.assertRaises(glockd.AuthFailed):
            anon.lock("py/app/x")

    def test_token_is_sent_on_every_connect(self):
        acl = acl_file([("app", "app-token", "lock", "*")])
        first, second = self.server("-acl-file", acl), self.server("-acl-file", acl)
        s = glockd.Session([first.addr, second.addr], token="app-token")
        lk = s.lock("py/reauth")
        first.kill9()
        self.assertTrue(lk.lost.wait(5))
        s2 = glockd.Session([first.addr, second.addr], token="app-token")
        self.addCleanup(s2.close)
        with s2.lock("py/reauth", timeout=2):
            self.assertEqual(s2.client.me()[1], "app")


if __name__ == "__main__":
    unittest.main()
