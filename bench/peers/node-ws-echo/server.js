// Node `ws` echo server with permessage-deflate at its defaults (a peer that
// compresses, for the compressed echo rows). Usage: node server.js PORT [broadcast]
// Needs `ws` (npm install --prefix bench/peers/node-ws-echo ws@8). Prints READY.
const { WebSocketServer, WebSocket } = require('ws');
const port = Number(process.argv[2] || 9001);
const broadcast = process.argv[3] === 'broadcast';
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: true,
  maxPayload: 0,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (!broadcast) {
      ws.send(data, { binary: isBinary });
      return;
    }
    for (const c of wss.clients) {
      if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    }
  });
});
wss.on('listening', () => console.log('READY'));
