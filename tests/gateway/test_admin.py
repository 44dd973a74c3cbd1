"""GET /admin/status: the operators' view (config in force, key health by key id, in flight, usage
writer), behind an admin key; and /readyz while the last reload failed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import yaml
from aiohttp.test_utils import TestServer

from config import load_config
from gateway.app import create_app
from gateway.relay.health import key_id
from gateway.state import Runtime
from providers import CHANNEL_PROVIDERS
from tests.conftest import channel
from tests.fakevendor import Fault
from tests.gateway.test_metrics import ADMIN, ADMIN_KEY, BODY, CLIENT, config, post, scrape, value


async def get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(url + path, headers=headers or {}) as r:
        return r.status, await r.json()


async def test_admin_status_needs_an_admin_key(gateway_factory, vendor):
    gw = await gateway_factory(config(channel("main", vendor)))
    assert (await get(gw.url, "/admin/status"))[0] == 401
    assert (await get(gw.url, "/admin/status", CLIENT))[0] == 403
    assert (await get(gw.url, "/admin/status", {"Authorization": "Bearer not-a-key"}))[0] == 401
    status, body = await get(gw.url, "/admin/status", ADMIN)
    assert status == 200
    assert body["channels"][0]["keys"][0] == {
        "key_id": key_id("vk-main-secret"), "state": "healthy", "cooldown_s_left": 0.0,
        "failures": {"consecutive": 0, "total": 0, "last_reason": None, "last_error": None, "last_s_ago": None},
    }
    assert body["in_flight"] == {"requests": 0, "streams": 0}
    assert set(body["usage"]) == {"queued", "held", "written", "spooled", "dropped", "spool_bytes"}


async def test_an_admin_key_is_not_a_client_key(gateway_factory, vendor):
    gw = await gateway_factory(config(channel("main", vendor)))
    assert await post(gw.url, BODY, headers=ADMIN) == 401


async def test_a_failing_key_shows_cooling_down_during_failover(gateway_factory, vendor_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    gw = await gateway_factory(config(channel("a", a, priority=1), channel("b", b),
                                      routing={"failure_threshold": 1, "cooldown_s": 30}))
    a.fail_next(Fault("status", status=503))
    assert await post(gw.url, BODY) == 200  # failed over to b
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/admin/status", headers=ADMIN) as r:
        text = await r.text()
        body = await r.json()
    assert "vk-a-secret" not in text and "vk-b-secret" not in text
    by_name = {c["name"]: c for c in body["channels"]}
    key = by_name["a"]["keys"][0]
    assert key["key_id"] == key_id("vk-a-secret")
    assert key["state"] == "cooling"
    assert 25 < key["cooldown_s_left"] <= 30
    assert key["failures"]["consecutive"] == 1 and key["failures"]["last_reason"] == "status_5xx"
    assert "503" in key["failures"]["last_error"]
    assert by_name["b"]["keys"][0]["state"] == "healthy"
    metrics = await scrape(gw.url, ADMIN)
    assert value(metrics, "gateway_channel_key_up", channel="a", key_id=key_id("vk-a-secret")) == 0
    assert value(metrics, "gateway_channel_key_cooldown_seconds", channel="a") > 25


async def test_readyz_is_503_while_the_last_reload_failed(tmp_path: Path, vendor):
    path = tmp_path / "gateway.yaml"
    raw = {"database": str(tmp_path / "usage.db"), **config(channel("main", vendor))}
    path.write_text(yaml.safe_dump(raw))
    runtime = Runtime(load_config(path, providers=CHANNEL_PROVIDERS).config, str(path))
    server = TestServer(create_app(runtime), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    try:
        assert (await get(url, "/readyz"))[0] == 200
        status, body = await get(url, "/admin/status", ADMIN)
        assert body["config"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

        path.write_text(yaml.safe_dump({**raw, "routing": {"retries": -1}}))
        assert runtime.reload() is False
        status, body = await get(url, "/readyz")
        assert status == 503
        assert "reload failed" in body["reason"] and "routing.retries" in body["reason"]
        status, body = await get(url, "/admin/status", ADMIN)
        assert "routing.retries" in body["config"]["last_reload_error"]
        assert await post(url, BODY) == 200  # the old config still serves
        metrics = await scrape(url, ADMIN)
        assert value(metrics, "gateway_config_reloads_total", outcome="failed") == 1

        path.write_text(yaml.safe_dump({**raw, "routing": {"retries": 1}}))
        assert runtime.reload() is True
        assert (await get(url, "/readyz"))[0] == 200
        status, body = await get(url, "/admin/status", ADMIN)
        assert body["config"]["last_reload_error"] is None
        new_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert body["config"]["sha256"] == new_sha and body["config"]["generation"] == 2
        metrics = await scrape(url, ADMIN)
        assert value(metrics, "gateway_config_reloads_total", outcome="ok") == 1
        assert value(metrics, "gateway_config_info", sha256=new_sha) == 1
    finally:
        await server.close()


def test_admin_keys_are_validated_like_keys():
    from config import ConfigError, parse_config

    def problems(text: str) -> str:
        try:
            parse_config(text, env={})
        except ConfigError as exc:
            return str(exc)
        return ""

    assert "admin_keys[0]: needs exactly one of key or key_sha256" in problems("admin_keys: [{name: ops}]")
    assert "admin_keys[0].key_sha256: must be 64 hex digits" in problems("admin_keys: [{name: ops, key_sha256: xyz}]")
    assert "admin_keys[1].name: duplicate" in problems("admin_keys: [{name: ops, key: a}, {name: ops, key: b}]")
    assert "same secret as client key 'app'" in problems(
        f"keys: [{{name: app, key: {ADMIN_KEY}}}]\nadmin_keys: [{{name: ops, key: {ADMIN_KEY}}}]")
    assert "metrics_listen" in problems("metrics_listen: nowhere")
    assert "metrics_listen: 127.0.0.1:8080 is the listen address" in problems("metrics_listen: 127.0.0.1:8080")
    assert "admin_keys[0].key: is empty" in problems("admin_keys: [{name: ops, key: ''}]")
