"""rpm, tpm and budgets per key, and rpm per channel, driven with the real openai client."""

from __future__ import annotations

import asyncio
import math
import time

import openai
import pytest

from gateway.state import SERVICES
from tests.conftest import channel

PRICE = {
    "input": 1000.0,
    "output": 2000.0,
}  # per 1M tokens: a request of 11 + 3 tokens costs 0.017


def limited(vendor, **key):
    return {
        "keys": [
            {"name": "app1", "key": "test-key", **key},
            {"name": "free", "key": "free-key"},
        ],
        "channels": [channel("main", vendor)],
        "models": {"gpt-4o": {"catalog": "t2t", "price": PRICE}},
    }


async def ask(client: openai.AsyncOpenAI, **kw):
    return await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **kw
    )


async def test_rpm_refuses_the_fourth_request_with_openai_headers(gateway_factory, vendor):
    gw = await gateway_factory(limited(vendor, rpm=3))
    client = gw.client()
    remaining = []
    for _ in range(3):
        raw = await ask(client)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as info:
        await ask(client)
    err = info.value
    assert err.status_code == 429
    assert err.body["code"] == "rate_limit_exceeded" and err.body["type"] == "requests"
    assert "Limit 3" in err.body["message"] and "try again in" in err.body["message"]
    retry_after = int(err.response.headers["Retry-After"])
    assert 55 <= retry_after <= 61
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    # Another key is not limited by app1's minute.
    assert (await ask(gw.client("free-key"))).headers.get("x-ratelimit-limit-requests") is None
    rows = await gw.rows()
    assert [r["status"] for r in rows if r["key_name"] == "app1"] == [
        200,
        200,
        200,
        429,
    ]
    assert len(vendor.requests) == 4  # the refused request never reached a vendor


async def test_the_sdks_own_retry_waits_out_an_honest_retry_after(gateway_factory, vendor):
    gw = await gateway_factory(limited(vendor, rpm=1))
    limiter = gw.server.app[SERVICES].limiter
    assert limiter is not None
    await ask(gw.client())
    # The minute has nearly passed for the first request: the window frees ~0.5 s from now.
    start = time.time()
    limiter.clock = lambda: int(start) + 60.5 + (time.time() - start)
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="test-key", max_retries=2)
    gw.clients.append(client)
    began = time.monotonic()
    raw = await ask(client)
    assert raw.http_response.status_code == 200
    assert 0.2 < time.monotonic() - began < 5
    statuses = [r["status"] for r in await gw.rows()]
    assert statuses == [200, 429, 200]


async def test_tpm_charges_an_estimate_and_settles_the_real_count(gateway_factory, vendor):
    gw = await gateway_factory(limited(vendor, tpm=200))
    client = gw.client()
    raw = await ask(client, max_tokens=100)  # estimated: ~30 bytes of body / 4 + 100; used: 14
    assert raw.headers["x-ratelimit-limit-tokens"] == "200"
    first = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 80 <= first <= 100
    raw = await ask(client, max_tokens=100)
    # The first request's estimate was corrected to its 14 tokens before the second was counted.
    second = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 200 - 14 - 130 <= second <= 200 - 14 - 100
    with pytest.raises(openai.RateLimitError) as info:  # 28 used (both settled) + ~200 estimated
        await ask(client, max_tokens=180)
    assert info.value.body["type"] == "tokens"
    with pytest.raises(openai.RateLimitError) as info:  # can never fit: no point retrying
        await ask(client, max_tokens=5000)
    assert "Request too large" in info.value.body["message"]
    assert info.value.response.headers["x-should-retry"] == "false"


async def test_a_budget_is_not_overspent_by_parallel_requests(gateway_factory, vendor):
    budget = 0.1  # each request costs 0.017 and reserves ~0.0328 (max_tokens 16)
    gw = await gateway_factory(limited(vendor, budget=budget))
    vendor.chunks = 1
    client = gw.client()
    results = await asyncio.gather(*(ask(client, max_tokens=16) for _ in range(60)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) + len(refused) == 60 and ok and refused
    assert {r.body["code"] for r in refused} == {"insufficient_quota"}
    assert {r.response.headers["x-should-retry"] for r in refused} == {"false"}
    # Sequentially now, until the budget is spent.
    for _ in range(20):
        try:
            ok.append(await ask(client, max_tokens=16))
        except openai.RateLimitError:
            break
    rows = await gw.rows()
    spent = sum(r["cost"] or 0 for r in rows)
    assert spent == pytest.approx(0.017 * len(ok))
    reserve = (100 / 4 * 1000 + 16 * 2000) / 1e6
    assert budget <= spent < budget + reserve  # past the budget by at most one request's reservation
    limiter = gw.server.app[SERVICES].limiter
    assert limiter is not None
    key = gw.runtime.config.keys[0]
    balance = await limiter.balance(key)
    assert balance.spent == pytest.approx(spent) and balance.reserved == 0 and balance.remaining == 0


async def test_daily_budget_renews_at_midnight_utc(gateway_factory, vendor):
    gw = await gateway_factory(limited(vendor, budget=0.01, budget_period="daily"))
    limiter = gw.server.app[SERVICES].limiter
    assert limiter is not None
    client = gw.client()
    await ask(client)
    with pytest.raises(openai.RateLimitError) as info:
        await ask(client)
    renew = int(info.value.response.headers["Retry-After"])
    assert 0 < renew <= 86400 and "renews at" in info.value.body["message"]
    start = time.time()
    limiter.clock = lambda: time.time() - start + math.ceil(start / 86400) * 86400 + 5
    assert (await ask(client)).http_response.status_code == 200


async def test_a_reload_keeps_the_counters(gateway_factory, vendor, tmp_path):
    gw = await gateway_factory(limited(vendor, rpm=2))
    client = gw.client()
    await ask(client)
    await ask(client)
    config_path = tmp_path / "gateway.yaml"
    import yaml

    raw = limited(vendor, rpm=2)
    raw["database"] = str(gw.db_path)
    config_path.write_text(yaml.safe_dump(raw))
    gw.runtime.path = str(config_path)
    assert gw.runtime.reload()
    with pytest.raises(openai.RateLimitError):
        await ask(client)


async def test_channel_rpm_skips_a_busy_channel_then_refuses(gateway_factory, vendor_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    gw = await gateway_factory({
        "keys": [{"name": "app1", "key": "test-key"}],
        "channels": [channel("a", a, priority=10, rpm=1), channel("b", b, rpm=1)],
    })  # fmt: skip
    client = gw.client()
    assert (await ask(client)).headers["X-Vendor"] == "a"
    assert (await ask(client)).headers["X-Vendor"] == "b"  # a is at its vendor account's rpm: skipped
    with pytest.raises(openai.RateLimitError) as info:
        await ask(client)
    assert "Every channel serving model 'gpt-4o' is at its rate limit" in info.value.body["message"]
    assert 1 <= int(info.value.response.headers["Retry-After"]) <= 61
    rows = await gw.rows()
    assert [(r["status"], r["attempts"]) for r in rows] == [
        (200, 1),
        (200, 1),
        (429, 0),
    ]


async def test_anthropic_and_gemini_clients_get_the_429_in_their_own_shape(gateway_factory, vendor):
    import aiohttp

    gw = await gateway_factory(limited(vendor, rpm=1))
    await ask(gw.client())
    body = {"model": "gpt-4o", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"}) as r:
            err = await r.json()
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            assert err == {"type": "error", "error": {"type": "rate_limit_error", "message": err["error"]["message"]}}
        async with s.post(gw.url + "/v1beta/models/gpt-4o:generateContent?key=test-key",
                          json={"contents": [{"parts": [{"text": "hi"}]}]}) as r:  # fmt: skip
            err = await r.json()
            assert r.status == 429 and err["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert r.headers["x-ratelimit-limit-requests"] == "1"


async def test_a_row_is_priced_with_the_config_its_request_started_on(gateway_factory, vendor, tmp_path):
    import yaml

    raw = limited(vendor)
    gw = await gateway_factory(raw)
    vendor.chunk_delay = 0.1
    client = gw.client()
    stream = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    first = await stream.__anext__()
    assert first is not None
    # The price changes under the stream.
    raw["models"]["gpt-4o"]["price"] = {"input": 1.0, "output": 1.0}
    raw["database"] = str(gw.db_path)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    gw.runtime.path = str(path)
    assert gw.runtime.reload()
    async for _ in stream:
        pass
    await ask(client)
    rows = await gw.rows()
    old, new = rows[0], rows[1]
    assert old["cost"] == pytest.approx((old["prompt_tokens"] * 1000 + old["completion_tokens"] * 2000) / 1e6)
    assert new["cost"] == pytest.approx((new["prompt_tokens"] + new["completion_tokens"]) / 1e6)
