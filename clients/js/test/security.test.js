// TLS, websocket over TLS, and access control: auth on every connect, a
// permission denied, a refused token.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Session, AuthFailed, PermissionDenied, ConnectError } from '../glockd.js';
import { startDaemon, makeCerts, aclFile, lostAfter } from './daemon.js';

const billing = 'billing-token-4f1c2a';
const reader = 'reader-token-9b7e01';

function secureDaemon(t, certs, extra = []) {
  const acl = aclFile([
    ['billing', billing, 'lock', 'billing/*'],
    ['reader', reader, 'inspect'],
  ]);
  return startDaemon(t, { tls: certs, args: ['-acl-file', acl, '-auth-failure-delay', '50ms', ...extra] });
}

test('TLS with an ACL: locks in the identity\'s patterns, a permission denied, a refused token', async (t) => {
  const certs = makeCerts();
  const d = await secureDaemon(t, certs);
  const tls = { ca: readFileSync(certs.ca) };

  const s = await Session.open({ addresses: [d.tlsAddr], tls, token: billing });
  t.after(() => s.close());
  const l = await s.lock('billing/nightly', { timeout: 1000 });
  assert.match(l.token, /^[1-9]\d*$/);
  assert.equal((await s.command('me'))[0].split(' ')[2], 'billing');
  await assert.rejects(s.lock('payroll', { timeout: 1000 }), PermissionDenied);
  await assert.rejects(s.tryLock('payroll'), PermissionDenied);
  await assert.rejects(s.acquire('payroll', { limit: 2 }), PermissionDenied);
  await assert.rejects(s.details(), PermissionDenied, 'dl needs inspect');
  assert.equal(s.lost.aborted, false, 'a denial keeps the session');
  assert.equal(l.held, true);

  const r = await Session.open({ addresses: [d.tlsAddr], tls, token: reader });
  t.after(() => r.close());
  const rows = await r.details();
  assert.deepEqual(rows.map((x) => [x.name, x.owner, x.token]), [['billing/nightly', 'billing', l.token]]);
  await l.unlock();

  await assert.rejects(Session.open({ addresses: [d.tlsAddr], tls, token: 'wrong' }), AuthFailed);
  // Without a token, every lock command answers "0 Auth Required".
  const anon = await Session.open({ addresses: [d.tlsAddr], tls });
  t.after(() => anon.close());
  await assert.rejects(anon.lock('billing/x'), PermissionDenied);
  assert.equal(await anon.auth(billing), true);
  const l2 = await anon.lock('billing/x');
  await l2.unlock();

  // The server's certificate is checked: a client that does not trust its CA
  // does not connect.
  await assert.rejects(Session.open({ addresses: [d.tlsAddr], tls: true, timeout: 2000 }), ConnectError);
});

test('wss:// with an ACL', async (t) => {
  const certs = makeCerts();
  const d = await secureDaemon(t, certs, ['-ws-tls']);
  const tls = { ca: readFileSync(certs.ca) };
  const url = `wss://localhost:${d.wsPort}/`;
  // In Node, wss:// with tls options uses the module's own websocket client
  // (Node's global WebSocket cannot be given a CA).
  const s = await Session.open({ addresses: [url], tls, token: billing });
  t.after(() => s.close());
  const l = await s.lock('billing/ws');
  await assert.rejects(s.tryLock('elsewhere'), PermissionDenied);
  const start = performance.now();
  d.signal('SIGKILL');
  const ms = await lostAfter(l.lost, start);
  assert.ok(ms < 100, `lost after ${ms.toFixed(1)} ms`);
});

test('auth is sent again on the connection to the second address', async (t) => {
  const certs = makeCerts();
  const first = await secureDaemon(t, certs);
  const second = await secureDaemon(t, certs);
  const tls = { ca: readFileSync(certs.ca) };
  const addresses = [first.tlsAddr, second.tlsAddr];
  const a = await Session.open({ addresses, tls, token: billing, timeout: 1000, interval: 250 });
  const l = await a.lock('billing/failover');
  first.signal('SIGKILL');
  await lostAfter(l.lost, 0);
  const b = await Session.open({ addresses, tls, token: billing, timeout: 1000, interval: 250 });
  t.after(() => b.close());
  assert.equal(b.address, second.tlsAddr);
  const l2 = await b.lock('billing/failover', { timeout: 1000 });
  assert.equal((await b.command('me'))[0].split(' ')[2], 'billing');
  await l2.unlock();
});
