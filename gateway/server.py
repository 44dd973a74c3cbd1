"""Run the gateway: event loop, listening socket, signals (SIGHUP reload, SIGTERM/SIGINT drain)."""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from config import Config, Listen
from gateway.app import create_app
from gateway.drain import DRAIN
from gateway.logs import setup_logging
from gateway.state import Runtime

log = structlog.get_logger("gateway")


def run(config: Config, path: str | None, listen: Listen) -> None:
    """Serve until SIGTERM/SIGINT; return once requests in flight are done and usage is flushed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps odd platforms working
        asyncio.run(serve(config, path, listen))
    else:
        uvloop.run(serve(config, path, listen))


async def serve(config: Config, path: str | None, listen: Listen, *, ready: asyncio.Event | None = None) -> None:
    runtime = Runtime(config, path)
    runtime.on_reload.append(lambda new: setup_logging(new.log))
    app = create_app(runtime)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,  # a client that hangs up cancels its handler, which closes the upstream
        # The grace itself is kept by the relay (gateway.drain), which ends streams with an error event;
        # aiohttp's own cut-off is only a backstop, a little later, so the two never race.
        shutdown_timeout=config.shutdown_grace_s + 1.0,
        access_log=None,  # the pipeline writes one structured line per request instead
    )
    await runner.setup()
    site = web.TCPSite(runner, listen.host, listen.port, reuse_port=config.workers > 1, backlog=2048)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, runtime.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening", listen=str(listen), config=path, channels=len(config.channels), keys=len(config.keys))
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting_down", grace_s=runtime.config.shutdown_grace_s)
        loop.remove_signal_handler(signal.SIGHUP)
        for sig in (signal.SIGTERM, signal.SIGINT):
            # A second signal cuts the grace short instead of killing the process: streams still end
            # with an error event and the usage rows are still flushed.
            loop.add_signal_handler(sig, app[DRAIN].begin, 0.0)
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")
