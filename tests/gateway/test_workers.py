"""`workers: 2`: two processes on one port, every request's usage row written, signals reach both."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3

import aiohttp
import orjson
import pytest

from tests.conftest import channel
from tests.procs import GatewayProcess

CLIENT_KEY = "client-secret-key-workers"
REQUESTS = 300


@pytest.fixture
async def workers_gateway(tmp_path, vendor):
    gw = GatewayProcess(tmp_path, {"workers": 2, "keys": [{"name": "app1", "key": CLIENT_KEY}],
                                   "channels": [channel("main", vendor)]})
    await gw.start()
    yield gw
    gw.kill()


def _pids(logs: str, event: str) -> set[str]:
    return {line.split('"pid":')[1].split(",")[0] for line in logs.splitlines() if f'"event":"{event}"' in line}


async def _wait_count(gw: GatewayProcess, needle: str, count: int) -> None:
    for _ in range(200):
        if gw.logs().count(needle) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} x {needle} in:\n{gw.logs()}")


async def test_two_workers_share_the_port_and_lose_no_row(workers_gateway):
    gw = workers_gateway
    await _wait_count(gw, '"event":"listening"', 2)
    assert len(_pids(gw.logs(), "listening")) == 2  # two processes, each with its own socket on the port

    # A new connection per request lets the kernel spread them over both workers.
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

        async def one(i: int) -> int:
            payload = {**body, "stream": i % 3 == 0}
            async with session.post(gw.url + "/v1/chat/completions", json=payload, headers=headers) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    assert statuses == [200] * REQUESTS

    gw.signal(signal.SIGHUP)  # reaches every worker through the parent
    await _wait_count(gw, '"event":"config_reloaded"', 2)

    assert await gw.stop() == 0  # the parent exits 0 once both workers drained and flushed
    db = sqlite3.connect(gw.config["database"])
    try:
        rows = db.execute("SELECT count(*), count(DISTINCT request_id), sum(status = 200) FROM usage").fetchone()
    finally:
        db.close()
    assert rows == (REQUESTS, REQUESTS, REQUESTS)
    assert '{"failed":false,"event":"workers_stopped"' in gw.logs()

    # Every line says which process wrote it: the workers 0 and 1 by their pids, the parent as worker null.
    lines = [orjson.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
    assert all("pid" in line and "worker" in line for line in lines)
    listening = {line["worker"]: line["pid"] for line in lines if line["event"] == "listening"}
    assert sorted(listening) == [0, 1] and len(set(listening.values())) == 2
    served = {(line["worker"], line["pid"]) for line in lines if line["event"] == "request"}
    assert served and served <= set(listening.items())  # each request line under its worker's own name
    parent = {(line["worker"], line["pid"]) for line in lines if line["event"] in ("workers_started", "workers_stopped")}
    assert gw.proc is not None and parent == {(None, gw.proc.pid)}


async def test_a_worker_that_dies_is_replaced(workers_gateway):
    gw = workers_gateway
    await _wait_count(gw, '"event":"listening"', 2)
    first = sorted(_pids(gw.logs(), "listening"))
    os.kill(int(first[0]), signal.SIGKILL)
    await _wait_count(gw, '"event":"listening"', 3)
    assert '"event":"worker_died"' in gw.logs()
    assert await gw.stop() == 0


async def test_workers_that_cannot_start_stop_the_gateway(tmp_path, vendor):
    gw = GatewayProcess(tmp_path, {"workers": 2, "channels": [channel("main", vendor)]})
    with socket.socket() as taken:  # the port is held without SO_REUSEPORT: no worker can bind it
        taken.bind(("127.0.0.1", gw.port))
        try:
            with pytest.raises(RuntimeError, match="exited with 1"):
                await gw.start()
        finally:
            gw.kill()
    assert '"event":"worker_died"' in gw.logs() and '"served":false' in gw.logs()
