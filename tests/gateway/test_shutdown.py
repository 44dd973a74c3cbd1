"""SIGTERM on the real process: stop accepting, let streams finish up to the deadline, flush usage, exit 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3

import aiohttp
import openai
import pytest

from tests.conftest import channel
from tests.fakevendor import Fault
from tests.faultkit import MESSAGES, collect, eventually
from tests.procs import GatewayProcess

KEY = "shutdown-test-key"
KEYS = [{"name": "app1", "key": KEY}]


@pytest.fixture
async def start_gateway(tmp_path):
    procs: list[GatewayProcess] = []

    async def start(config):
        p = GatewayProcess(tmp_path, {"keys": KEYS, **config})
        procs.append(p)
        return await p.start()

    yield start
    for p in procs:
        p.kill()


def rows(gw: GatewayProcess) -> list[tuple]:
    db = sqlite3.connect(gw.config["database"])
    try:
        return db.execute(
            "SELECT status, stream, completion_tokens, estimated, error FROM usage ORDER BY id").fetchall()
    finally:
        db.close()


async def exit_code(gw: GatewayProcess, timeout: float = 20.0) -> int:
    """Wait for the process to exit on its own (stop() would signal it again)."""
    assert gw.proc is not None
    await eventually(lambda: gw.proc.poll() is not None, timeout=timeout, what="the gateway to exit")
    return await gw.stop()


async def refused(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url + "/healthz") as r:
            await r.read()
    except aiohttp.ClientConnectorError:
        return True
    return False


async def test_streams_in_flight_finish_then_exit_0(vendor_factory, start_gateway):
    vendor = await vendor_factory("v", chunks=8, chunk_delay=0.1)
    gw = await start_gateway({"shutdown_grace_s": 20, "channels": [channel("v", vendor)]})
    clients = [openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) for _ in range(3)]
    try:
        streams = [await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) for c in clients]
        firsts = [await s.__anext__() for s in streams]
        assert all(f.choices[0].delta.content == "tok0 " for f in firsts)
        gw.signal(signal.SIGTERM)
        # The listener closes at once: no new connections while the streams drain.
        probe_refused = False
        for _ in range(100):
            if probe_refused := await refused(gw.url):
                break
            await asyncio.sleep(0.02)
        assert probe_refused
        results = await asyncio.gather(*(collect(s) for s in streams))
    finally:
        for c in clients:
            await c.close()
    for texts, err in results:
        assert err is None
        assert texts == [f"tok{i} " for i in range(1, 8)]
    assert await exit_code(gw) == 0
    assert rows(gw) == [(200, 1, 8, 0, None)] * 3
    assert '"event":"stopped"' in gw.logs()


async def test_deadline_ends_streams_with_an_error_event_and_rows(vendor_factory, start_gateway):
    vendor = await vendor_factory("v", chunks=1000, chunk_delay=0.05)
    gw = await start_gateway({"shutdown_grace_s": 0.5, "channels": [channel("v", vendor)]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        await stream.__anext__()
        vendor.fail_next(Fault("hang"))
        waiting = asyncio.create_task(client.chat.completions.create(model="gpt-4o", messages=MESSAGES))
        await eventually(lambda: len(vendor.requests) == 2, what="the second request to reach the vendor")
        gw.signal(signal.SIGTERM)
        texts, err = await collect(stream)
        assert err is not None and err.code == "shutting_down"
        assert 0 < len(texts) < 999
        with pytest.raises(openai.APIStatusError) as info:
            await waiting
        assert info.value.status_code == 503
        assert info.value.body["code"] == "shutting_down"
    assert await exit_code(gw) == 0
    assert "Traceback" not in gw.logs(), gw.logs()
    await eventually(lambda: vendor.disconnects == 2, what="both vendor connections to close")
    got = rows(gw)
    assert sorted(r[:2] for r in got) == [(503, 0), (503, 1)]
    stream_row = next(r for r in got if r[1] == 1)
    assert stream_row[2] > 0 and stream_row[3] == 1  # tokens so far, estimated
    assert all("shutting down" in r[4] for r in got)


async def test_queued_usage_is_flushed_on_sigterm(vendor, start_gateway):
    gw = await start_gateway({"channels": [channel("v", vendor)]})
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        for _ in range(40):
            async with s.post(gw.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []}) as r:
                assert r.status == 200
    assert await gw.stop() == 0
    assert len(rows(gw)) == 40


async def test_second_sigterm_cuts_the_grace_short(vendor_factory, start_gateway):
    vendor = await vendor_factory("v", chunks=1000, chunk_delay=0.05)
    gw = await start_gateway({"shutdown_grace_s": 60, "channels": [channel("v", vendor)]})
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        await stream.__anext__()
        gw.signal(signal.SIGTERM)
        await gw.wait_log('"shutting_down"')
        await stream.__anext__()  # still streaming within the grace
        gw.signal(signal.SIGTERM)
        _, err = await collect(stream)
        assert err is not None and err.code == "shutting_down"
    assert await exit_code(gw) == 0
    assert [r[:2] for r in rows(gw)] == [(503, 1)]


async def test_answers_during_the_drain_tell_keep_alive_clients_to_close(vendor_factory, start_gateway):
    vendor = await vendor_factory("slow")
    for _ in range(6):
        vendor.faults.append(Fault("slow", seconds=0.6))
    gw = await start_gateway({"channels": [channel("a", vendor)], "shutdown_grace_s": 10})
    body = b'{"model":"gpt-4o","messages":[]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
               b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    conns = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(6)]
    idle = await asyncio.open_connection("127.0.0.1", gw.port)  # kept alive, no request in flight
    for _, writer in conns:
        writer.write(request)
    await eventually(lambda: len(vendor.requests) == 6, what="six requests in flight")
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    for reader, writer in conns:  # in flight when the drain began: answered, and told to close
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).lower()
        assert head.startswith(b"http/1.1 200") and b"connection: close" in head
        writer.close()
    assert await asyncio.wait_for(idle[0].read(), 10) == b""  # the idle keep-alive one is closed cleanly
    idle[1].close()
    assert await exit_code(gw) == 0
