#!/usr/bin/env python3
"""A permessage-deflate client that no one here wrote (Python `websockets`, whose
compression is on by default, with 12-bit windows), for Soliton's interop tests.

Usage: deflate_client.py URL [takeover|no-takeover]

Sends text and binary messages of several sizes (compressible and not), the same text
twice (context takeover makes the second one cheaper when allowed), checks every echo,
and prints one line: OK <Sec-WebSocket-Extensions answered>. Exits 1 on any mismatch.
"""
import asyncio
import os
import sys

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


async def main() -> None:
    url = sys.argv[1]
    takeover = len(sys.argv) < 3 or sys.argv[2] == "takeover"
    factory = ClientPerMessageDeflateFactory(
        server_max_window_bits=12 if takeover else None,
        client_max_window_bits=12,
        client_no_context_takeover=not takeover,
        server_no_context_takeover=not takeover,
        compress_settings={"memLevel": 5},
    )
    async with websockets.connect(
        url, extensions=[factory], compression=None, max_size=None, ping_interval=None
    ) as ws:
        answered = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        text = ('{"user":"ann","room":"lobby","text":"hello there"} ' * 400)
        msgs = [
            "",
            "short",
            text,
            text,
            os.urandom(5000),
            bytes(200_000),
            ("é€𝄞" * 30_000),
        ]
        for m in msgs:
            await ws.send(m)
            got = await ws.recv()
            if got != m:
                print(f"MISMATCH on a message of {len(m)}: got {len(got)}", flush=True)
                sys.exit(1)
        await ws.close(code=4000, reason="py done")
        print(f"OK {answered}", flush=True)


asyncio.run(main())
