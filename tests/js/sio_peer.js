// The official Socket.IO client (npm socket.io-client) against a server door.
// Usage: node sio_peer.js MODE URL   (MODE: polling | websocket | upgrade)
// Prints one JSON line: the transport in use, the acknowledged echoes.
'use strict';
const { io } = require('socket.io-client');

const [mode, url] = process.argv.slice(2);
const result = { mode };
const options = { reconnection: false, timeout: 5000 };
if (mode === 'polling') options.transports = ['polling'];
else if (mode === 'websocket') options.transports = ['websocket'];
else options.transports = ['polling', 'websocket'];

function finish(extra) {
  Object.assign(result, extra || {});
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
setTimeout(() => finish({ error: 'timeout' }), 10000);

const socket = io(url, options);
socket.on('connect_error', (err) => finish({ error: String(err.message || err) }));
socket.on('connect', async () => {
  const engine = socket.io.engine;
  result.firstTransport = engine.transport.name;
  if (mode === 'upgrade' && engine.transport.name !== 'websocket') {
    await new Promise((resolve) => engine.once('upgrade', resolve));
  }
  try {
    result.ack = await socket.timeout(5000).emitWithAck('echo', { text: 'h\u00e9', list: [1, 2] });
    const bin = await socket.timeout(5000).emitWithAck('echo', Buffer.from([1, 2, 255]));
    result.binary = Buffer.from(bin).toString('hex');
  } catch (err) {
    result.error = String(err.message || err);
  }
  result.transport = engine.transport.name;
  socket.disconnect();
  finish();
});
