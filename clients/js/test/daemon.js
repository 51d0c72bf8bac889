// Test helpers: the real glockd, built from this repository, on free
// loopback ports, and killed when the test ends.
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync, existsSync, rmSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

let built;

// glockdBinary is $GLOCKD_BIN, else a glockd built from the repository once.
export function glockdBinary() {
  if (process.env.GLOCKD_BIN) return process.env.GLOCKD_BIN;
  if (!built) {
    built = path.join(tempDir(), 'glockd');
    execFileSync('go', ['build', '-o', built, '.'], { cwd: repo, stdio: 'inherit' });
  }
  return built;
}

const dirs = [];
process.on('exit', () => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

export function tempDir() {
  const d = mkdtempSync(path.join(tmpdir(), 'glockd-js-'));
  dirs.push(d);
  return d;
}

// freePort binds port 0 on loopback and releases it.
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function canConnect(options) {
  return new Promise((resolve) => {
    const s = net.connect(options);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

// startDaemon runs glockd on 127.0.0.1 with a TCP port, a websocket port and
// a unix socket (and a TLS port when tls is given: {cert, key}), plus
// extra flags, and stops it when the test t ends.
export async function startDaemon(t, { tls, args = [] } = {}) {
  const dir = tempDir();
  const port = await freePort();
  const ws = await freePort();
  const unix = path.join(dir, 'glockd.sock');
  const flags = ['-bind', '127.0.0.1', '-port', String(port), '-ws', String(ws), '-unix', unix, ...args];
  let tlsPort;
  if (tls) {
    tlsPort = await freePort();
    flags.push('-tls-port', String(tlsPort), '-tls-cert', tls.cert, '-tls-key', tls.key);
  }
  const proc = spawn(glockdBinary(), flags, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (b) => (log += b));
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const d = {
    proc,
    pid: proc.pid,
    addr: `127.0.0.1:${port}`,
    wsURL: `ws://127.0.0.1:${ws}/`,
    wsPort: ws,
    unix: `unix:${unix}`,
    tlsAddr: tlsPort && `127.0.0.1:${tlsPort}`,
    log: () => log,
    signal: (sig) => process.kill(proc.pid, sig),
    // pause sends SIGSTOP and waits until every thread has stopped: a
    // thread busy when the signal comes may still answer for a moment.
    async pause() {
      process.kill(proc.pid, 'SIGSTOP');
      const state = (task) => {
        try {
          const stat = readFileSync(`/proc/${proc.pid}/task/${task}/stat`, 'utf8');
          return stat.slice(stat.lastIndexOf(')') + 2)[0];
        } catch {
          return 'T'; // the thread has gone
        }
      };
      for (let i = 0; readdirSync(`/proc/${proc.pid}/task`).some((task) => state(task) !== 'T'); i++) {
        if (i > 400) throw new Error('glockd did not stop');
        await sleep(5);
      }
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        try {
          process.kill(proc.pid, 'SIGCONT');
          process.kill(proc.pid, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
      await exited;
    },
  };
  t.after(() => d.stop());
  for (let i = 0; ; i++) {
    if ((await canConnect({ host: '127.0.0.1', port })) && existsSync(unix)) break;
    if (proc.exitCode !== null || i > 200) throw new Error(`glockd did not start: ${log}`);
    await sleep(25);
  }
  return d;
}

// makeCerts runs scripts/make-certs.sh into a new directory.
export function makeCerts() {
  const dir = tempDir();
  execFileSync('sh', [path.join(repo, 'scripts/make-certs.sh'), dir], { stdio: 'ignore' });
  return { dir, ca: path.join(dir, 'ca.crt'), cert: path.join(dir, 'server.crt'), key: path.join(dir, 'server.key') };
}

// aclFile writes an ACL file: lines of [identity, token, permissions, ...patterns].
export function aclFile(entries) {
  const file = path.join(tempDir(), 'acl');
  const sha = (s) => createHash('sha256').update(s).digest('hex');
  writeFileSync(file, entries.map(([id, token, perms, ...pats]) => [id, 'sha256:' + sha(token), perms, ...pats].join(' ')).join('\n') + '\n');
  return file;
}

// raw is a plain line client for checking the server's view: do(line)
// resolves to the next reply line.
export async function raw(t, addr) {
  const [host, port] = addr.split(':');
  const sock = net.connect({ host, port: Number(port) });
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  t.after(() => sock.destroy());
  sock.setEncoding('utf8');
  let buf = '';
  const waiters = [];
  sock.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0 && waiters.length) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      waiters.shift()(line);
    }
  });
  return {
    do(line) {
      return new Promise((resolve) => {
        waiters.push(resolve);
        sock.write(line + '\n');
      });
    },
    close: () => sock.destroy(),
  };
}

// lostWithin resolves to the ms from start until signal aborts.
export function lostAfter(signal, start) {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(performance.now() - start);
    else signal.addEventListener('abort', () => resolve(performance.now() - start), { once: true });
  });
}

export { sleep };
