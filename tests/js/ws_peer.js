// A browser-like WebSocket client (npm `ws`) for the route tests.
// Usage: node ws_peer.js SCENARIO URL ; prints one JSON line with what it saw.
'use strict';
const WebSocket = require('ws');

const [scenario, url] = process.argv.slice(2);
const result = { scenario, messages: [] };
let finished = false;

function finish(extra) {
  if (finished) return;
  finished = true;
  Object.assign(result, extra || {});
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

setTimeout(() => finish({ error: 'timeout' }), 10000);

const options = {};
let protocols;
if (scenario === 'nopong') options.autoPong = false;
if (scenario === 'subprotocol') protocols = ['superchat', 'chat'];
const ws = new WebSocket(url, protocols, options);

ws.on('unexpected-response', (req, res) => finish({ httpStatus: res.statusCode }));
ws.on('error', (err) => { result.error = String(err.message || err); });
ws.on('ping', () => { result.pings = (result.pings || 0) + 1; });
ws.on('close', (code, reason) => finish({ closeCode: code, closeReason: reason.toString() }));
ws.on('message', (data, isBinary) => {
  result.messages.push(isBinary ? { hex: Buffer.from(data).toString('hex') } : data.toString());
  if (scenario === 'echo' && result.messages.length === 2) ws.close(1000, 'done');
  if (scenario === 'subprotocol') ws.close(1000);
});
ws.on('open', () => {
  result.protocol = ws.protocol;
  if (scenario === 'echo') {
    ws.send('h\u00e9llo \u{1F600}');
    ws.send(Buffer.from([0, 1, 2, 255]));
  } else if (scenario === 'badutf8') {
    // A text frame whose payload is not UTF-8: the server must close with 1007.
    ws.send(Buffer.from([0x68, 0x69, 0xff, 0xfe]), { binary: false });
  } else if (scenario === 'oversize') {
    ws.send('x'.repeat(100 * 1024));
  }
});
