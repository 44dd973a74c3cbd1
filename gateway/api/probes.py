"""GET /healthz and /readyz: is the process serving, and can it take requests (config loaded, usage
database writable). No auth, usage row or access line."""

from __future__ import annotations

from aiohttp import web

from gateway.state import SERVICES


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if not await services.usage.writable():
        return web.json_response({"status": "not ready", "reason": "usage database is not writable"}, status=503)
    return web.json_response({"status": "ready", "config_generation": services.runtime.generation})
