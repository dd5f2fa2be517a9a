"""Marginal RSS per idle WebSocket connection: open N1 connections, then N2, and
divide the RSS growth between the two by N2 - N1 (fixed costs cancel).

usage: python3 bench/scripts/idle_slope.py PORT SERVER_PID N1 N2
"""
import socket, sys, time
port=int(sys.argv[1]); pid=sys.argv[2]; n1=int(sys.argv[3]); n2=int(sys.argv[4])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
req=b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
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
        ok+= d.startswith(b"HTTP/1.1 101")
    allsocks.extend(socks)
    return ok
time.sleep(0.3)
r0=rss(); ok1=open_n(n1); time.sleep(1); r1=rss(); ok2=open_n(n2-n1); time.sleep(1); r2=rss()
print(f"rss idle {r0} KB; {n1} conns {r1} KB; {n2} conns {r2} KB; marginal {(r2-r1)*1024/(n2-n1):.0f} B/conn; average over {n2}: {(r2-r0)*1024/n2:.0f} B/conn (ok {ok1+ok2})")
