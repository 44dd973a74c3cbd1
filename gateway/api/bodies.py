"""Reading what a client sent: the body within `limits.max_body_mb`, as JSON or an upload, and the
fields every API route checks the same way (model, booleans)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from gateway.context import RequestContext
from gateway.errors import GatewayError

MAX_MODEL_NAME = 256


def _too_large(ctx: RequestContext) -> GatewayError:
    return GatewayError(
        413,
        f"Request body is larger than the gateway's limit of {ctx.config.limits.max_body_mb:g} MB.",
        code="request_too_large",
    )


async def _next_chunk(request: web.Request, ctx: RequestContext) -> bytes:
    """The next piece of the body; b"" at its end. A client silent for `limits.body_timeout_s` in the
    middle of its body gets a 408 (a slow-body attack would hold a connection and a buffer for ever)."""
    content = request.content
    chunk = content.read_nowait()  # what is here already needs no timer: usually the whole body
    if chunk or content.at_eof():
        return chunk
    timeout_s = ctx.config.limits.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await content.readany()
    except TimeoutError:
        raise GatewayError(
            408, f"The request body stalled: nothing came for {timeout_s:g} s. Send it again.", code="body_timeout"
        ) from None


async def read_body(request: web.Request, ctx: RequestContext) -> bytes:
    """The whole request body, refusing (413) as soon as it passes `limits.max_body_mb`."""
    limit = ctx.config.limits.max_body_bytes
    declared = request.content_length  # parsed from the header on each call
    if declared is not None and declared > limit:
        raise _too_large(ctx)
    parts: list[bytes] = []
    size = 0
    while chunk := await _next_chunk(request, ctx):
        size += len(chunk)
        if size > limit:
            raise _too_large(ctx)
        parts.append(chunk)
    ctx.request_bytes = size
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_upload(request: web.Request, ctx: RequestContext) -> bytearray:
    """The whole body in one buffer, filled in place: an upload of many MB is held once, never joined."""
    limit = ctx.config.limits.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(ctx)
    buf = bytearray(declared or 0)
    view = memoryview(buf) if declared else None
    size = 0
    while chunk := await _next_chunk(request, ctx):
        end = size + len(chunk)
        if end > limit:
            raise _too_large(ctx)
        if view is not None and end <= len(buf):
            view[size:end] = chunk
        else:  # no Content-Length (chunked upload): grow as it comes
            if view is not None:
                view.release()
                view = None
            del buf[size:]
            buf += chunk
        size = end
    if view is not None:
        view.release()
    del buf[size:]
    ctx.request_bytes = size
    return buf


async def read_json(request: web.Request, ctx: RequestContext) -> tuple[dict[str, Any], bytes]:
    """The body as a JSON object, and the bytes it came as."""
    raw = await read_body(request, ctx)
    if not raw or raw.isspace():
        raise GatewayError(400, "Request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"Request body is not valid JSON: {exc}.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise GatewayError(400, "Request body must be a JSON object.", code="invalid_json")
    ctx.output_cap = output_cap(body)
    return body, raw


def output_cap(body: dict[str, Any]) -> int | None:
    """The most completion tokens the request asks for, in any protocol's words (None: no cap given)."""
    cap = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
    if cap is None:
        config = body.get("generationConfig")
        cap = config.get("maxOutputTokens") if isinstance(config, dict) else None
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None


def require_model(ctx: RequestContext, body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise GatewayError(400, "Missing required field 'model'.", code="missing_model", param="model")
    if not isinstance(model, str):
        raise GatewayError(400, "Field 'model' must be a string.", code="invalid_type", param="model")
    if len(model) > MAX_MODEL_NAME:
        raise GatewayError(400, f"Field 'model' is longer than {MAX_MODEL_NAME} characters.", code="invalid_value", param="model")
    ctx.model = model
    return model


def require_bool(body: dict[str, Any], field: str) -> bool:
    value = body.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise GatewayError(400, f"Field {field!r} must be true or false.", code="invalid_type", param=field)
    return value
