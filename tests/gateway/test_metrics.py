"""GET /metrics: Prometheus text, admin-only on the main port, open on metrics_listen, bounded labels,
and one scrape covering every worker with `workers: 2`."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics import SWITCH_ENV
from tests.conftest import KEYS, channel
from tests.fakevendor import Fault
from tests.procs import GatewayProcess, free_port

ADMIN_KEY = "admin-secret-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"Authorization": "Bearer test-key"}
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def config(*channels: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"keys": KEYS, "admin_keys": [{"name": "ops", "key": ADMIN_KEY}], "channels": list(channels),
            "models": {"gpt-4o": {"price": {"input": 2.5, "output": 10.0}}}, **extra}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """`name`'s samples (with suffix, e.g. gateway_requests_total), by their sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for k, v in samples(text, name).items() if set(labels.items()) <= set(k))


async def scrape(url: str, headers: dict[str, str] | None = None) -> str:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics", headers=headers or {}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


async def post(url: str, body: dict[str, Any], headers: dict[str, str] = CLIENT) -> int:
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status


async def test_requests_tokens_cost_and_latency_are_counted(gateway_factory, vendor):
    gw = await gateway_factory(config(channel("main", vendor, models=["gpt-4o", "gpt-*"])))
    assert await post(gw.url, BODY) == 200
    assert await post(gw.url, {**BODY, "stream": True, "stream_options": {"include_usage": True}}) == 200
    assert await post(gw.url, BODY, headers={"Authorization": "Bearer wrong"}) == 401
    text = await scrape(gw.url, ADMIN)
    ok = {"endpoint": "chat/completions", "platform": "openai", "model": "gpt-4o", "channel": "main", "status": "2xx"}
    assert value(text, "gateway_requests_total", **ok) == 2
    assert value(text, "gateway_requests_total", status="4xx", model="", channel="") == 1  # refused before the body
    assert value(text, "gateway_request_duration_seconds_count", model="gpt-4o", channel="main") == 2
    assert value(text, "gateway_time_to_first_token_seconds_count", model="gpt-4o") >= 1
    assert value(text, "gateway_tokens_total", model="gpt-4o", kind="input") == 2 * vendor.prompt_tokens
    assert value(text, "gateway_tokens_total", model="gpt-4o", kind="output") > 0
    assert value(text, "gateway_cost_total", model="gpt-4o") > 0
    assert value(text, "gateway_upstream_attempts_total", channel="main", outcome="ok") == 2
    assert value(text, "gateway_usage_rows_written_total") + value(text, "gateway_usage_rows_queued") >= 2
    assert value(text, "gateway_channel_key_up", channel="main") == 1
    assert "gateway_rate_limited_total" in text or "# TYPE gateway_rate_limited counter" in text
    assert "vk-main-secret" not in text


async def test_client_sent_model_names_do_not_grow_the_label_sets(gateway_factory, vendor):
    gw = await gateway_factory(config(channel("main", vendor, models=["gpt-4o", "gpt-*"])))
    assert await post(gw.url, BODY) == 200
    before = samples(await scrape(gw.url, ADMIN), "gateway_requests_total")
    for i in range(30):  # served by the glob, or by nobody: either way not a name the config gives
        await post(gw.url, {**BODY, "model": f"gpt-junk-{i}" if i % 2 else f"junk/{i}\" x"})
    text = await scrape(gw.url, ADMIN)
    after = samples(text, "gateway_requests_total")
    models = {dict(k)["model"] for k in after}
    assert models <= {"gpt-4o", "other", ""}, models
    assert len(after) - len(before) <= 3  # "other" at 2xx and 4xx, at most
    assert value(text, "gateway_requests_total", model="other") == 30


async def test_failures_are_counted_by_channel_and_reason(gateway_factory, vendor_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    gw = await gateway_factory(config(channel("a", a, priority=1), channel("b", b)))
    a.fail_next(Fault("status", status=500), Fault("status", status=429))
    assert await post(gw.url, BODY) == 200
    assert await post(gw.url, BODY) == 200
    text = await scrape(gw.url, ADMIN)
    assert value(text, "gateway_upstream_failures_total", channel="a", reason="status_5xx") == 1
    assert value(text, "gateway_upstream_failures_total", channel="a", reason="status_429") == 1
    assert value(text, "gateway_upstream_attempts_total", channel="a", outcome="failed") == 2
    assert value(text, "gateway_upstream_attempts_total", channel="b", outcome="ok") == 2
    assert value(text, "gateway_requests_total", channel="b", status="2xx") == 2


async def test_metrics_need_an_admin_key_on_the_main_port(gateway_factory, vendor):
    gw = await gateway_factory(config(channel("main", vendor)))
    async with aiohttp.ClientSession() as s:
        for headers, status in (({}, 401), (CLIENT, 403), ({"Authorization": "Bearer nope"}, 401), (ADMIN, 200),
                                ({"X-API-Key": ADMIN_KEY}, 200)):
            async with s.get(gw.url + "/metrics", headers=headers) as r:
                assert r.status == status, (headers, await r.text())


async def test_metrics_listen_serves_without_auth(gateway_factory, vendor):
    port = free_port()
    gw = await gateway_factory(config(channel("main", vendor), metrics_listen=f"127.0.0.1:{port}"))
    assert await post(gw.url, BODY) == 200
    text = await scrape(f"http://127.0.0.1:{port}")
    assert value(text, "gateway_requests_total", model="gpt-4o", status="2xx") == 1
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/admin/status") as r:
        assert r.status == 404  # only /metrics there


async def test_metrics_can_be_switched_off(gateway_factory, vendor, monkeypatch):
    monkeypatch.setenv(SWITCH_ENV, "off")
    gw = await gateway_factory(config(channel("main", vendor)))
    assert await post(gw.url, BODY) == 200
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics", headers=ADMIN) as r:
        assert r.status == 404


@pytest.mark.slow
async def test_one_scrape_covers_both_workers(tmp_path, vendor):
    port = free_port()
    gw = GatewayProcess(tmp_path, config(channel("main", vendor), workers=2, metrics_listen=f"127.0.0.1:{port}"))
    await gw.start()
    try:
        for _ in range(200):
            if gw.logs().count('"event":"listening"') >= 2:
                break
            await asyncio.sleep(0.05)
        n = 60
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:

            async def one() -> int:
                async with s.post(gw.url + "/v1/chat/completions", json=BODY, headers=CLIENT) as r:
                    await r.read()
                    return r.status

            assert await asyncio.gather(*(one() for _ in range(n))) == [200] * n
        # Each worker adds its counts to its files every second (gateway.ops.metrics): wait that out.
        for _ in range(60):
            open_text = await scrape(f"http://127.0.0.1:{port}")
            if value(open_text, "gateway_requests_total", model="gpt-4o", status="2xx") == n:
                break
            await asyncio.sleep(0.1)
        main_text = await scrape(gw.url, ADMIN)
        for text in (open_text, main_text):
            assert value(text, "gateway_requests_total", model="gpt-4o", status="2xx") == n
            assert value(text, "gateway_request_duration_seconds_count", model="gpt-4o") == n
            assert value(text, "gateway_upstream_attempts_total", channel="main", outcome="ok") == n
        pids = {dict(k).get("pid") for k in samples(open_text, "gateway_config_info")}
        assert len(pids) == 2  # both workers' files, each with its live gauges
        # /admin/status on either worker lists both, each with its own in-flight counts and key states.
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/admin/status", headers=ADMIN) as r:
            assert r.status == 200
            body = await r.json()
        assert len(body["workers"]) == 2 and body["pid"] in {w["pid"] for w in body["workers"]}
        assert all(w["channels"][0]["keys"][0]["state"] == "healthy" for w in body["workers"])
        assert await gw.stop() == 0
    finally:
        gw.kill()


def test_multiprocess_dir_sits_beside_the_database_and_a_killed_supervisors_is_cleared(tmp_path):
    from gateway.ops.metrics import prepare_multiprocess, remove_multiprocess

    path = prepare_multiprocess(str(tmp_path / "gateway.db"))
    try:
        assert path == str(tmp_path / "gateway.metrics")
        (tmp_path / "gateway.metrics" / "counter_123.db").write_bytes(b"stale")  # a SIGKILLed supervisor's
        assert prepare_multiprocess(str(tmp_path / "gateway.db")) == path
        assert list((tmp_path / "gateway.metrics").iterdir()) == []
    finally:
        remove_multiprocess(path)
    assert not (tmp_path / "gateway.metrics").exists()


async def test_limit_refusals_are_counted_by_limit(gateway_factory, vendor_factory):
    a = await vendor_factory("a")
    raw = config(channel("a", a, models=["gpt-4o"], rpm=1))
    raw["keys"] = [{**raw["keys"][0], "rpm": 2}, *raw["keys"][1:]]  # a copy: the list is shared by every test
    gw = await gateway_factory(raw)
    assert [await post(gw.url, BODY) for _ in range(3)] == [200, 429, 429]  # the channel's rpm, then the key's
    text = await scrape(gw.url, ADMIN)
    assert value(text, "gateway_rate_limited_total", limit="channel") == 1
    assert value(text, "gateway_rate_limited_total", limit="requests") == 1
