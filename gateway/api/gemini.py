"""The Gemini surface: POST /v1beta/models/{model}:generateContent | :streamGenerateContent |
:countTokens, and the same under /v1/models/ (the path current google-genai versions call).

The model and the method share one path segment, so one route takes both and splits them here (the
router has already decoded a `%3A` colon). A stream without `alt=sse` is answered as Gemini's
JSON array, sent an element at a time.
"""

from __future__ import annotations

from aiohttp import web

from gateway.api.bodies import read_json, require_model
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.relay.relay import json_body, relay
from providers import GEMINI
from providers.gemini import COUNT, GENERATE, STREAM

METHODS = (GENERATE, STREAM, COUNT)


async def model_method(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    target = request.match_info["target"]
    model, _, method = target.rpartition(":")
    if method not in METHODS or not model:
        raise GatewayError(
            404, f"Unknown Gemini method in {target[:200]!r}; use {', '.join(f'{{model}}:{m}' for m in METHODS)}.", code="unknown_route"
        )
    ctx.endpoint = method
    ctx.stream = method == STREAM
    ctx.estimate_tokens = method != COUNT  # counting is never billed
    body, raw = await read_json(request, ctx)
    require_model(ctx, {"model": model.removeprefix("models/")})
    if method != COUNT and not isinstance(body.get("contents"), list):
        raise GatewayError(400, "Field 'contents' must be an array of contents.", code="invalid_type", param="contents")
    array = ctx.stream and request.query.get("alt") != "sse"
    return await relay(request, ctx, json_body(body, method, GEMINI, False, raw=raw), array=array, body=body)
