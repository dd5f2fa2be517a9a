"""Marginal RSS per idle WebSocket connection: open N1 connections, then N2, and
divide the RSS growth between the two by N2 - N1 (fixed costs cancel).

usage: python3 bench/scripts/idle_slope.py PORT SERVER_PID N1 N2 [--deflate] [--message]

--deflate offers permessage-deflate (context takeover allowed; the server's mode
decides); --message then sends one compressed 1 KiB text message on each connection and
reads its echo before the connection goes idle (what a dedicated server then holds).
"""
import os, socket, struct, sys, time, zlib
args=[a for a in sys.argv[1:] if not a.startswith("--")]
flags=[a for a in sys.argv[1:] if a.startswith("--")]
port=int(args[0]); pid=args[1]; n1=int(args[2]); n2=int(args[3])
deflate="--deflate" in flags; message="--message" in flags
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
req=b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
if deflate:
    req+=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
req+=b"\r\n"
def compressed_frame():
    text=(b'{"user":"ann","room":"lobby","n":%d},' % 7) * 30
    z=zlib.compressobj(wbits=-15)
    body=z.compress(text)+z.flush(zlib.Z_SYNC_FLUSH)
    body=body[:-4]
    key=os.urandom(4)
    masked=bytes(b ^ key[i & 3] for i, b in enumerate(body))
    assert len(body) < 126
    return bytes([0x80 | 0x40 | 0x1, 0x80 | len(body)]) + key + masked
srcs=["127.0.0.%d"%i for i in range(2,10)]
allsocks=[]
def open_n(k):
    socks=[]
    for i in range(k):
        s=socket.socket(); s.bind((srcs[i%len(srcs)],0)); s.connect(("127.0.0.1",port)); s.sendall(req); socks.append(s)
    ok=0
    for s in socks:
        d=b""
        while b"\r\n\r\n" not in d:
            d+=s.recv(4096)
        ok+= d.startswith(b"HTTP/1.1 101") and (not deflate or b"permessage-deflate" in d)
        if message:
            s.sendall(compressed_frame())
            r=d.split(b"\r\n\r\n",1)[1]
            while len(r) < 2 or len(r) < 2 + (r[1] & 0x7f):
                r+=s.recv(4096)
    allsocks.extend(socks)
    return ok
time.sleep(0.3)
r0=rss(); ok1=open_n(n1); time.sleep(1); r1=rss(); ok2=open_n(n2-n1); time.sleep(1); r2=rss()
print(f"rss idle {r0} KB; {n1} conns {r1} KB; {n2} conns {r2} KB; marginal {(r2-r1)*1024/(n2-n1):.0f} B/conn; average over {n2}: {(r2-r0)*1024/n2:.0f} B/conn (ok {ok1+ok2})")
