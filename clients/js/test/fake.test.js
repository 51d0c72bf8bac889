// Races the real daemon cannot be made to show on demand, against a fake
// server that speaks the protocol: a grant that crosses a cancellation, and
// a reply to nothing.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { Session, SessionLost } from '../glockd.js';

// fakeServer answers each line with answer(line, write); !ping always gets
// !pong. It records the lines it reads.
async function fakeServer(t, answer) {
  const lines = [];
  const socks = [];
  const srv = net.createServer((sock) => {
    socks.push(sock);
    sock.setEncoding('utf8');
    let buf = '';
    sock.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === '!ping') {
          sock.write('!pong\n');
          continue;
        }
        lines.push(line);
        answer(line, (s) => sock.write(s));
      }
    });
    sock.on('error', () => {});
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    socks.forEach((s) => s.destroy());
    srv.close();
  });
  return { addr: `127.0.0.1:${srv.address().port}`, lines };
}

test('a grant that crosses the cancellation is released before anything else is sent', async (t) => {
  let held = false;
  const srv = await fakeServer(t, (line, write) => {
    // gw waits until cancelled, and t, queued behind it, with it.
    if (line.startsWith('gw ') || line === 't job') return;
    if (line === '!cancel job') {
      // The lock was granted just before the cancellation was read.
      held = true;
      return write('!cancel 0\n1 Lock Get Success: job\n77 Lock Token: job\n');
    }
    if (line === 'r job') {
      held = false;
      return write('1 Lock Release Success: job\n');
    }
    if (line === 'g other') return write('1 Lock Get Success: other\n');
    if (line === 't other') return write('78 Lock Token: other\n');
  });
  const s = await Session.open({ addresses: [srv.addr], timeout: 2000, interval: 100 });
  t.after(() => s.close());
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error('gave up')), 100);
  await assert.rejects(s.lock('job', { signal: ac.signal }), /gave up/);
  assert.equal(held, false, 'the crossing grant was released');
  assert.deepEqual(srv.lines, ['gw -1 job', 't job', '!cancel job', 'r job']);
  const other = await s.tryLock('other');
  assert.equal(other.token, '78');
  assert.equal(s.lost.aborted, false);
});

test('a reply to no command loses the session', async (t) => {
  const srv = await fakeServer(t, (line, write) => {
    if (line === 'i x') write('0 Lock Not Locked: x\n1 Lock Get Success: surprise\n');
  });
  const s = await Session.open({ addresses: [srv.addr], timeout: 2000, interval: 100 });
  t.after(() => s.close());
  await s.command('i x');
  await new Promise((resolve) => (s.lost.aborted ? resolve() : s.lost.addEventListener('abort', resolve)));
  assert.ok(s.lost.reason instanceof SessionLost);
  assert.match(s.lost.reason.message, /a reply to no command/);
});

test('a server that answers nothing is passed over after the timeout', async (t) => {
  const silent = net.createServer(() => {});
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.after(() => silent.close());
  const srv = await fakeServer(t, () => {});
  const start = performance.now();
  const s = await Session.open({ addresses: [`127.0.0.1:${silent.address().port}`, srv.addr], timeout: 500, interval: 100 });
  t.after(() => s.close());
  assert.equal(s.address, srv.addr);
  assert.ok(performance.now() - start >= 400);
});
