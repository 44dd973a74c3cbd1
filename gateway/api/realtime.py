"""GET /v1/realtime?model=...: a WebSocket session proxied both ways to a channel serving the model.

The client is authenticated (by the pipeline) before anything goes upstream; the upstream socket is
opened with the channel's key, trying channels in routing order until one accepts, and only then is
the client's upgrade answered. Messages are copied as they come; the gateway reads only the
`response.done` events, whose usage it sums into the session's one usage row.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from gateway.api.auth import INSECURE_KEY_PROTOCOL
from gateway.api.bodies import require_model
from gateway.context import RequestContext
from gateway.errors import AttemptError, GatewayError, status_error, upstream_errors
from gateway.relay.attempts import Attempts, Verdict
from gateway.relay.headers import attempt_headers, request_headers
from providers import Provider, Usage

CLOSE_TIMEOUT_S = 10.0
_NORMAL_CLOSE = frozenset({1000, 1001})
_UNSENDABLE_CLOSE = frozenset({1005, 1006, 1015})  # reserved: they describe a close, no peer may send them


def ws_url(http_url: str) -> str:
    if http_url.startswith("https://"):
        return "wss://" + http_url.removeprefix("https://")
    if http_url.startswith("http://"):
        return "ws://" + http_url.removeprefix("http://")
    return http_url


def _offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _upstream_headers(request: web.Request, ctx: RequestContext) -> dict[str, str]:
    headers = request_headers(request.headers, ctx.request_id)
    for name in list(headers):
        if name.lower().startswith("sec-websocket-") or name.lower() in ("origin", "accept-encoding"):
            del headers[name]
    return headers


async def realtime(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "realtime"
    ctx.stream = True
    ctx.estimate_tokens = False
    require_model(ctx, {"model": request.query.get("model")})
    limit = ctx.config.limits.max_body_bytes
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise GatewayError(
            400,
            "GET /v1/realtime is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket).",
            code="websocket_required",
        )
    # A browser's key rides in a subprotocol; it was checked by the pipeline and goes no further.
    offered = _offered_protocols(request)
    forwarded = [p for p in offered if not p.startswith(INSECURE_KEY_PROTOCOL)]
    upstream, provider = await _connect(request, ctx, forwarded, limit)
    try:
        chosen = upstream.protocol or ("realtime" if "realtime" in offered else None)
        # autoclose off: answering the client's close frame closes the connection, which cancels this
        # handler, so the gateway answers it itself, last, once the upstream side is closed too.
        client = web.WebSocketResponse(protocols=(chosen,) if chosen else (), max_msg_size=limit, autoclose=False)
        client.headers["X-Request-Id"] = ctx.request_id
        await client.prepare(request)
        ctx.usage = Usage()
        with ctx.services.drain.track() as slot:
            try:
                # No deadline of its own: only a shutdown's drain deadline ends a live session early.
                with slot.timeout_at(None):
                    await _proxy(ctx, provider, client, upstream)
            except TimeoutError:
                if not slot.cut():
                    raise
                ctx.error = "gateway shutting down: realtime session closed at the drain deadline"
                await _close(upstream, 1001)
                await _close(client, 1001)  # 1001: going away
    finally:
        if not upstream.closed:
            await upstream.close()
    return client


async def _connect(
    request: web.Request, ctx: RequestContext, protocols: list[str], limit: int
) -> tuple[aiohttp.ClientWebSocketResponse, Provider]:
    """Open the upstream socket on the first channel that accepts, like the relay's failover."""
    session = ctx.services.upstream.session
    attempts = Attempts(request, ctx)
    base_headers = _upstream_headers(request, ctx)
    # Never `?key=`: that may be the client's own key, which no vendor receives.
    query = {k: v for k, v in request.query.items() if k != "key"}
    async for attempt in attempts:
        channel, provider = attempt.channel, attempt.provider
        try:
            with upstream_errors("opening the realtime session"):
                try:
                    async with asyncio.timeout(channel.timeouts.first_byte_s):
                        upstream = await session.ws_connect(
                            ws_url(provider.url(channel, "realtime", attempt.upstream_model, True)),
                            protocols=protocols,
                            headers=attempt_headers(base_headers, provider.headers(channel, attempt.api_key), channel, request.headers),
                            params={**query, "model": attempt.upstream_model},
                            max_msg_size=limit,
                            timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                        )
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status < 400:  # answered, but did not upgrade: not a WebSocket server
                        raise AttemptError(
                            f"upstream did not accept the WebSocket upgrade ({exc.status})", status=exc.status,
                            retryable=True, channel_fault=True,
                        ) from exc
                    raise status_error(exc.status, exc.message.encode(), channel.secrets) from exc
        except AttemptError as err:
            attempts.failed(attempt, err)
            if not err.retryable:
                raise GatewayError(
                    err.status or 502,
                    f"The vendor refused the realtime session on channel {channel.name!r}: {err.message}.",
                    type="upstream_error",
                    code="upstream_error",
                ) from err
            continue
        except BaseException:
            attempts.abandoned(attempt)
            raise
        attempts.finished(attempt, Verdict.OK)
        return upstream, provider
    raise attempts.exhausted()


async def _proxy(
    ctx: RequestContext, provider: Provider, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    """Copy messages both ways until either side closes, then close the other with the same code."""
    to_upstream = asyncio.create_task(_client_to_upstream(client, upstream))
    to_client = asyncio.create_task(_upstream_to_client(ctx, provider, upstream, client))
    try:
        done, _ = await asyncio.wait((to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
    if to_client in done:  # the vendor ended the session
        code = upstream.close_code
        if code not in _NORMAL_CLOSE:
            ctx.error = f"upstream closed the realtime session (code {code})"
        await _close(client, _sendable(code, fallback=1011))
    else:
        await _close(upstream, _sendable(client.close_code, fallback=1000))


async def _client_to_upstream(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(ConnectionError):
        async for msg in client:
            if msg.type == WSMsgType.TEXT:
                await upstream.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)


async def _upstream_to_client(
    ctx: RequestContext, provider: Provider, upstream: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse
) -> None:
    with contextlib.suppress(ConnectionError):
        async for msg in upstream:
            ctx.mark_first_byte()
            if msg.type == WSMsgType.TEXT:
                _read_usage(ctx, provider, msg.data)
                await client.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await client.send_bytes(msg.data)


def _read_usage(ctx: RequestContext, provider: Provider, text: str) -> None:
    # Most messages are audio deltas: look for the one event type that carries usage before parsing.
    if '"response.done"' not in text or '"usage"' not in text:
        return
    try:
        payload: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    if not isinstance(payload, dict) or payload.get("type") != "response.done":
        return
    usage = provider.usage("realtime", payload)
    if usage is not None and ctx.usage is not None:
        ctx.usage.add(usage)


def _sendable(code: int | None, fallback: int) -> int:
    if code is None or code in _UNSENDABLE_CLOSE or not 1000 <= code <= 4999:
        return fallback
    return code


async def _close(ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, code: int) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await ws.close(code=code)
