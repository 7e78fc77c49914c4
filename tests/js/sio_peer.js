// The official Socket.IO client (npm socket.io-client) behind a line protocol,
// so that Python tests can drive any number of real clients from one Node process.
//
// Usage: node sio_peer.js            (commands on stdin, reports on stdout)
//
// Every command is one JSON line on stdin; every report one JSON line on stdout,
// in the order things happened in this process (so a test can assert causality:
// "B's ack arrived before A's"). Binary values travel as {"$bin": "<base64>"} in
// both directions. Each report carries "seq" (a counter) and "t" (ms since start,
// for humans only: tests must not assert on it).
//
// Single clients, named by "id":
//   {"op":"connect","id":"a","url":"http://127.0.0.1:5000","namespace":"/",
//    "opts":{...socket.io-client options...},"share":"b"}
//       opts defaults: forceNew, reconnection off. "share": multiplex over the
//       connection (Manager) of client "b" instead of opening a new one.
//       -> {"ev":"connect","id","sid","transport","recovered"}
//          | {"ev":"connect_error","id","message","data"}
//       ("recovered": socket.recovered, connection state recovery)
//       later: {"ev":"upgrade","id","transport"}, {"ev":"ping","id"} (Engine.IO heartbeat),
//              {"ev":"disconnect","id","reason"}
//   every event the server sends -> {"ev":"event","id","event","args","ack":bool}
//       When the server asked for an ack, the client answers with the arguments set by
//       {"op":"reply","id","event","args":[...]}, or else echoes the received arguments.
//   {"op":"emit","id","event","args":[...],"ack":true,"tag":"t1","timeout":5000}
//       -> with ack: {"ev":"ack","id","tag","args"} or {"ev":"ack_error","id","tag","message"}
//   {"op":"send","id","args":[...]}        socket.send(...) ("message" event)
//   {"op":"info","id","tag"}  -> {"ev":"info","id","tag","connected","sid","transport"}
//   {"op":"disconnect","id"}  -> {"ev":"disconnect","id","reason":"io client disconnect"}
//   {"op":"close_transport","id"}  drop the TCP connection without a close packet
//   {"op":"reconnect","id"}   socket.connect() again after a disconnect
//
// Many quiet clients, named by "prefix" (reports only summaries):
//   {"op":"bulk","prefix":"c","count":1000,"url","namespace","opts","concurrency":100}
//       -> {"ev":"bulk_connected","prefix","count","failed","errors":[...first few...]}
//   {"op":"bulk_emit","prefix","event","args","ack":true,"tag"}  ("$i" in args -> index)
//       -> {"ev":"bulk_acked","prefix","tag","results":[[index, args], ...]}
//   {"op":"bulk_counts","prefix","tag"}
//       -> {"ev":"bulk_counts","prefix","tag","connected","events":{name: total},
//           "clients":{name: clients that got it at least once},"pings","last":{name: args}}
//   {"op":"bulk_close","prefix"}   -> {"ev":"bulk_closed","prefix","count"}
//
// Other:
//   {"op":"echo","tag"}   -> {"ev":"echo","tag"}   (orders stdin against stdout)
//   {"op":"exit"}         disconnects everything and exits
//
// One-shot mode (tests/foreign/test_servers.py): node sio_peer.js MODE URL
//   MODE: polling | websocket | upgrade. Connects, waits for the upgrade in "upgrade"
//   mode, acknowledged-echoes an object and a Buffer ("echo" event), prints one JSON
//   line {mode, firstTransport, transport, ack, binary (hex)} or {..., error}, exits.
"use strict";

const readline = require("readline");
const { io } = require("socket.io-client");

const started = Date.now();
let seq = 0;
const sockets = new Map(); // id -> socket
const replies = new Map(); // id -> Map(event -> args)
const bulks = new Map(); // prefix -> {sockets, events, clients, pings, last}

function fromWire(value) {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value !== null && typeof value === "object") {
    if (Object.keys(value).length === 1 && typeof value.$bin === "string") {
      return Buffer.from(value.$bin, "base64");
    }
    const out = {};
    for (const key of Object.keys(value)) out[key] = fromWire(value[key]);
    return out;
  }
  return value;
}

function toWire(value) {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    return { $bin: buf.toString("base64") };
  }
  if (value instanceof ArrayBuffer) return { $bin: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(toWire);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value)) out[key] = toWire(value[key]);
    return out;
  }
  return value;
}

function report(obj) {
  obj.seq = ++seq;
  obj.t = Date.now() - started;
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function substitute(value, index) {
  if (value === "$i") return index;
  if (Array.isArray(value)) return value.map((v) => substitute(v, index));
  if (value !== null && typeof value === "object" && !Buffer.isBuffer(value)) {
    const out = {};
    for (const key of Object.keys(value)) out[key] = substitute(value[key], index);
    return out;
  }
  return value;
}

function transportOf(socket) {
  const engine = socket.io && socket.io.engine;
  return engine && engine.transport ? engine.transport.name : null;
}

function makeSocket(cmd) {
  const opts = Object.assign({ forceNew: true, reconnection: false }, fromWire(cmd.opts || {}));
  // "parser": "<npm package>" (e.g. socket.io-msgpack-parser) loads that parser.
  if (typeof opts.parser === "string") opts.parser = require(opts.parser);
  const namespace = cmd.namespace || "/";
  if (cmd.share) {
    const other = sockets.get(cmd.share);
    if (!other) throw new Error(`no client ${cmd.share} to share`);
    return other.io.socket(namespace, { auth: opts.auth });
  }
  return io(cmd.url.replace(/\/$/, "") + namespace, opts);
}

function connect(cmd) {
  const id = cmd.id;
  const socket = makeSocket(cmd);
  sockets.set(id, socket);
  replies.set(id, new Map());
  if (!cmd.share) {
    const manager = socket.io;
    manager.on("ping", () => report({ ev: "ping", id }));
    manager.on("open", () => {
      manager.engine.on("upgrade", (transport) =>
        report({ ev: "upgrade", id, transport: transport.name }),
      );
    });
  }
  socket.on("connect", () =>
    report({
      ev: "connect",
      id,
      sid: socket.id,
      transport: transportOf(socket),
      recovered: Boolean(socket.recovered),
    }),
  );
  socket.on("connect_error", (err) =>
    report({ ev: "connect_error", id, message: err.message, data: toWire(err.data ?? null) }),
  );
  socket.on("disconnect", (reason) => report({ ev: "disconnect", id, reason }));
  socket.onAny((event, ...args) => {
    let ack = null;
    if (args.length && typeof args[args.length - 1] === "function") ack = args.pop();
    report({ ev: "event", id, event, args: toWire(args), ack: ack !== null });
    if (ack) {
      const preset = replies.get(id).get(event);
      ack(...(preset !== undefined ? fromWire(preset) : args));
    }
  });
}

function emit(cmd) {
  const socket = sockets.get(cmd.id);
  const args = fromWire(cmd.args || []);
  if (!cmd.ack) {
    socket.emit(cmd.event, ...args);
    return;
  }
  const target = socket.timeout(cmd.timeout ?? 10000);
  target.emit(cmd.event, ...args, (err, ...answer) => {
    if (err) report({ ev: "ack_error", id: cmd.id, tag: cmd.tag, message: err.message });
    else report({ ev: "ack", id: cmd.id, tag: cmd.tag, args: toWire(answer) });
  });
}

async function bulk(cmd) {
  const state = { sockets: [], events: {}, clients: {}, pings: 0, last: {} };
  bulks.set(cmd.prefix, state);
  const count = cmd.count;
  const concurrency = cmd.concurrency || 100;
  let failed = 0;
  const errors = [];
  let next = 0;
  const opts = Object.assign({ forceNew: true, reconnection: false }, fromWire(cmd.opts || {}));
  const url = cmd.url.replace(/\/$/, "") + (cmd.namespace || "/");
  function one(index) {
    return new Promise((resolve) => {
      const socket = io(url, opts);
      state.sockets[index] = socket;
      const seen = new Set();
      socket.io.on("ping", () => {
        state.pings += 1;
      });
      socket.onAny((event, ...args) => {
        let ack = null;
        if (args.length && typeof args[args.length - 1] === "function") ack = args.pop();
        state.events[event] = (state.events[event] || 0) + 1;
        if (!seen.has(event)) {
          seen.add(event);
          state.clients[event] = (state.clients[event] || 0) + 1;
        }
        state.last[event] = args;
        if (ack) ack(...args);
      });
      socket.once("connect", () => resolve());
      socket.once("connect_error", (err) => {
        failed += 1;
        if (errors.length < 5) errors.push(String(err.message));
        resolve();
      });
    });
  }
  async function worker() {
    while (next < count) {
      const index = next++;
      await one(index);
    }
  }
  const workers = [];
  for (let k = 0; k < Math.min(concurrency, count); k++) workers.push(worker());
  await Promise.all(workers);
  report({ ev: "bulk_connected", prefix: cmd.prefix, count: count - failed, failed, errors });
}

function bulkEmit(cmd) {
  const state = bulks.get(cmd.prefix);
  const results = [];
  let pending = state.sockets.length;
  state.sockets.forEach((socket, index) => {
    const args = fromWire(substitute(cmd.args || [], index));
    if (!cmd.ack) {
      socket.emit(cmd.event, ...args);
      return;
    }
    socket.timeout(cmd.timeout ?? 20000).emit(cmd.event, ...args, (err, ...answer) => {
      results.push([index, err ? { error: err.message } : toWire(answer)]);
      pending -= 1;
      if (pending === 0) report({ ev: "bulk_acked", prefix: cmd.prefix, tag: cmd.tag, results });
    });
  });
  if (!cmd.ack) report({ ev: "bulk_sent", prefix: cmd.prefix, tag: cmd.tag });
}

function bulkCounts(cmd) {
  const state = bulks.get(cmd.prefix);
  report({
    ev: "bulk_counts",
    prefix: cmd.prefix,
    tag: cmd.tag,
    connected: state.sockets.filter((s) => s && s.connected).length,
    events: state.events,
    clients: state.clients,
    pings: state.pings,
    last: toWire(state.last),
  });
}

function bulkClose(cmd) {
  const state = bulks.get(cmd.prefix);
  let count = 0;
  if (state) {
    for (const socket of state.sockets) {
      if (socket) {
        socket.disconnect();
        count += 1;
      }
    }
    bulks.delete(cmd.prefix);
  }
  report({ ev: "bulk_closed", prefix: cmd.prefix, count });
}

function exitAll() {
  for (const socket of sockets.values()) socket.disconnect();
  for (const prefix of [...bulks.keys()]) bulkClose({ prefix });
  setTimeout(() => process.exit(0), 50);
}

function handle(cmd) {
  switch (cmd.op) {
    case "connect":
      return connect(cmd);
    case "emit":
      return emit(cmd);
    case "send":
      return sockets.get(cmd.id).send(...fromWire(cmd.args || []));
    case "reply":
      return replies.get(cmd.id).set(cmd.event, cmd.args || []);
    case "info": {
      const socket = sockets.get(cmd.id);
      return report({
        ev: "info",
        id: cmd.id,
        tag: cmd.tag,
        connected: socket.connected,
        sid: socket.id ?? null,
        transport: transportOf(socket),
      });
    }
    case "disconnect":
      return sockets.get(cmd.id).disconnect();
    case "reconnect":
      return sockets.get(cmd.id).connect();
    case "close_transport": {
      const engine = sockets.get(cmd.id).io.engine;
      const ws = engine.transport && engine.transport.ws;
      if (ws && ws._socket) return ws._socket.destroy();
      return engine.transport.close();
    }
    case "bulk":
      return bulk(cmd).catch((err) => report({ ev: "fatal", message: String(err.stack) }));
    case "bulk_emit":
      return bulkEmit(cmd);
    case "bulk_counts":
      return bulkCounts(cmd);
    case "bulk_close":
      return bulkClose(cmd);
    case "echo":
      return report({ ev: "echo", tag: cmd.tag });
    case "exit":
      return exitAll();
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

function oneShot(mode, url) {
  const result = { mode };
  const options = { reconnection: false, timeout: 5000 };
  if (mode === "polling") options.transports = ["polling"];
  else if (mode === "websocket") options.transports = ["websocket"];
  else options.transports = ["polling", "websocket"];
  function finish(extra) {
    Object.assign(result, extra || {});
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(0);
  }
  setTimeout(() => finish({ error: "timeout" }), 10000);
  const socket = io(url, options);
  socket.on("connect_error", (err) => finish({ error: String(err.message || err) }));
  socket.on("connect", async () => {
    const engine = socket.io.engine;
    result.firstTransport = engine.transport.name;
    if (mode === "upgrade" && engine.transport.name !== "websocket") {
      await new Promise((resolve) => engine.once("upgrade", resolve));
    }
    try {
      result.ack = await socket.timeout(5000).emitWithAck("echo", { text: "h\u00e9", list: [1, 2] });
      const bin = await socket.timeout(5000).emitWithAck("echo", Buffer.from([1, 2, 255]));
      result.binary = Buffer.from(bin).toString("hex");
    } catch (err) {
      result.error = String(err.message || err);
    }
    result.transport = engine.transport.name;
    socket.disconnect();
    finish();
  });
}

function lineMode() {
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
      cmd = JSON.parse(line);
      handle(cmd);
    } catch (err) {
      report({ ev: "fatal", message: String(err && err.stack ? err.stack : err), line });
    }
  });
  rl.on("close", () => exitAll());
}

if (process.argv.length > 3) oneShot(process.argv[2], process.argv[3]);
else lineMode();
