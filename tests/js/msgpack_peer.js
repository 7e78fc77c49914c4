// The reference msgpack parser (npm socket.io-msgpack-parser) behind a line
// protocol, for tests/protocol/test_msgpack.py.
//
// Each request is one JSON line on stdin, each answer one JSON line on stdout,
// in order. Binary values travel as {"$bin": "<base64>"} both ways; in a packet
// to encode, {"$ab": "<base64>"} is an ArrayBuffer (notepack.io writes it as
// ext type 0, a Buffer as bin) and {"$undef": true} is undefined. An exception
// thrown by the parser is answered as {"error": "<message>"}.
"use strict";

const readline = require("readline");
const parser = require("socket.io-msgpack-parser");

function fromWire(value) {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && typeof value.$bin === "string") return Buffer.from(value.$bin, "base64");
    if (keys.length === 1 && typeof value.$ab === "string") {
      const buf = Buffer.from(value.$ab, "base64");
      return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
    }
    if (keys.length === 1 && value.$undef === true) return undefined;
    const out = {};
    for (const key of keys) out[key] = fromWire(value[key]);
    return out;
  }
  return value;
}

function toWire(value) {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    return { $bin: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  if (value instanceof ArrayBuffer) return { $bin: Buffer.from(value).toString("base64") };
  if (value === undefined) return { $undef: true };
  if (Array.isArray(value)) return value.map(toWire);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value)) out[key] = toWire(value[key]);
    return out;
  }
  return value;
}

const handlers = {
  encode(req) {
    const [encoded] = new parser.Encoder().encode(fromWire(req.packet));
    return { result: Buffer.from(encoded).toString("base64") };
  },
  decode(req) {
    const decoder = new parser.Decoder();
    let packet = null;
    decoder.on("decoded", (p) => { packet = p; });
    decoder.add(Buffer.from(req.data, "base64"));
    const out = { type: packet.type, nsp: packet.nsp };
    if (packet.id !== undefined) out.id = packet.id;
    if (packet.data !== undefined) out.data = toWire(packet.data);
    return { result: out };
  },
};

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let answer;
  try {
    const req = JSON.parse(line);
    answer = handlers[req.op](req);
  } catch (err) {
    answer = { error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
