"""The floor: the barest useful aiohttp forwarder, to show what any aiohttp proxy costs.

No auth, no routing, no usage, no logs: read the body, send it upstream on one pooled session,
copy the answer back (chunk by chunk when it is a stream). The gateway is measured against this.

    python -m tests.bench.floor --port 9002 --upstream http://127.0.0.1:9001
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import aiohttp
from aiohttp import web

from tests.bench.procs import raise_nofile, use_uvloop

_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"})


async def serve(host: str, port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
    )

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with session.request(request.method, upstream + request.path_qs, data=body, headers=headers) as up:
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
            if up.content_type != "text/event-stream":
                return web.Response(status=up.status, body=await up.read(), headers=out_headers)
            out = web.StreamResponse(status=up.status, headers=out_headers)
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor listening on {host}:{port} pid {os.getpid()}", flush=True)
    await stop.wait()
    await runner.cleanup()
    await session.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the vendor, e.g. http://127.0.0.1:9001")
    args = parser.parse_args()
    raise_nofile()
    use_uvloop(serve(args.host, args.port, args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
