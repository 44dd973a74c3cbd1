"""The relay pipeline: try the planned channels in turn and forward the first good answer.

One attempt sends the body to one channel key. Until the first byte has gone to the client, a failure
docs/api.md lists as retryable moves on to the next channel; after it, the stream is ended with an error
event in the client's protocol. "First byte" is the first byte of the upstream *body*: a vendor that
sends its headers and then stalls or dies is still failed over. JSON answers are read whole (they are
small); SSE and binary bodies are forwarded chunk by chunk as they arrive, with usage read from a copy.
Where the vendor speaks another protocol than the client, each attempt carries a `Translation`
(providers.translate): the body is translated for the vendor, a JSON answer back for the client, and
an SSE stream goes through its converter after the usage tap, event by event.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.payload import Payload
from multidict import CIMultiDict

from config import Channel
from gateway.billing.pricing import estimate
from gateway.context import RequestContext
from gateway.errors import AttemptError, GatewayError, ShuttingDown, mask_known, sentence, status_error, upstream_errors
from gateway.http.timer import Slot
from gateway.http.upstream import Response
from gateway.relay.attempts import Attempt, Attempts, Verdict
from gateway.relay.headers import attempt_headers, request_headers, response_headers, upstream_query
from gateway.relay.pump import Chain, pump
from gateway.relay.sse import UsageTap
from gateway.relay.tail import JsonTail
from providers import ANTHROPIC, GEMINI, Provider
from providers.anthropic import DEFAULT_VERSION
from providers.translate import Translation, Untranslatable, plan
from providers.translate.common import Refused

# An upstream error body is read for its message only; past this much the rest is dropped with the connection.
MAX_ERROR_BODY = 64 * 1024

# Builds the upstream body for one attempt: (provider, channel, upstream model, translation) -> (data,
# content type). The translation is None where the vendor speaks the client's protocol.
BodyBuilder = Callable[[Provider, Channel, str, Translation | None], tuple[bytes | Payload, str | None]]


def json_body(body: dict[str, Any], endpoint: str, protocol: str, want_usage: bool, raw: bytes | None = None) -> BodyBuilder:
    """The usual builder: the client's JSON (in `protocol`) with the model renamed (and usage asked for
    in streams).

    `raw`, the bytes the body came as, goes upstream untouched when the channel keeps the model name
    and nothing is added: no re-encoding of a body that may carry megabytes of base64.
    """

    def build(provider: Provider, channel: Channel, upstream_model: str, translation: Translation | None) -> tuple[bytes, str]:
        if translation is not None:
            assert translation.endpoint is not None
            # A translated stream's usage is the converter's to show or not: always ask for it.
            try:
                translated = translation.request(body)
            except Refused as exc:
                raise GatewayError(400, exc.message, code="unsupported_field", param=exc.param) from None
            prepared = provider.prepare(translation.endpoint, translated, upstream_model, True)
        # Only a vendor that speaks the client's protocol can take the client's bytes (a Gemini body
        # names no model: the URL does).
        elif raw is not None and not want_usage and (
            upstream_model == body.get("model") or (protocol == GEMINI and "generateContentRequest" not in body)
        ):
            return raw, "application/json"
        else:
            prepared = provider.prepare(endpoint, body, upstream_model, want_usage)
        try:
            data = orjson.dumps(prepared)
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
    array: bool = False,
    body: dict[str, Any] | None = None,
) -> web.StreamResponse:
    """Serve ctx.endpoint for ctx.model through the best channel that answers.

    `array`: a Gemini client streaming without `alt=sse` (it wants a JSON array). `body`: the client's
    JSON request, for what the gateway answers itself (a token count no vendor of the plan can give).
    """
    assert ctx.endpoint is not None
    drain = ctx.services.drain
    attempts = Attempts(request, ctx, stop=drain.expired)
    key, limiter = ctx.key, ctx.services.limiter
    if key is not None and key.limited and limiter is not None:
        tokens, reserve = estimate(ctx.price(), ctx.request_bytes, ctx.output_cap) if ctx.estimate_tokens else (0, 0.0)
        # This machine's counters, or a Redis lease, answer at once, without a coroutine; else Redis is awaited.
        ctx.ticket = limiter.admit_now(key, tokens, reserve) or await limiter.admit_waiting(key, tokens, reserve)
    base_headers = request_headers(request.headers, ctx.request_id)
    with drain.track() as slot:
        async for attempt in attempts:
            try:
                try:
                    translation = _translation(ctx, attempt, array)
                except Untranslatable as exc:
                    attempts.skipped(attempt, f"channel {attempt.channel.name!r} cannot serve it: {exc}")
                    continue
                if translation is not None and translation.endpoint is None:
                    attempts.abandoned(attempt)
                    return _local_answer(ctx, translation, body or {})
                # Built afresh for each attempt (a multipart form cannot be sent twice) from the same client
                # body: only the model name differs between channels.
                data, content_type = build(attempt.provider, attempt.channel, attempt.upstream_model, translation)
                channel = attempt.channel
                headers = attempt_headers(base_headers, attempt.provider.headers(channel, attempt.api_key), channel, request.headers)
                if content_type:
                    headers["Content-Type"] = content_type
                if attempt.provider.protocol == ANTHROPIC and "anthropic-version" not in request.headers:
                    headers["anthropic-version"] = DEFAULT_VERSION  # a client of another protocol sends none
                response, verdict = await _attempt(request, ctx, attempt, data, headers, strip_usage, slot, translation)
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
    if drain.expired() or (attempts.last is None and attempts.busy_wait is None):
        raise ShuttingDown()
    raise attempts.exhausted()


def _translation(ctx: RequestContext, attempt: Attempt, array: bool) -> Translation | None:
    """What the attempt needs to bridge the client's protocol and its vendor's (None: nothing)."""
    assert ctx.endpoint is not None and ctx.model is not None
    translation = plan(
        ctx.protocol,
        ctx.endpoint,
        attempt.provider.protocol,
        stream=ctx.stream,
        responses_over_chat=attempt.channel.responses == "chat",
        array=array,
        model=ctx.model,
    )
    if translation is not None:
        translation.state.prompt_estimate = max(1, ctx.request_bytes // 4)
        translation.state.upstream_model = attempt.upstream_model
    return translation


def _local_answer(ctx: RequestContext, translation: Translation, body: dict[str, Any]) -> web.Response:
    """A token count the vendor has no call for, estimated here (counting is not billed)."""
    ctx.mark_first_byte()
    return web.Response(body=orjson.dumps(translation.local_answer(body)), content_type="application/json")


def _vendor_error(ctx: RequestContext, err: AttemptError, provider: Provider) -> web.Response:
    """Pass a vendor's own error answer (status and message, keys masked) to the client.

    A JSON error from a vendor speaking the client's protocol goes as it came; anything else (an HTML
    page from a proxy, another protocol's shape) is re-rendered in the client's protocol.
    """
    ctx.error = err.message[:500]
    status = err.status or 502
    body = err.body or b""
    if provider.protocol == ctx.protocol and _is_json_object(body):
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
    attempt: Attempt,
    data: bytes | Payload,
    headers: dict[str, str],
    strip_usage: bool,
    slot: Slot,
    translation: Translation | None,
) -> tuple[web.StreamResponse, Verdict]:
    channel, provider = attempt.channel, attempt.provider
    timeouts = channel.timeouts
    # The vendor's endpoint; a translated request takes none of the client's query (it is another API's).
    endpoint = ctx.endpoint or ""
    query = request.rel_url.raw_query_string
    if translation is not None and translation.client is not None:
        endpoint, query = translation.endpoint or "", ""
    url = provider.url(channel, endpoint, attempt.upstream_model, ctx.stream)
    first_byte_at = asyncio.get_running_loop().time() + timeouts.first_byte_s
    with upstream_errors("waiting for the first byte"):
        with slot.timeout_at(first_byte_at):
            upstream = await ctx.services.upstream.request(
                request.method, url, headers, data, upstream_query(query), timeouts.connect_s
            )
    secrets, keys = channel.secrets, channel.secret_bytes
    done = False
    try:
        if upstream.status >= 400:
            with upstream_errors("reading the error body"):
                body, more = await _read_up_to(upstream.content, slot, timeouts.idle_s, MAX_ERROR_BODY)
            done = not more  # the rest of a huge error body is not worth reading: the connection goes
            raise status_error(upstream.status, body, channel.secrets)
        content_type = upstream.content_type
        response: web.StreamResponse
        if content_type == "application/json":
            with upstream_errors("reading the response"):
                body, more = await _read_up_to(upstream.content, slot, timeouts.idle_s, ctx.config.limits.max_response_bytes)
            out_headers = response_headers(upstream.headers, ctx.request_id, secrets, limited=ctx.ticket is not None)
            if not more:
                body = mask_known(body, keys)
                response, verdict = _answer_json(ctx, upstream, provider, endpoint, body, out_headers, translation), Verdict.OK
            elif translation is not None and translation.client is not None:
                raise AttemptError(
                    f"upstream answered more than {ctx.config.limits.max_response_mb:g} MB of JSON, too big to translate",
                    status=502, retryable=False, channel_fault=False,
                )  # fmt: skip
            else:  # too big to hold: the rest streams through, and usage is read off its end
                tail = JsonTail(provider, endpoint)
                response, verdict = await pump(
                    request, ctx, upstream, timeouts, Chain(tail, sse=False), slot, first_byte_at, out_headers, keys, body
                )
                ctx.usage = tail.usage
        else:
            chain = _sse_filters(ctx, provider, endpoint, strip_usage, translation) if content_type == "text/event-stream" else None
            out_headers = response_headers(upstream.headers, ctx.request_id, secrets, limited=ctx.ticket is not None)
            if translation is not None:
                out_headers["Content-Type"] = "text/event-stream" if translation.sse else "application/json"
            response, verdict = await pump(request, ctx, upstream, timeouts, chain, slot, first_byte_at, out_headers, keys)
        done = upstream.content.at_eof()
        return response, verdict
    finally:
        if done:
            upstream.release()
        else:
            upstream.close()  # drop the vendor connection at once: nobody will read the rest


async def _read_up_to(content: aiohttp.StreamReader, slot: Slot, idle_s: float, limit: int) -> tuple[bytes, bool]:
    """The body to its end, or its start once past `limit` bytes (then True: more is to come).

    `idle_s` bounds each silence, not the whole read: a body that keeps trickling is read to its end.
    """
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = content.read_nowait()  # what is here already needs no timer (usually the whole body)
        if not chunk:
            if content.at_eof():
                break
            with slot.timeout_at(loop.time() + idle_s):
                chunk = await content.readany()
            if not chunk:
                break
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts), True
    return parts[0] if len(parts) == 1 else b"".join(parts), False


def _answer_json(
    ctx: RequestContext,
    upstream: Response,
    provider: Provider,
    endpoint: str,
    body: bytes,
    headers: CIMultiDict[str],
    translation: Translation | None,
) -> web.Response:
    payload = _json_of(body, upstream.headers.get("Content-Encoding"), ctx.config.limits.max_response_bytes)
    ctx.usage = provider.usage(endpoint, payload)
    if translation is not None and translation.client is not None:
        if not isinstance(payload, dict):
            raise AttemptError("upstream answered with JSON the gateway cannot read", retryable=True, channel_fault=True)
        body = orjson.dumps(translation.answer(payload))
        headers.popall("Content-Encoding", None)
    ctx.mark_first_byte()
    return ctx.services.answer(upstream.status, body, headers)


def _json_of(body: bytes, encoding: str | None, limit: int) -> Any:
    """An answer's JSON, read for its usage only (the client gets `body` as it came): decompressed
    (to `limit` bytes) when the vendor compressed it although asked not to, with invalid UTF-8 replaced."""
    if encoding is not None and encoding.strip().lower() in ("gzip", "x-gzip", "deflate"):
        try:
            body = zlib.decompressobj(wbits=47).decompress(body, limit)  # 47: gzip or zlib, told by the header
        except zlib.error:
            return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return orjson.loads(body.decode("utf-8", "replace"))
    except orjson.JSONDecodeError:
        return None


def _sse_filters(
    ctx: RequestContext, provider: Provider, endpoint: str, strip_usage: bool, translation: Translation | None
) -> Chain:
    """The filters an SSE answer goes through: the usage tap on the vendor's events, hiding the usage
    the gateway asked for (when it asked); then, when the protocols differ, the converter."""
    limit = ctx.config.limits.max_response_bytes
    if translation is None:
        return Chain(UsageTap(provider, endpoint, hide_usage=strip_usage, max_event=limit))
    return Chain(UsageTap(provider, endpoint, max_event=limit), translation.stream(limit), sse=translation.sse)
