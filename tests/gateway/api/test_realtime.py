"""GET /v1/realtime: a WebSocket proxied both ways, authenticated first, usage summed over responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.state import SERVICES
from tests.conftest import KEYS
from tests.fakesurface import FakeSurface


@pytest.fixture
async def surface() -> AsyncIterator[FakeSurface]:
    async with FakeSurface().running() as s:
        yield s


def ch(surface: FakeSurface, **kw: Any) -> dict[str, Any]:
    return {"name": "surf", "provider": "openai", "base_url": surface.base_url, "api_keys": ["vk-surf-secret"],
            "models": ["gpt-realtime*"], **kw}


async def rows_when_done(gw: Any, n: int = 1) -> list[dict[str, Any]]:
    """The session's row is written when the gateway's handler ends, just after the client's close."""
    for _ in range(100):
        rows = await gw.rows()
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {n} usage rows")


async def test_openai_client_session_both_ways_with_usage(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface, model_map={"gpt-realtime": "gpt-realtime-2025-08-28"})]})
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created" and created.session.model == "gpt-realtime-2025-08-28"
        await conn.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}})
        echo = orjson.loads(await conn.recv_bytes())
        assert echo["type"] == "echo" and echo["received"]["item"]["content"][0]["text"] == "hello"
        for _ in range(2):
            await conn.response.create()
            kinds = []
            while True:
                event = await conn.recv()
                kinds.append(event.type)
                if event.type == "response.done":
                    break
            assert kinds == ["response.output_text.delta", "response.done"]
    seen = surface.sessions[-1]
    assert seen.headers["Authorization"] == "Bearer vk-surf-secret"
    assert seen.query == {"model": "gpt-realtime-2025-08-28"}
    row = (await rows_when_done(gw))[0]
    assert (row["endpoint"], row["model"], row["upstream_model"], row["channel"], row["key_name"]) == (
        "realtime", "gpt-realtime", "gpt-realtime-2025-08-28", "surf", "app1")
    assert (row["stream"], row["status"], row["attempts"]) == (1, 101, 1)
    # Two responses: 20+40 in, 10+20 out, 1+2 cached, summed over the session.
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["cached_tokens"]) == (60, 30, 90, 3)
    assert row["error"] is None and row["estimated"] == 0


async def test_browser_subprotocol_key_stays_at_the_gateway(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface)]})
    protocols = ["realtime", "openai-insecure-api-key.test-key", "openai-beta.realtime-v1"]
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/v1/realtime?model=gpt-realtime", protocols=protocols) as ws:
        assert ws.protocol == "realtime"
        assert (await ws.receive_json())["type"] == "session.created"
        await ws.send_bytes(b"\x01\x02\x03")
        assert await ws.receive_bytes() == b"\x03\x02\x01"
    seen = surface.sessions[-1]
    assert "test-key" not in str(seen.headers)
    assert seen.headers["Sec-WebSocket-Protocol"] == "realtime,openai-beta.realtime-v1"
    assert seen.headers["Authorization"] == "Bearer vk-surf-secret"


async def test_vendor_close_code_reaches_the_client(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface)]})
    headers = {"Authorization": "Bearer test-key"}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/v1/realtime?model=gpt-realtime", headers=headers) as ws:
        await ws.receive_json()
        await ws.send_json({"type": "test.close"})
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4000
    row = (await rows_when_done(gw))[0]
    assert "code 4000" in row["error"]


async def test_refused_before_any_upstream_contact(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface)]})
    url = f"{gw.url}/v1/realtime"
    async with aiohttp.ClientSession() as http:
        for params, headers, status in (
            ({"model": "gpt-realtime"}, {}, 401),
            ({"model": "gpt-realtime"}, {"Authorization": "Bearer wrong"}, 401),
            ({"model": "other-model"}, {"Authorization": "Bearer test-key"}, 404),
            ({}, {"Authorization": "Bearer test-key"}, 400),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await http.ws_connect(url, params=params, headers=headers)
            assert exc.value.status == status
        async with http.get(url, params={"model": "gpt-realtime"}, headers={"Authorization": "Bearer test-key"}) as r:
            body = await r.json()
        assert r.status == 400 and body["error"]["code"] == "websocket_required"
    assert surface.sessions == []


async def test_fails_over_to_a_channel_that_accepts(surface, gateway_factory):
    channels = [
        {"name": "down", "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_keys": ["vk-down"],
         "models": ["gpt-realtime"], "priority": 10},
        ch(surface),
    ]
    gw = await gateway_factory({"keys": KEYS, "channels": channels})
    async with gw.client().realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
    row = (await rows_when_done(gw))[0]
    assert (row["attempts"], row["channel"]) == (2, "surf")


async def test_vendor_refusal_is_not_retried_and_names_the_status(gateway_factory):
    async def refuse(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"error": {"message": "model not found"}}, status=404)

    app = aiohttp.web.Application()
    app.router.add_get("/v1/realtime", refuse)
    server = aiohttp.test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        refusing = {"name": "refuser", "provider": "openai", "base_url": str(server.make_url("/v1")), "models": ["gpt-realtime"]}
        gw = await gateway_factory({"keys": KEYS, "channels": [refusing]})
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gw.url}/v1/realtime?model=gpt-realtime", headers={
                "Authorization": "Bearer test-key", "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
                body = await r.json()
        assert r.status == 404 and "refuser" in body["error"]["message"]
    finally:
        await server.close()


async def test_vendor_that_answers_without_upgrading_is_failed_over(surface, gateway_factory):
    async def plain(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"ok": True})  # 200, but no WebSocket

    app = aiohttp.web.Application()
    app.router.add_get("/v1/realtime", plain)
    server = aiohttp.test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        channels = [
            {"name": "plain", "provider": "openai", "base_url": str(server.make_url("/v1")),
             "models": ["gpt-realtime"], "priority": 10},
            ch(surface),
        ]
        gw = await gateway_factory({"keys": KEYS, "channels": channels})
        async with gw.client().realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
        row = (await rows_when_done(gw))[0]
        assert (row["attempts"], row["channel"]) == (2, "surf")
    finally:
        await server.close()


async def test_session_closed_going_away_at_the_drain_deadline(surface, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [ch(surface)]})
    headers = {"Authorization": "Bearer test-key"}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{gw.url}/v1/realtime?model=gpt-realtime", headers=headers) as ws:
        await ws.receive_json()
        gw.server.app[SERVICES].drain.begin(0.1)  # what SIGTERM does, with a short grace
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
    row = (await rows_when_done(gw))[0]
    assert row["error"].startswith("gateway shutting down")
