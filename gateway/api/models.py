"""The model lists: which public model names the caller's key may use, in OpenAI, Anthropic or Gemini shape.

Channels may serve glob patterns (`gpt-*`), which name no model. A list shows concrete names only:
the keys of a channel's `model_map`, the entries of its `models` that are not globs, and the names
under the config's `models:` facts that a usable channel serves. Each name appears once, owned by the
platform of the highest-priority channel that serves it. `GET .../models/{id}` answers for any name a
usable channel serves, globs included, since a request for that name would be routed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from config import ClientKey, Config
from config.loader import CATALOGS
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.relay.routing import candidates, check_platform, request_tags
from providers import ANTHROPIC

# The list APIs want a creation time; the gateway does not know one, so it says the epoch.
CREATED = 0
CREATED_AT = "1970-01-01T00:00:00Z"
GEMINI_METHODS = ("generateContent", "streamGenerateContent")


@dataclass(frozen=True, slots=True)
class Listed:
    id: str
    platform: str
    catalog: str | None


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _concrete_names(config: Config) -> Iterator[str]:
    for c in config.channels:
        yield from c.model_map
        yield from (p for p in c.models.patterns if not _is_glob(p))
    yield from config.models


def describe(config: Config, key: ClientKey | None, platform: str | None, tags: frozenset[str] | None, name: str) -> Listed | None:
    """`name` as the key would see it, or None when no channel it may use serves it."""
    if key is not None and key.models is not None and not key.models.match(name):
        return None
    found = candidates(config, key, name, platform, tags)
    if not found:
        return None
    best = max(found, key=lambda c: c.priority)  # max() keeps the first of equals: config order
    info = config.models.get(name)
    return Listed(name, best.platform, info.catalog if info else None)


def visible_models(
    config: Config,
    key: ClientKey | None,
    platform: str | None,
    tags: frozenset[str] | None = None,
    catalogs: frozenset[str] | None = None,
) -> list[Listed]:
    """Every concrete model name the key may use, sorted by name."""
    out: dict[str, Listed] = {}
    for name in _concrete_names(config):
        if name in out:
            continue
        listed = describe(config, key, platform, tags, name)
        if listed is not None and (catalogs is None or listed.catalog in catalogs):
            out[name] = listed
    return sorted(out.values(), key=lambda m: m.id)


def _catalogs(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("catelogid") or request.query.get("catalog")
    if not raw:
        return None
    wanted = frozenset(v.strip() for v in raw.split(",") if v.strip())
    unknown = sorted(wanted - CATALOGS)
    if unknown:
        raise GatewayError(
            400,
            f"Unknown catalog {', '.join(map(repr, unknown))}; use one of: {', '.join(sorted(CATALOGS))}.",
            code="invalid_value",
            param="catalog",
        )
    return wanted


def _start(request: web.Request, ctx: RequestContext) -> list[Listed]:
    ctx.endpoint = "models"
    ctx.estimate_tokens = False
    key = ctx.key
    check_platform(key, ctx.platform)
    return visible_models(ctx.config, key, ctx.platform, request_tags(request.headers.get("X-Gateway-Tag")), _catalogs(request))


def _find(request: web.Request, ctx: RequestContext, model: str) -> Listed:
    ctx.endpoint = "models"
    ctx.estimate_tokens = False
    listed = describe(ctx.config, ctx.key, ctx.platform, request_tags(request.headers.get("X-Gateway-Tag")), model)
    if listed is None:
        raise GatewayError(
            404,
            f"The model {model!r} does not exist or this key may not use it; GET /v1/models lists the models you can use.",
            code="model_not_found",
            param="model",
        )
    return listed  # ctx.model stays unset: looking a model up is not a use of it, and is never billed


def _openai(m: Listed) -> dict[str, Any]:
    return {"id": m.id, "object": "model", "created": CREATED, "owned_by": m.platform}


def _anthropic(m: Listed) -> dict[str, Any]:
    return {"type": "model", "id": m.id, "display_name": m.id, "created_at": CREATED_AT}


def _gemini(m: Listed) -> dict[str, Any]:
    return {
        "name": f"models/{m.id}",
        "version": "",
        "displayName": m.id,
        "description": f"Served by platform {m.platform}.",
        "supportedGenerationMethods": list(GEMINI_METHODS) if m.catalog in (None, "t2t") else [],
    }


def _int_query(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise GatewayError(400, f"Query parameter {name!r} must be a whole number from 1 to {high}.", code="invalid_value", param=name)
    return int(raw)


async def list_models(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /v1/models: OpenAI's list, or Anthropic's when the request carries its headers."""
    models = _start(request, ctx)
    if ctx.protocol == ANTHROPIC:
        return web.json_response(_anthropic_page(request, models))
    return web.json_response({"object": "list", "data": [_openai(m) for m in models]})


def _anthropic_page(request: web.Request, models: list[Listed]) -> dict[str, Any]:
    limit = _int_query(request, "limit", 20, 1000)
    after = request.query.get("after_id")
    before = request.query.get("before_id")
    if before:
        earlier = [m for m in models if m.id < before]
        page, has_more = earlier[-limit:], len(earlier) > limit
    else:
        later = [m for m in models if after is None or m.id > after]
        page, has_more = later[:limit], len(later) > limit
    return {
        "data": [_anthropic(m) for m in page],
        "has_more": has_more,
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }


async def get_model(request: web.Request, ctx: RequestContext) -> web.Response:
    listed = _find(request, ctx, request.match_info["model"])
    body = _anthropic(listed) if ctx.protocol == ANTHROPIC else _openai(listed)
    return web.json_response(body)


async def gemini_list_models(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /v1beta/models, paged by pageSize / pageToken (the last name of the previous page)."""
    models = _start(request, ctx)
    size = _int_query(request, "pageSize", 50, 1000)
    token = request.query.get("pageToken")
    later = [m for m in models if not token or m.id > token]
    page = later[:size]
    body: dict[str, Any] = {"models": [_gemini(m) for m in page]}
    if len(later) > size:
        body["nextPageToken"] = page[-1].id
    return web.json_response(body)


async def gemini_get_model(request: web.Request, ctx: RequestContext) -> web.Response:
    name = request.match_info["model"]
    return web.json_response(_gemini(_find(request, ctx, name.removeprefix("models/"))))
