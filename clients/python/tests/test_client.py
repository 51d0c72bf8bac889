"""glockd.Client, one method per verb, against a real glockd."""

import threading
import time
import unittest

import glockd
from harness import Server


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("-admin", unix=True)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def client(self, addr=None, **kw):
        c = glockd.Client(addr or self.server.addr, **kw)
        self.addCleanup(c.close)
        return c

    def test_exclusive_verbs(self):
        a, b = self.client(), self.client()
        self.assertTrue(a.get("cl/x"))
        self.assertTrue(a.get("cl/x"), "re-entrant")
        self.assertFalse(b.get("cl/x"))
        self.assertTrue(b.is_locked("cl/x"))
        tok = b.token("cl/x")
        self.assertGreater(tok, 0)
        self.assertFalse(b.release("cl/x"))
        self.assertFalse(b.get_wait("cl/x", 0.1))
        self.assertTrue(a.release("cl/x"))
        self.assertFalse(a.release("cl/x"))
        self.assertIsNone(a.token("cl/x"))
        self.assertTrue(b.get_wait("cl/x", 1))
        self.assertGreater(b.token("cl/x"), tok)

    def test_shared_verbs(self):
        a, b = self.client(), self.client()
        self.assertEqual(a.shared_get("cl/s"), 1)
        self.assertEqual(b.shared_get_wait("cl/s", 2, 1), 2)
        self.assertEqual(self.client().shared_get_wait("cl/s", 2, 0.1), 0)
        self.assertEqual(a.shared_count("cl/s"), 2)
        self.assertTrue(a.shared_release("cl/s"))
        self.assertFalse(a.shared_release("cl/s"))
        self.assertEqual(a.shared_count("cl/s"), 1)

    def test_multi_line_replies_are_fenced(self):
        a, b = self.client(), self.client()
        b.iam("cl-owner b")
        self.assertEqual(a.locks("cl/none"), [])
        for n in ("cl/m1", "cl/m2: colon", "cl/m3"):
            self.assertTrue(b.get(n))
        b.shared_get("cl/ms")
        a.shared_get("cl/ms")
        got = [(l, o) for l, o in a.locks() if l.startswith("cl/m")]
        # Without a name, a line is split at its first ": " (the protocol's own ambiguity).
        self.assertEqual(got, [("cl/m1", "cl-owner b"), ("cl/m2", "colon: cl-owner b"), ("cl/m3", "cl-owner b")])
        self.assertEqual(a.locks("cl/m2: colon"), [("cl/m2: colon", "cl-owner b")])
        self.assertEqual([o for _, o in a.shared_locks("cl/ms")], ["cl-owner b", a.me()[0]])
        d = a.details("cl/m1")[0]
        self.assertEqual((d.owner, d.token, d.shared), ("cl-owner b", b.token("cl/m1"), False))
        sd = a.details("cl/ms")
        self.assertEqual([(x.shared, x.holders) for x in sd], [(True, 2), (True, 2)])
        self.assertIn(("cl-owner b"), [r for _, r in a.who()])
        self.assertEqual([r for _, r in a.who("cl-owner b")], ["cl-owner b"])
        stats = a.stats()
        self.assertGreaterEqual(stats["locks"], 3)
        self.assertIn("invalid_commands", stats)
        self.assertTrue(a.dump().startswith("map["))
        self.assertTrue(a.dump_shared().startswith("map["))
        # The connection is still in step: the next reply is the next command's.
        self.assertTrue(a.is_locked("cl/m3"))

    def test_me_ping_heartbeat(self):
        c = self.client()
        conn, name = c.me()
        self.assertEqual(conn, name)
        c.ping()
        c.heartbeat()

    def test_heartbeat_and_cancel_during_a_wait(self):
        holder, c = self.client(), self.client()
        holder.get("cl/w")
        c.get("cl/w-mine")
        result = []
        th = threading.Thread(target=lambda: result.append(c.get_wait("cl/w")))
        th.start()
        deadline = time.monotonic() + 10
        while holder.details("cl/w")[0].waiters == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        c.heartbeat()  # answered at once, though the wait holds the other commands back
        self.assertTrue(c.cancel("cl/w"))
        th.join(10)
        self.assertEqual(result, [False])
        self.assertTrue(c.release("cl/w-mine"), "the other lock is kept")

    def test_waiters(self):
        holder, first, second, watcher = self.client(), self.client(), self.client(), self.client()
        first.iam("first waiter")
        second_conn = second.me()[0]  # before its wait, which holds back its other calls
        self.assertTrue(holder.get("cl/dw"))
        self.assertEqual(holder.shared_get_wait("cl/dws", 1, 0), 1)
        threads = [threading.Thread(target=first.get_wait, args=("cl/dw",)),
                   threading.Thread(target=second.shared_get_wait, args=("cl/dws", 1))]
        threads[0].start()
        deadline = time.monotonic() + 10
        while not watcher.waiters("cl/dw") and time.monotonic() < deadline:
            time.sleep(0.01)
        threads[1].start()
        while not watcher.waiters("cl/dws") and time.monotonic() < deadline:
            time.sleep(0.01)
        w = watcher.waiters()
        self.assertEqual([(x.lock, x.waiter, x.shared, x.deadlock) for x in w if x.lock.startswith("cl/dw")],
                         [("cl/dw", "first waiter", False, 0), ("cl/dws", second_conn, True, 0)])
        self.assertTrue(all(isinstance(x, glockd.Waiter) and x.queued >= 0 for x in w))
        self.assertEqual([x.waiter for x in watcher.waiters("cl/dw")], ["first waiter"])
        self.assertEqual(watcher.waiters("cl/nobody"), [])
        self.assertTrue(holder.release("cl/dw"))
        self.assertTrue(holder.shared_release("cl/dws"))
        for th in threads:
            th.join(10)
        self.assertEqual(watcher.waiters("cl/dw"), [])

    def test_threads_share_a_client(self):
        c = self.client()
        errors = []

        def work(i):
            try:
                for j in range(50):
                    n = "cl/t%d-%d" % (i, j)
                    assert c.get(n) and c.is_locked(n) and c.release(n)
            except Exception as e:
                errors.append(e)
        ths = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        self.assertEqual(errors, [])

    def test_any_byte_but_newline_in_a_name(self):
        c = self.client()
        name = "cl/caf\udce9"  # the byte 0xe9 alone, not UTF-8
        self.assertTrue(c.get(name))
        self.assertEqual(c.locks(name), [(name, c.me()[0])])
        with self.assertRaises(ValueError):
            c.get("a\nr b")

    def test_kill_over_the_unix_socket(self):
        admin = self.client(self.server.unix_addr)
        victim = self.client()
        victim.get("cl/victim")
        self.assertTrue(admin.kill_holder("cl/victim"))
        self.assertTrue(victim.lost.wait(5))
        self.assertFalse(admin.kill_holder("cl/victim-none"))
        self.assertFalse(admin.kill("127.0.0.1:1"))
        self.client().auth("x")  # no ACL file: "0 disabled" is accepted, nothing to prove

    def test_silent_server_ends_the_call(self):
        srv = Server()
        self.addCleanup(srv.close)
        c = glockd.Client(srv.addr, timeout=0.5)
        self.addCleanup(c.close)
        srv.stop()
        t0 = time.monotonic()
        with self.assertRaises(glockd.SessionLost):
            c.get("cl/silent")
        self.assertLess(time.monotonic() - t0, 3)
        self.assertTrue(c.lost.is_set())


if __name__ == "__main__":
    unittest.main()
