"""glockd.aio against real glockd daemons: the list of test_session, awaited."""

import asyncio
import os
import ssl
import time
import unittest

import glockd
import glockd.aio
from harness import Server, acl_file, certs, dead_addr


async def waiters(client, name):
    for d in await client.details(name):
        return d.waiters
    return 0


async def eventually(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(0.01)
    return False


class AioTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(unix=True)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    async def session(self, addrs=None, **kw):
        s = await glockd.aio.Session.open(addrs or [self.server.addr], **kw)
        self.addAsyncCleanup(s.close)
        return s

    async def test_lock_try_lock_release_and_tokens_increase(self):
        a, b = await self.session(), await self.session()
        tokens = []
        for _ in range(3):
            async with a.lock("aio/basic", timeout=5.0) as lk:
                self.assertIsInstance(lk.token, int)
                self.assertIs(lk.lost, a.lost)
                self.assertIsNone(await b.try_lock("aio/basic"))
                self.assertEqual(await b.client.token("aio/basic"), lk.token)
                tokens.append(lk.token)
        self.assertEqual(tokens, sorted(set(tokens)))
        lk = await b.lock("aio/basic", timeout=1)
        self.assertGreater(lk.token, tokens[-1])
        await lk.release()
        with self.assertRaises(glockd.NotHeld):
            await lk.release()
        self.assertFalse(await a.client.is_locked("aio/basic"))

    async def test_semaphore(self):
        a, b, c = await self.session(), await self.session(), await self.session()
        s1 = await a.acquire("aio/sem", limit=2, timeout=2.0)
        s2 = await b.acquire("aio/sem", limit=2, timeout=2.0)
        self.assertEqual((s1.count, s2.count), (1, 2))
        self.assertIsNone(await c.try_acquire("aio/sem", 2))
        with self.assertRaises(glockd.LockTimeout):
            await c.acquire("aio/sem", limit=2, timeout=0.3)
        await s1.release()
        async with c.acquire("aio/sem", limit=2, timeout=2.0) as s3:
            self.assertEqual(s3.count, 2)
        await s2.release()
        self.assertEqual(await c.client.shared_count("aio/sem"), 0)

    async def test_wait_timed_out_keeps_the_other_locks(self):
        holder, waiter = await self.session(), await self.session()
        held = await holder.lock("aio/to/contended")
        mine = await waiter.lock("aio/to/mine")
        with self.assertRaises(glockd.LockTimeout):
            await waiter.lock("aio/to/contended", timeout=0.3)
        self.assertFalse(waiter.lost.is_set())
        self.assertEqual(await holder.client.token("aio/to/mine"), mine.token)
        await held.release()
        async with waiter.lock("aio/to/contended", timeout=2.0):
            pass

    async def test_wait_cancelled_by_the_task_keeps_the_other_locks(self):
        holder, waiter = await self.session(), await self.session()
        await holder.lock("aio/cancel/contended")
        mine = await waiter.lock("aio/cancel/mine")
        task = asyncio.ensure_future(waiter.lock("aio/cancel/contended"))
        self.assertTrue(await eventually(lambda: self._is(holder, "aio/cancel/contended", 1)))
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        self.assertFalse(waiter.lost.is_set())
        self.assertEqual(await waiters(holder.client, "aio/cancel/contended"), 0)
        self.assertEqual(await holder.client.token("aio/cancel/mine"), mine.token)
        # wait_for cancels the same way.
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(waiter.lock("aio/cancel/contended"), 0.2)
        self.assertFalse(waiter.lost.is_set())
        self.assertEqual(await holder.client.token("aio/cancel/mine"), mine.token)

    async def _is(self, holder, name, n):
        return await waiters(holder.client, name) == n

    async def test_unix_socket(self):
        s = await self.session([self.server.unix_addr])
        async with s.lock("aio/unix") as lk:
            self.assertGreater(lk.token, 0)
            self.assertTrue(await (await self.session()).client.is_locked("aio/unix"))

    async def test_heartbeat_keeps_a_long_wait_alive(self):
        holder = await self.session()
        waiter = await self.session(timeout=0.6, interval=0.15)
        held = await holder.lock("aio/long")
        with self.assertRaises(glockd.LockTimeout):
            await waiter.lock("aio/long", timeout=1.5)
        self.assertFalse(waiter.lost.is_set())
        await held.release()


class AioFaultTest(unittest.IsolatedAsyncioTestCase):
    def server(self, *args, **kw):
        srv = Server(*args, **kw)
        self.addCleanup(srv.close)
        return srv

    async def test_kill9_is_seen_within_100ms(self):
        srv = self.server()
        s = await glockd.aio.Session.open([srv.addr])
        self.addAsyncCleanup(s.close)
        lk = await s.lock("aio/kill")
        t0 = time.monotonic()
        srv.kill9()
        await asyncio.wait_for(lk.lost.wait(), 5)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 0.1, "lost %.3fs after kill -9" % elapsed)
        with self.assertRaises(glockd.SessionLost):
            await lk.release()

    async def test_sigstop_is_seen_within_the_timeout(self):
        srv = self.server()
        s = await glockd.aio.Session.open([srv.addr], timeout=1.0, interval=0.25)
        self.addAsyncCleanup(s.close)
        lk = await s.lock("aio/stop")
        t0 = time.monotonic()
        srv.stop()
        await asyncio.wait_for(lk.lost.wait(), 10)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 2.0, "lost %.3fs after SIGSTOP" % elapsed)

    async def test_failover_to_the_second_address(self):
        first, second = self.server(), self.server()
        addrs = [dead_addr(), first.addr, second.addr]
        async with glockd.aio.Session(addrs) as s:
            self.assertEqual(s.address, first.addr)
            lk = await s.lock("aio/failover")
            first.kill9()
            await asyncio.wait_for(lk.lost.wait(), 5)
        async with glockd.aio.Session(addrs) as s2:
            self.assertEqual(s2.address, second.addr)
            async with s2.lock("aio/failover", timeout=5) as lk2:
                self.assertGreater(lk2.token, 0)

    async def test_a_stopped_first_address_is_passed_over(self):
        first, second = self.server(), self.server()
        first.stop()
        async with glockd.aio.Session([first.addr, second.addr], timeout=0.5) as s:
            self.assertEqual(s.address, second.addr)

    async def test_tls(self):
        srv = self.server(tls=True)
        ctx = ssl.create_default_context(cafile=os.path.join(certs(), "ca.crt"))
        async with glockd.aio.Session([srv.addr], ssl_context=ctx, timeout=0.5, interval=0.1) as s:
            async with s.lock("aio/tls") as lk:
                self.assertEqual((await s.client.details("aio/tls"))[0].token, lk.token)
            await asyncio.sleep(1.0)
            self.assertFalse(s.lost.is_set())
        with self.assertRaises(glockd.SessionLost):
            await glockd.aio.Session.open([srv.addr], ssl_context=ssl.create_default_context())

    async def test_acl(self):
        acl = acl_file([("app", "app-token", "lock", "aio/app/*")])
        srv = self.server("-acl-file", acl)
        async with glockd.aio.Session([srv.addr], token="app-token") as s:
            async with s.lock("aio/app/x"):
                pass
            with self.assertRaises(glockd.PermissionDenied):
                await s.lock("aio/other", timeout=1)
            with self.assertRaises(glockd.PermissionDenied):
                await s.try_lock("aio/other")
            self.assertFalse(s.lost.is_set())
        with self.assertRaises(glockd.AuthFailed):
            await glockd.aio.Session.open([srv.addr], token="wrong")


if __name__ == "__main__":
    unittest.main()
