// The Node reference fixture: socket.io 4.8 with the same handlers as bench/app_flask.py,
// plus a plain `ws` echo route at /ws on the same port, and the HTTP triggers
// `GET /bench/burst?start=S&n=K&size=B` (K ticks to room 'room', as the `burst` event) and
// `GET /bench/broadcast?seq=N&size=B` (one tick to every client).
// Usage: node bench/server_node.js PORT
'use strict';
const path = require('path');
const http = require('http');
const { Server } = require(path.join(__dirname, '..', 'node_modules', 'socket.io'));
const WebSocket = require(path.join(__dirname, '..', 'node_modules', 'ws'));

const port = Number(process.argv[2] || 5000);

function tick(target, seq, pad) { target.emit('tick', { seq, pad }); }

// socket.io's engine answers /socket.io/ itself and hands every other request to this.
function benchRoutes(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const arg = (name, dflt) => Number(url.searchParams.get(name) ?? dflt);
  if (url.pathname === '/bench/burst') {
    const pad = 'x'.repeat(arg('size', 80));
    const start = arg('start', 1);
    for (let i = 0; i < arg('n', 1); i++) tick(ioServer.to('room'), start + i, pad);
  } else if (url.pathname === '/bench/broadcast') {
    tick(ioServer, arg('seq', 1), 'x'.repeat(arg('size', 20)));
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end('ok');
}

const httpServer = http.createServer(benchRoutes);
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
    for (let i = 0; i < req.n; i++) tick(ioServer.to('room'), req.start + i, pad);
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
