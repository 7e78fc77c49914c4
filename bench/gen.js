// Load generator for bench/run.py.
//
// Usage: node bench/gen.js SCENARIO URL [key=value ...]
// Prints progress to stderr and ONE JSON line with the result to stdout.
//
// Scenarios (all against the same handlers, see bench/app_flask.py):
//   ack        N full socket.io-client clients, one acked 'echo' in flight each
//   broadcast  N light receivers in room 'room'; a trigger asks the server for bursts of
//              'tick' events to the room; counts deliveries; then latency probes
//              (emit -> last delivery, p50/p99)
//   echo       N raw WebSocket clients against the server's plain echo route (/ws)
//   storm      N full socket.io-client clients connecting at once (transport=websocket
//              or transport=upgrade for polling-then-upgrade)
//   idle       N light clients connect and stay; prints {"event":"connected"} and waits
//              for a line on stdin before closing (the driver measures the server then).
//              `wait K SECONDS` on stdin: once every client has received K events (or
//              after SECONDS), prints {"event":"delivered", ...} with the monotonic time
//              of the first and last delivery (ns, comparable across processes);
//              `wait K SECONDS SEQ` also counts the clients whose last event is not `seq`
//              SEQ (`seq_wrong`: a lost or reordered delivery). join=1: every client
//              joins room 'room' first (the bcast20k scenario's receivers)
//
// Options common to the light clients: local_address=127.0.0.2 binds their source
// address (one address and destination have ~28,000 ephemeral ports here).
//
// Every result carries `gen_cpu`: the generator's CPU time / wall time over the measured
// window. Close to 1.0 means the generator (pinned to one core) was the bottleneck.
'use strict';
const path = require('path');
const WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));
const { io } = require(path.join(__dirname, '..', 'node_modules', 'socket.io-client'));

const [scenario, baseUrl, ...rest] = process.argv.slice(2);
const opt = {};
for (const kv of rest) {
  const i = kv.indexOf('=');
  const v = kv.slice(i + 1);
  opt[kv.slice(0, i)] = /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;
}
const wsBase = baseUrl.replace(/^http/, 'ws');

function log(...args) { process.stderr.write(`[gen ${scenario}] ${args.join(' ')}\n`); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

// Marks the measured window: the driver samples the server's CPU time at both marks.
function mark(event) { process.stdout.write(JSON.stringify({ event }) + '\n'); }

function cpuWindow() {
  mark('measure_start');
  const c0 = process.cpuUsage();
  const t0 = now();
  return () => {
    mark('measure_end');
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1000 / (now() - t0);
  };
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

// Run `fn(i)` for i in [0, n) with at most `limit` promises in flight.
async function pool(n, limit, fn) {
  let next = 0;
  const results = new Array(n);
  async function worker() {
    while (next < n) {
      const i = next++;
      results[i] = await fn(i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return results;
}

// ---------------------------------------------------------------------------
// Light Socket.IO client: Engine.IO v4 over a bare `ws` socket. It answers pings and
// counts event frames without decoding them; only the last frame is kept, so the
// caller can check its sequence number once a burst is complete.
class Light {
  constructor(onTick) {
    this.onTick = onTick;
    this.count = 0;
    this.last = null;
    this.acks = new Map();
    this.ackId = 0;
    this.ws = null;
  }

  connect(timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('connect timeout')); this.close(); },
        timeoutMs);
      const ws = new WebSocket(`${wsBase}/socket.io/?EIO=4&transport=websocket`,
        { perMessageDeflate: false,
          ...(opt.local_address ? { localAddress: String(opt.local_address) } : {}) });
      this.ws = ws;
      ws.on('error', (err) => { clearTimeout(timer); reject(err); });
      ws.on('close', () => { this.closed = true; clearTimeout(timer); reject(new Error('closed')); });
      ws.on('message', (data) => {
        const c0 = data[0];
        if (c0 === 0x34) { // '4' message
          const c1 = data[1];
          if (c1 === 0x32) { // '2' event
            this.count++;
            this.last = data;
            this.onTick(this);
          } else if (c1 === 0x33) { // '3' ack: 43<id>[...]
            const s = data.toString();
            const j = s.indexOf('[');
            const id = Number(s.slice(2, j));
            const cb = this.acks.get(id);
            if (cb) { this.acks.delete(id); cb(JSON.parse(s.slice(j))); }
          } else if (c1 === 0x30) { // '0' namespace connect
            clearTimeout(timer);
            resolve(this);
          } else if (c1 === 0x34) { // '4' connect error
            clearTimeout(timer);
            reject(new Error('connect_error ' + data.toString()));
          }
        } else if (c0 === 0x32) { // '2' ping
          ws.send('3');
        } else if (c0 === 0x30) { // '0' open
          ws.send('40');
        }
      });
    });
  }

  emit(event, arg) { this.ws.send('42' + JSON.stringify([event, arg])); }

  call(event, arg, timeoutMs = 30000) {
    const id = this.ackId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => { this.acks.delete(id); reject(new Error('ack timeout')); },
        timeoutMs);
      this.acks.set(id, (v) => { clearTimeout(t); resolve(v); });
      this.ws.send('42' + id + JSON.stringify([event, arg]));
    });
  }

  lastSeq() {
    if (!this.last) return null;
    return JSON.parse(this.last.toString().slice(2))[1].seq;
  }

  close() { try { this.ws.terminate(); } catch (e) { /* already gone */ } }
}

async function connectLights(n, { join = false, limit = 200, timeoutMs = 60000, onTick = () => {} }) {
  const clients = [];
  const errors = [];
  const t0 = now();
  await pool(n, limit, async (i) => {
    const c = new Light(onTick);
    try {
      await c.connect(timeoutMs);
      if (join) c.joined = (await c.call('join', 'room', timeoutMs))[0];
      clients.push(c);
    } catch (e) {
      errors.push(String(e.message || e));
      c.close();
    }
  });
  return { clients, errors, seconds: (now() - t0) / 1000 };
}

function firstErrors(errors) {
  const counts = {};
  for (const e of errors) counts[e] = (counts[e] || 0) + 1;
  return counts;
}

// ---------------------------------------------------------------------------
const PAYLOAD = {
  id: 12345, user: 'bench', tags: ['a', 'b', 'c'], values: [1, 2, 3, 4, 5, 6, 7, 8],
  text: 'x'.repeat(30),
}; // JSON.stringify(PAYLOAD).length ~ 100 bytes

function sioClient(transports, extra = {}) {
  return io(baseUrl, {
    transports, forceNew: true, reconnection: false, timeout: 30000, ...extra,
  });
}

function connectSio(sock, waitUpgrade) {
  return new Promise((resolve, reject) => {
    const done = () => resolve(sock);
    sock.on('connect_error', (e) => reject(new Error('connect_error ' + (e.message || e))));
    if (waitUpgrade) {
      sock.on('connect', () => {
        const eng = sock.io.engine;
        if (eng.transport.name === 'websocket') return done();
        eng.once('upgrade', done);
        eng.once('upgradeError', (e) => reject(new Error('upgradeError ' + e.message)));
      });
    } else {
      sock.on('connect', done);
    }
  });
}

async function scenarioAck() {
  const n = opt.clients || 100;
  const event = opt.event || 'echo'; // 'echo_async': Flask-Relay's async def handler
  const sockets = [];
  const errors = [];
  await pool(n, 50, async () => {
    const s = sioClient(['websocket']);
    try { sockets.push(await connectSio(s, false)); } catch (e) { errors.push(e.message); s.close(); }
  });
  if (!sockets.length) return { error: 'no client connected', errors: firstErrors(errors) };
  let measuring = false;
  let stopped = false;
  let count = 0;
  let bad = 0;
  const rtts = [];
  for (const s of sockets) {
    const go = () => {
      const t = now();
      s.timeout(30000).emit(event, PAYLOAD, (err, reply) => {
        if (err) { bad++; }
        else if (measuring) {
          count++;
          if ((count & 7) === 0) rtts.push(now() - t);
          if (!reply || reply.id !== PAYLOAD.id) bad++;
        }
        if (!stopped && !err) go();
      });
    };
    go();
  }
  await sleep((opt.warmup || 2) * 1000);
  measuring = true;
  const cpu = cpuWindow();
  const t0 = now();
  await sleep((opt.duration || 10) * 1000);
  measuring = false;
  const secs = (now() - t0) / 1000;
  const genCpu = cpu();
  stopped = true;
  for (const s of sockets) s.close();
  rtts.sort((a, b) => a - b);
  return {
    clients: sockets.length, connect_errors: firstErrors(errors), acks: count, seconds: secs,
    rate: count / secs, bad, rtt_p50_ms: pct(rtts, 50), rtt_p99_ms: pct(rtts, 99), gen_cpu: genCpu,
    ...(count === 0 ? { error: 'no ack received' } : {}),
  };
}

async function scenarioBroadcast() {
  const n = opt.clients || 1000;
  const size = opt.size || 80;
  const burstTimeout = (opt.burst_timeout || 30) * 1000;
  let total = 0; // deliveries in the current burst
  let target = Infinity;
  let resolveBurst = null;
  const onTick = () => {
    total++;
    if (total === target && resolveBurst) resolveBurst();
  };
  const conn = await connectLights(n, { join: true, onTick, timeoutMs: opt.connect_timeout
    ? opt.connect_timeout * 1000 : 60000 });
  log(`connected ${conn.clients.length}/${n} in ${conn.seconds.toFixed(1)}s`);
  const receivers = conn.clients;
  // The join ack names the server process (pid) that holds the client: with several
  // workers, how the clients were spread.
  const perProcess = {};
  for (const c of receivers) perProcess[c.joined] = (perProcess[c.joined] || 0) + 1;
  const result = {
    clients: receivers.length, wanted: n, connect_seconds: conn.seconds,
    connect_errors: firstErrors(conn.errors), per_process: perProcess,
  };
  if (receivers.length < n) {
    for (const c of receivers) c.close();
    return { ...result, error: `only ${receivers.length}/${n} clients connected and joined` };
  }
  const trigger = new Light(() => {});
  await trigger.connect(30000);
  let seq = 0;

  // One burst of `k` events; resolves with the time it took, or null on timeout.
  async function runBurst(k, timeoutMs = burstTimeout) {
    total = 0;
    target = receivers.length * k;
    const start = seq + 1;
    seq += k;
    const t0 = now();
    const ok = await new Promise((resolve) => {
      const timer = setTimeout(() => { resolveBurst = null; resolve(false); }, timeoutMs);
      resolveBurst = () => { clearTimeout(timer); resolveBurst = null; resolve(true); };
      trigger.emit('burst', { start, n: k, size });
    });
    const ms = now() - t0;
    if (!ok) return { ok: false, ms, delivered: total, expected: target };
    // Every receiver must have seen the whole burst, in order: check the last sequence.
    let wrong = 0;
    for (const c of receivers) if (c.lastSeq() !== seq) wrong++;
    return { ok: wrong === 0, ms, delivered: total, expected: target, wrong };
  }

  // Warm up with a small burst; its rate sets the timeouts, so slow servers are measured
  // too instead of timing out.
  const warm = await runBurst(opt.warm_burst || 5);
  if (!warm.ok) {
    // let stragglers arrive so the count is fair, then report what got through
    await sleep(2000);
    trigger.close();
    for (const c of receivers) c.close();
    return { ...result, error: 'warm-up burst incomplete', delivered: total,
      expected: warm.expected, partial: total / warm.expected, burst_ms: warm.ms };
  }
  const warmRate = warm.delivered / warm.ms; // per ms
  // The same burst size for every server (50,000 deliveries: long enough that the
  // trigger's round trip is small beside it); the timeout follows the warm-up rate.
  const burst = opt.burst || Math.max(1, Math.round(50000 / n));
  const timeoutFor = (k) => Math.max(burstTimeout, (10 * k * n) / warmRate);
  result.burst = burst;
  result.warm_rate = warmRate * 1000;
  const warm2 = await runBurst(burst, timeoutFor(burst)); // and a full-size one, unmeasured
  if (!warm2.ok) {
    await sleep(2000);
    trigger.close();
    for (const c of receivers) c.close();
    return { ...result, error: 'warm-up burst incomplete', delivered: total,
      expected: warm2.expected, partial: total / warm2.expected, burst_ms: warm2.ms };
  }
  const duration = (opt.duration || 10) * 1000;
  const cpu = cpuWindow();
  const tStart = now();
  let delivered = 0;
  let bursts = 0;
  let failure = null;
  while (now() - tStart < duration) {
    const r = await runBurst(burst, timeoutFor(burst));
    delivered += r.delivered;
    bursts++;
    if (!r.ok) { failure = r; break; }
  }
  const secs = (now() - tStart) / 1000;
  const genCpu = cpu();
  Object.assign(result, { bursts, delivered, seconds: secs, rate: delivered / secs,
    gen_cpu: genCpu });
  if (failure) {
    await sleep(2000);
    Object.assign(result, { error: 'burst incomplete', partial: total / failure.expected,
      failure });
  } else {
    // Latency: one event to the room, time from emit to its last delivery.
    const probes = opt.probes || 30;
    const lat = [];
    for (let i = 0; i < probes; i++) {
      const r = await runBurst(1);
      if (!r.ok) { result.latency_error = r; break; }
      lat.push(r.ms);
      await sleep(20);
    }
    lat.sort((a, b) => a - b);
    result.latency_p50_ms = pct(lat, 50);
    result.latency_p99_ms = pct(lat, 99);
  }
  trigger.close();
  for (const c of receivers) c.close();
  return result;
}

async function scenarioEcho() {
  const n = opt.clients || 100;
  const msg = 'x'.repeat(opt.size || 100);
  const clients = [];
  const errors = [];
  await pool(n, 50, (i) => new Promise((resolve) => {
    const ws = new WebSocket(`${wsBase}${opt.path || '/ws'}`, { perMessageDeflate: false });
    const t = setTimeout(() => { errors.push('timeout'); ws.terminate(); resolve(); }, 30000);
    ws.on('open', () => { clearTimeout(t); clients.push(ws); resolve(); });
    ws.on('unexpected-response', (req, res) => { errors.push(`HTTP ${res.statusCode}`); });
    ws.on('error', (e) => { clearTimeout(t); errors.push(String(e.message || e)); resolve(); });
  }));
  if (!clients.length) return { error: 'no client connected', errors: firstErrors(errors) };
  let measuring = false;
  let stopped = false;
  let count = 0;
  let bad = 0;
  for (const ws of clients) {
    ws.on('message', (data) => {
      if (measuring) { count++; if (data.length !== msg.length) bad++; }
      if (!stopped) ws.send(msg);
    });
    ws.send(msg);
  }
  await sleep((opt.warmup || 2) * 1000);
  measuring = true;
  const cpu = cpuWindow();
  const t0 = now();
  await sleep((opt.duration || 10) * 1000);
  measuring = false;
  const secs = (now() - t0) / 1000;
  const genCpu = cpu();
  stopped = true;
  for (const ws of clients) ws.terminate();
  return { clients: clients.length, connect_errors: firstErrors(errors), messages: count,
    seconds: secs, rate: count / secs, bad, gen_cpu: genCpu,
    ...(count === 0 ? { error: 'no message echoed' } : {}) };
}

async function scenarioStorm() {
  const n = opt.clients || 1000;
  const upgrade = opt.transport === 'upgrade';
  const limit = opt.concurrency || 200;
  const sockets = [];
  const errors = [];
  const cpu = cpuWindow();
  const t0 = now();
  await pool(n, limit, async () => {
    const s = sioClient(upgrade ? ['polling', 'websocket'] : ['websocket']);
    try { sockets.push(await connectSio(s, upgrade)); } catch (e) { errors.push(e.message); s.close(); }
  });
  const secs = (now() - t0) / 1000;
  const genCpu = cpu();
  for (const s of sockets) s.close();
  return { clients: n, connected: sockets.length, errors: firstErrors(errors), seconds: secs,
    rate: sockets.length / secs, gen_cpu: genCpu, transport: upgrade ? 'upgrade' : 'websocket' };
}

async function scenarioIdle() {
  const n = opt.clients || 1000;
  // Deliveries to idle clients (a broadcast to everyone): counted per client; the time
  // of the first and last one is kept (CLOCK_MONOTONIC, the same clock as the driver's).
  let firstNs = null;
  let lastNs = null;
  let want = Infinity;
  let complete = 0; // clients that have `want` events
  let onComplete = null;
  const onTick = (c) => {
    const t = process.hrtime.bigint();
    if (firstNs === null) firstNs = t;
    lastNs = t;
    if (c.count === want) {
      complete++;
      if (onComplete && complete === conn.clients.length) onComplete();
    }
  };
  const conn = await connectLights(n, { join: Boolean(opt.join), limit: opt.concurrency || 200,
    onTick, timeoutMs: opt.connect_timeout ? opt.connect_timeout * 1000 : 60000 });
  process.stdout.write(JSON.stringify({ event: 'connected', connected: conn.clients.length,
    errors: firstErrors(conn.errors), seconds: conn.seconds }) + '\n');
  // Wait for the driver to measure the server (and maybe ask for deliveries), then close.
  await new Promise((resolve) => {
    let buf = '';
    const onLine = (line) => {
      const [cmd, k, secs, seq] = line.trim().split(/\s+/);
      if (cmd !== 'wait') { resolve(); return; }
      want = Number(k);
      complete = conn.clients.filter((c) => c.count >= want).length;
      const report = (timedOut) => {
        onComplete = null;
        const alive = conn.clients.filter((c) => !c.closed).length;
        const seqWrong = seq === undefined ? null
          : conn.clients.filter((c) => c.lastSeq() !== Number(seq)).length;
        process.stdout.write(JSON.stringify({
          event: 'delivered', clients: conn.clients.length, alive, complete, seq_wrong: seqWrong,
          first_ns: firstNs === null ? null : String(firstNs),
          last_ns: lastNs === null ? null : String(lastNs), timed_out: timedOut,
        }) + '\n');
      };
      if (complete === conn.clients.length) { report(false); return; }
      const timer = setTimeout(() => report(true), Number(secs || 60) * 1000);
      onComplete = () => { clearTimeout(timer); report(false); };
    };
    process.stdin.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) { onLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
    });
    process.stdin.on('end', resolve);
  });
  let alive = 0;
  for (const c of conn.clients) { if (!c.closed) alive++; c.close(); }
  return { clients: n, connected: conn.clients.length, alive_at_end: alive,
    connect_seconds: conn.seconds, errors: firstErrors(conn.errors) };
}

const scenarios = {
  ack: scenarioAck, broadcast: scenarioBroadcast, echo: scenarioEcho, storm: scenarioStorm,
  idle: scenarioIdle,
};

(async () => {
  const fn = scenarios[scenario];
  if (!fn) {
    process.stderr.write(`unknown scenario ${scenario}\n`);
    process.exit(2);
  }
  let result;
  try {
    result = await fn();
  } catch (e) {
    result = { error: String((e && e.stack) || e) };
  }
  process.stdout.write(JSON.stringify({ scenario, ...opt, ...result }) + '\n');
  // Sockets may still be closing; the result is out, so leave now.
  setTimeout(() => process.exit(0), 100);
})();
