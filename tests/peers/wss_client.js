// A wss:// client that no one here wrote (Node `ws` over Node's tls), for Soliton's
// TLS interop tests.
// Usage: node wss_client.js URL CAFILE
// Trusts only the certificate in CAFILE (hostname checked), sends text and binary
// messages of several sizes, checks every echo, closes with 1000; prints
// "OK <TLS version> <cipher>" when every echo matched, exits 1 otherwise.
const fs = require('fs');
const crypto = require('crypto');
const WebSocket = require('ws');
const url = process.argv[2];
const ca = fs.readFileSync(process.argv[3]);
const ws = new WebSocket(url, { ca, maxPayload: 0, perMessageDeflate: false });
const msgs = [
  '',
  'hello over TLS',
  'é€𝄞'.repeat(20000),
  Buffer.alloc(0),
  crypto.randomBytes(125),
  crypto.randomBytes(70000),
  Buffer.alloc(1 << 20, 7),
];
let i = 0;
let tlsInfo = '';
function next() {
  if (i === msgs.length) {
    const s = ws._socket;
    tlsInfo = `${s.getProtocol()} ${s.getCipher().standardName || s.getCipher().name}`;
    ws.close(1000, 'node done');
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
  console.log(`OK ${tlsInfo}`);
  process.exit(0);
});
ws.on('error', (e) => {
  console.log(`ERROR ${e.message}`);
  process.exit(1);
});
setTimeout(() => { console.log('TIMEOUT'); process.exit(1); }, 20000);
