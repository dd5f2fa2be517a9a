#!/usr/bin/env python3
"""A WebSocket server that no one here wrote, for soliton-load's integration tests.

Usage: ws_peer.py echo|broadcast [PORT]

Built on the Python `websockets` package (pip install websockets). Listens on
127.0.0.1 (PORT 0 picks a free port), prints "READY <port>" once listening, and runs
until killed (or until stdin closes, so that it never outlives the test that started it).
"""
import asyncio
import sys

import websockets


async def main() -> None:
    mode = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    clients = set()

    async def handler(ws, *_args):
        if mode == "echo":
            async for m in ws:
                await ws.send(m)
        else:
            clients.add(ws)
            try:
                async for m in ws:
                    websockets.broadcast(clients, m)
            finally:
                clients.discard(ws)

    async with websockets.serve(
        handler,
        "127.0.0.1",
        port,
        max_size=None,
        compression=None,
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        # end when the parent goes away (stdin closes)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
