"""The relay pipeline: try the planned channels in turn and forward the first good answer.

One attempt sends the body to one channel key. Before the first byte reaches the client, a failure
the SPEC calls retryable moves on to the next channel; after it, the stream is ended with an error
event in the client's protocol. JSON answers are read whole (they are small); SSE and binary bodies
are forwarded chunk by chunk as they arrive, with usage read from a copy.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from config import Channel, Timeouts
from gateway.context import RequestContext
from gateway.errors import AttemptError, GatewayError, UpstreamFailure, status_error, upstream_errors
from gateway.routing import plan
from gateway.sse import SSETap
from gateway.state import RUNTIME, SESSION
from providers import PROVIDERS, Provider

KEEPALIVE_S = 15.0
KEEPALIVE = b": keepalive\n\n"

# Never copied from the client to the vendor: credentials, hop-by-hop, and what the gateway sets itself.
_DROP_REQUEST = frozenset(
    h.lower()
    for h in (
        "Host", "Authorization", "X-API-Key", "X-Goog-Api-Key", "Api-Key", "Cookie", "Content-Length",
        "Content-Type", "Accept-Encoding", "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Upgrade",
        "Proxy-Authorization", "Proxy-Connection", "X-Gateway-Tag", "Expect",
    )
)
# Never copied from the vendor to the client.
_DROP_RESPONSE = frozenset(
    h.lower()
    for h in (
        "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Date", "Server", "Set-Cookie",
        "Alt-Svc", "Strict-Transport-Security",
    )
)

# Builds the upstream body for one attempt: (provider, channel, upstream model) -> (data, content type).
BodyBuilder = Callable[[Provider, Channel, str], tuple[Any, str | None]]


@functools.lru_cache(maxsize=256)
def _client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_connect=t.connect_s)


def request_headers(incoming: Mapping[str, str], request_id: str) -> dict[str, str]:
    out = {k: v for k, v in incoming.items() if k.lower() not in _DROP_REQUEST}
    out["X-Request-Id"] = request_id
    out["Accept-Encoding"] = "identity"  # the gateway reads usage from the body: no compression upstream
    return out


def response_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    out = CIMultiDict((k, v) for k, v in upstream.items() if k.lower() not in _DROP_RESPONSE)
    out["X-Request-Id"] = request_id
    return out


def json_body(body: dict[str, Any], endpoint: str, want_usage: bool) -> BodyBuilder:
    """The usual builder: the client's JSON with the model renamed (and usage asked for in streams)."""

    def build(provider: Provider, channel: Channel, upstream_model: str) -> tuple[bytes, str]:
        return orjson.dumps(provider.prepare(endpoint, body, upstream_model, want_usage)), "application/json"

    return build


async def relay(
    request: web.Request,
    ctx: RequestContext,
    build: BodyBuilder,
    *,
    strip_usage: bool = False,
) -> web.StreamResponse:
    """Serve ctx.endpoint for ctx.model through the best channel that answers."""
    assert ctx.model is not None and ctx.endpoint is not None
    runtime = request.app[RUNTIME]
    config = ctx.config
    tags = _request_tags(request.headers.get("X-Gateway-Tag"))
    channels = plan(config, runtime.health, ctx.key, ctx.model, ctx.platform, tags)
    base_headers = request_headers(request.headers, ctx.request_id)
    last: AttemptError | None = None
    for channel in channels:
        provider = PROVIDERS[channel.provider]
        api_key = runtime.health.pick_key(channel)
        ctx.attempts += 1
        ctx.channel, ctx.channel_platform = channel.name, channel.platform
        ctx.upstream_model = channel.upstream_model(ctx.model)
        data, content_type = build(provider, channel, ctx.upstream_model)
        headers = {**base_headers, **provider.headers(channel, api_key)}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = await _attempt(request, ctx, channel, provider, api_key, data, headers, strip_usage)
        except AttemptError as err:
            last = err
            if err.channel_fault:
                runtime.health.failure(channel, api_key, config.routing, cool_now=err.cool_now, reason=err.message)
            else:
                runtime.health.success(channel, api_key)  # the vendor answered; the request was at fault
            if not err.retryable:
                return _vendor_error(ctx, err)
            continue
        except BaseException:
            runtime.health.release(channel, api_key)
            raise
        runtime.health.success(channel, api_key)
        return response
    assert last is not None
    status = 504 if last.timeout else 502
    raise UpstreamFailure(
        status,
        f"All {ctx.attempts} upstream attempt(s) failed; last error from channel {ctx.channel!r}: {last.message}",
        type="upstream_error",
        code="upstream_timeout" if last.timeout else "upstream_error",
    )


def _upstream_query(request: web.Request) -> list[tuple[str, str]] | None:
    """The client's query string minus `?key=`, which carries the client's own key on some routes."""
    if not request.query_string:
        return None
    return [(k, v) for k, v in request.query.items() if k != "key"] or None


def _request_tags(header: str | None) -> frozenset[str] | None:
    if not header:
        return None
    tags = frozenset(t.strip() for t in header.split(",") if t.strip())
    return tags or None


def _vendor_error(ctx: RequestContext, err: AttemptError) -> web.Response:
    """Pass a vendor's own error answer to the client, as it came (keys masked)."""
    ctx.error = err.message[:500]
    return web.Response(
        status=err.status or 502,
        body=err.body or b"",
        headers={"Content-Type": err.content_type or "application/json", "X-Request-Id": ctx.request_id},
    )


async def _attempt(
    request: web.Request,
    ctx: RequestContext,
    channel: Channel,
    provider: Provider,
    api_key: str,
    data: Any,
    headers: dict[str, str],
    strip_usage: bool,
) -> web.StreamResponse:
    session = request.app[SESSION]
    timeouts = channel.timeouts
    url = provider.url(channel, ctx.endpoint or "")
    with upstream_errors("waiting for the first byte"):
        async with asyncio.timeout(timeouts.first_byte_s):
            upstream = await session.request(
                request.method, url, data=data, headers=headers, params=_upstream_query(request),
                timeout=_client_timeout(timeouts), allow_redirects=False,
            )
    done = False
    try:
        if upstream.status >= 400:
            with upstream_errors("reading the error body"):
                async with asyncio.timeout(timeouts.idle_s):
                    body = await upstream.read()
            done = True
            raise status_error(upstream.status, body, upstream.content_type, channel.api_keys)
        content_type = upstream.content_type
        if content_type == "text/event-stream":
            tap = SSETap(provider, ctx.endpoint or "", strip_usage=strip_usage)
            ctx.tap = tap
            response = await _forward_stream(request, ctx, upstream, timeouts, channel, tap)
        elif content_type == "application/json":
            response = await _forward_json(ctx, upstream, timeouts, provider)
        else:
            response = await _forward_stream(request, ctx, upstream, timeouts, channel, None)
        done = upstream.content.at_eof()
        return response
    finally:
        if done:
            upstream.release()
        else:
            upstream.close()  # drop the vendor connection: nobody will read the rest


async def _forward_json(
    ctx: RequestContext, upstream: aiohttp.ClientResponse, timeouts: Timeouts, provider: Provider
) -> web.Response:
    with upstream_errors("reading the response"):
        if upstream.content.is_eof():  # the whole body came with the headers: nothing to wait for, no timer
            body = await upstream.read()
        else:
            async with asyncio.timeout(timeouts.idle_s):
                body = await upstream.read()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    ctx.usage = provider.usage(ctx.endpoint or "", payload)
    ctx.response_text_bytes = len(body)
    ctx.mark_first_byte()
    return web.Response(status=upstream.status, body=body, headers=response_headers(upstream.headers, ctx.request_id))


async def _forward_stream(
    request: web.Request,
    ctx: RequestContext,
    upstream: aiohttp.ClientResponse,
    timeouts: Timeouts,
    channel: Channel,
    tap: SSETap | None,
) -> web.StreamResponse:
    """Copy upstream bytes to the client as they arrive. From `prepare()` on, nothing is retried."""
    out = web.StreamResponse(status=upstream.status, headers=response_headers(upstream.headers, ctx.request_id))
    if tap is not None:
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"  # tell nginx-style proxies not to buffer the stream
    await out.prepare(request)
    loop = asyncio.get_running_loop()
    last_data = loop.time()
    content = upstream.content
    while True:
        silence = loop.time() - last_data
        wait = timeouts.idle_s - silence
        if tap is not None:
            wait = min(wait, KEEPALIVE_S)
        try:
            # Bytes already here need no timer (one per chunk showed in profiles); only a real wait does.
            chunk = content.read_nowait()
            if not chunk and not content.at_eof():
                async with asyncio.timeout(max(wait, 0.0)):
                    chunk = await content.readany()
        except TimeoutError:
            if loop.time() - last_data >= timeouts.idle_s:
                await _end_stream(out, ctx, tap, f"upstream sent nothing for {timeouts.idle_s:g}s", 504)
                break
            if not await _write(out, ctx, KEEPALIVE):
                break
            continue
        except (aiohttp.ClientError, ConnectionError) as exc:
            await _end_stream(out, ctx, tap, f"upstream connection broke mid-stream ({type(exc).__name__})", 502)
            break
        if not chunk:
            if tap is not None and (rest := tap.flush()):
                await _write(out, ctx, rest)
            break
        last_data = loop.time()
        data = tap.feed(chunk) if tap is not None else chunk
        if data and not await _write(out, ctx, data):
            break
    if ctx.status != 499:
        try:
            await out.write_eof()
        except ConnectionError:
            ctx.status = 499
    return out


async def _write(out: web.StreamResponse, ctx: RequestContext, data: bytes) -> bool:
    """Send bytes to the client; False (and status 499) when the client has gone."""
    ctx.mark_first_byte()
    try:
        await out.write(data)
    except ConnectionError:
        ctx.status = 499
        ctx.error = "client closed the connection"
        return False
    return True


async def _end_stream(out: web.StreamResponse, ctx: RequestContext, tap: SSETap | None, message: str, status: int) -> None:
    """The stream cannot go on: tell the client in its protocol rather than just stopping."""
    ctx.error = message
    if tap is not None:
        err = GatewayError(status, f"The upstream stream ended early: {message}.", type="upstream_error", code="stream_interrupted")
        await _write(out, ctx, err.sse_event(ctx.protocol))

