// One round trip on each endpoint of an app that has them all
// (tests/foreign/test_every_mount.py): the official socket.io-client on
// /socket.io/, the official engine.io-client on /engine.io/ and a WebSocket
// client (npm `ws`) on the Sock route /echo. Both Engine.IO clients start on
// polling and the round trip is made after the upgrade to WebSocket, so both
// transports of both endpoints are used.
// Usage: node every_mount_peer.js http://127.0.0.1:PORT
// Prints one JSON line: {"sio": ..., "eio": ..., "ws": ...}; each is the echoed
// value, or {"error": "..."}.
"use strict";
const { io } = require("socket.io-client");
const { Socket } = require("engine.io-client");
const WebSocket = require("ws");

const base = process.argv[2];

function withTimeout(promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: timeout`)), 10000)),
  ]);
}

function whenUpgraded(engine) {
  if (engine.transport.name === "websocket") return Promise.resolve();
  return new Promise((resolve) => engine.once("upgrade", resolve));
}

async function socketio() {
  const socket = io(base, { reconnection: false, transports: ["polling", "websocket"] });
  try {
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    await whenUpgraded(socket.io.engine);
    const ack = await socket.timeout(5000).emitWithAck("echo", { text: "h\u00e9 sio" });
    return { ack, transport: socket.io.engine.transport.name };
  } finally {
    socket.disconnect();
  }
}

async function engineio() {
  const socket = new Socket(base, { transports: ["polling", "websocket"] });
  try {
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    await whenUpgraded(socket);
    const reply = new Promise((resolve) => socket.once("message", resolve));
    socket.send("h\u00e9 eio");
    return { message: await reply, transport: socket.transport.name };
  } finally {
    socket.close();
  }
}

async function websocket() {
  const ws = new WebSocket(base.replace(/^http/, "ws") + "/echo");
  try {
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
      ws.once("unexpected-response", (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
    const reply = new Promise((resolve) => ws.once("message", (data) => resolve(data.toString())));
    ws.send("h\u00e9 ws");
    return { message: await reply };
  } finally {
    ws.close(1000);
  }
}

async function main() {
  const names = ["sio", "eio", "ws"];
  const runs = [socketio(), engineio(), websocket()];
  const settled = await Promise.allSettled(runs.map((p, i) => withTimeout(p, names[i])));
  const result = {};
  settled.forEach((outcome, i) => {
    result[names[i]] = outcome.status === "fulfilled"
      ? outcome.value
      : { error: String((outcome.reason && outcome.reason.message) || outcome.reason) };
  });
  process.stdout.write(JSON.stringify(result) + "\n");
  setTimeout(() => process.exit(0), 300); // let the close packets leave
}

main();
