"""The Anthropic Messages surface: POST /v1/messages and /v1/messages/count_tokens.

Each request is routed like any other; a channel whose vendor speaks Anthropic gets the body as it
came (but for the model name), any other gets it translated (providers.translate).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api.bodies import read_json, require_bool, require_model
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.relay.relay import json_body, relay
from providers import ANTHROPIC


def _require_messages(body: dict[str, Any]) -> None:
    if not isinstance(body.get("messages"), list):
        raise GatewayError(400, "Field 'messages' must be an array of messages.", code="invalid_type", param="messages")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise GatewayError(400, "Field 'max_tokens' must be a positive whole number.", code="invalid_type", param="max_tokens")


async def messages(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "messages"
    body, raw = await read_json(request, ctx)
    require_model(ctx, body)
    _require_messages(body)
    ctx.stream = require_bool(body, "stream")
    return await relay(request, ctx, json_body(body, ctx.endpoint, ANTHROPIC, False, raw=raw), body=body)


async def count_tokens(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    """Counting is answered by the vendor where it has the call, else estimated; it is never billed."""
    ctx.endpoint = "messages/count_tokens"
    ctx.estimate_tokens = False
    body, raw = await read_json(request, ctx)
    require_model(ctx, body)
    _require_messages(body)
    return await relay(request, ctx, json_body(body, ctx.endpoint, ANTHROPIC, False, raw=raw), body=body)
