// The official Engine.IO client (engine.io-client, from socket.io-client's deps)
// for tests/engine. Usage: node eio_peer.js URL OPTIONS_JSON
// OPTIONS_JSON: client options plus "send" (list of strings, {"$bin": base64}),
// "expect" (messages to receive before closing; 0: wait for the server to close),
// "waitUpgrade" (close only after the upgrade), "stayMs" (then close, whatever came),
// "path".
// Prints one JSON line: what it saw, in order.
'use strict';
const { Socket } = require('engine.io-client');

const [url, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || '{}');
const toSend = options.send || [];
const expect = options.expect === undefined ? toSend.length : options.expect;
const waitUpgrade = !!options.waitUpgrade;
const stayMs = options.stayMs;
delete options.send; delete options.expect; delete options.waitUpgrade; delete options.stayMs;

const result = { events: [], messages: [] };
let finished = false;
function finish(extra) {
  if (finished) return;
  finished = true;
  Object.assign(result, extra || {});
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
setTimeout(() => finish({ error: 'timeout' }), options.timeoutMs || 10000);

const socket = new Socket(url, options);
let upgraded = false;
function maybeClose() {
  if (expect > 0 && result.messages.length >= expect && (!waitUpgrade || upgraded)) {
    result.transport = socket.transport.name;
    socket.close();
  }
}
socket.on('ping', () => { result.pings = (result.pings || 0) + 1; });
socket.on('open', () => {
  result.events.push('open:' + socket.transport.name);
  result.sid = socket.id;
  if (stayMs) {
    setTimeout(() => { result.transport = socket.transport.name; socket.close(); }, stayMs);
  }
  for (const item of toSend) {
    if (typeof item === 'string') socket.send(item);
    else socket.send(Buffer.from(item.$bin, 'base64'));
  }
});
socket.on('upgrade', (transport) => {
  upgraded = true;
  result.events.push('upgrade:' + transport.name);
  maybeClose();
});
socket.on('upgradeError', (err) => result.events.push('upgradeError:' + err.message));
socket.on('message', (data) => {
  if (typeof data === 'string') result.messages.push(data);
  else result.messages.push({ $bin: Buffer.from(data).toString('base64') });
  maybeClose();
});
socket.on('error', (err) => result.events.push('error:' + String(err && err.message || err)));
socket.on('close', (reason, description) => {
  result.events.push('close:' + reason);
  // Let a polling client's close POST leave before the process exits.
  setTimeout(finish, 200);
});
