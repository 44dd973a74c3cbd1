"""What a key holder can see of its own key: balance, usage rows, daily costs, prices and quotes.

    GET  /v1/dashboard/billing/subscription  OpenAI's legacy shape, which chat front ends read for a balance
    GET  /v1/dashboard/billing/usage         ?start_date=&end_date= (UTC days, the end exclusive); cents
    GET  /v1/usage                           the key's rows, newest first: page, pagerows, start, end, model
    GET  /v1/balance                         budget, spend and what is left in the period; rpm/tpm this minute
    GET  /v1/pricing                         the models the key may use, with catalog and price
    POST /v1/pricing/quote                   {"model", "usage"}: what that usage of the model costs
    GET  /api/user/info                      AI逢源's shape, in its envelope (gateway.errors.SERVICE)

Each is also served under /<platform>/, and reads the caller's key only: no parameter names a key.
The handlers authenticate for themselves (their routes are metered without the pipeline's auth) so an
admin key gets a 403 that says what to use, and /api/user/info answers a bad key in its own envelope.
Each request gets a usage row like any other (its endpoint, no model, no cost); /v1/usage leaves the
rows of these views out, so that paging through the list does not shift it.
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from config import ClientKey, Price, sha256_hex
from gateway.api.auth import authenticate, presented_key
from gateway.api.bodies import MAX_MODEL_NAME, read_json
from gateway.api.models import describe, visible_models
from gateway.billing.limiter import Balance, period_bounds
from gateway.billing.pricing import Quantities, cost, per_second_price, quantities
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.ledger.backends import usage_reader
from gateway.ledger.reader import DAY, RowQuery, UsageReader
from gateway.relay.routing import check_platform, request_tags
from gateway.tasks.dialects.services import service_ok

SUBSCRIPTION = "dashboard/billing/subscription"
DASHBOARD_USAGE = "dashboard/billing/usage"
USAGE = "usage"
BALANCE = "balance"
PRICING = "pricing"
QUOTE = "pricing/quote"
USER_INFO = "user/info"
ENDPOINTS = (SUBSCRIPTION, DASHBOARD_USAGE, USAGE, BALANCE, PRICING, QUOTE, USER_INFO)  # as in their usage rows

# What one-api and its forks answer for a key without a limit: front ends compute "left" as
# hard_limit_usd - total_usage / 100, which a null would break.
UNLIMITED_USD = 100_000_000.0
DEFAULT_PAGEROWS = 20
MAX_PAGEROWS = 500  # a larger pagerows is served as this many, and the answer says so
MAX_PAGE = 1_000_000
ROW_FIELDS = ("request_id", "ts", "platform", "endpoint", "model", "stream", "status", "prompt_tokens",
              "completion_tokens", "total_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
              "estimated", "images", "audio_seconds", "resolution", "latency_ms", "cost", "task_id", "error")  # fmt: skip
_FLAGS = frozenset({"stream", "estimated"})
_COUNTS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_write_tokens",
                     "reasoning_tokens", "images"})  # fmt: skip

PRICE_UNITS = {
    "input": "per 1M prompt tokens",
    "output": "per 1M completion tokens (reasoning included)",
    "cached_input": "per 1M prompt tokens read from a cache",
    "cache_write": "per 1M prompt tokens written to a cache",
    "per_image": "per image",
    "per_second": "per second of audio or video; by resolution where it is a table",
    "per_1k_chars": "per 1000 input characters",
    "per_request": "per request",
}
# The usage fields gateway.billing.pricing.quantities reads (OpenAI, Anthropic and Gemini names), and
# those a pasted usage object carries that add nothing to them (totals, splits of counts it reads).
# Anything else is refused, so a misspelt field is not quoted as zero.
USAGE_FIELDS = frozenset({
    "prompt_tokens", "input_tokens", "promptTokenCount", "completion_tokens", "output_tokens", "candidatesTokenCount",
    "cached_tokens", "cache_read_input_tokens", "cachedContentTokenCount", "cache_write_tokens",
    "cache_creation_input_tokens", "images", "n", "image_count", "seconds", "duration", "audio_seconds",
    "video_seconds", "characters", "input_chars", "chars", "prompt_tokens_details", "resolution", "size",
})  # fmt: skip
USAGE_IGNORED = frozenset({
    "total_tokens", "totalTokenCount", "completion_tokens_details", "output_tokens_details", "promptTokensDetails",
    "candidatesTokensDetails", "cacheTokensDetails", "cache_creation", "server_tool_use", "service_tier",
})  # fmt: skip


# -- who is asking ------------------------------------------------------------------------------------


def holder(request: web.Request, ctx: RequestContext, endpoint: str) -> ClientKey | None:
    """The caller's client key (None: the config defines no keys, and the views are of requests made
    without one). An admin key is refused with 403: these views are one client key's own."""
    ctx.endpoint = endpoint
    ctx.estimate_tokens = False
    try:
        key = authenticate(request, ctx.config, ctx.protocol, ctx.services.runtime.lookups(ctx.config).secrets)
    except GatewayError as err:
        secret = presented_key(request, ctx.protocol) if err.status == 401 else None
        if secret is not None and sha256_hex(secret) in ctx.config.admin_keys_by_hash:
            raise GatewayError(
                403,
                "This is an admin key; balance, usage and pricing show one client key's own data: call them with "
                "that client key. Operators see every key with `gateway keys` and `gateway usage`.",
                code="client_key_required",
            ) from None
        raise
    ctx.key = key
    check_platform(key, ctx.platform)
    return key


def _reader(ctx: RequestContext) -> UsageReader:
    """The app's reader of the configured database (SQLite or PostgreSQL), opened with the app."""
    return ctx.services.reader or usage_reader(ctx.config.database)


def _name(key: ClientKey | None) -> str | None:
    return key.name if key is not None else None


def _period(key: ClientKey | None) -> str:
    return key.budget_period if key is not None else "total"


# -- query parameters ---------------------------------------------------------------------------------


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _bad(param: str, message: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_value", param=param)


def _whole(query: Mapping[str, str], name: str, default: int, most: int | None = None) -> int:
    raw = query.get(name, "").strip()
    if not raw:
        return default
    # ASCII digits only ("²" is a digit to str.isdigit), and few enough to be a number SQLite takes.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) < 1 or (most is not None and int(raw) > most):
        span = f"from 1 to {most}" if most is not None else "of at least 1"
        raise _bad(name, f"Query parameter {name!r} must be a whole number {span}; got {_shown(raw)}.")
    return int(raw)


def _day(text: str, param: str) -> int:
    """A UTC date, YYYY-MM-DD, as the unix seconds its day starts at."""
    try:
        return calendar.timegm(time.strptime(text.strip(), "%Y-%m-%d"))
    except ValueError:
        raise _bad(
            param, f"Query parameter {param!r} must be a date as YYYY-MM-DD (UTC); got {_shown(text)}."
        ) from None


def _moment(query: Mapping[str, str], param: str, *, end: bool) -> float | None:
    """Unix seconds, or a UTC date: as a start, the start of that day; as an end, the end of it."""
    raw = query.get(param, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise _bad(
                param, f"Query parameter {param!r} must be unix seconds or a date as YYYY-MM-DD; got {_shown(raw)}."
            )
        return value
    try:
        day = calendar.timegm(time.strptime(raw, "%Y-%m-%d"))
    except ValueError:
        raise _bad(
            param, f"Query parameter {param!r} must be unix seconds or a date as YYYY-MM-DD (UTC); got {_shown(raw)}."
        ) from None
    return float(day + DAY if end else day)


def _span(start: float | None, end: float | None, names: tuple[str, str]) -> None:
    if start is not None and end is not None and end <= start:
        raise _bad(names[1], f"{names[1]!r} must come after {names[0]!r}.")


# -- the standing of a key ----------------------------------------------------------------------------


def _unmetered(key: ClientKey | None, now: float) -> Balance:
    """A key's standing with nothing counted yet (no counters: the gateway has no keys, or is not started)."""
    kind = _period(key)
    start, end = period_bounds(kind, now)
    rpm, tpm = (key.rpm, key.tpm) if key is not None else (None, None)
    return Balance(
        budget=key.budget if key is not None else None, spent=0.0, reserved=0.0, remaining=None, period=kind,
        period_start=start, period_end=end, rpm=rpm, requests_used=0, requests_left=rpm, requests_reset_s=0.0,
        tpm=tpm, tokens_used=0, tokens_left=tpm, tokens_reset_s=0.0,
    )  # fmt: skip


async def standing(ctx: RequestContext, key: ClientKey | None) -> Balance:
    """The key's budget, spend and rpm/tpm now. A budget's spend is the limiter's (requests in flight
    and async tasks reserve against it too); a key without a budget has its spend counted by nobody
    but the database, a second behind at most (rows are written in batches)."""
    now = time.time()
    limiter = ctx.services.limiter
    if key is not None and limiter is not None:
        balance = await limiter.balance(key, now)
        if key.budget is not None:
            return balance
    else:
        balance = _unmetered(key, now)
    spent = round(await _reader(ctx).spent(_name(key), balance.period_start), 8)
    remaining = None if balance.budget is None else round(max(balance.budget - spent - balance.reserved, 0.0), 8)
    return dataclasses.replace(balance, spent=spent, remaining=remaining)


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def _limits(b: Balance) -> dict[str, Any]:
    return {
        "rpm": {"limit": b.rpm, "used": b.requests_used, "remaining": b.requests_left, "reset_s": b.requests_reset_s},
        "tpm": {"limit": b.tpm, "used": b.tokens_used, "remaining": b.tokens_left, "reset_s": b.tokens_reset_s},
    }


# -- the routes ---------------------------------------------------------------------------------------


async def balance(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /v1/balance."""
    key = holder(request, ctx, BALANCE)
    b = await standing(ctx, key)
    return web.json_response({
        "object": "balance",
        "name": _name(key),
        "budget": b.budget,
        "spent": b.spent,
        "reserved": b.reserved,
        "remaining": b.remaining,
        "period": b.period,
        "period_start": _seconds(b.period_start),
        "period_end": _seconds(b.period_end),
        **_limits(b),
    })  # fmt: skip


async def subscription(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /v1/dashboard/billing/subscription, as OpenAI answered it before 2024 (and one-api still does)."""
    key = holder(request, ctx, SUBSCRIPTION)
    limit = key.budget if key is not None and key.budget is not None else UNLIMITED_USD
    return web.json_response({
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": limit,
        "hard_limit_usd": limit,
        "system_hard_limit_usd": limit,
        "access_until": 0,  # the key does not expire
    })  # fmt: skip


async def dashboard_usage(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /v1/dashboard/billing/usage?start_date=&end_date=: costs in cents, as OpenAI's were. Without
    dates, the key's budget period so far (a front end's hard_limit_usd - total_usage/100 is then
    what is left). Days without a cost are not listed."""
    key = holder(request, ctx, DASHBOARD_USAGE)
    query, now = request.query, time.time()
    raw_start, raw_end = query.get("start_date", "").strip(), query.get("end_date", "").strip()
    start: float | None = _day(raw_start, "start_date") if raw_start else period_bounds(_period(key), now)[0]
    end = _day(raw_end, "end_date") if raw_end else (now // DAY + 1) * DAY
    _span(start, end, ("start_date", "end_date"))
    days: dict[int, list[dict[str, Any]]] = {}
    total = 0.0
    for entry in await _reader(ctx).daily_costs(_name(key), start, end):
        cents = entry.cost * 100
        total += cents
        days.setdefault(entry.day, []).append({"name": entry.model, "cost": round(cents, 6)})
    return web.json_response({
        "object": "list",
        "total_usage": round(total, 6),
        "daily_costs": [{"timestamp": float(day), "line_items": items} for day, items in days.items()],
    })  # fmt: skip


async def usage(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /v1/usage: the key's rows, newest first, with how many match in all."""
    key = holder(request, ctx, USAGE)
    query = request.query
    page = _whole(query, "page", 1, MAX_PAGE)
    pagerows = min(_whole(query, "pagerows", DEFAULT_PAGEROWS), MAX_PAGEROWS)
    start, end = _moment(query, "start", end=False), _moment(query, "end", end=True)
    _span(start, end, ("start", "end"))
    model = query.get("model", "").strip() or None
    if model is not None and len(model) > MAX_MODEL_NAME:
        raise _bad("model", f"Query parameter 'model' is longer than {MAX_MODEL_NAME} characters.")
    found = await _reader(ctx).rows(
        RowQuery(_name(key), start, end, model, skip_endpoints=ENDPOINTS), offset=(page - 1) * pagerows, limit=pagerows
    )
    return web.json_response({
        "object": "list",
        "total": found.total,
        "page": page,
        "pagerows": pagerows,
        "data": [_row(r) for r in found.rows],
    })  # fmt: skip


def _row(r: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ROW_FIELDS:
        value = r.get(name)
        if name in _FLAGS:
            value = bool(value)
        elif name in _COUNTS:
            value = int(value or 0)
        out[name] = value
    return out


async def pricing(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /v1/pricing: the models the key may use (as GET /v1/models lists them), each with its catalog
    and price (null: the gateway records its requests without a cost)."""
    key = holder(request, ctx, PRICING)
    listed = visible_models(ctx.config, key, ctx.platform, request_tags(request.headers.get("X-Gateway-Tag")))
    return web.json_response({
        "object": "list",
        "data": [
            {"id": m.id, "object": "model", "owned_by": m.platform, "catalog": m.catalog, "price": _price_of(ctx, m.id)}
            for m in listed
        ],
        "units": PRICE_UNITS,
    })  # fmt: skip


def _price(ctx: RequestContext, model: str) -> Price | None:
    info = ctx.config.models.get(model)
    return info.price if info is not None else None


def _price_of(ctx: RequestContext, model: str) -> dict[str, object] | None:
    price = _price(ctx, model)
    return price.as_dict() if price is not None else None


async def quote(request: web.Request, ctx: RequestContext) -> web.Response:
    """POST /v1/pricing/quote {"model", "usage"}: the cost of that usage, part by part. Quoting is not
    a use of the model: the request's own row has no model and no cost."""
    key = holder(request, ctx, QUOTE)
    body, _ = await read_json(request, ctx)
    unknown = sorted(set(body) - {"model", "usage"})
    if unknown:
        raise GatewayError(
            400,
            f"Unknown field {unknown[0]!r}; a quote takes 'model' and 'usage'.",
            code="unknown_field",
            param=unknown[0],
        )
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > MAX_MODEL_NAME:
        raise GatewayError(
            400, "Field 'model' must be a model name (a non-empty string).", code="invalid_value", param="model"
        )
    raw = body.get("usage", {})
    if not isinstance(raw, dict):
        raise GatewayError(
            400, "Field 'usage' must be an object, e.g. {\"prompt_tokens\": 1000}.", code="invalid_type", param="usage"
        )
    for name in raw:
        if name not in USAGE_FIELDS and name not in USAGE_IGNORED:
            raise GatewayError(
                400,
                f"Unknown usage field {_shown(str(name))}; a quote reads {', '.join(sorted(USAGE_FIELDS))}.",
                code="unknown_field",
                param=f"usage.{name}",
            )
    try:
        used = quantities(raw)
    except ValueError as exc:
        raise GatewayError(400, f"{exc}.", code="invalid_value", param="usage") from None
    if describe(ctx.config, key, ctx.platform, request_tags(request.headers.get("X-Gateway-Tag")), model) is None:
        raise GatewayError(
            404,
            f"The model {model!r} does not exist or this key may not use it; GET /v1/pricing lists the models you can use.",
            code="model_not_found",
            param="model",
        )
    price = _price(ctx, model)
    answer: dict[str, Any] = {"object": "quote", "model": model, "cost": None, "usage": _quantities(used)}
    if price is None:
        answer["message"] = (
            f"The model {model!r} has no price on this gateway: its requests are recorded without a cost."
        )
        return web.json_response({**answer, "price": None})
    answer["cost"] = cost(used, price)
    answer["price"] = price.as_dict()
    answer["breakdown"] = breakdown(used, price)
    return web.json_response(answer)


def _quantities(used: Quantities) -> dict[str, Any]:
    """What the quote read, without what it did not find."""
    out = {f.name: getattr(used, f.name) for f in dataclasses.fields(used)}
    out["seconds"] = out.pop("audio_seconds")
    return {k: v for k, v in out.items() if v}


def breakdown(used: Quantities, price: Price) -> dict[str, float]:
    """The cost of each part of `price`, each through gateway.billing.pricing.cost with only that part
    priced (so the parts add up to the cost, give or take rounding)."""
    parts: dict[str, Price] = {}
    if price.input is not None:
        # Cache reads and writes priced at 0 here, but only where the price has them: else they bill as input.
        parts["input"] = Price(
            input=price.input,
            cached_input=0.0 if price.cached_input is not None else None,
            cache_write=0.0 if price.cache_write is not None else None,
        )
        if price.cached_input is not None:
            parts["cached_input"] = Price(
                input=0.0, cached_input=price.cached_input, cache_write=0.0 if price.cache_write is not None else None
            )
        if price.cache_write is not None:
            parts["cache_write"] = Price(
                input=0.0, cached_input=0.0 if price.cached_input is not None else None, cache_write=price.cache_write
            )
    for name in ("output", "per_image", "per_1k_chars", "per_request"):
        if getattr(price, name) is not None:
            parts[name] = Price(**{name: getattr(price, name)})
    if per_second_price(price, used.resolution) is not None:
        parts["per_second"] = Price(
            per_second=price.per_second, per_second_by_resolution=price.per_second_by_resolution
        )
    return {name: cost(used, part) or 0.0 for name, part in parts.items()}


async def user_info(request: web.Request, ctx: RequestContext) -> web.Response:
    """GET /api/user/info in AI逢源's envelope, errors too (the pipeline renders /api/... errors in it):
    `credits` is what is left of the budget."""
    key = holder(request, ctx, USER_INFO)
    b = await standing(ctx, key)
    return web.json_response(service_ok({
        "name": _name(key),
        "username": _name(key),
        "credits": b.remaining if b.remaining is not None else UNLIMITED_USD,
        "unlimited": b.budget is None,
        "budget": b.budget,
        "spent": b.spent,
        "reserved": b.reserved,
        "period": b.period,
        "period_start": _seconds(b.period_start),
        "period_end": _seconds(b.period_end),
        "rpm": b.rpm,
        "rpm_remaining": b.requests_left,
        "tpm": b.tpm,
        "tpm_remaining": b.tokens_left,
    }))  # fmt: skip


ROUTES = (
    ("GET", SUBSCRIPTION, subscription),
    ("GET", DASHBOARD_USAGE, dashboard_usage),
    ("GET", USAGE, usage),
    ("GET", BALANCE, balance),
    ("GET", PRICING, pricing),
    ("POST", QUOTE, quote),
)  # under /v1/ (and /<platform>/v1/); user_info is at /api/user/info
