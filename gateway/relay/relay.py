"""The relay pipeline: try the planned channels in turn and forward the first good answer.

One attempt sends the body to one channel key. Until the first byte has gone to the client, a failure
the SPEC calls retryable moves on to the next channel; after it, the stream is ended with an error
event in the client's protocol. "First byte" is the first byte of the upstream *body*: a vendor that
sends its headers and then stalls or dies is still failed over. JSON answers are read whole (they are
small); SSE and binary bodies are forwarded chunk by chunk as they arrive, with usage read from a copy.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.payload import Payload
from multidict import CIMultiDict, CIMultiDictProxy

from config import Channel, Timeouts
from gateway.context import RequestContext
from gateway.errors import (
    OPENAI,
    AttemptError,
    GatewayError,
    ShuttingDown,
    sentence,
    status_error,
    upstream_errors,
)
from gateway.http.lean_answer import Answer
from gateway.http.lean_client import Response, upstream_query
from gateway.http.timer import Slot
from gateway.relay.attempts import Attempts, Verdict
from gateway.relay.sse import SSETap
from providers import Provider

# Silence on a started stream after which the client gets an SSE comment, so idle proxies keep it open.
# Read at call time: tests lower it rather than wait 15 s.
KEEPALIVE_S = 15.0
KEEPALIVE = b": keepalive\n\n"
USER_AGENT = "llm-gateway"  # sent upstream for clients that send none

# Never copied from the client to the vendor: credentials, hop-by-hop, and what the gateway sets itself.
_DROP_REQUEST = frozenset(
    h.lower()
    for h in (
        "Host", "Authorization", "X-API-Key", "X-Goog-Api-Key", "Api-Key", "Cookie", "Content-Length",
        "Content-Type", "Accept-Encoding", "Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Upgrade",
        "Proxy-Authorization", "Proxy-Connection", "X-Gateway-Tag", "Expect", "Content-Encoding",
        "Sec-WebSocket-Protocol",  # may carry the client's key (see gateway.api.auth)
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

_NONE_EACH = (None,) * len(_DROP_RESPONSE)  # popall's default, for each name

# Builds the upstream body for one attempt: (provider, channel, upstream model) -> (data, content type).
BodyBuilder = Callable[[Provider, Channel, str], tuple[bytes | Payload, str | None]]


def request_headers(incoming: Mapping[str, str], request_id: str) -> dict[str, str]:
    out = {k: v for k, v in incoming.items() if k.lower() not in _DROP_REQUEST and (v.isascii() or _sendable(v))}
    out["X-Request-Id"] = request_id
    out["Accept-Encoding"] = "identity"  # the gateway reads usage from the body: no compression upstream
    if "User-Agent" not in incoming:  # some vendor front ends refuse requests without one
        out["User-Agent"] = USER_AGENT
    return out


def _sendable(value: str) -> bool:
    """Header values the client library can write: the server decodes odd bytes as surrogates."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def response_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    out = CIMultiDict(upstream)  # copied whole and pruned: cheaper than filtering item by item
    collections.deque(map(out.popall, _DROP_RESPONSE, _NONE_EACH), maxlen=0)  # a C loop, not a Python one
    out["X-Request-Id"] = request_id
    return out


def json_body(body: dict[str, Any], endpoint: str, want_usage: bool, raw: bytes | None = None) -> BodyBuilder:
    """The usual builder: the client's JSON with the model renamed (and usage asked for in streams).

    `raw`, the bytes the body came as, goes upstream untouched when the channel keeps the model name
    and nothing is added: no re-encoding of a body that may carry megabytes of base64.
    """

    def build(provider: Provider, channel: Channel, upstream_model: str) -> tuple[bytes, str]:
        # Only a vendor that speaks the client's protocol (OpenAI here) can take the client's bytes.
        if raw is not None and not want_usage and upstream_model == body.get("model") and provider.name == OPENAI:
            return raw, "application/json"
        try:
            data = orjson.dumps(provider.prepare(endpoint, body, upstream_model, want_usage))
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
            raise GatewayError(400, f"Request body cannot be sent on: {exc}.", code="invalid_json") from exc
        return data, "application/json"

    return build


async def relay(
    request: web.Request,
    ctx: RequestContext,
    build: BodyBuilder,
    *,
    strip_usage: bool = False,
) -> web.StreamResponse:
    """Serve ctx.endpoint for ctx.model through the best channel that answers."""
    assert ctx.endpoint is not None
    drain = ctx.services.drain
    attempts = Attempts(request, ctx, stop=drain.expired)
    base_headers = request_headers(request.headers, ctx.request_id)
    with drain.track() as slot:
        for attempt in attempts:
            try:
                # Built afresh for each attempt (a multipart form cannot be sent twice) from the same client
                # body: only the model name differs between channels.
                data, content_type = build(attempt.provider, attempt.channel, attempt.upstream_model)
                headers = {**base_headers, **attempt.provider.headers(attempt.channel, attempt.api_key)}
                if content_type:
                    headers["Content-Type"] = content_type
                response, verdict = await _attempt(
                    request, ctx, attempt.channel, attempt.provider, data, headers, strip_usage, slot
                )
            except AttemptError as err:
                if slot.cut():
                    attempts.abandoned(attempt)  # the shutdown deadline, not the vendor, ended it
                    break
                attempts.failed(attempt, err)
                if not err.retryable:
                    return _vendor_error(ctx, err, attempt.provider)
                continue
            except BaseException:
                attempts.abandoned(attempt)  # the client left, or the request itself was bad
                raise
            attempts.finished(attempt, verdict)
            return response
    if attempts.last is None or drain.expired():
        raise ShuttingDown()
    raise attempts.exhausted()


def _vendor_error(ctx: RequestContext, err: AttemptError, provider: Provider) -> web.Response:
    """Pass a vendor's own error answer (status and message, keys masked) to the client.

    A JSON error from a vendor speaking the client's protocol goes as it came; anything else (an HTML
    page from a proxy, another protocol's shape) is re-rendered in the client's protocol.
    """
    ctx.error = err.message[:500]
    status = err.status or 502
    body = err.body or b""
    if provider.name == ctx.protocol and _is_json_object(body):
        return web.Response(
            status=status, body=body, content_type="application/json", headers={"X-Request-Id": ctx.request_id}
        )
    wrapped = GatewayError(status, sentence(f"The upstream answered: {err.message}"), code=f"upstream_{status}")
    response = wrapped.response(ctx.protocol)
    response.headers["X-Request-Id"] = ctx.request_id
    return response


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


async def _attempt(
    request: web.Request,
    ctx: RequestContext,
    channel: Channel,
    provider: Provider,
    data: bytes | Payload,
    headers: dict[str, str],
    strip_usage: bool,
    slot: Slot,
) -> tuple[web.StreamResponse, Verdict]:
    timeouts = channel.timeouts
    url = provider.url(channel, ctx.endpoint or "")
    first_byte_at = asyncio.get_running_loop().time() + timeouts.first_byte_s
    with upstream_errors("waiting for the first byte"):
        with slot.timeout_at(first_byte_at):
            upstream = await ctx.services.upstream.request(
                request.method, url, headers, data, upstream_query(request.rel_url.raw_query_string), timeouts.connect_s
            )
    done = False
    try:
        if upstream.status >= 400:
            with upstream_errors("reading the error body"):
                with slot.timeout_at(asyncio.get_running_loop().time() + timeouts.idle_s):
                    body = await upstream.read()
            done = True
            raise status_error(upstream.status, body, upstream.content_type, channel.secrets)
        content_type = upstream.content_type
        if content_type == "application/json":
            response: web.StreamResponse = await _forward_json(ctx, upstream, timeouts, provider, slot)
            verdict = Verdict.OK
        else:
            tap = SSETap(provider, ctx.endpoint or "", strip_usage=strip_usage) if content_type == "text/event-stream" else None
            response, verdict = await _forward_stream(request, ctx, upstream, timeouts, tap, slot, first_byte_at)
        done = upstream.content.at_eof()
        return response, verdict
    finally:
        if done:
            upstream.release()
        else:
            upstream.close()  # drop the vendor connection at once: nobody will read the rest


async def _forward_json(
    ctx: RequestContext, upstream: Response, timeouts: Timeouts, provider: Provider, slot: Slot
) -> web.Response:
    with upstream_errors("reading the response"):
        if upstream.content.is_eof():  # the whole body came with the headers: nothing to wait for, no timer
            body = await upstream.read()
        else:
            with slot.timeout_at(asyncio.get_running_loop().time() + timeouts.idle_s):
                body = await upstream.read()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    ctx.usage = provider.usage(ctx.endpoint or "", payload)
    ctx.mark_first_byte()
    return Answer(upstream.status, body, response_headers(upstream.headers, ctx.request_id))


async def _forward_stream(
    request: web.Request,
    ctx: RequestContext,
    upstream: Response,
    timeouts: Timeouts,
    tap: SSETap | None,
    slot: Slot,
    first_byte_at: float,
) -> tuple[web.StreamResponse, Verdict]:
    """Copy upstream bytes to the client as they arrive. From `prepare()` on, nothing is retried."""
    content = upstream.content
    # Nothing goes to the client before the first chunk is in hand, so a vendor that answers with
    # headers and then stalls or hangs up can still be failed over.
    with upstream_errors("waiting for the first byte"):
        with slot.timeout_at(first_byte_at):
            chunk = await content.readany()
    if tap is not None:
        ctx.tap = tap
    out = web.StreamResponse(status=upstream.status, headers=response_headers(upstream.headers, ctx.request_id))
    if tap is not None:
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"  # tell nginx-style proxies not to buffer the stream
    try:
        await out.prepare(request)
    except ConnectionError:
        _client_gone(ctx)
        return out, Verdict.NONE
    loop = asyncio.get_running_loop()
    idle_s = timeouts.idle_s
    keepalive_s = KEEPALIVE_S if tap is not None else math.inf  # comments exist only in SSE
    last_data = last_sent = loop.time()
    verdict = Verdict.OK
    failure: GatewayError | None = None
    pending: bytes | None = chunk
    while True:
        if pending is not None:
            if not pending:  # the upstream finished
                if tap is not None and (rest := tap.flush()) and not await _write(out, ctx, rest):
                    verdict = Verdict.NONE
                break
            last_data = loop.time()
            data = tap.feed(pending) if tap is not None else pending
            if data:
                # `_write`, inlined: this runs for every chunk of every stream.
                if ctx.ttft_ms is None:
                    ctx.mark_first_byte()
                try:
                    await out.write(data)
                except ConnectionError:
                    _client_gone(ctx)
                    verdict = Verdict.NONE
                    break
                last_sent = last_data
        idle_at = last_data + idle_s
        keepalive_at = last_sent + keepalive_s
        try:
            # Bytes already here need no timer (one per chunk showed in profiles); only a real wait does.
            pending = content.read_nowait()
            if not pending and not content.at_eof():
                with slot.timeout_at(min(idle_at, keepalive_at)):
                    pending = await content.readany()
        except TimeoutError:
            pending = None
            if slot.cut():
                failure, verdict = ShuttingDown(), Verdict.NONE
                break
            if idle_at <= keepalive_at:
                failure, verdict = _interrupted(504, f"upstream sent nothing for {idle_s:g}s"), Verdict.FAULT
                break
            if tap is not None and not tap.client_at_boundary:
                last_sent = loop.time()  # a comment now would land inside the client's half-sent event
                continue
            if not await _write(out, ctx, KEEPALIVE):
                verdict = Verdict.NONE
                break
            last_sent = loop.time()
        except (aiohttp.ClientError, ConnectionError) as exc:
            message = f"upstream connection broke mid-stream ({type(exc).__name__})"
            failure, verdict = _interrupted(502, message), Verdict.FAULT
            break
    if failure is not None:
        ctx.status, ctx.error = failure.status, failure.message[:500]
        if tap is None:
            # A binary body cannot carry an error: cut the connection so the client sees a short read,
            # not a clean end.
            if request.transport is not None:
                request.transport.close()
            return out, verdict
        # End a half-sent event first, so the error event stands on its own. The row keeps its status.
        await _write(out, ctx, (b"" if tap.client_at_boundary else b"\n\n") + failure.sse_event(ctx.protocol))
    if ctx.status != 499:
        try:
            await out.write_eof()
        except ConnectionError:
            _client_gone(ctx)
            verdict = Verdict.NONE
    return out, verdict


def _interrupted(status: int, message: str) -> GatewayError:
    return GatewayError(
        status, f"The upstream stream ended early: {message}.", type="upstream_error", code="stream_interrupted"
    )


async def _write(out: web.StreamResponse, ctx: RequestContext, data: bytes) -> bool:
    """Send bytes to the client; False (and status 499) when the client has gone."""
    ctx.mark_first_byte()
    try:
        await out.write(data)
    except ConnectionError:
        _client_gone(ctx)
        return False
    return True


def _client_gone(ctx: RequestContext) -> None:
    ctx.status = 499
    ctx.error = "client closed the connection"
