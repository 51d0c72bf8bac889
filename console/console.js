// glockd console: polls the server over its own websocket on "/" and shows
// the counters (q), every lock with its holders, hold times, tokens and
// waiters (dl), who waits for each lock and since when, with the deadlocks
// a server run with -deadlocks report has found (dw), and the connections
// (who, and the owners dl and dw name). It talks through the JavaScript
// client (clients/js/glockd.js, served as /console/glockd.js): a Session
// whose heartbeat tells when the connection, and with it the locks this page
// took, is lost. When the server gives
// access by identity (-acl-file), the page asks for a token first and shows
// only what that identity may see and lock (the server enforces it anyway).
import { Session, AuthFailed } from './glockd.js';

{
  const REFRESH_MS = 1000;
  // The session's heartbeat: a server that answers nothing for
  // SESSION_TIMEOUT_MS is taken to be gone, with the page's locks. A browser
  // that throttles the timers of a hidden tab to one a minute makes the page
  // reconnect (and lose its locks) rather than show locks it may have lost.
  const SESSION_TIMEOUT_MS = 10000;
  const HEARTBEAT_MS = 1000;
  const MAX_ROWS = 500; // rows shown per table; the filter narrows the rest
  const BIG_DUMP = 1 << 20; // bytes: above this, tables refresh less often

  const $ = (id) => document.getElementById(id);

  const state = {
    session: null, // the open Session, or null
    myName: '', // the holder name d and sd show for this page
    connName: '', // this page's connection name
    token: null, // the token this page signed in with, to sign in again on reconnect
    perms: null, // null: no access control; else {identity, lock, inspect, admin, patterns}
    ready: false, // signed in (if need be) on the current socket
    mine: new Map(), // "exclusive\0name" or "shared\0name" -> {kind, name, lock (a glockd Lock)}
    refreshing: false,
    tick: 0,
    bigTables: false,
    dumpEnabled: true,
    lastQ: null, // {at, total}
    exclusive: [], // [{lock, holder, token (text), heldMs, waiters}]
    shared: [], // [{lock, holders: [{name, heldMs}], waiters}]
    registered: [], // [{conn, name}] from who
    waiting: [], // [{lock, waiter, shared, place, queuedMs, deadlock}] from dw, each lock's queue in order
    fetchedAt: 0, // performance.now() of the last dl: held times grow from it
    sort: { exclusive: { key: 'lock', dir: 1 }, shared: { key: 'lock', dir: 1 } },
    retryMs: 1000,
  };

  // --- the session -----------------------------------------------------

  async function connect() {
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/';
    setStatus('connecting', 'connecting…');
    let session;
    try {
      session = await Session.open({ addresses: [url], timeout: SESSION_TIMEOUT_MS, interval: HEARTBEAT_MS });
    } catch (e) {
      retry('cannot connect (is this origin allowed by -ws-origin?)');
      return;
    }
    state.session = session;
    state.retryMs = 1000;
    session.lost.addEventListener('abort', () => lost(session), { once: true });
    setStatus('connected', 'connected');
    try {
      if (await signIn()) await startSession();
    } catch (e) { /* lost: lost() reports it */ }
  }

  // lost runs when the session's connection is gone: closed, or silent for
  // longer than its timeout. The server releases the page's locks.
  function lost(session) {
    if (state.session !== session) return;
    state.session = null;
    state.ready = false;
    if (state.mine.size > 0) {
      showReply('Connection lost: the server released the locks this page held.', false);
      state.mine.clear();
      renderMine();
    }
    retry('disconnected');
  }

  function retry(why) {
    const wait = state.retryMs;
    state.retryMs = Math.min(state.retryMs * 2, 10000);
    setStatus('disconnected', why + ' — retrying in ' + Math.round(wait / 1000) + ' s');
    $('whoami').textContent = '';
    setTimeout(connect, wait);
  }

  // send runs one command and resolves to its whole reply, each line ending
  // in "\n" ("" when the protocol answers with nothing).
  async function send(cmd) {
    const session = state.session;
    if (!session) throw new Error('not connected');
    return (await session.command(cmd)).map((line) => line + '\n').join('');
  }

  // auth signs the session in: true when the token is accepted, false when
  // it is refused.
  async function auth(token) {
    const session = state.session;
    if (!session) throw new Error('not connected');
    try {
      await session.auth(token);
      return true;
    } catch (e) {
      if (e instanceof AuthFailed) return false;
      throw e;
    }
  }

  // --- identity ----------------------------------------------------------

  const AUTH_REQUIRED = '0 Auth Required\n';

  // signIn identifies the connection when the server asks for it, with the
  // token this page signed in with before, if any. It reports whether the
  // page may go on; if not, the sign-in form is shown.
  async function signIn() {
    if ((await send('me')) !== AUTH_REQUIRED) {
      $('login').hidden = true;
      return true;
    }
    if (state.token !== null) {
      if (await auth(state.token)) return true;
      state.token = null;
      showLogin('The token was refused.');
      return false;
    }
    showLogin('');
    return false;
  }

  function showLogin(error) {
    $('login').hidden = false;
    $('app').hidden = true;
    setStatus('connected', 'sign in required');
    loginError(error);
    $('token').focus();
  }

  function loginError(text) {
    $('login-error').hidden = !text;
    $('login-error').textContent = text;
  }

  async function submitLogin(ev) {
    ev.preventDefault();
    const token = $('token').value.trim();
    if (/[\r\n]/.test(token)) {
      loginError('A token is one line.');
      return;
    }
    $('login-button').disabled = true;
    let ok;
    try {
      ok = await auth(token);
    } catch (e) {
      loginError(state.session ? e.message : 'Not connected.');
      return;
    } finally {
      $('login-button').disabled = false;
    }
    if (!ok) {
      loginError('Wrong token.');
      return;
    }
    state.token = token;
    $('token').value = '';
    loginError('');
    try {
      await startSession();
    } catch (e) { /* lost: lost() reports it */ }
  }

  // startSession learns who this page is and what it may do, then polls.
  async function startSession() {
    const me = (await send('me')).trim().split(' '); // "1 CONNNAME SHOWNNAME"
    state.connName = me[1] || '';
    state.myName = me.slice(2).join(' ') || state.connName;
    state.perms = parsePerms(await send('perms'));
    let who = state.connName ? 'this page is ' + state.connName : '';
    if (state.perms) who = 'signed in as ' + state.perms.identity + ' (' + state.connName + ')';
    else if (state.myName !== state.connName) who += ' as ' + state.myName;
    $('whoami').textContent = who;
    $('login').hidden = true;
    $('app').hidden = false;
    setStatus('connected', 'connected');
    state.ready = true;
    applyPerms();
    refresh();
  }

  // "1 IDENTITY PERMISSIONS PATTERN..." or "0 disabled" (no access control).
  function parsePerms(reply) {
    if (!reply.startsWith('1 ')) return null;
    const f = reply.trim().split(' ');
    const perms = (f[2] || '').split(',');
    return {
      identity: f[1] || '',
      lock: perms.includes('lock'),
      inspect: perms.includes('inspect'),
      admin: perms.includes('admin'),
      patterns: f.slice(3),
    };
  }

  const canInspect = () => !state.perms || state.perms.inspect;

  // The server's view of a name: white space trimmed and collapsed.
  const normalise = (name) => name.trim().split(/\s+/).join(' ');

  // mayLock follows the server's rule: a pattern ending in "*" is a prefix,
  // any other an exact name.
  function mayLock(name) {
    const p = state.perms;
    if (!p) return true;
    return p.lock && p.patterns.some((pat) => (pat.endsWith('*') ? name.startsWith(pat.slice(0, -1)) : name === pat));
  }

  function applyPerms() {
    const p = state.perms;
    const inspect = canInspect();
    $('no-inspect').hidden = inspect;
    $('no-inspect-name').textContent = p ? p.identity : '';
    $('cards').hidden = !inspect;
    $('commands-panel').hidden = !inspect;
    const lock = !p || p.lock;
    $('lock-form').hidden = !lock;
    $('no-lock').hidden = lock;
    renderTables();
    updateLockHint();
  }

  // updateLockHint tells, as the name is typed, whether this identity may
  // lock it, and disables the buttons when it may not.
  function updateLockHint() {
    const p = state.perms;
    const hint = $('lock-hint');
    const ok = mayLock(normalise($('lock-name').value));
    $('acquire').disabled = !ok;
    $('release').disabled = !ok;
    if (!p || !p.lock) {
      hint.hidden = true;
      return;
    }
    const patterns = p.patterns.length ? p.patterns.join(', ') : 'no names';
    hint.hidden = false;
    hint.className = ok ? 'hint' : 'hint bad';
    hint.textContent = (ok ? p.identity + ' may lock ' : 'Not a name ' + p.identity + ' may lock: ') + patterns;
  }

  function setStatus(kind, text) {
    const el = $('status');
    el.dataset.state = kind;
    el.textContent = text;
  }

  // --- polling ---------------------------------------------------------

  async function refresh() {
    if (state.refreshing || !state.session) return;
    if (!state.ready || !canInspect()) return; // not signed in, or nothing this identity may see
    state.refreshing = true;
    try {
      // Big or disabled tables are fetched every fifth tick only.
      const withTables = (state.dumpEnabled && !state.bigTables) || state.tick % 5 === 0;
      state.tick++;
      const replies = await Promise.all(withTables ? [send('q'), send('dl'), send('who'), send('dw')] : [send('q')]);
      renderStats(parseStats(replies[0]));
      if (withTables) {
        const [dl, who, dw] = [replies[1], replies[2], replies[3]];
        state.dumpEnabled = dl !== '0 disabled\n';
        state.bigTables = dl.length > BIG_DUMP;
        state.fetchedAt = performance.now();
        if (state.dumpEnabled) parseDetailed(dl);
        else state.exclusive = state.shared = [];
        state.waiting = state.dumpEnabled ? parseWaiters(dw) : [];
        state.registered = who === '0 disabled\n' ? [] : parseWho(who);
        renderTables();
      }
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      // Disconnected mid-refresh: lost() shows it.
    } finally {
      state.refreshing = false;
    }
  }

  // Lines of "KEY: VALUE".
  function parseStats(text) {
    const stats = {};
    for (const line of text.split('\n')) {
      const i = line.indexOf(': ');
      if (i > 0) stats[line.slice(0, i)] = Number(line.slice(i + 2));
    }
    return stats;
  }

  // Lines of "LOCK: OWNER". A name may itself hold ": ", so this is a best
  // guess: split at the first one (owners are usually addresses).
  function splitLine(line) {
    const i = line.indexOf(': ');
    return i < 0 ? null : [line.slice(0, i), line.slice(i + 2)];
  }

  // dl: "LOCK: OWNER token=T held_ms=MS waiters=W" per exclusive lock and
  // "LOCK: OWNER shared held_ms=MS holders=N waiters=W" per shared holder,
  // the holders of one lock together, the locks in the server's order (the
  // page sorts). An owner may hold spaces: its fields are read from the end
  // of the line.
  function parseDetailed(text) {
    const exclusive = [];
    const shared = [];
    let last = null;
    for (const line of text.split('\n')) {
      const kv = splitLine(line);
      if (!kv) continue;
      const f = kv[1].split(' ');
      const text = (i, key) => {
        const v = f[f.length - i] || '';
        return v.startsWith(key + '=') ? v.slice(key.length + 1) : '';
      };
      const field = (i, key) => (text(i, key) === '' ? NaN : Number(text(i, key)));
      if (f[f.length - 4] === 'shared') {
        const holder = { name: f.slice(0, -4).join(' '), heldMs: field(3, 'held_ms') };
        if (!last || last.lock !== kv[0]) {
          last = { lock: kv[0], holders: [], waiters: field(1, 'waiters') };
          shared.push(last);
        }
        last.holders.push(holder);
      } else {
        exclusive.push({ lock: kv[0], holder: f.slice(0, -3).join(' '), token: text(3, 'token'),
          heldMs: field(2, 'held_ms'), waiters: field(1, 'waiters') });
      }
    }
    state.exclusive = exclusive;
    state.shared = shared;
  }

  // dw: "LOCK: WAITER queued_ms=MS" per waiter, "shared" before queued_ms
  // for sgw's waiters, " deadlock=N" after it for a wait in a deadlock the
  // server found and left (-deadlocks report); sorted by lock, each queue in
  // its order. A waiter may hold spaces: its fields are read from the end.
  function parseWaiters(text) {
    const rows = [];
    for (const line of text.split('\n')) {
      const kv = splitLine(line);
      if (!kv) continue;
      const f = kv[1].split(' ');
      let deadlock = 0;
      if (f[f.length - 1].startsWith('deadlock=')) deadlock = Number(f.pop().slice('deadlock='.length));
      const queued = f.pop() || '';
      if (!queued.startsWith('queued_ms=')) continue;
      const shared = f.length > 1 && f[f.length - 1] === 'shared';
      if (shared) f.pop();
      const prev = rows[rows.length - 1];
      const place = prev && prev.lock === kv[0] && prev.shared === shared ? prev.place + 1 : 1;
      rows.push({ lock: kv[0], waiter: f.join(' '), shared, place, queuedMs: Number(queued.slice('queued_ms='.length)), deadlock });
    }
    return rows;
  }

  // who: "CONN: NAME" per registered connection.
  function parseWho(text) {
    const rows = [];
    for (const line of text.split('\n')) {
      const kv = splitLine(line);
      if (kv) rows.push({ conn: kv[0], name: kv[1] });
    }
    return rows;
  }

  // heldNow is how long a hold has lasted now: its age at the last dl plus
  // the time since, so that it goes on growing between refreshes.
  function heldNow(heldMs) {
    return heldMs + (performance.now() - state.fetchedAt);
  }

  // duration prints milliseconds in the largest units that fit: "850 ms",
  // "12 s", "4 min 05 s", "3 h 20 min", "2 d 4 h".
  function duration(ms) {
    if (!Number.isFinite(ms)) return '–';
    if (ms < 1000) return Math.round(ms) + ' ms';
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + ' s';
    const pad = (n) => String(n).padStart(2, '0');
    if (s < 3600) return Math.floor(s / 60) + ' min ' + pad(s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + pad(Math.floor(s / 60) % 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor(s / 3600) % 24 + ' h';
  }

  // thresholdMs is the age over which a hold is highlighted; 0 for none.
  function thresholdMs() {
    const v = Number($('threshold').value);
    return v > 0 ? v * 1000 : 0;
  }

  // --- rendering -------------------------------------------------------

  const number = new Intl.NumberFormat();

  function renderStats(stats) {
    for (const el of document.querySelectorAll('[data-stat]')) {
      const v = stats[el.dataset.stat];
      el.textContent = v === undefined ? '–' : number.format(v);
    }
    const commands = Object.keys(stats).filter((k) => k.startsWith('command_')).sort();
    const total = commands.reduce((sum, k) => sum + stats[k], 0) + (stats.invalid_commands || 0);
    const now = performance.now();
    if (state.lastQ && now > state.lastQ.at) {
      const rate = ((total - state.lastQ.total) * 1000) / (now - state.lastQ.at);
      $('rate').textContent = rate >= 10 ? number.format(Math.round(rate)) : rate.toFixed(1);
    }
    state.lastQ = { at: now, total };
    const body = $('commands').tBodies[0];
    body.replaceChildren(...commands.map((k) => row([cell(k.slice('command_'.length)), cell(number.format(stats[k]), 'num')])));
  }

  function renderTables() {
    const enabled = state.dumpEnabled && canInspect();
    $('dump-disabled').hidden = state.dumpEnabled || !canInspect();
    for (const id of ['table-tools', 'exclusive-panel', 'shared-panel', 'waiting-panel', 'connections-panel']) $(id).hidden = !enabled;
    if (!enabled) return;

    const filter = $('filter').value.trim().toLowerCase();
    const match = (...texts) => !filter || texts.some((t) => t.toLowerCase().includes(filter));

    const old = thresholdMs();
    const ex = sortRows('exclusive', state.exclusive.filter((r) => match(r.lock, r.holder)));
    fillTable('exclusive', ex, (r) => {
      const held = heldNow(r.heldMs);
      const tr = row([cell(r.lock, 'lock'), holderCell([r.holder]), heldCell(held),
        cell(r.token || '–', 'num token'), cell(String(r.waiters), 'num waiters')]);
      tr.dataset.lock = r.lock;
      if (r.holder === state.myName) tr.classList.add('is-mine');
      if (old && held > old) tr.classList.add('is-old');
      return tr;
    }, 5);
    const sh = sortRows('shared', state.shared.filter((r) => match(r.lock, ...r.holders.map((h) => h.name))));
    fillTable('shared', sh, (r) => {
      const held = Math.max(...r.holders.map((h) => heldNow(h.heldMs)));
      const tr = row([cell(r.lock, 'lock'), cell(String(r.holders.length), 'num count'),
        holderCell(r.holders.map((h) => h.name), r.holders.map((h) => duration(heldNow(h.heldMs)))),
        heldCell(held), cell(String(r.waiters), 'num waiters')]);
      tr.dataset.lock = r.lock;
      if (r.holders.some((h) => h.name === state.myName)) tr.classList.add('is-mine');
      if (old && held > old) tr.classList.add('is-old');
      return tr;
    }, 5);
    renderWaiting(match);
    renderConnections();

    $('exclusive-count').textContent = countText(ex.length, state.exclusive.length);
    $('shared-count').textContent = countText(sh.length, state.shared.length);
    $('exclusive-empty').hidden = ex.length > 0;
    $('shared-empty').hidden = sh.length > 0;
    $('exclusive-empty').textContent = state.exclusive.length ? 'No exclusive lock matches the filter.' : 'No exclusive locks.';
    $('shared-empty').textContent = state.shared.length ? 'No shared lock matches the filter.' : 'No shared locks.';
    $('filter-info').textContent = filter ? 'showing ' + number.format(ex.length + sh.length) + ' of ' +
      number.format(state.exclusive.length + state.shared.length) : '';
  }

  // sortRows orders a table's rows by its chosen column (held time: the
  // oldest hold of the row).
  function sortRows(table, rows) {
    const { key, dir } = state.sort[table];
    const value = (r) => {
      switch (key) {
        case 'holder': return r.holder !== undefined ? r.holder : r.holders.map((h) => h.name).join(' ');
        case 'held': return r.heldMs !== undefined ? r.heldMs : Math.max(...r.holders.map((h) => h.heldMs));
        case 'count': return r.holders.length;
        // Tokens are kept as text: a number would round those over 2^53.
        case 'token': return BigInt(r.token || '0');
        default: return r[key];
      }
    };
    return rows.slice().sort((a, b) => {
      const va = value(a);
      const vb = value(b);
      let c;
      if (typeof va === 'bigint') c = va < vb ? -1 : va > vb ? 1 : 0;
      else c = typeof va === 'number' ? va - vb : String(va).localeCompare(String(vb));
      return c * dir || a.lock.localeCompare(b.lock);
    });
  }

  function heldCell(ms) {
    const td = cell(duration(ms), 'num held');
    td.dataset.ms = String(Math.round(ms));
    return td;
  }

  // renderWaiting lists who waits for each lock and since when, in queue
  // order, and each deadlock found (-deadlocks report) as one until one of
  // its waits ends: every waiter in it, the lock it waits for and who holds
  // that lock.
  function renderWaiting(match) {
    const rows = state.waiting.filter((r) => match(r.lock, r.waiter));
    fillTable('waiting', rows, (r) => {
      const tr = row([cell(r.lock, 'lock'), cell(String(r.place), 'num place'), holderCell([r.waiter]),
        cell(r.shared ? 'shared' : 'exclusive', 'kind'), heldCell(heldNow(r.queuedMs)),
        cell(r.deadlock ? 'deadlock ' + r.deadlock : '', 'deadlock')]);
      tr.dataset.lock = r.lock;
      tr.dataset.waiter = r.waiter;
      if (r.deadlock) tr.classList.add('is-deadlock');
      return tr;
    }, 6);
    $('waiting-count').textContent = countText(rows.length, state.waiting.length);
    $('waiting-empty').hidden = rows.length > 0;
    $('waiting-empty').textContent = state.waiting.length ? 'No waiter matches the filter.' : 'Nobody waits.';

    const cycles = new Map();
    for (const r of state.waiting) {
      if (!r.deadlock) continue;
      if (!cycles.has(r.deadlock)) cycles.set(r.deadlock, []);
      cycles.get(r.deadlock).push(r);
    }
    const holdersOf = (r) => {
      const table = r.shared ? state.shared : state.exclusive;
      const found = table.find((l) => l.lock === r.lock);
      if (!found) return [];
      return r.shared ? found.holders.map((h) => h.name) : [found.holder];
    };
    $('deadlocks').replaceChildren(...[...cycles.entries()].sort((a, b) => a[0] - b[0]).map(([id, members]) => {
      const li = document.createElement('li');
      li.dataset.deadlock = String(id);
      const title = document.createElement('strong');
      title.textContent = 'Deadlock ' + id + ': ';
      li.append(title, members.map((r) => r.waiter + ' waits for ' + (r.shared ? 'shared ' : '') + r.lock +
        ', held by ' + holdersOf(r).join(', ')).join('; ') + '.');
      return li;
    }));
    $('deadlocks-panel').hidden = cycles.size === 0;
  }

  // renderConnections lists every connection that holds a lock, waits for
  // one or named itself: its name, its registered name, how many locks it
  // holds, and a mark on those waiting.
  function renderConnections() {
    const conns = new Map();
    const get = (name) => {
      if (!conns.has(name)) conns.set(name, { name, registered: '', exclusive: 0, shared: 0, waitsFor: [] });
      return conns.get(name);
    };
    for (const r of state.registered) {
      // Owners show registered names: count under the name, note the address.
      get(r.name).registered = r.conn;
    }
    for (const r of state.exclusive) get(r.holder).exclusive++;
    for (const r of state.shared) for (const h of r.holders) get(h.name).shared++;
    for (const r of state.waiting) get(r.waiter).waitsFor.push(r.lock);
    const rows = [...conns.values()].sort((a, b) => (b.exclusive + b.shared) - (a.exclusive + a.shared) || a.name.localeCompare(b.name));
    fillTable('connections', rows, (c) => {
      const name = holderCell([c.name]);
      if (c.waitsFor.length > 0) {
        const badge = document.createElement('span');
        badge.className = 'badge waiting';
        badge.textContent = 'waiting for ' + c.waitsFor.join(', ');
        name.append(badge);
      }
      const tr = row([name, cell(c.registered, 'meta'), cell(String(c.exclusive), 'num'), cell(String(c.shared), 'num')]);
      tr.dataset.conn = c.name;
      if (c.waitsFor.length > 0) tr.classList.add('is-waiting');
      return tr;
    }, 4);
    $('connections-empty').hidden = rows.length > 0;
  }

  function countText(shown, all) {
    return shown === all ? '(' + number.format(all) + ')' : '(' + number.format(shown) + ' of ' + number.format(all) + ')';
  }

  function fillTable(id, rows, makeRow, columns) {
    const body = $(id).tBodies[0];
    const trs = rows.slice(0, MAX_ROWS).map(makeRow);
    if (rows.length > MAX_ROWS) {
      const more = cell(number.format(rows.length - MAX_ROWS) + ' more not shown: narrow the filter.');
      more.colSpan = columns;
      const tr = row([more]);
      tr.className = 'more';
      trs.push(tr);
    }
    body.replaceChildren(...trs);
    $(id).hidden = rows.length === 0;
  }

  function row(cells) {
    const tr = document.createElement('tr');
    tr.append(...cells);
    return tr;
  }

  function cell(text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function holderCell(holders, notes) {
    const td = document.createElement('td');
    td.className = 'holders';
    holders.forEach((h, i) => {
      const span = document.createElement('span');
      span.className = 'holder';
      span.textContent = h;
      if (notes) {
        const note = document.createElement('span');
        note.className = 'since';
        note.textContent = notes[i];
        span.append(note);
      }
      if (h === state.myName) {
        const badge = document.createElement('span');
        badge.className = 'badge';
        badge.textContent = 'this page';
        span.append(badge);
      }
      td.append(span);
    });
    return td;
  }

  function renderMine() {
    const list = $('mine');
    const items = [...state.mine.values()].sort((a, b) => a.name.localeCompare(b.name) || a.kind.localeCompare(b.kind));
    $('mine-count').textContent = items.length ? '(' + items.length + ')' : '';
    if (items.length === 0) {
      const li = document.createElement('li');
      li.className = 'none';
      li.textContent = 'Nothing yet.';
      list.replaceChildren(li);
      return;
    }
    list.replaceChildren(...items.map((it) => {
      const li = document.createElement('li');
      li.dataset.lock = it.name;
      li.dataset.kind = it.kind;
      const label = document.createElement('span');
      const name = document.createElement('span');
      name.className = 'lockname';
      name.textContent = it.name === '' ? '""' : it.name;
      const kind = document.createElement('span');
      kind.className = 'kind';
      kind.textContent = it.kind;
      label.append(name, kind);
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'small';
      button.textContent = 'Release';
      button.addEventListener('click', () => lockCommand('release', it.kind, it.name));
      li.append(label, button);
      return li;
    }));
  }

  function showReply(text, ok) {
    const el = $('last-reply');
    el.hidden = false;
    el.textContent = text;
    el.className = 'reply ' + (ok ? 'ok' : 'bad');
  }

  // --- taking and releasing locks --------------------------------------

  async function lockCommand(action, kind, name) {
    if (/[\r\n]/.test(name)) {
      showReply('A lock name cannot contain a line break.', false);
      return;
    }
    if (!mayLock(normalise(name))) {
      showReply(state.perms.identity + ' may not lock ' + JSON.stringify(normalise(name)) + '.', false);
      return;
    }
    const session = state.session;
    if (!session) {
      showReply('Not connected.', false);
      return;
    }
    const key = kind + '\0' + normalise(name);
    const held = state.mine.get(key);
    let text;
    let ok = true;
    try {
      if (action === 'acquire' && held) {
        text = 'This page holds ' + JSON.stringify(held.name) + ' already.';
      } else if (action === 'acquire') {
        const lock = kind === 'exclusive' ? await session.tryLock(name) : await session.lockShared(name);
        if (lock === null) {
          ok = false;
          text = 'Another connection holds ' + JSON.stringify(normalise(name)) + '.';
        } else {
          state.mine.set(kind + '\0' + lock.name, { kind, name: lock.name, lock });
          text = lock.shared ? 'Took shared ' + JSON.stringify(lock.name) + ' (holders: ' + lock.holders + ').'
            : 'Took ' + JSON.stringify(lock.name) + ' (fencing token ' + lock.token + ').';
        }
      } else if (held) {
        state.mine.delete(key);
        await held.lock.unlock();
        text = 'Released ' + JSON.stringify(held.name) + '.';
      } else {
        // Not taken by this page: the server says what it makes of it.
        text = (await send((kind === 'exclusive' ? 'r ' : 'sr ') + name)).trim();
        ok = !text.startsWith('0 ');
      }
    } catch (e) {
      ok = false;
      text = state.session ? e.message : 'Not connected.';
    }
    showReply(text, ok);
    renderMine();
    refresh();
  }

  function selectedKind() {
    return document.querySelector('input[name="kind"]:checked').value;
  }

  $('lock-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    lockCommand('acquire', selectedKind(), $('lock-name').value);
  });
  $('release').addEventListener('click', () => lockCommand('release', selectedKind(), $('lock-name').value));
  $('filter').addEventListener('input', renderTables);
  $('threshold').addEventListener('input', renderTables);
  for (const th of document.querySelectorAll('th[data-sort]')) {
    th.addEventListener('click', () => {
      const table = th.closest('table').id;
      const s = state.sort[table];
      s.dir = s.key === th.dataset.sort ? -s.dir : 1;
      s.key = th.dataset.sort;
      for (const other of th.closest('tr').children) delete other.dataset.dir;
      th.dataset.dir = s.dir > 0 ? 'asc' : 'desc';
      renderTables();
    });
  }
  // Held times grow between refreshes.
  setInterval(() => { if (state.dumpEnabled && state.exclusive.length + state.shared.length + state.waiting.length > 0) renderTables(); }, 250);
  $('lock-name').addEventListener('input', updateLockHint);
  $('login-form').addEventListener('submit', submitLogin);

  $('server').textContent = location.host;
  renderMine();
  connect();
  setInterval(refresh, REFRESH_MS);
}
