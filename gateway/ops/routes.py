"""GET /metrics and /admin/status on the main port, behind an admin key; /metrics also on
`metrics_listen`, without auth, as a second site of the same process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from config import sha256_hex
from gateway import background
from gateway.api.auth import presented_key
from gateway.errors import GatewayError
from gateway.ops.status import publish, refresh, status, worker_statuses
from gateway.state import SERVICES, Services
from providers import OPENAI

REFRESH_S = 1.0  # how stale another worker's gauges may be in a multiprocess scrape


def check_admin(request: web.Request, services: Services) -> None:
    """401 without a key or with an unknown one, 403 for a client key: /admin and /metrics are the operators'."""
    config = services.runtime.config
    if not config.admin_keys and not config.keys:
        return  # no keys at all: loopback only (config.loader), open like the API itself
    secret = presented_key(request, OPENAI)
    if secret is None:
        raise GatewayError(401, "Missing admin key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key")
    digest = sha256_hex(secret)
    if digest in config.admin_keys_by_hash:
        return
    if digest in config.keys_by_hash:
        raise GatewayError(403, "This is a client key; /metrics and /admin need one of admin_keys.", code="admin_only")
    raise GatewayError(401, "Invalid admin key.", code="invalid_api_key")


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        check_admin(request, services)
    except GatewayError as err:
        return err.response(OPENAI)
    return scrape(services)


async def admin_status(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        check_admin(request, services)
    except GatewayError as err:
        return err.response(OPENAI)
    body = status(services)
    metrics = services.metrics
    if metrics is not None and metrics.multiprocess is not None:
        body = {**body, "workers": worker_statuses(metrics.multiprocess, body)}
    return web.json_response(body)


def scrape(services: Services) -> web.Response:
    if services.metrics is None:
        return web.Response(status=404, text="metrics are off (GATEWAY_METRICS=off)\n")
    refresh(services, services.metrics)
    body, content_type = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def metrics_listen_ctx(app: web.Application) -> AsyncIterator[None]:
    """Serve /metrics on `metrics_listen`, without auth, while the app runs."""
    services = app[SERVICES]
    listen = services.runtime.config.metrics_listen
    if listen is None:
        yield
        return

    async def open_metrics(request: web.Request) -> web.Response:
        return scrape(services)

    side = web.Application()
    side.router.add_get("/metrics", open_metrics)
    runner = web.AppRunner(side, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, listen.host, listen.port).start()
        yield
    finally:
        await runner.cleanup()


async def refresher_ctx(app: web.Application) -> AsyncIterator[None]:
    """With `workers: N`, keep this worker's gauges current in its files, for a scrape another worker answers."""
    services = app[SERVICES]
    metrics = services.metrics
    if metrics is None or metrics.multiprocess is None:
        yield
        return
    directory = metrics.multiprocess

    async def run() -> None:
        while True:
            refresh(services, metrics)
            publish(services, directory)
            await asyncio.sleep(REFRESH_S)

    task = asyncio.create_task(run(), name="metrics-refresh")
    yield
    await background.stop(task)
    refresh(services, metrics)  # the last second's counts, into the files that outlive this worker
