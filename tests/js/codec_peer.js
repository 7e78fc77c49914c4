// The reference codecs (npm engine.io-parser and socket.io-parser) behind a
// line protocol, for tests/protocol/test_codec_interop.py and the fuzz tests.
//
// Each request is one JSON line on stdin, each answer one JSON line on stdout,
// in order. Binary values travel as {"$bin": "<base64>"} in both directions.
// An exception thrown by a codec is answered as {"error": "<message>"}.
"use strict";

const readline = require("readline");
const eio = require("engine.io-parser");
const sio = require("socket.io-parser");

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
    return { $bin: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
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

function sioPacketToWire(packet) {
  const out = { type: packet.type, nsp: packet.nsp };
  if (packet.id !== undefined) out.id = packet.id;
  if (packet.data !== undefined) out.data = toWire(packet.data);
  return out;
}

const handlers = {
  // Engine.IO
  "eio.encodePacket"(req) {
    let result;
    eio.encodePacket(fromWire(req.packet), req.supportsBinary, (encoded) => { result = encoded; });
    return { result: toWire(result) };
  },
  "eio.decodePacket"(req) {
    const packet = eio.decodePacket(fromWire(req.data), "nodebuffer");
    return { result: toWire(packet) };
  },
  "eio.encodePayload"(req) {
    let result;
    eio.encodePayload(req.packets.map(fromWire), (encoded) => { result = encoded; });
    return { result };
  },
  "eio.decodePayload"(req) {
    return { result: eio.decodePayload(req.payload, "nodebuffer").map(toWire) };
  },
  // Socket.IO
  "sio.encode"(req) {
    const packet = fromWire(req.packet);
    return { result: new sio.Encoder().encode(packet).map(toWire) };
  },
  "sio.decode"(req) {
    // Feed every item to one fresh decoder; report the packets it emitted and
    // the first error (after which it stops, like the server closing).
    const decoder = new sio.Decoder(req.maxAttachments ? { maxAttachments: req.maxAttachments } : undefined);
    const packets = [];
    decoder.on("decoded", (packet) => packets.push(sioPacketToWire(packet)));
    let error = null;
    for (const item of req.items) {
      try {
        decoder.add(fromWire(item));
      } catch (e) {
        error = String(e && e.message);
        break;
      }
    }
    return { result: { packets, error } };
  },
  "json.stringify"(req) {
    return { result: JSON.stringify(fromWire(req.value)) };
  },
  "json.parse"(req) {
    try {
      return { result: toWire(JSON.parse(req.text)) };
    } catch (e) {
      return { result: null, error: String(e && e.message) };
    }
  },
};

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  let answer;
  try {
    const req = JSON.parse(line);
    const handler = handlers[req.op];
    if (!handler) throw new Error("unknown op " + req.op);
    answer = handler(req);
  } catch (e) {
    answer = { error: String(e && e.message) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
rl.on("close", () => process.exit(0));
