"""Holds N idle WebSocket connections to 127.0.0.1:PORT from 127.0.0.(IPBASE..IPBASE+NIPS-1),
writes how many upgraded to READY_FILE, then sleeps.

usage: python3 idle_client.py PORT N IPBASE NIPS READY_FILE [SECONDS]
"""
import socket, sys, time, os
port=int(sys.argv[1]); n=int(sys.argv[2]); ipbase=int(sys.argv[3]); nips=int(sys.argv[4]); ready=sys.argv[5]
req=b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
socks=[]; ok=0
batch=500
for start in range(0,n,batch):
    cur=[]
    for i in range(start,min(n,start+batch)):
        s=socket.socket(); s.bind(("127.0.0.%d"%(ipbase+i%nips),0)); s.connect(("127.0.0.1",port)); s.sendall(req); cur.append(s)
    for s in cur:
        d=b""
        while b"\r\n\r\n" not in d:
            c=s.recv(4096)
            if not c: break
            d+=c
        ok+=d.startswith(b"HTTP/1.1 101")
    socks+=cur
open(ready,"w").write(str(ok)+"\n")
time.sleep(float(sys.argv[6]) if len(sys.argv)>6 else 60)
