// glockd: a client for the glockd lock server, as one ES module with no
// dependencies. In browsers it speaks over a websocket; in Node (20 or
// later) over TCP, TLS, a unix socket or a websocket.
//
// A Session is one connection that knows when it is lost. It sends "!ping"
// every `interval` ms, which the server answers at once even while a wait is
// pending; when nothing has been answered for `timeout` ms (counted from the
// sending of the latest command or ping answered), or the connection fails,
// the session is lost: `session.lost` (an AbortSignal, which every lock's
// `lost` is too) is aborted with a SessionLost, and only then is the
// connection closed, which makes the server release the locks. A lost
// session stays lost; open a new one, which tries the addresses again from
// the first. See README.md.

export const VERSION = '0.3.0';

// --- errors ---------------------------------------------------------------

/** The base class of every error this module throws. */
export class GlockdError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name; // the subclass's: SessionLost, LockTimeout, ...
  }
}

/** The session was lost: its locks are gone, or must be taken to be. */
export class SessionLost extends GlockdError {}

/** The session was closed by its owner. */
export class SessionClosed extends GlockdError {
  constructor(message = 'glockd session closed', options) {
    super(message, options);
  }
}

/** A wait for a lock ran out of time: the lock is not held. */
export class LockTimeout extends GlockdError {}

/** The identity may not do this (ACL), or has not signed in. */
export class PermissionDenied extends GlockdError {}

/** The server refused the token. */
export class AuthFailed extends GlockdError {}

/** unlock() of a lock that is not held (any more). */
export class NotHeld extends GlockdError {}

/** No address accepted a connection and answered a heartbeat. */
export class ConnectError extends GlockdError {
  constructor(message, errors) {
    super(message, { cause: errors[errors.length - 1] });
    this.errors = errors;
  }
}

// --- names ------------------------------------------------------------------

// The white space the server trims and collapses in a name: Go's
// unicode.IsSpace, which differs from JavaScript's \s (U+0085 in, U+FEFF out).
const SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/gu;

/** The name as the server knows it: white space trimmed, inner runs collapsed to one space. */
export function normalize(name) {
  return String(name).replace(SPACE, ' ').replace(/^ | $/g, '');
}

function checkName(name) {
  if (typeof name !== 'string') throw new TypeError('glockd: a lock name is a string');
  if (/[\r\n]/.test(name)) throw new TypeError('glockd: a lock name cannot contain a line break');
}

// --- small tools -------------------------------------------------------------

const now = () => performance.now();

// A mutex whose waiters give up when a signal aborts.
class Mutex {
  constructor() {
    this.locked = false;
    this.waiters = [];
  }

  tryLock() {
    if (this.locked) return false;
    this.locked = true;
    return true;
  }

  // lock resolves once the mutex is this caller's; it rejects with the
  // reason of the first of signals to abort before that.
  lock(...signals) {
    signals = signals.filter(Boolean);
    for (const s of signals) if (s.aborted) return Promise.reject(s.reason);
    if (this.tryLock()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = {
        resolve: () => {
          off();
          resolve();
        },
      };
      const onAbort = (ev) => {
        off();
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(ev.target.reason);
      };
      const off = () => signals.forEach((s) => s.removeEventListener('abort', onAbort));
      signals.forEach((s) => s.addEventListener('abort', onAbort, { once: true }));
      this.waiters.push(w);
    });
  }

  unlock() {
    const w = this.waiters.shift();
    if (w) w.resolve();
    else this.locked = false;
  }

  get idle() {
    return !this.locked && this.waiters.length === 0;
  }
}

// --- transports -----------------------------------------------------------
//
// A transport has send(text) and close(), and calls sink.reply(text) for
// every reply line (TCP, TLS, unix socket: without its "\n" or "\r\n") or
// message (websocket: framed is true), and sink.fail(error) once when it
// ends. The sink is the Conn, made before the transport.

const isNode = typeof process !== 'undefined' && !!(process.versions && process.versions.node);

function withTimeout(promise, ms, what, onTimeout) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => {
        onTimeout();
        reject(new GlockdError(`${what}: no answer within ${ms} ms`));
      }, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// hostPort splits "host:port" or "[v6]:port".
function hostPort(addr) {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) || /^([^:]*):(\d+)$/.exec(addr);
  if (!m) throw new TypeError(`glockd: address ${JSON.stringify(addr)}: want host:port, [v6]:port, unix:/path, ws:// or wss://`);
  return { host: m[1] || 'localhost', port: Number(m[2]) };
}

// tlsOptions makes node:tls connect options from the session's tls option
// (true, or an object of node:tls options such as ca, cert, key, servername).
function tlsOptions(tls, net, host) {
  const o = tls === true ? {} : { ...tls };
  if (o.servername === undefined && !net.isIP(host)) o.servername = host;
  return o;
}

// nodeSocket connects a node:net or node:tls socket.
async function nodeSocket({ host, port, path, tls }, ms, what) {
  const net = await import('node:net');
  let sock;
  let event = 'connect';
  if (path !== undefined) {
    sock = net.connect({ path });
  } else if (tls) {
    const nodeTLS = await import('node:tls');
    sock = nodeTLS.connect({ host, port, ...tlsOptions(tls, net, host) });
    event = 'secureConnect';
  } else {
    sock = net.connect({ host, port });
  }
  const ready = new Promise((resolve, reject) => {
    sock.once(event, resolve);
    sock.once('error', reject);
  });
  try {
    await withTimeout(ready, ms, what, () => sock.destroy());
  } catch (e) {
    sock.destroy();
    throw e;
  }
  sock.removeAllListeners('error');
  sock.setNoDelay(true);
  return sock;
}

// streamTransport wraps a connected node socket that carries lines.
function streamTransport(sock, sink) {
  const t = { framed: false };
  let buf = '';
  let ended = false;
  const end = (err) => {
    if (ended) return;
    ended = true;
    sock.destroy();
    sink.fail(err || new GlockdError('connection closed by the server'));
  };
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    buf += chunk;
    let i;
    while (!ended && (i = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      sink.reply(line);
    }
  });
  sock.on('error', end);
  sock.on('close', () => end());
  t.send = (text) => {
    if (!ended) sock.write(text);
  };
  t.close = () => {
    ended = true;
    sock.destroy();
  };
  return t;
}

// browserTransport wraps a WebSocket as browsers (and Node 22) have it.
async function browserTransport(WS, url, ms, sink) {
  const ws = new WS(url);
  const t = { framed: true };
  let ended = false;
  await withTimeout(
    new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new GlockdError(`${url}: websocket failed`));
      ws.onclose = (ev) => reject(new GlockdError(`${url}: websocket closed (${ev.code})`));
    }),
    ms,
    url,
    () => ws.close(),
  );
  ws.onerror = null;
  ws.onmessage = (ev) => {
    if (!ended) sink.reply(typeof ev.data === 'string' ? ev.data : '');
  };
  ws.onclose = (ev) => {
    if (ended) return;
    ended = true;
    sink.fail(new GlockdError(`websocket closed (${ev.code})`));
  };
  t.send = (text) => {
    if (!ended && ws.readyState === 1) ws.send(text);
  };
  t.close = () => {
    ended = true;
    ws.close();
  };
  return t;
}

// nodeWebSocket is a minimal RFC 6455 client over node:net or node:tls, for
// Node versions without a global WebSocket (Node 20 has one only behind
// --experimental-websocket). It sends text messages, masked, and reads text
// and binary messages, fragmented or not, answering pings and closes.
async function nodeWebSocket(url, tls, ms, sink) {
  const u = new URL(url);
  const secure = u.protocol === 'wss:';
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port) || (secure ? 443 : 80);
  const { randomBytes, createHash } = await import('node:crypto');
  const deadline = now() + ms;
  const sock = await nodeSocket({ host, port, tls: secure ? tls || true : undefined }, ms, url);
  const key = randomBytes(16).toString('base64');
  const origin = (secure ? 'https://' : 'http://') + u.host;
  sock.write(
    `GET ${u.pathname || '/'}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nOrigin: ${origin}\r\n\r\n`,
  );
  // The response's head, and whatever came after it.
  let rest = await withTimeout(
    new Promise((resolve, reject) => {
      let head = Buffer.alloc(0);
      const onData = (chunk) => {
        head = Buffer.concat([head, chunk]);
        const i = head.indexOf('\r\n\r\n');
        if (i < 0) {
          if (head.length > 16384) reject(new GlockdError(`${url}: response head too long`));
          return;
        }
        off();
        const lines = head.subarray(0, i).toString('latin1').split('\r\n');
        const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
        const headers = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
        if (!/^HTTP\/1\.1 101 /.test(lines[0])) reject(new GlockdError(`${url}: ${lines[0]}`));
        else if (headers.get('sec-websocket-accept') !== accept) reject(new GlockdError(`${url}: bad Sec-WebSocket-Accept`));
        else resolve(head.subarray(i + 4));
      };
      const onEnd = () => {
        off();
        reject(new GlockdError(`${url}: connection closed during the handshake`));
      };
      const off = () => {
        sock.off('data', onData);
        sock.off('close', onEnd);
        sock.off('error', onEnd);
      };
      sock.on('data', onData);
      sock.on('close', onEnd);
      sock.on('error', onEnd);
    }),
    Math.max(1, deadline - now()),
    url,
    () => sock.destroy(),
  ).catch((e) => {
    sock.destroy();
    throw e;
  });

  const t = { framed: true };
  let ended = false;
  const end = (err) => {
    if (ended) return;
    ended = true;
    sock.destroy();
    sink.fail(err || new GlockdError('websocket closed by the server'));
  };
  const frame = (opcode, payload) => {
    const n = payload.length;
    const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    if (n >= 126 && n < 65536) {
      head[0] = 0x80 | opcode;
      head[1] = 0x80 | 126;
      head.writeUInt16BE(n, 2);
    } else if (n >= 65536) {
      head[0] = 0x80 | opcode;
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(n), 2);
    }
    const mask = randomBytes(4);
    const body = Buffer.alloc(n);
    for (let i = 0; i < n; i++) body[i] = payload[i] ^ mask[i & 3];
    return Buffer.concat([head, mask, body]);
  };
  let fragments = [];
  const onData = (chunk) => {
    rest = rest.length ? Buffer.concat([rest, chunk]) : chunk;
    while (!ended && rest.length >= 2) {
      const fin = (rest[0] & 0x80) !== 0;
      const opcode = rest[0] & 0x0f;
      if (rest[1] & 0x80) return end(new GlockdError('websocket: the server masked a frame'));
      let n = rest[1] & 0x7f;
      let off = 2;
      if (n === 126) {
        if (rest.length < 4) return;
        n = rest.readUInt16BE(2);
        off = 4;
      } else if (n === 127) {
        if (rest.length < 10) return;
        const big = rest.readBigUInt64BE(2);
        if (big > 1n << 30n) return end(new GlockdError('websocket: frame too large'));
        n = Number(big);
        off = 10;
      }
      if (rest.length < off + n) return;
      const payload = rest.subarray(off, off + n);
      rest = rest.subarray(off + n);
      switch (opcode) {
        case 0x0: // continuation
        case 0x1: // text
        case 0x2: // binary
          fragments.push(Buffer.from(payload));
          if (fin) {
            const msg = Buffer.concat(fragments).toString('utf8');
            fragments = [];
            sink.reply(msg);
          }
          break;
        case 0x8: // close: answer it and end
          sock.write(frame(0x8, payload.subarray(0, 2)));
          return end(new GlockdError(`websocket closed (${payload.length >= 2 ? payload.readUInt16BE(0) : 1005})`));
        case 0x9: // ping
          sock.write(frame(0xa, payload));
          break;
        case 0xa: // pong
          break;
        default:
          return end(new GlockdError(`websocket: unknown opcode ${opcode}`));
      }
    }
  };
  sock.on('data', onData);
  sock.on('error', end);
  sock.on('close', () => end());
  if (rest.length) queueMicrotask(() => onData(Buffer.alloc(0)));
  t.send = (text) => {
    if (!ended) sock.write(frame(0x1, Buffer.from(text, 'utf8')));
  };
  t.close = () => {
    if (ended) return;
    ended = true;
    sock.end(frame(0x8, Buffer.from([0x03, 0xe8])));
    setTimeout(() => sock.destroy(), 1000).unref();
  };
  return t;
}

// dial connects to one address.
async function dial(addr, { tls, WebSocket: WS, connectTimeout }, sink) {
  if (/^wss?:\/\//i.test(addr)) {
    // Node's global WebSocket cannot be given TLS options: wss:// with them
    // uses the module's own client.
    const ownTLS = isNode && tls && typeof tls === 'object' && /^wss:/i.test(addr);
    if (WS === undefined && !ownTLS) WS = globalThis.WebSocket;
    if (WS) return browserTransport(WS, addr, connectTimeout, sink);
    if (isNode) return nodeWebSocket(addr, tls, connectTimeout, sink);
    throw new GlockdError('glockd: no WebSocket in this environment');
  }
  if (!isNode) throw new GlockdError(`glockd: ${addr}: a browser reaches glockd over ws:// or wss:// only`);
  if (addr.startsWith('unix:')) {
    const path = addr.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    return streamTransport(await nodeSocket({ path }, connectTimeout, addr), sink);
  }
  return streamTransport(await nodeSocket({ ...hostPort(addr), tls }, connectTimeout, addr), sink);
}

// --- one connection ---------------------------------------------------------

// Commands whose reply is one line (or, over a websocket, one message).
// Every other command's reply is read up to a fence: over TCP a multi-line
// reply has no terminator, and an unknown verb gets no reply at all, so such
// a command is followed by "ping", whose reply "1 pong" is no line of any
// multi-line reply, and the reply is the lines before it.
const ONE_LINE = new Set(['g', 'r', 'i', 'sg', 'sr', 'si', 't', 'gw', 'sgw', 'ping', 'me', 'iam', 'auth', 'perms', 'kill', 'kill-holder']);
const FENCE = 'ping';
const FENCE_REPLY = '1 pong';

const verbOf = (line) => /^[ \t]*([^ \t]*)/.exec(line)[1];

// Conn pairs replies with commands: every command gets its replies in order,
// except "!ping" and "!cancel", whose replies ("!pong", "!cancel 0",
// "!cancel 1": no other reply is one of these) the server sends at once.
class Conn {
  constructor() {
    this.t = null; // set by attach
    this.pending = []; // {fenced, lines, sent, resolve, reject}, oldest first
    this.pings = []; // {sent, resolve}, oldest first
    this.cancels = 0; // "!cancel" replies still to come
    this.alive = now(); // when the latest answered command or ping was sent
    this.err = null;
    this.onDead = null;
  }

  attach(transport) {
    this.t = transport;
    this.alive = now();
  }

  // send writes commands in one write and returns a promise of each one's
  // reply lines.
  send(lines) {
    if (this.err) return lines.map(() => Promise.reject(this.err));
    const sent = now();
    let text = '';
    const promises = lines.map((line) => {
      const fenced = !this.t.framed && !ONE_LINE.has(verbOf(line));
      text += line + '\n' + (fenced ? FENCE + '\n' : '');
      return new Promise((resolve, reject) => this.pending.push({ fenced, lines: [], sent, resolve, reject }));
    });
    this.t.send(text);
    return promises;
  }

  ping() {
    if (this.err) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.pings.push({ sent: now(), resolve });
      this.t.send('!ping\n');
    });
  }

  cancel(name) {
    if (this.err) return;
    this.cancels++;
    this.t.send('!cancel ' + name + '\n');
  }

  reply(text) {
    if (!this.t) return this.fail(new GlockdError(`glockd: a reply before any command: ${JSON.stringify(text)}`));
    const oob = this.t.framed ? text.replace(/\r?\n$/, '') : text;
    if (oob === '!pong' && this.pings.length > 0) {
      const p = this.pings.shift();
      if (p.sent > this.alive) this.alive = p.sent;
      p.resolve(true);
      return;
    }
    if ((oob === '!cancel 0' || oob === '!cancel 1') && this.cancels > 0) {
      this.cancels--;
      return;
    }
    const r = this.pending[0];
    if (!r) {
      this.fail(new GlockdError(`glockd: a reply to no command: ${JSON.stringify(text)}`));
      return;
    }
    if (this.t.framed) {
      const msg = text.replace(/\n$/, '');
      if (msg !== '') r.lines.push(...msg.split('\n').map((l) => l.replace(/\r$/, '')));
    } else if (r.fenced && text !== FENCE_REPLY) {
      r.lines.push(text);
      return;
    } else if (!r.fenced) {
      r.lines.push(text);
    }
    this.pending.shift();
    if (r.sent > this.alive) this.alive = r.sent;
    r.resolve(r.lines);
  }

  fail(err) {
    if (this.err) return;
    this.err = err;
    if (this.t) this.t.close();
    for (const r of this.pending.splice(0)) r.reject(err);
    for (const p of this.pings.splice(0)) p.resolve(false);
    if (this.onDead) this.onDead(err);
  }
}

// --- replies ----------------------------------------------------------------

// failure turns a reply that refuses into the error to throw.
function failure(reply, what) {
  const text = `glockd ${JSON.stringify(what)}: ${reply === undefined ? 'no reply' : JSON.stringify(reply)}`;
  if (reply === undefined) return new GlockdError(text);
  if (reply.startsWith('0 Permission Denied')) return new PermissionDenied(text);
  if (reply === '0 Auth Required') return new PermissionDenied(text + ' (sign in with the session option token)');
  if (/^0 (Shared )?Lock Get Timeout: /.test(reply)) return new LockTimeout(text);
  return new GlockdError(text);
}

// nameOf returns the lock name a reply ends with ("… Success: NAME").
function nameOf(reply, fallback) {
  const i = reply.indexOf(': ');
  return i < 0 ? fallback : reply.slice(i + 2);
}

function tokenOf(reply, what) {
  const m = /^(\d+) Lock Token: /.exec(reply || '');
  if (!m || m[1] === '0') throw new GlockdError(`glockd ${JSON.stringify(what)}: ${JSON.stringify(reply)}`);
  return m[1];
}

function waitMs(timeout) {
  if (timeout === undefined || timeout === null || timeout === Infinity) return -1;
  if (typeof timeout !== 'number' || !(timeout >= 0)) throw new TypeError('glockd: timeout is a number of ms, 0 or more');
  return Math.ceil(timeout);
}

function checkLimit(limit) {
  if (!Number.isInteger(limit) || limit < 1) throw new TypeError('glockd: limit is an integer, 1 or more');
}

// parseDetails reads dl's lines: "LOCK: OWNER token=T held_ms=MS waiters=W"
// and "LOCK: OWNER shared held_ms=MS holders=N waiters=W". An owner may hold
// spaces, so fields are read from the end. A name that holds ": " is split
// wrongly unless asked for by name (dl NAME).
function parseDetails(lines, name) {
  const out = [];
  for (const line of lines) {
    let lock;
    let rest;
    if (name !== undefined && line.startsWith(name + ': ')) {
      lock = name;
      rest = line.slice(name.length + 2);
    } else {
      const i = line.indexOf(': ');
      if (i < 0) continue;
      lock = line.slice(0, i);
      rest = line.slice(i + 2);
    }
    const f = rest.split(' ');
    const field = (k, key) => {
      const v = f[f.length - k] || '';
      return v.startsWith(key + '=') ? v.slice(key.length + 1) : undefined;
    };
    if (f[f.length - 4] === 'shared') {
      out.push({ name: lock, owner: f.slice(0, -4).join(' '), shared: true, token: null,
        heldMs: Number(field(3, 'held_ms')), holders: Number(field(2, 'holders')), waiters: Number(field(1, 'waiters')) });
    } else {
      out.push({ name: lock, owner: f.slice(0, -3).join(' '), shared: false, token: field(3, 'token') ?? null,
        heldMs: Number(field(2, 'held_ms')), holders: 1, waiters: Number(field(1, 'waiters')) });
    }
  }
  return out;
}

// parseWaiters reads dw's lines: "LOCK: WAITER queued_ms=MS", with "shared"
// before queued_ms for a shared lock's waiter and " deadlock=N" after it for
// a wait in a deadlock left in place (-deadlocks report). A waiter's name may
// hold spaces, so fields are read from the end.
function parseWaiters(lines, name) {
  const out = [];
  for (const line of lines) {
    let lock;
    let rest;
    if (name !== undefined && line.startsWith(name + ': ')) {
      lock = name;
      rest = line.slice(name.length + 2);
    } else {
      const i = line.indexOf(': ');
      if (i < 0) continue;
      lock = line.slice(0, i);
      rest = line.slice(i + 2);
    }
    const f = rest.split(' ');
    let deadlock = 0;
    if (f[f.length - 1].startsWith('deadlock=')) deadlock = Number(f.pop().slice('deadlock='.length));
    const queued = f.pop() || '';
    if (!/^queued_ms=(0|[1-9]\d*)$/.test(queued)) throw new GlockdError(`glockd: dw: unexpected reply ${JSON.stringify(line)}`);
    const shared = f.length > 1 && f[f.length - 1] === 'shared';
    if (shared) f.pop();
    out.push({ name: lock, waiter: f.join(' '), shared, queuedMs: Number(queued.slice('queued_ms='.length)), deadlock });
  }
  return out;
}

// --- the session -----------------------------------------------------------

/**
 * A connection to glockd that knows when it is lost. Open it with
 * Session.open; take locks with lock, tryLock, acquire, tryAcquire and
 * lockShared.
 */
export class Session {
  /**
   * Connects to the first of options.addresses that accepts and answers a
   * heartbeat within the timeout, signs in with options.token if given, and
   * starts the heartbeat.
   *
   * options: addresses ("host:port", "[v6]:port", "unix:/path", "ws://…",
   * "wss://…"); timeout (ms, default 3000); interval (ms, default 1000);
   * token (sent as "auth TOKEN" first); tls (true, or node:tls options such
   * as { ca, cert, key, servername }: host:port addresses then use TLS, and
   * wss:// in Node uses them); connectTimeout (ms per address, default
   * timeout); WebSocket (a constructor to use instead of the global one;
   * null: the module's own client, in Node);
   * signal (an AbortSignal that gives up opening).
   */
  static async open(options = {}) {
    const { addresses, token, signal } = options;
    if (!Array.isArray(addresses) || addresses.length === 0) throw new TypeError('glockd: addresses: want a non-empty array');
    if (token !== undefined && token !== null && /[\r\n]/.test(token)) throw new TypeError('glockd: a token is one line');
    const opts = {
      timeout: options.timeout ?? 3000,
      interval: options.interval ?? 1000,
      tls: options.tls,
      WebSocket: options.WebSocket,
    };
    opts.connectTimeout = options.connectTimeout ?? opts.timeout;
    const errors = [];
    for (const addr of addresses) {
      signal?.throwIfAborted();
      let s;
      try {
        const conn = new Conn();
        conn.attach(await dial(addr, opts, conn));
        s = new Session(conn, opts, addr);
        await s.#start(token, signal);
        return s;
      } catch (e) {
        if (s) s.#lose(e instanceof GlockdError ? e : new SessionLost(e.message, { cause: e }));
        if (e instanceof AuthFailed || (signal && signal.aborted)) throw e;
        errors.push(new GlockdError(`${addr}: ${e.message}`, { cause: e }));
      }
    }
    throw new ConnectError(`glockd: no address answered: ${errors.map((e) => e.message).join('; ')}`, errors);
  }

  #conn;
  #opts;
  #controller = new AbortController();
  #err = null;
  #turn = new Mutex(); // the right to send: held through a wait, which holds back later commands
  #exclusive = new Map(); // name -> Mutex, held from lock to unlock
  #shared = new Map(); // name -> {mutex, holds, holders}
  #heartbeat;
  #watchdog;

  /** @private Use Session.open. */
  constructor(conn, opts, address) {
    this.#conn = conn;
    this.#opts = opts;
    /** The address this session is connected to. */
    this.address = address;
    this.#conn.onDead = (err) => this.#lose(new SessionLost(`glockd session lost: ${err.message}`, { cause: err }));
    this.#heartbeat = setInterval(() => this.#conn.ping(), opts.interval);
    this.#watchdog = setTimeout(() => this.#check(), opts.timeout);
  }

  // #start waits for the first heartbeat's answer (a stopped server that
  // still accepts connections gives none, and the session is lost after its
  // timeout), then signs in.
  async #start(token, signal) {
    let onAbort;
    const stop = new Promise((_, reject) => {
      onAbort = (ev) => reject(ev.target.reason);
      this.lost.addEventListener('abort', onAbort, { once: true });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    stop.catch(() => {}); // raced below; an abort after the races is not an error here
    try {
      if (!(await Promise.race([this.#conn.ping(), stop]))) throw this.#err || new SessionLost('no answer to !ping');
      if (token !== undefined && token !== null) {
        const [[reply]] = await Promise.race([this.#exchange(['auth ' + token]), stop]);
        // "0 disabled": the server gives access to all, so there is nothing to sign in to.
        if (reply !== '1 ok' && reply !== '0 disabled') {
          throw reply === '0 Auth Failure' ? new AuthFailed(`glockd: ${this.address}: the token was refused`) : failure(reply, 'auth');
        }
      }
    } finally {
      this.lost.removeEventListener('abort', onAbort);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  // #check runs when the server may have been silent for the timeout.
  #check() {
    const left = this.#opts.timeout - (now() - this.#conn.alive);
    if (left <= 0) this.#lose(new SessionLost(`glockd session lost: no answer from ${this.address} for ${this.#opts.timeout} ms`));
    else if (!this.#err) this.#watchdog = setTimeout(() => this.#check(), left);
  }

  // #lose ends the session, once: first the session is declared lost, then
  // the connection is closed, so the server can release no lock while the
  // caller may still believe it holds it.
  #lose(err) {
    if (this.#err) return;
    this.#err = err;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#watchdog);
    this.#controller.abort(err);
    this.#conn.fail(err);
  }

  // #alive throws the session's error, declaring it lost first when its
  // timeout has passed though the watchdog has not run yet: a grant read
  // after that moment must not be believed.
  #alive() {
    if (!this.#err && now() - this.#conn.alive >= this.#opts.timeout) {
      this.#lose(new SessionLost(`glockd session lost: no answer from ${this.address} for ${this.#opts.timeout} ms`));
    }
    if (this.#err) throw this.#err;
  }

  /** An AbortSignal aborted, with a SessionLost or SessionClosed as its reason, when the session ends. */
  get lost() {
    return this.#controller.signal;
  }

  /** null while the session lives; then why it ended. */
  get error() {
    return this.#err;
  }

  /** Closes the connection, which releases the session's locks; lost is aborted with a SessionClosed. */
  async close() {
    this.#lose(new SessionClosed());
  }

  // #exchange sends lines in one write and returns their replies. With
  // wait, the session sends nothing else until the replies are in; when
  // signal aborts meanwhile, the wait is cancelled ("!cancel NAME") and, if
  // granted all the same (granted(replies)), undone before anything else
  // is sent; then signal's reason is thrown.
  async #exchange(lines, { wait = false, signal, cancelName, granted, undo } = {}) {
    if (this.#err) throw this.#err;
    await this.#turn.lock(signal, this.lost);
    let held = true;
    const release = () => {
      if (held) {
        held = false;
        this.#turn.unlock();
      }
    };
    let interrupted = false;
    const onAbort = () => {
      interrupted = true;
      this.#conn.cancel(cancelName);
    };
    try {
      if (this.#err) throw this.#err;
      signal?.throwIfAborted();
      const promises = this.#conn.send(lines);
      if (!wait) release();
      else signal?.addEventListener('abort', onAbort, { once: true });
      let replies;
      try {
        replies = await Promise.all(promises);
      } catch (e) {
        throw this.#err || e;
      }
      if (interrupted) {
        if (granted(replies)) {
          const [r] = await Promise.all(this.#conn.send([undo])).catch((e) => {
            throw this.#err || e;
          });
          if (r[0] === undefined || !r[0].startsWith('1 ')) throw new GlockdError(`glockd ${JSON.stringify(undo)}: ${JSON.stringify(r[0])}`);
        }
        throw signal.reason;
      }
      return replies;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      release();
    }
  }

  #exclusiveMutex(key) {
    let m = this.#exclusive.get(key);
    if (!m) this.#exclusive.set(key, (m = new Mutex()));
    return m;
  }

  #dropExclusive(key, m) {
    m.unlock();
    if (m.idle && this.#exclusive.get(key) === m) this.#exclusive.delete(key);
  }

  /**
   * Takes the exclusive lock name, waiting for it (gw) up to
   * options.timeout ms (none: for ever). Resolves to a Lock with its
   * fencing token; rejects with LockTimeout, SessionLost, PermissionDenied,
   * or signal's reason when options.signal aborts first (the wait is then
   * cancelled; the session and its other locks are kept). Within a session
   * a name has one handle at a time: a second lock() waits for unlock().
   */
  async lock(name, { timeout, signal } = {}) {
    checkName(name);
    const ms = waitMs(timeout);
    signal?.throwIfAborted();
    if (this.#err) throw this.#err;
    const key = normalize(name);
    const m = this.#exclusiveMutex(key);
    try {
      await m.lock(signal, this.lost);
    } catch (e) {
      if (m.idle && this.#exclusive.get(key) === m) this.#exclusive.delete(key);
      throw e;
    }
    try {
      const [get, t] = await this.#exchange([`gw ${ms} ${name}`, `t ${name}`], {
        wait: true,
        signal,
        cancelName: key,
        granted: (r) => (r[0][0] || '').startsWith('1 Lock Get Success: '),
        undo: `r ${name}`,
      });
      if (!(get[0] || '').startsWith('1 Lock Get Success: ')) throw failure(get[0], `gw ${ms} ${name}`);
      this.#alive();
      return new Lock(this, nameOf(get[0], key), tokenOf(t[0], `t ${name}`), false, 1, () => this.#dropExclusive(key, m));
    } catch (e) {
      this.#dropExclusive(key, m);
      throw e;
    }
  }

  /**
   * Takes the exclusive lock name if it is free (g): a Lock, or null when
   * another connection, or another handle of this session, holds it.
   */
  async tryLock(name) {
    checkName(name);
    if (this.#err) throw this.#err;
    const key = normalize(name);
    const m = this.#exclusiveMutex(key);
    if (!m.tryLock()) return null;
    try {
      const [get, t] = await this.#exchange([`g ${name}`, `t ${name}`]);
      if ((get[0] || '').startsWith('0 Lock Get Failure: ')) {
        this.#dropExclusive(key, m);
        return null;
      }
      if (!(get[0] || '').startsWith('1 Lock Get Success: ')) throw failure(get[0], `g ${name}`);
      this.#alive();
      return new Lock(this, nameOf(get[0], key), tokenOf(t[0], `t ${name}`), false, 1, () => this.#dropExclusive(key, m));
    } catch (e) {
      this.#dropExclusive(key, m);
      throw e;
    }
  }

  /**
   * Takes the shared lock name while fewer than options.limit connections
   * hold it (sgw), waiting up to options.timeout ms (none: for ever): name
   * is a counting semaphore. Rejects as lock() does. A session that holds
   * it already gets another handle at once (the server counts a
   * connection once).
   */
  acquire(name, { limit, timeout, signal } = {}) {
    checkLimit(limit);
    return this.#shared_(name, 'wait', { limit, ms: waitMs(timeout), signal });
  }

  /** acquire() without waiting: a Lock, or null when limit connections hold name. */
  tryAcquire(name, { limit } = {}) {
    checkLimit(limit);
    return this.#shared_(name, 'try', { limit, ms: 0 });
  }

  /** Takes the shared lock name (sg), which never waits and excludes no one. */
  lockShared(name) {
    return this.#shared_(name, 'sg', {});
  }

  async #shared_(name, mode, { limit, ms, signal }) {
    checkName(name);
    signal?.throwIfAborted();
    if (this.#err) throw this.#err;
    const key = normalize(name);
    let st = this.#shared.get(key);
    if (!st) this.#shared.set(key, (st = { mutex: new Mutex(), holds: 0, holders: 0 }));
    const drop = () => {
      st.mutex.unlock();
      if (st.mutex.idle && st.holds === 0 && this.#shared.get(key) === st) this.#shared.delete(key);
    };
    try {
      await st.mutex.lock(signal, this.lost);
    } catch (e) {
      if (st.mutex.idle && st.holds === 0 && this.#shared.get(key) === st) this.#shared.delete(key);
      throw e;
    }
    try {
      if (this.#err) throw this.#err;
      if (st.holds > 0) {
        st.holds++;
        return new Lock(this, key, null, true, st.holders, () => this.#unlockShared(key, st));
      }
      const line = mode === 'sg' ? `sg ${name}` : `sgw ${ms} ${limit} ${name}`;
      const ok = (r) => /^[1-9]\d* Shared Lock Get Success: /.test(r || '');
      const [get] = await this.#exchange([line], {
        wait: mode === 'wait',
        signal,
        cancelName: key,
        granted: (r) => ok(r[0][0]),
        undo: `sr ${name}`,
      });
      if (!ok(get[0])) {
        if (mode === 'try' && /^0 Shared Lock Get Timeout: /.test(get[0] || '')) return null;
        throw failure(get[0], line);
      }
      this.#alive();
      st.holds = 1;
      st.holders = parseInt(get[0], 10);
      return new Lock(this, nameOf(get[0], key), null, true, st.holders, () => this.#unlockShared(key, st));
    } finally {
      drop();
    }
  }

  async #unlockShared(key, st) {
    await st.mutex.lock(this.lost);
    try {
      if (st.holds > 1) {
        st.holds--;
        return;
      }
      const [r] = await this.#exchange([`sr ${key}`]);
      st.holds = 0;
      if (!(r[0] || '').startsWith('1 Shared Lock Release Success: ')) throw new NotHeld(`glockd "sr ${key}": ${JSON.stringify(r[0])}`);
    } finally {
      st.mutex.unlock();
      if (st.mutex.idle && st.holds === 0 && this.#shared.get(key) === st) this.#shared.delete(key);
    }
  }

  /** @private Lock.unlock of an exclusive lock. */
  async _release(name) {
    const [r] = await this.#exchange([`r ${name}`]);
    if (!(r[0] || '').startsWith('1 Lock Release Success: ')) throw new NotHeld(`glockd "r ${name}": ${JSON.stringify(r[0])}`);
  }

  /**
   * Takes the lock (as lock() does), runs fn(lock), and unlocks it,
   * whatever fn does. Resolves to fn's result.
   */
  async withLock(name, options, fn) {
    if (typeof options === 'function') [options, fn] = [{}, options];
    const lk = await this.lock(name, options);
    try {
      return await fn(lk);
    } finally {
      if (lk.held) await lk.unlock().catch(() => {});
    }
  }

  /**
   * The detailed listing (dl, or dl NAME): one object per exclusive lock
   * and per holder of a shared lock, {name, owner, shared, token (string,
   * or null for a shared lock), heldMs, holders, waiters}. Needs the
   * inspect permission with an ACL.
   */
  async details(name) {
    if (name !== undefined) checkName(name);
    const line = name === undefined ? 'dl' : `dl ${name}`;
    const [lines] = await this.#exchange([line]);
    if (lines.length === 1 && /^0 (disabled|Permission Denied|Auth Required)$/.test(lines[0])) throw failure(lines[0], line);
    return parseDetails(lines, name === undefined ? undefined : normalize(name));
  }

  /**
   * Who waits (dw, or dw NAME): one object per waiter, each lock's queue
   * together and in order, exclusive queues before shared ones, the locks in
   * no particular order; {name, waiter, shared,
   * queuedMs, deadlock}: waiter is its iam name or connection name, deadlock
   * the number of the deadlock it is in (-deadlocks report), or 0. Needs the
   * inspect permission with an ACL.
   */
  async waiters(name) {
    if (name !== undefined) checkName(name);
    const line = name === undefined ? 'dw' : `dw ${name}`;
    const [lines] = await this.#exchange([line]);
    if (lines.length === 1 && /^0 (disabled|Permission Denied|Auth Required)$/.test(lines[0])) throw failure(lines[0], line);
    return parseWaiters(lines, name === undefined ? undefined : normalize(name));
  }

  /** The fencing token of the current holder of name (t), or null when it is free. */
  async fencingToken(name) {
    checkName(name);
    const [[reply]] = await this.#exchange([`t ${name}`]);
    if ((reply || '').startsWith('0 Lock Not Locked: ')) return null;
    if (!/^[1-9]\d* Lock Token: /.test(reply || '')) throw failure(reply, `t ${name}`);
    return reply.slice(0, reply.indexOf(' '));
  }

  /**
   * Signs the connection in as the identity of token ("auth TOKEN"): true
   * when signed in, false when the server has no access control. Rejects
   * with AuthFailed when the token is refused. Session.open's token option
   * does this when connecting.
   */
  async auth(token) {
    if (typeof token !== 'string' || /[\r\n]/.test(token)) throw new TypeError('glockd: a token is one line');
    const [[reply]] = await this.#exchange(['auth ' + token]);
    if (reply === '1 ok') return true;
    if (reply === '0 disabled') return false;
    if (reply === '0 Auth Failure') throw new AuthFailed('glockd: the token was refused');
    throw failure(reply, 'auth');
  }

  /**
   * Runs one command line and resolves to its reply, one string per line
   * ([] for a command with no reply). For commands that take no lock (q, d,
   * sd, dump, who, me, perms, i, si, ...): a lock taken through it is not
   * tracked by the session (no handle), though lost with it all the same.
   * The out-of-band verbs (!ping, !cancel) belong to the session.
   */
  async command(line) {
    if (typeof line !== 'string' || /[\r\n]/.test(line)) throw new TypeError('glockd: a command is one line');
    if (line.trimStart().startsWith('!')) throw new TypeError('glockd: the session sends !ping and !cancel itself');
    const verb = verbOf(line);
    const [lines] = await this.#exchange([line], { wait: verb === 'gw' || verb === 'sgw' });
    return lines;
  }
}

// --- locks --------------------------------------------------------------------

/**
 * A lock held through a Session: exclusive (lock, tryLock) or shared
 * (lockShared, acquire, tryAcquire). It is held until unlock(), or until the
 * session is lost, when lost is aborted.
 */
export class Lock {
  #session;
  #release;
  #unlocked = false;

  /** @private */
  constructor(session, name, token, shared, holders, release) {
    this.#session = session;
    this.#release = release;
    /** The name as the server knows it (white space trimmed and collapsed). */
    this.name = name;
    /** The fencing token, a decimal string (exact up to 2^53 − 1); null for a shared lock. */
    this.token = token;
    /** Whether it is a shared lock (or semaphore). */
    this.shared = shared;
    /** For a shared lock: the connections holding it when this session took it, this one included. */
    this.holders = holders;
    /** The session's lost signal: aborted when the lock must be taken to be gone. */
    this.lost = session.lost;
  }

  /** Whether this handle is still held: not unlocked, and its session not lost. */
  get held() {
    return !this.#unlocked && !this.lost.aborted;
  }

  /**
   * Releases the lock (r, or sr when the session's last handle on a shared
   * lock goes). Rejects with NotHeld on a second call, and with the
   * session's error once it is lost (the lock was gone already).
   */
  async unlock() {
    if (this.#unlocked) throw new NotHeld(`glockd: ${JSON.stringify(this.name)} already unlocked`);
    this.#unlocked = true;
    const err = this.#session.error;
    if (err) {
      if (!this.shared) this.#release();
      throw err;
    }
    if (this.shared) return this.#release();
    try {
      await this.#session._release(this.name);
    } finally {
      this.#release();
    }
  }
}

if (typeof Symbol.asyncDispose === 'symbol') {
  Lock.prototype[Symbol.asyncDispose] = async function () {
    if (this.held) await this.unlock();
  };
  Session.prototype[Symbol.asyncDispose] = function () {
    return this.close();
  };
}
