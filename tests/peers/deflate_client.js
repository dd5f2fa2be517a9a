// A permessage-deflate client that no one here wrote (Node `ws` with
// perMessageDeflate), for Soliton's interop tests.
// Usage: node deflate_client.js URL [takeover|no-takeover]
// Prints "OK <extensions answered>" when every echo matched; exits 1 otherwise.
const WebSocket = require('ws');
const url = process.argv[2];
const takeover = (process.argv[3] || 'takeover') === 'takeover';
const ws = new WebSocket(url, {
  perMessageDeflate: {
    threshold: 0,
    ...(takeover ? {} : { clientNoContextTakeover: true }),
    ...(takeover ? {} : { serverNoContextTakeover: true }),
    clientMaxWindowBits: takeover ? 15 : 10,
  },
  maxPayload: 0,
});
const text = '{"user":"ann","room":"lobby","text":"hello there"} '.repeat(400);
const msgs = ['', 'short', text, text, Buffer.alloc(200000), Buffer.from('é€𝄞'.repeat(30000))];
let i = 0;
function next() {
  if (i === msgs.length) {
    ws.close(4000, 'node done');
    return;
  }
  ws.send(msgs[i]);
}
ws.on('open', next);
ws.on('message', (data, isBinary) => {
  const want = msgs[i];
  const wantBuf = Buffer.isBuffer(want) ? want : Buffer.from(want);
  if (!Buffer.from(data).equals(wantBuf) || isBinary !== Buffer.isBuffer(want)) {
    console.log(`MISMATCH on message ${i}`);
    process.exit(1);
  }
  i += 1;
  next();
});
ws.on('close', (code, reason) => {
  if (i !== msgs.length) {
    console.log(`CLOSED EARLY ${code} ${reason}`);
    process.exit(1);
  }
  console.log(`OK ${ws.extensions}`);
  process.exit(0);
});
ws.on('error', (e) => {
  console.log(`ERROR ${e.message}`);
  process.exit(1);
});
setTimeout(() => { console.log('TIMEOUT'); process.exit(1); }, 20000);
