"""Channel choice: tiers, weights, tags, platforms, globs, renaming, keys in turn, extra headers."""

from __future__ import annotations

import random
from collections import Counter

import aiohttp
import pytest

from config import Channel, GlobSet
from gateway.relay.health import Health
from gateway.relay.routing import order
from tests.conftest import KEYS, channel


def ch(name: str, weight: float = 1, priority: int = 0) -> Channel:
    return Channel(name=name, provider="openai", platform="openai", base_url="http://x", api_keys=("k",),
                   models=GlobSet(("*",)), weight=weight, priority=priority)


def test_order_weighted_inside_tier_then_lower_tier_then_weight_zero():
    rng = random.Random(7)
    chans = [ch("a", 1), ch("b", 3), ch("zero", 0), ch("low", 5, priority=-1)]
    firsts = Counter()
    for _ in range(4000):
        names = [c.name for c in order(chans, Health(), rng)]
        assert names[2:] == ["low", "zero"]  # top tier first, weight 0 only when nothing else is left
        assert sorted(names[:2]) == ["a", "b"]  # without replacement: each once
        firsts[names[0]] += 1
    assert 0.70 < firsts["b"] / 4000 < 0.80  # 3:1


async def test_weights_honoured_over_hundreds_of_requests(vendor_factory, gateway_factory):
    a, b, z = await vendor_factory("a"), await vendor_factory("b"), await vendor_factory("z")
    gw = await gateway_factory({"keys": KEYS, "channels": [
        channel("a", a, weight=1), channel("b", b, weight=3), channel("z", z, weight=0)]})
    n = 400
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s:
        for _ in range(n):
            async with s.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []}) as r:
                assert r.status == 200
    assert len(z.requests) == 0
    assert len(a.requests) + len(b.requests) == n
    assert 0.65 < len(b.requests) / n < 0.85
    rows = await gw.rows()
    assert Counter(r["channel"] for r in rows) == Counter({"a": len(a.requests), "b": len(b.requests)})


async def test_priority_tier_wins(vendor_factory, gateway_factory):
    hi, lo = await vendor_factory("hi"), await vendor_factory("lo")
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("lo", lo, weight=100), channel("hi", hi, priority=5)]})
    client = gw.client()
    for _ in range(10):
        r = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content == "hello from hi"


async def test_platform_prefix_and_model_map(vendor_factory, gateway_factory):
    oa, ds = await vendor_factory("oa"), await vendor_factory("ds")
    gw = await gateway_factory({"keys": KEYS, "channels": [
        channel("oa", oa, models=["shared-*"], platform="openai"),
        channel("ds", ds, models=["shared-*", "deepseek-chat"], platform="deepseek",
                model_map={"shared-1": "ds-shared-upstream"}),
    ]})
    for _ in range(5):
        r = await gw.client(platform="deepseek").chat.completions.create(model="shared-1", messages=[])
        assert r.choices[0].message.content == "hello from ds"
    assert {s.json()["model"] for s in ds.requests} == {"ds-shared-upstream"}
    r = await gw.client(platform="openai").chat.completions.create(model="shared-1", messages=[])
    assert r.choices[0].message.content == "hello from oa"
    assert oa.requests[-1].json()["model"] == "shared-1"
    rows = await gw.rows()
    assert rows[0]["platform"] == "deepseek" and rows[0]["upstream_model"] == "ds-shared-upstream"
    with pytest.raises(Exception) as info:
        await gw.client(platform="openai").chat.completions.create(model="deepseek-chat", messages=[])
    assert getattr(info.value, "status_code", None) == 404


async def test_tags_from_key_and_header(vendor_factory, gateway_factory):
    prod, dev = await vendor_factory("prod"), await vendor_factory("dev")
    gw = await gateway_factory({
        "keys": [{"name": "prodkey", "key": "pk", "tags": ["prod"]}, {"name": "any", "key": "ak"}],
        "channels": [channel("prod", prod, tags=["prod"]), channel("dev", dev, tags=["dev"])],
    })
    for _ in range(6):
        r = await gw.client("pk").chat.completions.create(model="gpt-4o", messages=[])
        assert r.choices[0].message.content == "hello from prod"
        r = await gw.client("ak").chat.completions.create(
            model="gpt-4o", messages=[], extra_headers={"X-Gateway-Tag": "dev, other"})
        assert r.choices[0].message.content == "hello from dev"
    # A key limited to prod asking for dev: nothing left, so 503 rather than a channel it may not use.
    with pytest.raises(Exception) as info:
        await gw.client("pk").chat.completions.create(model="gpt-4o", messages=[], extra_headers={"X-Gateway-Tag": "dev"})
    assert getattr(info.value, "status_code", None) == 503


async def test_api_keys_used_in_turn_and_headers_added(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [
        channel("main", vendor, api_keys=["vk-one", "vk-two"], headers={"OpenAI-Organization": "org-x"})]})
    client = gw.client()
    for _ in range(4):
        await client.chat.completions.create(model="gpt-4o", messages=[])
    auths = [s.headers["Authorization"] for s in vendor.requests]
    assert auths == ["Bearer vk-one", "Bearer vk-two", "Bearer vk-one", "Bearer vk-two"]
    assert all(s.headers["OpenAI-Organization"] == "org-x" for s in vendor.requests)
    assert all("test-key" not in str(s.headers) for s in vendor.requests)  # the client's key never goes upstream


async def test_client_query_key_is_not_forwarded(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor)]})
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s:
        url = f"{gw.url}/v1/chat/completions?key=test-key&api-version=2024"
        async with s.post(url, json={"model": "gpt-4o", "messages": []}) as r:
            assert r.status == 200
    assert vendor.requests[-1].query == {"api-version": "2024"}


async def test_disabled_channel_gives_503(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor, enabled=False)]})
    with pytest.raises(Exception) as info:
        await gw.client().chat.completions.create(model="gpt-4o", messages=[])
    assert getattr(info.value, "status_code", None) == 503
    assert "gpt-4o" in str(info.value)


async def test_key_whose_platforms_exclude_every_serving_channel_gets_403(vendor, gateway_factory):
    gw = await gateway_factory({
        "keys": [{"name": "ds-only", "key": "dk", "platforms": ["deepseek"]}, *KEYS],
        "channels": [channel("oa", vendor, platform="openai"), channel("ds", vendor, platform="deepseek", models=["deepseek-*"])],
    })
    with pytest.raises(Exception) as info:
        await gw.client("dk").chat.completions.create(model="gpt-4o", messages=[])
    assert getattr(info.value, "status_code", None) == 403


async def test_websocket_key_protocol_is_not_a_key_on_plain_requests(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor)]})
    async with aiohttp.ClientSession() as s:
        hdrs = {"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.test-key"}
        async with s.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=hdrs) as r:
            assert r.status == 401
        hdrs["Authorization"] = "Bearer test-key"
        async with s.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=hdrs) as r:
            assert r.status == 200
    assert "Sec-WebSocket-Protocol" not in vendor.requests[-1].headers  # the client's key stays here


async def test_credential_headers_are_masked_when_a_vendor_echoes_them(vendor, gateway_factory):
    from tests.fakevendor import Fault

    token = "tenant-token-0123456789"
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor, headers={"X-Tenant-Token": token})]})
    vendor.faults.append(Fault("status", status=400, body={"error": {"message": f"bad tenant {token}"}}))
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s:
        async with s.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []}) as r:
            assert r.status == 400
            assert token not in await r.text()
    assert vendor.requests[-1].headers["X-Tenant-Token"] == token


async def test_the_channels_headers_win_and_a_client_cannot_pick_whom_the_vendor_bills(raw_vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [
        channel("org", raw_vendor, models=["gpt-4o"], headers={"OpenAI-Organization": "org-CONFIG"}),
        channel("bare", raw_vendor, models=["gpt-4o-mini"]),
        channel("open", raw_vendor, models=["o3"], client_headers=["openai-project"]),
    ]})
    evil = {"openai-organization": "org-EVIL", "OpenAI-Project": "proj-EVIL", "X-Custom": "kept"}
    for model in ("gpt-4o", "gpt-4o-mini", "o3"):
        await gw.client().chat.completions.create(model=model, messages=[], extra_headers=evil)
    heads = [r.split(b"\r\n\r\n")[0].lower().split(b"\r\n") for r in raw_vendor.requests]
    org, bare, allowed = ([h for h in head if h.startswith((b"openai-", b"x-custom"))] for head in heads)
    assert sorted(org) == [b"openai-organization: org-config", b"x-custom: kept"]  # replaced, whatever the case
    assert bare == [b"x-custom: kept"]  # the channel sets nothing: the client still picks no org or project
    assert sorted(allowed) == [b"openai-project: proj-evil", b"x-custom: kept"]  # this channel allows it
