"""The real process: SIGHUP reload (good and broken files), SIGTERM, and no secrets in its logs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3

import aiohttp
import openai
import pytest

from tests.conftest import channel
from tests.fakesurface import FakeSurface
from tests.procs import GatewayProcess

CLIENT_KEY = "client-secret-key-123456"


@pytest.fixture
async def proc_factory(tmp_path):
    procs: list[GatewayProcess] = []

    async def make(config, env=None):
        p = GatewayProcess(tmp_path, config, env)
        procs.append(p)
        return await p.start()

    yield make
    for p in procs:
        p.kill()


async def test_sighup_reload_good_then_broken(vendor_factory, proc_factory):
    a = await vendor_factory("a", chunks=6, chunk_delay=0.15)
    b = await vendor_factory("b")
    keys = [{"name": "app1", "key": CLIENT_KEY}]
    gw = await proc_factory({"keys": keys, "channels": [channel("a", a)]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        r = await client.chat.completions.create(model="gpt-4o", messages=[])
        assert r.choices[0].message.content == "hello from a"

        # A stream in flight when the config changes finishes on the config it started with.
        stream = await client.chat.completions.create(model="gpt-4o", messages=[], stream=True)
        first = await stream.__anext__()
        assert first.choices[0].delta.content == "tok0 "

        gw.write_config({**gw.config, "keys": keys, "channels": [channel("b", b)]})
        gw.signal(signal.SIGHUP)
        await gw.wait_log('"config_reloaded"')
        rest = [c.choices[0].delta.content async for c in stream if c.choices]
        assert rest == [f"tok{i} " for i in range(1, 6)]
        r = await client.chat.completions.create(model="gpt-4o", messages=[])
        assert r.choices[0].message.content == "hello from b"

        gw.write_config("channels: [\n  {name: broken\n")
        gw.signal(signal.SIGHUP)
        await gw.wait_log('"config_reload_failed"')
        r = await client.chat.completions.create(model="gpt-4o", messages=[])
        assert r.choices[0].message.content == "hello from b"

    assert await gw.stop() == 0
    logs = gw.logs()
    assert '"event":"stopped"' in logs
    db = sqlite3.connect(gw.config["database"])
    rows = db.execute("SELECT channel, status, stream FROM usage ORDER BY id").fetchall()
    db.close()
    assert rows == [("a", 200, 0), ("a", 200, 1), ("b", 200, 0), ("b", 200, 0)]


async def test_no_keys_in_logs_errors_or_rows(vendor_factory, proc_factory):
    vendor_key = "sk-vendor-SECRET-abcdefghijklmnop"
    v = await vendor_factory("v")
    # The vendor echoes the key back in an error body, as some do.
    from tests.fakevendor import Fault

    v.faults.append(Fault("status", status=400, body={"error": {"message": f"bad key {vendor_key} for request"}}))
    gw = await proc_factory(
        {"keys": [{"name": "app1", "key": "${APP_KEY}"}],
         "channels": [channel("v", v, api_keys=["${VENDOR_KEY}"])]},
        env={"APP_KEY": CLIENT_KEY, "VENDOR_KEY": vendor_key},
    )
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=[])
        assert vendor_key not in str(info.value.body)
        await client.chat.completions.create(model="gpt-4o", messages=[], stream=True)
        async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="wrong-" + CLIENT_KEY, max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(model="gpt-4o", messages=[])
    assert v.requests[0].headers["Authorization"] == f"Bearer {vendor_key}"
    assert await gw.stop() == 0
    logs = gw.logs()
    assert '"event":"request"' in logs and '"request_id"' in logs
    db_dump = "\n".join(sqlite3.connect(gw.config["database"]).iterdump())
    for secret in (vendor_key, CLIENT_KEY, "SECRET"):
        assert secret not in logs
        assert secret not in db_dump
    await asyncio.sleep(0)


async def _raw(port: int, head: bytes) -> bytes:
    """Send one raw request head (bytes no HTTP client would send) and return the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return answer


async def test_a_client_key_planted_in_every_header_form_stays_out_of_the_logs(proc_factory):
    # Not sk-shaped, so only the gateway's knowledge of where keys travel can keep it out.
    key = "plantedKEY7x9q2w"
    async with FakeSurface().running() as surface:
        channel_ = {"name": "s", "provider": "openai", "base_url": surface.base_url, "api_keys": ["vk-s-secret"],
                    "models": ["gpt-*"]}
        gw = await proc_factory({"keys": [{"name": "app1", "key": key}], "channels": [channel_]})
        body = b'{"model":"gpt-4o","messages":[]}'
        for header in (b"Authorization: Bearer %s", b"Authorization: %s", b"Authorization: Basic %s", b"X-API-Key: %s",
                       b"x-goog-api-key: %s", b"Api-Key: %s", b"Proxy-Authorization: Bearer %s"):
            line = header % key.encode()
            for value_end in (b"", b"\x01", b"\x7f"):  # a control character makes the HTTP parser refuse the line
                await _raw(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + line + value_end
                           + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await _raw(gw.port, b"POST /v1beta/models/gemini-x:generateContent?key=%s HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 2\r\n\r\n{}" % key.encode())
        await _raw(gw.port, b"GET /v1/models?key=%s\x01 HTTP/1.1\r\nHost: x\r\n\r\n" % key.encode())
        # A browser's realtime key rides in a subprotocol; offered alone, nothing overlaps and aiohttp warns.
        async with aiohttp.ClientSession() as http:
            for offered in ([f"openai-insecure-api-key.{key}"], ["realtime", f"openai-insecure-api-key.{key}"]):
                async with http.ws_connect(f"{gw.url}/v1/realtime?model=gpt-realtime", protocols=offered) as ws:
                    await ws.receive_json()
        assert await gw.stop() == 0
    logs = gw.logs()
    assert "bad_http_request" in logs and "overlap" in logs  # the paths under audit were taken
    assert key not in logs and key[:8] not in logs


@pytest.mark.slow  # run by `make test` and CI; `make test-fast` leaves it out
async def test_slowloris_connections_are_cut_and_health_stays_reachable(vendor_factory, proc_factory):
    v = await vendor_factory("v")
    gw = await proc_factory({"keys": [{"name": "app1", "key": CLIENT_KEY}], "channels": [channel("v", v)],
                             "limits": {"max_connections": 20, "header_timeout_s": 0.5, "idle_timeout_s": 1.0,
                                        "body_timeout_s": 0.5}})
    dripping = []
    for _ in range(40):  # twice the cap, each a head begun and never ended
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Drip-0: a")
        dripping.append((reader, writer))
    silent = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(3)]  # never send a byte
    async with aiohttp.ClientSession() as http:  # a new client still gets in: the longest-waiting drip makes room
        for _ in range(3):
            async with http.get(gw.url + "/healthz") as r:
                assert r.status == 200
    for i in range(1, 4):  # keep dripping, a byte at a time, well inside any per-byte timeout
        for _, writer in dripping:
            with contextlib.suppress(ConnectionError):  # one the gateway has cut already
                if not writer.is_closing():
                    writer.write(b"\r\nX-Drip-%d: a" % i)
        await asyncio.sleep(0.3)
    for reader, _ in dripping + silent:  # every one is cut: a head has 0.5 s, an idle connection 1 s
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:  # cut while the test was still writing to it
            continue
        assert answer in (b"", b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    # A body that stops half-way gets a 408 once it has been silent for body_timeout_s.
    body_reader, body_writer = await asyncio.open_connection("127.0.0.1", gw.port)
    body_writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + CLIENT_KEY.encode()
                      + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
    head = await asyncio.wait_for(body_reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408")
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/healthz") as r:
        counters = (await r.json())["connections"]
    for _, writer in [*dripping, *silent, (body_reader, body_writer)]:
        writer.close()
    assert await gw.stop() == 0
    logs = gw.logs()
    assert '"event":"connections_cut"' in logs
    assert counters["max"] == 20 and counters["timed_out"] + counters["evicted"] >= 20  # the metric until /metrics
