// The behaviours every transport must have, run against the real daemon by
// tcp.test.js, unix.test.js and websocket.test.js.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Session, LockTimeout, SessionLost, NotHeld } from '../glockd.js';
import { startDaemon, raw, lostAfter, sleep } from './daemon.js';

// behaviours registers the tests; address(daemon) is the address to use.
// defaults are options added to every Session.open.
export function behaviours(transport, address, defaults = {}) {
  const open = async (t, d, options = {}) => {
    const s = await Session.open({ addresses: [address(d)], timeout: 2000, interval: 250, ...defaults, ...options });
    t.after(() => s.close());
    return s;
  };

  test(`${transport}: lock, try-lock, unlock, tokens increasing`, async (t) => {
    const d = await startDaemon(t);
    const a = await open(t, d);
    const b = await open(t, d);
    const watch = await raw(t, d.addr);

    const l1 = await a.lock('  job   one ', { timeout: 1000 });
    assert.equal(l1.name, 'job one');
    assert.match(l1.token, /^[1-9]\d*$/);
    assert.equal(typeof l1.token, 'string');
    assert.equal(l1.held, true);
    assert.equal(l1.lost, a.lost);
    assert.equal(await watch.do('t job one'), `${l1.token} Lock Token: job one`);
    assert.equal(await b.tryLock('job one'), null, 'another session holds it');
    assert.equal(await a.tryLock('job one'), null, 'another handle of the same session holds it');
    await l1.unlock();
    assert.equal(l1.held, false);
    await assert.rejects(l1.unlock(), NotHeld);
    assert.equal(await watch.do('i job one'), '0 Lock Not Locked: job one');

    const l2 = await b.tryLock('job one');
    assert.ok(l2, 'free again');
    assert.ok(BigInt(l2.token) > BigInt(l1.token), `token ${l2.token} after ${l1.token}`);
    await l2.unlock();
    const l3 = await a.lock('job one');
    assert.ok(BigInt(l3.token) > BigInt(l2.token));
    await l3.unlock();
  });

  test(`${transport}: a second lock of a name in one session waits for the first handle`, async (t) => {
    const d = await startDaemon(t);
    const s = await open(t, d);
    const first = await s.lock('one-handle');
    let second;
    const p = s.lock('one-handle', { timeout: 5000 }).then((l) => (second = l));
    await sleep(200);
    assert.equal(second, undefined, 'granted while the first handle holds it');
    await first.unlock();
    await p;
    assert.ok(BigInt(second.token) > BigInt(first.token));
    await second.unlock();
  });

  test(`${transport}: semaphores and shared locks`, async (t) => {
    const d = await startDaemon(t);
    const [a, b, c] = [await open(t, d), await open(t, d), await open(t, d)];
    const watch = await raw(t, d.addr);
    const sa = await a.acquire('pool', { limit: 2, timeout: 1000 });
    const sb = await b.acquire('pool', { limit: 2, timeout: 1000 });
    assert.equal(sa.shared, true);
    assert.equal(sa.token, null);
    assert.equal(sa.holders, 1);
    assert.equal(sb.holders, 2);
    assert.equal(await c.tryAcquire('pool', { limit: 2 }), null);
    await assert.rejects(c.acquire('pool', { limit: 2, timeout: 100 }), LockTimeout);
    // A session holding it gets another handle at once; sr goes with the last.
    const sa2 = await a.tryAcquire('pool', { limit: 2 });
    assert.ok(sa2);
    await sa.unlock();
    assert.equal(await watch.do('si pool'), '2 Shared Lock Is Locked: pool');
    const waiting = c.acquire('pool', { limit: 2, timeout: 5000 });
    await sleep(100);
    await sa2.unlock();
    const sc = await waiting;
    assert.equal(sc.holders, 2);
    await sb.unlock();
    await sc.unlock();
    assert.equal(await watch.do('si pool'), '0 Shared Lock Not Locked: pool');

    const r1 = await a.lockShared('config');
    const r2 = await b.lockShared('config');
    assert.equal(r2.holders, 2);
    assert.equal(await watch.do('si config'), '2 Shared Lock Is Locked: config');
    await r1.unlock();
    await r2.unlock();
  });

  test(`${transport}: a wait cancelled and a wait timed out keep the session's other locks`, async (t) => {
    const d = await startDaemon(t);
    const holder = await open(t, d);
    const s = await open(t, d);
    const watch = await raw(t, d.addr);
    await holder.lock('busy');
    const mine = await s.lock('mine');

    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('enough')), 200);
    const start = performance.now();
    await assert.rejects(s.lock('busy', { signal: ac.signal }), /enough/);
    assert.ok(performance.now() - start < 1500, 'the cancelled wait ended at once');
    await assert.rejects(s.lock('busy', { timeout: 150 }), LockTimeout);
    const sem = await holder.acquire('sem', { limit: 1 });
    const ac2 = new AbortController();
    setTimeout(() => ac2.abort(), 100);
    await assert.rejects(s.acquire('sem', { limit: 1, signal: ac2.signal }), { name: 'AbortError' });
    await sem.unlock();

    assert.equal(s.lost.aborted, false);
    assert.equal(mine.held, true);
    assert.equal(await watch.do('t mine'), `${mine.token} Lock Token: mine`);
    assert.equal((await s.details('busy'))[0].waiters, 0, 'no waiter left behind');
    // The session goes on working.
    const again = await s.tryLock('other');
    assert.ok(again);
    await again.unlock();
    await mine.unlock();
  });

  test(`${transport}: a long wait is not a silent server (pings are answered during it)`, async (t) => {
    const d = await startDaemon(t);
    const holder = await open(t, d);
    const s = await open(t, d, { timeout: 600, interval: 150 });
    const l = await holder.lock('long');
    setTimeout(() => l.unlock(), 1500);
    const got = await s.lock('long', { timeout: 10000 });
    assert.equal(s.lost.aborted, false);
    assert.ok(BigInt(got.token) > BigInt(l.token));
  });

  test(`${transport}: commands, details, unknown verbs`, async (t) => {
    const d = await startDaemon(t);
    const s = await open(t, d);
    const l = await s.lock('detail me');
    const sh = await s.lockShared('shared one');
    const rows = await s.details();
    assert.deepEqual(rows.map((r) => [r.name, r.shared, r.token]), [['detail me', false, l.token], ['shared one', true, null]]);
    assert.equal((await s.details('detail me')).length, 1);
    assert.equal(await s.fencingToken('detail me'), l.token);
    assert.equal(await s.fencingToken('free'), null);
    // An unknown verb gets no reply, and multi-line replies have no terminator.
    assert.deepEqual(await s.command('no-such-verb x'), []);
    const q = await s.command('q');
    assert.ok(q.includes('locks: 1'), q.join('|'));
    assert.deepEqual(await s.command('i detail me'), ['1 Lock Is Locked: detail me']);
    await sh.unlock();
    await l.unlock();
  });

  test(`${transport}: waiters (dw), in queue order`, async (t) => {
    const d = await startDaemon(t);
    const holder = await open(t, d);
    const first = await open(t, d);
    const second = await open(t, d);
    const s = await open(t, d);
    assert.deepEqual(await first.command('iam first waiter'), ['1 ok']);
    const x = await holder.lock('dw x');
    const sem = await holder.acquire('dw s', { limit: 1 });
    const secondName = (await second.command('me'))[0].split(' ')[1];
    const got1 = first.lock('dw x');
    const got2 = second.acquire('dw s', { limit: 1 });
    let rows = [];
    for (const start = performance.now(); rows.length < 2 && performance.now() - start < 10000;) {
      rows = await s.waiters();
      if (rows.length < 2) await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(rows.map((r) => [r.name, r.waiter, r.shared, r.deadlock]),
      [['dw x', 'first waiter', false, 0], ['dw s', secondName, true, 0]]); // exclusive queues first
    assert.ok(rows.every((r) => Number.isInteger(r.queuedMs) && r.queuedMs >= 0), JSON.stringify(rows));
    assert.deepEqual((await s.waiters('dw x')).map((r) => r.waiter), ['first waiter']);
    assert.deepEqual(await s.waiters('nobody'), []);
    await x.unlock();
    await sem.unlock();
    await (await got1).unlock();
    await (await got2).unlock();
    assert.deepEqual(await s.waiters(), []);
  });

  test(`${transport}: the server killed (kill -9): lost within 100 ms`, async (t) => {
    const d = await startDaemon(t);
    const s = await Session.open({ addresses: [address(d)], timeout: 3000, interval: 1000, ...defaults });
    const l = await s.lock('doomed');
    const start = performance.now();
    d.signal('SIGKILL');
    const ms = await lostAfter(l.lost, start);
    t.diagnostic(`lost ${ms.toFixed(1)} ms after kill -9`);
    assert.ok(ms < 100, `lost after ${ms.toFixed(1)} ms`);
    assert.ok(l.lost.reason instanceof SessionLost);
    assert.equal(l.held, false);
    await assert.rejects(s.lock('x'), SessionLost);
    await assert.rejects(l.unlock(), SessionLost);
  });

  test(`${transport}: the server stopped (SIGSTOP): lost within timeout + 1 s`, async (t) => {
    const d = await startDaemon(t);
    const timeout = 1000;
    const s = await Session.open({ addresses: [address(d)], timeout, interval: 250, ...defaults });
    const l = await s.lock('frozen');
    await sleep(300);
    const start = performance.now();
    await d.pause();
    const ms = await lostAfter(l.lost, start);
    d.signal('SIGCONT');
    t.diagnostic(`lost ${ms.toFixed(0)} ms after SIGSTOP (timeout ${timeout} ms, interval 250 ms)`);
    assert.ok(ms <= timeout + 1000, `lost after ${ms.toFixed(0)} ms`);
    assert.ok(ms >= timeout / 2, `lost after ${ms.toFixed(0)} ms: before the server could have been silent for long`);
    assert.match(l.lost.reason.message, /no answer/);
  });

  test(`${transport}: failover to the second address`, async (t) => {
    const first = await startDaemon(t);
    const second = await startDaemon(t);
    const a = await Session.open({ addresses: [address(first), address(second)], timeout: 1000, interval: 250, ...defaults });
    t.after(() => a.close());
    assert.equal(a.address, address(first));
    const l = await a.lock('job');
    first.signal('SIGKILL');
    await lostAfter(l.lost, 0);
    // A new session tries the addresses again from the first, dead now.
    const b = await Session.open({ addresses: [address(first), address(second)], timeout: 1000, interval: 250, ...defaults });
    t.after(() => b.close());
    assert.equal(b.address, address(second));
    assert.ok(await b.lock('job', { timeout: 1000 }));

    // A stopped server accepts connections in its kernel but answers
    // nothing: it is passed over after the timeout.
    const third = await startDaemon(t);
    await third.pause();
    const start = performance.now();
    const c = await Session.open({ addresses: [address(third), address(second)], timeout: 1000, interval: 250, ...defaults });
    t.after(() => c.close());
    third.signal('SIGCONT');
    assert.equal(c.address, address(second));
    assert.ok(performance.now() - start < 3000);
  });
}
