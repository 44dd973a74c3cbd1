"""The OpenAI-style endpoints beyond chat: each reads only what routing needs (the model) and what the
endpoint bills by, then hands the body to the relay unchanged but for the model name.

JSON endpoints go through `json_body`; multipart uploads (image edits, audio) are forwarded as the
same bytes with the same boundary (see `gateway.api.multipart`). Responses of any type come back as the
relay forwards them: JSON whole, SSE and binary (speech audio) as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from config import Channel
from gateway.api import tasks as tasks_api
from gateway.api.bodies import read_json, read_upload, require_bool, require_model
from gateway.api.multipart import MultipartError, SegmentsPayload, parse_form
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.relay.relay import BodyBuilder, json_body, relay
from providers import Provider
from providers.translate import Translation

# OpenAI's own defaults where its API lets a client leave the model out; the gateway routes by it.
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
DEFAULT_IMAGE_MODEL = "dall-e-2"


async def _relay_json(
    request: web.Request,
    ctx: RequestContext,
    endpoint: str,
    *,
    tokens: bool = True,
    stream_usage: bool = False,
    default_model: str | None = None,
    path_model: str | None = None,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], BodyBuilder, bool]:
    """Read and check a JSON request; return what `relay` needs.

    `tokens`: the endpoint bills by tokens. `stream_usage`: ask a stream for usage. `transform` checks
    the body and may return a new one. A body nobody changed goes upstream as the bytes it came as.
    """
    ctx.endpoint = endpoint
    ctx.estimate_tokens = tokens
    body, raw = await read_json(request, ctx)
    unchanged: bytes | None = raw
    if path_model is not None:
        body["model"] = path_model
        unchanged = None
    elif default_model is not None and body.get("model") in (None, ""):
        body["model"] = default_model
        unchanged = None
    require_model(ctx, body)
    if transform is not None:
        checked = transform(body)
        if checked is not body:
            body, unchanged = checked, None
    ctx.stream = require_bool(body, "stream")
    opts = body.get("stream_options")
    # Ask a stream for usage the client did not ask for, and hide it from the client again.
    inject = stream_usage and ctx.stream and not (isinstance(opts, dict) and opts.get("include_usage"))
    return body, json_body(body, endpoint, ctx.protocol, inject, raw=unchanged), inject


async def chat_completions(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    _, build, inject = await _relay_json(request, ctx, "chat/completions", stream_usage=True, transform=_chat_messages)
    return await relay(request, ctx, build, strip_usage=inject)


def _chat_messages(body: dict[str, Any]) -> dict[str, Any]:
    if "messages" not in body:
        if "prompt" not in body:
            raise GatewayError(400, "Missing required field 'messages'.", code="missing_messages", param="messages")
        return prompt_to_messages(body)
    if not isinstance(body["messages"], list):
        raise GatewayError(400, "Field 'messages' must be an array.", code="invalid_type", param="messages")
    return body


def prompt_to_messages(body: dict[str, Any]) -> dict[str, Any]:
    """The `prompt` / `sys_prompt` chat dialect some vendor platforms document, as standard `messages`."""
    prompt = body.get("prompt")
    system = body.get("sys_prompt")
    if not isinstance(prompt, str | list):
        raise GatewayError(400, "Field 'prompt' must be a string or an array of content parts.", code="invalid_type", param="prompt")
    if system is not None and not isinstance(system, str):
        raise GatewayError(400, "Field 'sys_prompt' must be a string.", code="invalid_type", param="sys_prompt")
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    out = {k: v for k, v in body.items() if k not in ("prompt", "sys_prompt")}
    out["messages"] = messages
    return out


async def completions(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    _, build, inject = await _relay_json(request, ctx, "completions", stream_usage=True)
    return await relay(request, ctx, build, strip_usage=inject)


async def responses(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    # Responses streams always end with response.completed carrying usage: nothing to inject.
    _, build, _ = await _relay_json(request, ctx, "responses")
    return await relay(request, ctx, build)


async def embeddings(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    _, build, _ = await _relay_json(request, ctx, "embeddings")
    return await relay(request, ctx, build)


async def engine_embeddings(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    """The legacy /v1/engines/{model}/embeddings: the model comes from the path."""
    _, build, _ = await _relay_json(request, ctx, "embeddings", path_model=request.match_info["model"])
    return await relay(request, ctx, build)


async def moderations(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    _, build, _ = await _relay_json(request, ctx, "moderations", tokens=False, default_model=DEFAULT_MODERATION_MODEL)
    return await relay(request, ctx, build)


async def rerank(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    # Billed by tokens or "search units" depending on the vendor: record what it reports, estimate nothing.
    _, build, _ = await _relay_json(request, ctx, "rerank", tokens=False)
    return await relay(request, ctx, build)


async def image_generations(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    if tasks_api.is_async(request):
        return await tasks_api.create_image_task(request, ctx, edit=False)
    _, build, _ = await _relay_json(request, ctx, "images/generations", tokens=False, default_model=DEFAULT_IMAGE_MODEL)
    return await relay(request, ctx, build)


async def audio_speech(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    body, build, _ = await _relay_json(request, ctx, "audio/speech", tokens=False)
    text = body.get("input")
    if not isinstance(text, str):
        raise GatewayError(400, "Field 'input' must be the text to speak, as a string.", code="invalid_type", param="input")
    ctx.input_chars = len(text)
    ctx.stream = body.get("stream_format") == "sse"
    return await relay(request, ctx, build)


async def _relay_form(
    request: web.Request, ctx: RequestContext, endpoint: str, default_model: str | None = None
) -> web.StreamResponse:
    """A multipart upload: read once, find the model in the form, forward the same bytes."""
    ctx.endpoint = endpoint
    ctx.estimate_tokens = False
    content_type = request.headers.get("Content-Type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise GatewayError(
            400,
            f"POST /v1/{endpoint} takes multipart/form-data (a file upload), not {content_type or 'no Content-Type'}.",
            code="invalid_content_type",
        )
    buffer = await read_upload(request, ctx)
    try:
        form = parse_form(buffer, content_type)
        sent_model = form.value("model")
        stream = form.value("stream")
    except MultipartError as exc:
        raise GatewayError(400, f"Request body is not valid multipart/form-data: {exc}.", code="invalid_multipart") from exc
    require_model(ctx, {"model": sent_model or default_model})
    ctx.stream = (stream or "").strip().lower() == "true"

    def build(provider: Provider, channel: Channel, upstream_model: str, _: Translation | None) -> tuple[SegmentsPayload, str]:
        fields = {} if upstream_model == sent_model else {"model": upstream_model}
        return form.payload(content_type, fields), content_type

    return await relay(request, ctx, build)


async def image_edits(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    if tasks_api.is_async(request):
        return await tasks_api.create_image_task(request, ctx, edit=True)
    return await _relay_form(request, ctx, "images/edits", DEFAULT_IMAGE_MODEL)


async def audio_transcriptions(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    return await _relay_form(request, ctx, "audio/transcriptions")


async def audio_translations(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    return await _relay_form(request, ctx, "audio/translations")


async def files(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "files"
    raise GatewayError(
        501,
        "The Files API is not available through this gateway; upload files to the vendor directly.",
        type="not_implemented",
        code="not_implemented",
    )
