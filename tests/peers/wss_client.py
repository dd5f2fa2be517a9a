#!/usr/bin/env python3
"""A wss:// client that no one here wrote (Python `websockets`, sync client, over the
standard library's ssl), for Soliton's TLS interop tests.

Usage: wss_client.py URL CAFILE

Trusts only the certificate in CAFILE (hostname checked), sends text and binary
messages of several sizes, checks every echo, closes with 1000 and prints one line:
OK <TLS version> <cipher>. Exits 1 on any mismatch.
"""
import os
import ssl
import sys

from websockets.sync.client import connect


def main() -> None:
    url, cafile = sys.argv[1], sys.argv[2]
    ctx = ssl.create_default_context(cafile=cafile)
    msgs = [
        "",
        "hello over TLS",
        "é€𝄞" * 20_000,
        b"",
        os.urandom(125),
        os.urandom(70_000),
        bytes(range(256)) * 4096,  # 1 MiB
    ]
    with connect(url, ssl=ctx, max_size=None, open_timeout=10, close_timeout=5) as ws:
        for m in msgs:
            ws.send(m)
            got = ws.recv(timeout=10)
            if got != m or type(got) is not type(m):
                print(f"MISMATCH on a message of {len(m)}: got {len(got)}", flush=True)
                sys.exit(1)
        version = ws.socket.version()
        cipher = ws.socket.cipher()[0]
        ws.close(code=1000, reason="py done")
    print(f"OK {version} {cipher}", flush=True)


main()
