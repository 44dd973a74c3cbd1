"""Client errors: the right status and the OpenAI error shape, with a message that says what to do."""

from __future__ import annotations

import aiohttp
import pytest
import structlog

from config import sha256_hex
from gateway.ledger import refused
from tests.conftest import channel
from tests.faultkit import post

KEYS = [
    {"name": "app1", "key": "test-key"},
    {"name": "hashed", "key_sha256": sha256_hex("hashed-secret")},
    {"name": "narrow", "key": "narrow-key", "models": ["gpt-4o-mini"], "platforms": ["openai"]},
]


@pytest.fixture
async def gw(vendor, gateway_factory):
    return await gateway_factory({
        "keys": KEYS,
        "limits": {"max_body_mb": 0.01},
        "channels": [channel("main", vendor, platform="openai"), channel("ds", vendor, platform="deepseek", models=["deepseek-*"])],
    })


async def call(gw, path="/v1/chat/completions", *, key="test-key", body=None, data=None, method="POST", headers=None):
    hdrs = {"Authorization": f"Bearer {key}"} if key else {}
    hdrs.update(headers or {})
    async with aiohttp.ClientSession() as s, s.request(method, gw.url + path, json=body, data=data, headers=hdrs) as r:
        payload = await r.json(content_type=None)
        return r.status, payload, r.headers


OK_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"{not json"}, 400, "invalid_json"),
        ({"data": b"[1, 2]"}, 400, "invalid_json"),
        ({"data": b""}, 400, "invalid_json"),
        ({"body": {"messages": []}}, 400, "missing_model"),
        ({"body": {"model": 5, "messages": []}}, 400, "invalid_type"),
        ({"body": {"model": "gpt-4o", "messages": "hi"}}, 400, "invalid_type"),
        ({"body": {"model": "gpt-4o", "messages": [], "stream": "yes"}}, 400, "invalid_type"),
        ({"body": {"model": "nope-1", "messages": []}}, 404, "model_not_found"),
        ({"body": OK_BODY, "key": None}, 401, "missing_api_key"),
        ({"body": OK_BODY, "key": "wrong"}, 401, "invalid_api_key"),
        ({"body": OK_BODY, "key": "narrow-key"}, 403, "model_not_allowed"),
        ({"body": {**OK_BODY, "model": "deepseek-chat"}, "key": "narrow-key", "path": "/deepseek/v1/chat/completions"}, 403, "platform_not_allowed"),
        ({"body": OK_BODY, "path": "/nowhere/v1/chat/completions"}, 404, "unknown_platform"),
        ({"body": OK_BODY, "path": "/v1/chat/complete"}, 404, "unknown_route"),
        ({"body": OK_BODY, "method": "GET"}, 405, "method_not_allowed"),
        # A route that does not exist says so before asking for a key.
        ({"body": OK_BODY, "path": "/v1/chat/complete", "key": None}, 404, "unknown_route"),
        ({"body": OK_BODY, "method": "GET", "key": None}, 405, "method_not_allowed"),
        ({"body": {**OK_BODY, "pad": "x" * 20000}}, 413, "request_too_large"),
        ({"body": {**OK_BODY, "model": "m" * 10000}}, 400, "invalid_value"),
    ],
)
async def test_error_status_and_shape(gw, kwargs, status, code):
    got, payload, headers = await call(gw, **kwargs)
    assert got == status, payload
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    assert err["message"].endswith(".")
    assert headers["X-Request-Id"]


async def test_key_sha256_and_x_api_key(gw):
    status, _, _ = await call(gw, body=OK_BODY, key="hashed-secret")
    assert status == 200
    status, _, _ = await call(gw, body=OK_BODY, key=None, headers={"X-API-Key": "test-key"})
    assert status == 200
    status, _, _ = await call(gw, body={**OK_BODY, "model": "gpt-4o-mini"}, key="narrow-key")
    assert status == 200


async def test_rejected_requests_get_usage_rows(gw):
    await call(gw, body=OK_BODY, key="wrong")
    await call(gw, body={"model": "nope-1", "messages": []})
    await call(gw, body=OK_BODY, headers={"X-Request-Id": "my-id-1"})
    rows = await gw.rows()
    assert [(r["status"], r["key_name"], r["model"]) for r in rows] == [
        (401, None, None), (404, "app1", "nope-1"), (200, "app1", "gpt-4o")]
    assert rows[0]["error"].startswith("Invalid API key")
    assert rows[2]["request_id"] == "my-id-1"


async def test_no_keys_defined_means_open_on_loopback(vendor, gateway_factory):
    gw = await gateway_factory({"channels": [channel("main", vendor)]})
    status, _, _ = await call(gw, body=OK_BODY, key=None)
    assert status == 200


async def test_health_endpoints(gw):
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/healthz") as r:
            assert r.status == 200 and r.headers["X-Request-Id"]
        async with s.get(gw.url + "/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"
    assert await gw.rows() == []  # probes are not billed


async def test_a_flood_of_bad_keys_is_counted_not_recorded_row_by_row(vendor, gateway_factory, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(refused.time, "monotonic", lambda: clock[0])  # one second, however slow the machine
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)], "limits": {"refused_rows_per_s": 5}})
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as s:
            for _ in range(40):
                async with s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o"},
                                  headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401  # every refusal is still answered
        status, _, _ = await post(gw, {"model": "gpt-4o", "messages": []})
        assert status == 200
        clock[0] += 1  # the next second: the count of the last one is reported
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url + "/v1/models", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
    rows = await gw.rows()
    assert [r["status"] for r in rows] == [401] * 5 + [200, 401]  # 5 refusals a second, served ones always
    [report] = [e for e in logs if e["event"] == "refused_requests_not_recorded"]
    assert (report["count"], report["log_level"]) == (35, "warning")
