"""GET /healthz and /readyz: is the process serving, and can it take requests (config loaded, usage
database writable). No auth, usage row or access line."""

from __future__ import annotations

from aiohttp import web

from gateway.state import SERVICES


async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves, with the connection guard's counters (live, cut, refused)."""
    guard = request.app[SERVICES].guard
    if guard is None:
        return web.json_response({"status": "ok"})
    connections = {"live": guard.live, "max": guard.max_connections, "timed_out": guard.timed_out,
                   "evicted": guard.evicted, "refused": guard.refused}  # fmt: skip
    return web.json_response({"status": "ok", "connections": connections})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    failed = services.runtime.last_reload_error
    if failed is not None:
        # The old config still serves, but the file on disk is not what runs: an operator must look.
        reason = f"the last config reload failed (the previous config still serves): {failed}"
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    usage = services.usage
    if not await usage.writable():
        reason = "usage database is not writable"
        if usage.held or usage.dropped:
            reason += f"; neither is the spool: {usage.held} usage rows held in memory, {usage.dropped} dropped"
        return web.json_response(
            {"status": "not ready", "reason": reason, "usage_rows_held": usage.held, "usage_rows_dropped": usage.dropped},
            status=503,
        )
    return web.json_response({"status": "ready", "config_generation": services.runtime.generation})
