"""What every API request passes through: id, auth, error rendering, usage row, access line."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping

import structlog
from aiohttp import web

from gateway.api.auth import authenticate
from gateway.billing.pricing import cost
from gateway.context import RequestContext, new_request_id
from gateway.errors import SERVICE, GatewayError
from gateway.http.answer import add_lines
from gateway.ledger.sink import UsageRow
from gateway.logs import AccessLog
from gateway.state import SERVICES, Services
from providers import ANTHROPIC, GEMINI, OPENAI

log = structlog.get_logger("gateway.access")
access_log = AccessLog("gateway.access")

Handler = Callable[[web.Request, RequestContext], Awaitable[web.StreamResponse]]  # an API route's handler
Served = Callable[[web.Request], Awaitable[web.StreamResponse]]  # what aiohttp calls
_GEMINI_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})
MAX_HEADER_BYTES = 64 * 1024  # all request headers together
MAX_HEADER_FIELD = 128 * 1024  # one header line, and the request line: the HTTP parser's own limit


def protocol_for(path: str, headers: Mapping[str, str] | None = None) -> str:
    if "/api/" in path and (path.startswith("/api/") or path.partition("/api/")[0].count("/") == 1):
        return SERVICE  # /api/... or /<platform>/api/...: AI逢源's envelope
    if "/v1beta/" in path or ("/models/" in path and path.rpartition(":")[2] in _GEMINI_METHODS):
        return GEMINI  # /v1beta/..., or /v1/models/{model}:{method} (a fine-tuned OpenAI model has colons too)
    if path.endswith("/v1/messages") or "/v1/messages/" in path:
        return ANTHROPIC
    if headers is not None and (path.endswith("/v1/models") or "/v1/models/" in path):
        # Anthropic's SDK lists models at the same path as OpenAI's; its headers tell them apart.
        if "x-api-key" in headers and "anthropic-version" in headers:
            return ANTHROPIC
    return OPENAI


def metered(services: Services, handler: Handler, *, authenticated: bool = True) -> Served:
    """Serve `handler` as an API route: the context, auth, error rendering, the usage row and the access line.

    Each route's handler is wrapped here rather than by an aiohttp middleware, which costs a few call
    layers a request (measured: ~35k instructions, 6% of what a bare forwarder spends on a request).
    """

    async def serve(request: web.Request) -> web.StreamResponse:
        ctx = RequestContext(
            request_id=new_request_id(request.headers.get("X-Request-Id")),
            config=services.runtime.config,
            services=services,
            protocol=protocol_for(request.path, request.headers),
            platform=request.match_info.get("platform"),
        )
        response: web.StreamResponse | None = None
        try:
            _check_headers(request)
            if ctx.platform is not None and ctx.platform not in ctx.config.platforms:
                raise GatewayError(404, f"Unknown platform {ctx.platform!r}; known: {', '.join(sorted(ctx.config.platforms))}.", code="unknown_platform")
            if authenticated:
                ctx.key = authenticate(request, ctx.config, ctx.protocol, services.runtime.lookups(ctx.config).secrets)
            response = await handler(request, ctx)
        except GatewayError as err:
            ctx.error = ctx.error or err.message[:500]
            response = err.response(ctx.protocol)
        except web.HTTPException as exc:
            http_err = GatewayError(exc.status, exc.text or exc.reason)
            ctx.error = http_err.message
            response = http_err.response(ctx.protocol)
        except web.RequestPayloadError as exc:  # bad gzip, broken chunked framing: the client's fault
            detail = str(getattr(exc.__cause__, "message", "") or exc).strip()
            body_err = GatewayError(400, f"The request body could not be read ({detail}); send it again, uncompressed.", code="invalid_body")
            ctx.error = body_err.message[:500]
            response = body_err.response(ctx.protocol)
            response.force_close()  # the rest of that body cannot be read: this connection carries no more requests
        except asyncio.CancelledError:
            ctx.status = 499
            ctx.error = ctx.error or "client closed the connection"
            raise
        except Exception:
            log.exception("unhandled_error", request_id=ctx.request_id, path=request.path)
            ctx.error = "internal error"
            response = GatewayError(500, "The gateway failed on this request; it has been logged.", type="server_error").response(ctx.protocol)
        finally:
            finish(request, ctx, response)
            if services.guard is not None:
                services.guard.request_done(request.transport)
        if not response.prepared:
            response.headers["X-Request-Id"] = ctx.request_id
            if ctx.ticket is not None:  # every answer to a limited key (a stream has them already)
                add_lines(response, ctx.ticket.lines)
            if services.drain.deadline is not None:
                response.force_close()  # shutting down: the client must not send another request on this connection
        return response

    return serve


def probe(handler: Served) -> Served:
    """A health probe: no auth, usage row or access line, but an X-Request-Id like every answer."""

    async def serve(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Request-Id"] = new_request_id(request.headers.get("X-Request-Id"))
        guard = request.app[SERVICES].guard
        if guard is not None:
            guard.request_done(request.transport)
        return response

    return serve


async def unknown_route(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    """The catch-all route's handler: 405 where another route serves the path, else 404."""
    path = request.path if len(request.path) <= 200 else request.path[:200] + "..."  # never echo a 100 KB URL
    allowed = sorted(await _allowed_methods(request))
    if allowed:
        raise GatewayError(
            405,
            f"Method {request.method} is not allowed on {path}; use {', '.join(allowed)}.",
            code="method_not_allowed",
            headers={"Allow": ", ".join(allowed)},
        )
    raise GatewayError(404, f"Unknown route {request.method} {path}.", code="unknown_route")


async def _allowed_methods(request: web.Request) -> set[str]:
    """The methods the routes other than the catch-all serve at the request's path."""
    catch_all = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not catch_all:
            _, methods = await resource.resolve(request)
            allowed |= methods
    return allowed


def _check_headers(request: web.Request) -> None:
    """Refuse oversized headers in the client's protocol. The HTTP parser lets up to MAX_HEADER_FIELD
    through (see create_app); past that it answers a plain 400 itself, before any of this runs."""
    # Each field counted with its ": " and CRLF; joining the raw fields is one C call, a Python loop ten.
    raw = request.raw_headers
    size = len(b"".join(itertools.chain.from_iterable(raw))) + 4 * len(raw)
    if size > MAX_HEADER_BYTES:
        raise GatewayError(
            431,
            f"Request headers are {size} bytes; the gateway accepts at most {MAX_HEADER_BYTES}. Send less in headers.",
            code="headers_too_large",
        )


def finish(request: web.Request, ctx: RequestContext, response: web.StreamResponse | None) -> None:
    """Record the usage row and the access line. Runs for every metered request, however it ended."""
    status = ctx.status or (response.status if response is not None else 500)
    if status == 401 and not ctx.services.refused.allow(ctx.config.limits.refused_rows_per_s):
        if ctx.services.metrics is not None:
            ctx.services.metrics.refused(ctx.endpoint, ctx.elapsed_ms(), ctx.config)
        return  # a flood of bad keys: counted, not recorded one by one (gateway.ledger.refused)
    usage = ctx.usage
    tap = ctx.tap
    if usage is None and tap is not None:
        usage = tap.usage
    images, audio_seconds, estimated = ctx.images, ctx.audio_seconds, 0
    if usage is not None:
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        total = usage.total_tokens or prompt + completion
        cached, reasoning, cache_write = usage.cached_tokens, usage.reasoning_tokens, usage.cache_write_tokens
        images = max(images, usage.images)
        audio_seconds = max(audio_seconds, usage.seconds)
        estimated = int(usage.estimated)
    elif ctx.estimate_tokens and (tap is not None or (ctx.attempts and status < 400)):
        # An answer went out but the vendor reported no usage (stream cut, client gone, vendor silent):
        # estimate ~4 bytes a token. A request that got no answer is not billed. Endpoints not billed
        # by tokens (images, audio) estimate nothing.
        prompt = ctx.request_bytes // 4
        completion = (tap.text_bytes if tap is not None else 0) // 4
        total, cached, reasoning, cache_write, estimated = prompt + completion, 0, 0, 0, 1
    else:
        prompt = completion = total = cached = reasoning = cache_write = 0
    key_name = ctx.key.name if ctx.key else None
    latency_ms = round(ctx.elapsed_ms(), 3)
    ttft_ms = round(ctx.ttft_ms, 3) if ctx.ttft_ms is not None else None
    row = UsageRow(
        request_id=ctx.request_id,
        ts=ctx.ts,
        key_name=key_name,
        platform=ctx.platform or ctx.channel_platform,
        endpoint=ctx.endpoint,
        model=ctx.model,
        upstream_model=ctx.upstream_model,
        channel=ctx.channel,
        stream=int(ctx.stream),
        status=status,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cache_write_tokens=cache_write,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        attempts=ctx.attempts,
        error=ctx.error,
        estimated=estimated,
        images=images,
        input_chars=ctx.input_chars,
        audio_seconds=audio_seconds,
    )
    if ctx.model is not None:
        row.cost = cost(row, ctx.price())
    services = ctx.services
    if ctx.ticket is not None and services.limiter is not None:
        services.limiter.settle(ctx.ticket, total, row.cost)
    if ctx.task_id is None:  # else the request created an async task: its row comes when the task settles
        services.usage.record(row)
    if services.metrics is not None:
        services.metrics.request(row, ctx.config)
    access_log.info("request", {
        "request_id": ctx.request_id,
        "method": request.method,
        "path": request.path,
        "key_name": key_name,
        "model": ctx.model,
        "channel": ctx.channel,
        "status": status,
        "latency_ms": latency_ms,
        "ttft_ms": ttft_ms,
        "attempts": ctx.attempts,
        "stream": ctx.stream,
        "tokens": total,
        "error": ctx.error,
    })  # fmt: skip
