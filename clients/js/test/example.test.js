// examples/failover.js, run against two daemons: the first is killed once
// the program holds its lock, and the program goes on on the second.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDaemon } from './daemon.js';

const example = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../examples/failover.js');

test('examples/failover.js: a token, the loss on kill -9, the lock again on the second node', async (t) => {
  const first = await startDaemon(t);
  const second = await startDaemon(t);
  const proc = spawn(process.execPath, [example, first.addr, second.addr], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => proc.kill());
  let out = '';
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  await new Promise((resolve, reject) => {
    proc.stdout.on('data', (b) => {
      out += b;
      if (out.includes('fencing token')) resolve();
    });
    proc.once('exit', () => reject(new Error(`exited early: ${out}`)));
  });
  first.signal('SIGKILL');
  assert.equal(await exited, 0, out);
  const lines = out.trim().split('\n');
  assert.equal(lines.length, 3, out);
  assert.match(lines[0], new RegExp(`^${first.addr}: holding example/job, fencing token [1-9]\\d*$`));
  assert.match(lines[1], /^lost: glockd session lost: /);
  assert.match(lines[2], new RegExp(`^${second.addr}: holding example/job, fencing token [1-9]\\d*$`));
  t.diagnostic(out);
});
