"""A key holder's own data (gateway.api.account): OpenAI's legacy billing shapes, /v1/usage, /v1/balance,
/v1/pricing and its quote, and AI逢源's /api/user/info, each key seeing only its own, through the real app."""

from __future__ import annotations

import calendar
import itertools
import time
from typing import Any

import aiohttp
import openai
import pytest

from gateway.api import account
from gateway.billing import pricing
from gateway.ledger.sink import UsageRow
from gateway.state import SERVICES
from tests.conftest import Gateway, channel

ADMIN_KEY = "admin-secret-key"
# gpt-4o: the fake vendor's answer (11 prompt tokens, 2 of them cached, 3 completion) costs
# (9 * 1000 + 2 * 500 + 3 * 2000) / 1e6 = 0.016.
CHAT_COST = 0.016
MODELS: dict[str, Any] = {
    "gpt-4o": {"catalog": "t2t", "price": {"input": 1000.0, "output": 2000.0, "cached_input": 500.0}},
    "gpt-4o-mini": {"catalog": "t2t"},  # served, but no price
    "claude-x": {"catalog": "t2t", "price": {"input": 3, "output": 15, "cached_input": 0.3, "cache_write": 3.75}},
    "img-1": {"catalog": "t2i", "price": {"per_image": 0.2}},
    "vid-1": {"catalog": "t2v", "price": {"per_second": {"720P": 0.6, "1080P": 1.0}}},
    "unserved-1": {"catalog": "t2t", "price": {"input": 1}},  # no channel serves it: never listed
}


def config(vendor: Any, **app1: Any) -> dict[str, Any]:
    return {
        "keys": [
            {"name": "app1", "key": "test-key", **app1},
            {"name": "app2", "key": "other-key", "models": ["gpt-4o-mini", "img-*"]},
        ],
        "admin_keys": [{"name": "ops", "key": ADMIN_KEY}],
        "channels": [channel("main", vendor, models=["gpt-*", "claude-*", "img-*", "vid-*"])],
        "models": MODELS,
    }


async def get(gw: Gateway, path: str, who: str | None = "test-key", **params: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {who}"} if who else {}
    async with aiohttp.ClientSession() as s, s.get(gw.url + path, headers=headers, params=params) as r:
        return r.status, await r.json()


async def post(gw: Gateway, path: str, body: Any, key: str = "test-key") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + path, json=body, headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        return r.status, await r.json()


async def chat(client: openai.AsyncOpenAI, model: str = "gpt-4o") -> str:
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return raw.headers["X-Request-Id"]


def day(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d"))


async def write_rows(gw: Gateway, rows: list[UsageRow]) -> None:
    """Rows through the gateway's own writer, then flushed (it writes in batches)."""
    usage = gw.server.app[SERVICES].usage
    for row in rows:
        usage.record(row)
    await usage.flush()


async def flushed(gw: Gateway) -> None:
    await gw.server.app[SERVICES].usage.flush()


async def test_each_key_sees_only_its_own_rows_and_spend(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))
    mine = [await chat(gw.client()) for _ in range(3)]
    theirs = [await chat(gw.client("other-key"), "gpt-4o-mini") for _ in range(2)]
    await flushed(gw)

    status, page = await get(gw, "/v1/usage")
    assert status == 200 and page["total"] == 3
    assert [r["request_id"] for r in page["data"]] == mine[::-1]  # newest first
    row = page["data"][0]
    assert row["model"] == "gpt-4o" and row["endpoint"] == "chat/completions" and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (11, 3, 2)
    assert row["cost"] == pytest.approx(CHAT_COST) and row["stream"] is False and row["task_id"] is None
    assert "key_name" not in row and "channel" not in row

    status, page = await get(gw, "/v1/usage", "other-key")
    assert page["total"] == 2 and [r["request_id"] for r in page["data"]] == theirs[::-1]
    assert {r["cost"] for r in page["data"]} == {None}

    _, mine_balance = await get(gw, "/v1/balance")
    _, their_balance = await get(gw, "/v1/balance", "other-key")
    assert mine_balance["spent"] == pytest.approx(3 * CHAT_COST) and mine_balance["name"] == "app1"
    assert their_balance["spent"] == 0 and their_balance["name"] == "app2"
    _, mine_usage = await get(gw, "/v1/dashboard/billing/usage")
    _, their_usage = await get(gw, "/v1/dashboard/billing/usage", "other-key")
    assert mine_usage["total_usage"] == pytest.approx(3 * CHAT_COST * 100)
    assert their_usage["total_usage"] == 0
    assert [i["name"] for d in their_usage["daily_costs"] for i in d["line_items"]] == ["gpt-4o-mini"]
    # No parameter names a key: a key_name in the query is not a filter.
    _, page = await get(gw, "/v1/usage", "other-key", key_name="app1", key="test-key")
    assert page["total"] == 2


async def test_views_are_metered_but_left_out_of_the_list(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))
    await chat(gw.client())
    for path in (
        "/v1/balance",
        "/v1/pricing",
        "/v1/dashboard/billing/subscription",
        "/v1/dashboard/billing/usage",
        "/api/user/info",
        "/openai/v1/usage",
    ):
        assert (await get(gw, path))[0] == 200
    assert (await post(gw, "/v1/pricing/quote", {"model": "gpt-4o", "usage": {"prompt_tokens": 10}}))[0] == 200
    rows = await gw.rows()
    views = [(r["endpoint"], r["key_name"], r["model"], r["cost"], r["status"]) for r in rows[1:]]
    assert views == [
        ("balance", "app1", None, None, 200),
        ("pricing", "app1", None, None, 200),
        ("dashboard/billing/subscription", "app1", None, None, 200),
        ("dashboard/billing/usage", "app1", None, None, 200),
        ("user/info", "app1", None, None, 200),
        ("usage", "app1", None, None, 200),
        ("pricing/quote", "app1", None, None, 200),
    ]
    assert rows[-2]["platform"] == "openai"
    _, page = await get(gw, "/v1/usage")
    assert page["total"] == 1 and page["data"][0]["endpoint"] == "chat/completions"


async def test_usage_pages_newest_first_with_the_total(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))
    base = time.time() - 3600
    await write_rows(
        gw,
        [
            UsageRow(request_id=f"r{i}", ts=base + i, key_name="app1", model="gpt-4o", status=200, cost=0.5)
            for i in range(7)
        ]
        + [UsageRow(request_id="x", ts=base, key_name="app2", status=200)],
    )
    _, first = await get(gw, "/v1/usage", page=1, pagerows=3)
    assert (first["total"], first["page"], first["pagerows"]) == (7, 1, 3)
    assert [r["request_id"] for r in first["data"]] == ["r6", "r5", "r4"]
    _, last = await get(gw, "/v1/usage", page=3, pagerows=3)
    assert [r["request_id"] for r in last["data"]] == ["r0"] and last["total"] == 7
    _, past = await get(gw, "/v1/usage", page=4, pagerows=3)
    assert past["data"] == [] and past["total"] == 7
    _, default = await get(gw, "/v1/usage")
    assert default["pagerows"] == account.DEFAULT_PAGEROWS and len(default["data"]) == 7
    _, capped = await get(gw, "/v1/usage", pagerows=100000)
    assert capped["pagerows"] == account.MAX_PAGEROWS


async def test_usage_and_daily_costs_by_date(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))
    d1, d2, d3 = day("2025-03-01"), day("2025-03-02"), day("2025-03-03")
    rows = [
        UsageRow(request_id="a", ts=d1 + 10, key_name="app1", model="gpt-4o", status=200, cost=0.25),
        UsageRow(request_id="b", ts=d1 + 20, key_name="app1", model="claude-x", status=200, cost=0.5),
        UsageRow(request_id="c", ts=d2 + 86399, key_name="app1", model="gpt-4o", status=200, cost=1.0),
        UsageRow(request_id="d", ts=d3 + 5, key_name="app1", model="gpt-4o", status=400, error="bad"),
        UsageRow(request_id="e", ts=d2, key_name="app2", model="gpt-4o-mini", status=200, cost=9.0),
    ]
    await write_rows(gw, rows)

    async def ids(**params: Any) -> list[str]:
        status, page = await get(gw, "/v1/usage", **params)
        assert status == 200, page
        return [r["request_id"] for r in page["data"]]

    assert await ids(start="2025-03-02") == ["d", "c"]
    assert await ids(end="2025-03-02") == ["c", "b", "a"]  # a date as the end: to the end of that day
    assert await ids(start="2025-03-01", end="2025-03-01") == ["b", "a"]
    assert await ids(start=str(d1 + 15), end=str(d3 + 5)) == ["c", "b"]  # seconds: the end excluded
    assert await ids(model="gpt-4o") == ["d", "c", "a"]
    assert await ids(model="gpt-4o", end="2025-03-02") == ["c", "a"]
    _, page = await get(gw, "/v1/usage", start="2025-03-03")
    assert page["data"][0]["error"] == "bad" and page["data"][0]["cost"] is None

    status, body = await get(gw, "/v1/dashboard/billing/usage", start_date="2025-03-01", end_date="2025-03-03")
    assert status == 200
    assert body == {
        "object": "list",
        "total_usage": 175.0,  # cents
        "daily_costs": [
            {
                "timestamp": float(d1),
                "line_items": [{"name": "claude-x", "cost": 50.0}, {"name": "gpt-4o", "cost": 25.0}],
            },
            {"timestamp": float(d2), "line_items": [{"name": "gpt-4o", "cost": 100.0}]},
        ],
    }
    _, body = await get(gw, "/v1/dashboard/billing/usage", start_date="2025-03-02", end_date="2025-03-03")
    assert body["total_usage"] == 100.0  # end_date is exclusive, as OpenAI's was


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/usage", {"page": "0"}, "page"),
        ("/v1/usage", {"page": "two"}, "page"),
        ("/v1/usage", {"pagerows": "-5"}, "pagerows"),
        ("/v1/usage", {"pagerows": "1.5"}, "pagerows"),
        ("/v1/usage", {"pagerows": "²"}, "pagerows"),
        ("/v1/usage", {"pagerows": "9" * 5000}, "pagerows"),
        ("/v1/usage", {"page": "1000001"}, "page"),
        ("/v1/usage", {"start": "1e400"}, "start"),
        ("/v1/usage", {"start": "2025-13-01"}, "start"),
        ("/v1/usage", {"start": "yesterday"}, "start"),
        ("/v1/usage", {"end": "nan"}, "end"),
        ("/v1/usage", {"start": "2025-03-02", "end": "2025-03-01"}, "end"),
        ("/v1/usage", {"model": "m" * 300}, "model"),
        ("/v1/dashboard/billing/usage", {"start_date": "03/01/2025"}, "start_date"),
        ("/v1/dashboard/billing/usage", {"start_date": "2025-03-02", "end_date": "2025-03-02"}, "end_date"),
    ],
)
async def test_bad_query_parameters_are_400_naming_the_parameter(gateway_factory, vendor, path, params, param):
    gw = await gateway_factory(config(vendor))
    status, body = await get(gw, path, **params)
    assert status == 400
    assert body["error"]["param"] == param and body["error"]["code"] == "invalid_value"
    assert repr(param) in body["error"]["message"]


async def test_pricing_lists_only_the_models_the_key_may_use(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))
    _, body = await get(gw, "/v1/pricing")
    by_id = {m["id"]: m for m in body["data"]}
    assert list(by_id) == ["claude-x", "gpt-4o", "gpt-4o-mini", "img-1", "vid-1"]
    assert by_id["gpt-4o"] == {
        "id": "gpt-4o",
        "object": "model",
        "owned_by": "openai",
        "catalog": "t2t",
        "price": {"input": 1000.0, "output": 2000.0, "cached_input": 500.0},
    }
    assert by_id["vid-1"]["price"] == {"per_second": {"720P": 0.6, "1080P": 1.0}}
    assert by_id["gpt-4o-mini"]["price"] is None
    assert set(body["units"]) >= {"input", "per_image", "per_second"}
    _, theirs = await get(gw, "/v1/pricing", "other-key")
    assert [m["id"] for m in theirs["data"]] == ["gpt-4o-mini", "img-1"]
    # The same list GET /v1/models gives the key.
    assert [m.id async for m in gw.client("other-key").models.list()] == ["gpt-4o-mini", "img-1"]
    status, body = await get(gw, "/elsewhere/v1/pricing")
    assert status == 404


async def test_quotes(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))

    async def quote(model: str, usage: dict[str, Any], key: str = "test-key") -> tuple[int, Any]:
        return await post(gw, "/v1/pricing/quote", {"model": model, "usage": usage}, key)

    # OpenAI's usage as it comes, cached tokens inside the prompt count.
    status, body = await quote(
        "gpt-4o",
        {
            "prompt_tokens": 11,
            "completion_tokens": 3,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    )
    assert status == 200
    assert body["object"] == "quote" and body["model"] == "gpt-4o"
    assert body["cost"] == pytest.approx(CHAT_COST)
    assert body["breakdown"] == pytest.approx({"input": 0.009, "cached_input": 0.001, "output": 0.006})
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "cached_tokens": 2}
    assert body["price"] == MODELS["gpt-4o"]["price"]
    # Anthropic's: cache reads and writes apart from input_tokens.
    status, body = await quote(
        "claude-x",
        {"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200},
    )
    assert status == 200
    assert body["breakdown"] == pytest.approx(
        {
            "input": 100 * 3 / 1e6,
            "cached_input": 1000 * 0.3 / 1e6,
            "cache_write": 200 * 3.75 / 1e6,
            "output": 10 * 15 / 1e6,
        }
    )
    assert body["cost"] == pytest.approx(sum(body["breakdown"].values()))
    assert body["usage"]["prompt_tokens"] == 1300
    # Per image, and per second by resolution (the highest listed when it is not said).
    assert (await quote("img-1", {"n": 3}))[1]["cost"] == pytest.approx(0.6)
    _, body = await quote("vid-1", {"seconds": 5, "resolution": "720p"})
    assert body["cost"] == pytest.approx(3.0) and body["usage"] == {"seconds": 5.0, "resolution": "720P"}
    assert body["breakdown"] == {"per_second": pytest.approx(3.0)}
    assert (await quote("vid-1", {"seconds": 5, "size": "1920x1080"}))[1]["cost"] == pytest.approx(5.0)
    assert (await quote("vid-1", {"seconds": 5}))[1]["cost"] == pytest.approx(5.0)
    # No price: a cost of null, and why.
    status, body = await quote("gpt-4o-mini", {"prompt_tokens": 10})
    assert status == 200 and body["cost"] is None and body["price"] is None and "no price" in body["message"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope-1", "usage": {"prompt_tokens": 1}}, 404, "model"),
        ({"model": "unserved-1", "usage": {"prompt_tokens": 1}}, 404, "model"),  # priced, but no channel serves it
        ({"model": "img-1", "usage": {"n": 1}, "key": "x"}, 400, "key"),
        ({"model": "gpt-4o", "usage": {"prompt_tokenz": 1}}, 400, "usage.prompt_tokenz"),
        ({"model": "gpt-4o", "usage": {"prompt_tokens": -1}}, 400, "usage"),
        ({"model": "gpt-4o", "usage": {"prompt_tokens": "many"}}, 400, "usage"),
        ({"model": "gpt-4o", "usage": [1]}, 400, "usage"),
        ({"usage": {"prompt_tokens": 1}}, 400, "model"),
    ],
)
async def test_bad_quotes(gateway_factory, vendor, body, status, param):
    gw = await gateway_factory(config(vendor))
    got, answer = await post(gw, "/v1/pricing/quote", body)
    assert got == status and answer["error"]["param"] == param, answer


async def test_a_quote_is_for_models_the_key_may_use(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))
    status, body = await post(gw, "/v1/pricing/quote", {"model": "gpt-4o", "usage": {}}, "other-key")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = await post(gw, "/v1/pricing/quote", {"model": "img-1", "usage": {"images": 2}}, "other-key")
    assert status == 200 and body["cost"] == pytest.approx(0.4)


def test_the_quote_accepts_exactly_what_pricing_reads():
    read = set(itertools.chain.from_iterable(pricing._QUOTE_FIELDS.values()))
    assert account.USAGE_FIELDS == read | {"prompt_tokens_details", "resolution", "size"}
    assert not account.USAGE_FIELDS & account.USAGE_IGNORED


async def test_balance_after_spending(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor, budget=1.0, budget_period="monthly", rpm=10, tpm=10000))
    client = gw.client()
    for _ in range(2):
        await chat(client)
    status, body = await get(gw, "/v1/balance")
    assert status == 200
    now = time.gmtime()
    start = calendar.timegm((now.tm_year, now.tm_mon, 1, 0, 0, 0))
    assert body["object"] == "balance" and body["period"] == "monthly" and body["period_start"] == start
    assert body["period_end"] > time.time()
    assert body["budget"] == 1.0 and body["reserved"] == 0
    assert body["spent"] == pytest.approx(2 * CHAT_COST) and body["remaining"] == pytest.approx(1 - 2 * CHAT_COST)
    assert body["rpm"]["limit"] == 10 and body["rpm"]["used"] == 2 and body["rpm"]["remaining"] == 8
    assert 0 < body["rpm"]["reset_s"] <= 61  # the window counts whole seconds
    assert body["tpm"]["limit"] == 10000 and body["tpm"]["used"] == 28 and body["tpm"]["remaining"] == 10000 - 28
    # Looking does not count against the key's limits.
    assert (await get(gw, "/v1/balance"))[1]["rpm"]["used"] == 2

    # A key with no limits: unlimited, its spend from the database.
    await chat(gw.client("other-key"), "gpt-4o-mini")
    await write_rows(gw, [UsageRow(request_id="old", ts=1000.0, key_name="app2", model="img-1", status=200, cost=0.4)])
    _, theirs = await get(gw, "/v1/balance", "other-key")
    assert theirs["budget"] is None and theirs["remaining"] is None and theirs["period"] == "total"
    assert theirs["spent"] == pytest.approx(0.4) and theirs["period_start"] is None
    assert theirs["rpm"] == {"limit": None, "used": 0, "remaining": None, "reset_s": 0.0}


async def test_openai_billing_shapes_through_the_sdk(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor, budget=5.0, budget_period="monthly"))
    await chat(gw.client())
    await flushed(gw)
    client = gw.client()
    sub = await client.get("/dashboard/billing/subscription", cast_to=object)
    assert sub == {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": 5.0,
        "hard_limit_usd": 5.0,
        "system_hard_limit_usd": 5.0,
        "access_until": 0,
    }
    # As ChatGPT-Next-Web asks: this month, to tomorrow (end_date exclusive).
    today = time.gmtime()
    start = f"{today.tm_year}-{today.tm_mon:02d}-01"
    end = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    used = await client.get(
        "/dashboard/billing/usage", cast_to=object, options={"params": {"start_date": start, "end_date": end}}
    )
    assert isinstance(used, dict) and used["object"] == "list"
    assert used["total_usage"] == pytest.approx(CHAT_COST * 100)
    (entry,) = used["daily_costs"]
    assert (
        entry["timestamp"] == float(calendar.timegm((*today[:3], 0, 0, 0)))
        and entry["line_items"][0]["name"] == "gpt-4o"
    )
    # What the front end shows as left: hard_limit_usd - total_usage / 100.
    assert sub["hard_limit_usd"] - used["total_usage"] / 100 == pytest.approx(5.0 - CHAT_COST)
    # Without dates: the key's budget period so far.
    assert (await client.get("/dashboard/billing/usage", cast_to=object))["total_usage"] == pytest.approx(
        CHAT_COST * 100
    )
    # An unlimited key: the large number one-api answers, never null.
    unlimited = await gw.client("other-key").get("/dashboard/billing/subscription", cast_to=object)
    assert unlimited["hard_limit_usd"] == account.UNLIMITED_USD
    with pytest.raises(openai.AuthenticationError):
        await gw.client("nope").get("/dashboard/billing/subscription", cast_to=object)


async def test_user_info_in_its_envelope(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor, budget=2.0, rpm=30))
    await chat(gw.client())
    status, body = await get(gw, "/api/user/info")
    assert status == 200 and body["success"] is True
    data = body["data"]
    assert data["name"] == data["username"] == "app1"
    assert data["credits"] == pytest.approx(2.0 - CHAT_COST) and data["unlimited"] is False
    assert data["budget"] == 2.0 and data["spent"] == pytest.approx(CHAT_COST)
    assert (data["rpm"], data["rpm_remaining"], data["tpm"], data["tpm_remaining"]) == (30, 29, None, None)
    _, theirs = await get(gw, "/openai/api/user/info", "other-key")
    assert theirs["data"]["name"] == "app2" and theirs["data"]["unlimited"] is True
    assert theirs["data"]["credits"] == account.UNLIMITED_USD

    assert await get(gw, "/api/user/info", None) == (
        401,
        {
            "success": False,
            "code": "MISSING_API_KEY",
            "message": "Missing API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
        },
    )
    status, body = await get(gw, "/api/user/info", "sk-wrong")
    assert status == 401 and body["success"] is False and body["code"] == "INVALID_API_KEY"
    status, body = await get(gw, "/api/user/info", ADMIN_KEY)
    assert status == 403 and body["success"] is False and body["code"] == "CLIENT_KEY_REQUIRED"
    rows = await gw.rows()
    assert [r["status"] for r in rows if r["endpoint"] == "user/info"] == [200, 200, 401, 401, 403]


async def test_an_admin_key_gets_403_and_no_key_401(gateway_factory, vendor):
    gw = await gateway_factory(config(vendor))
    for path in ("/v1/balance", "/v1/usage", "/v1/pricing", "/v1/dashboard/billing/subscription"):
        status, body = await get(gw, path, ADMIN_KEY)
        assert status == 403 and body["error"]["code"] == "client_key_required", path
        assert "admin key" in body["error"]["message"]
        assert (await get(gw, path, None))[0] == 401
        assert (await get(gw, path, "sk-wrong"))[0] == 401
    assert (await post(gw, "/v1/pricing/quote", {"model": "gpt-4o"}, ADMIN_KEY))[0] == 403


async def test_a_platform_the_key_may_not_use_is_403(gateway_factory, vendor):
    raw = config(vendor)
    raw["keys"][1]["platforms"] = ["deepseek"]
    gw = await gateway_factory(raw)
    status, body = await get(gw, "/openai/v1/balance", "other-key")
    assert status == 403 and body["error"]["code"] == "platform_not_allowed"
    status, body = await get(gw, "/openai/api/user/info", "other-key")
    assert status == 403 and body == {
        "success": False,
        "code": "PLATFORM_NOT_ALLOWED",
        "message": "This key may not use platform 'openai'.",
    }


async def test_without_keys_the_views_are_of_requests_made_without_one(gateway_factory, vendor):
    raw = config(vendor)
    del raw["keys"]
    gw = await gateway_factory(raw)
    await chat(gw.client("anything"))
    await write_rows(gw, [UsageRow(request_id="keyed", ts=time.time(), key_name="app1", status=200, cost=7.0)])
    _, page = await get(gw, "/v1/usage", None)
    assert page["total"] == 1 and page["data"][0]["model"] == "gpt-4o"
    _, balance = await get(gw, "/v1/balance", None)
    assert balance["name"] is None and balance["spent"] == pytest.approx(CHAT_COST) and balance["budget"] is None
