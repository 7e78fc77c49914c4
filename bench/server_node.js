// The Node reference fixture: socket.io 4.8 with the same handlers as bench/app_flask.py,
// plus a plain `ws` echo route at /ws on the same port.
// Usage: node bench/server_node.js PORT
'use strict';
const path = require('path');
const http = require('http');
const { Server } = require(path.join(__dirname, '..', 'node_modules', 'socket.io'));
const WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));

const port = Number(process.argv[2] || 5000);
const httpServer = http.createServer();
// destroyUpgrade: false, so the engine leaves upgrades on /ws to the `ws` server below.
const ioServer = new Server(httpServer, { destroyUpgrade: false, maxHttpBufferSize: 1e6 });

ioServer.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(room);
    if (typeof ack === 'function') ack(true);
  });
  socket.on('echo', (data, ack) => {
    if (typeof ack === 'function') ack(data);
  });
  socket.on('burst', (req) => {
    const pad = 'x'.repeat(req.size);
    for (let i = 0; i < req.n; i++) {
      ioServer.to('room').emit('tick', { seq: req.start + i, pad });
    }
  });
});

const wss = new WebSocket.Server({ noServer: true, perMessageDeflate: false });
httpServer.on('upgrade', (req, socket, head) => {
  if (req.url.split('?')[0] !== '/ws') return; // the engine handles /socket.io/
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  process.stderr.write(`node socket.io fixture on ${port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
