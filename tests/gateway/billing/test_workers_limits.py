"""Limits hold across `workers: 2` (one set of counters, not one per process), SIGHUP and a restart."""

from __future__ import annotations

import asyncio
import signal

import aiohttp

from tests.conftest import channel
from tests.procs import GatewayProcess

BODY = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 8,
}


async def burst(gw: GatewayProcess, key: str, n: int) -> list[int]:
    """`n` requests at once, each on its own connection so the kernel spreads them over the workers."""
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

        async def one() -> int:
            async with session.post(gw.url + "/v1/chat/completions", json=BODY, headers=headers) as r:
                await r.read()
                return r.status

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_two_workers_grant_one_rpm_and_a_restart_keeps_the_spend(tmp_path, vendor):
    config = {
        "workers": 2,
        "keys": [
            {"name": "fast", "key": "fast-key", "rpm": 10},
            {"name": "paid", "key": "paid-key", "budget": 0.03},
        ],
        "channels": [channel("main", vendor)],
        "models": {"gpt-4o": {"price": {"input": 1000, "output": 2000}}},  # 0.017 a request
    }
    gw = GatewayProcess(tmp_path, config)
    await gw.start()
    try:
        for _ in range(100):  # both workers listening
            if gw.logs().count('"event":"listening"') >= 2:
                break
            await asyncio.sleep(0.05)
        statuses = await burst(gw, "fast-key", 40)
        assert statuses.count(200) == 10 and statuses.count(429) == 30
        assert {line.split('"pid":')[1].split(",")[0] for line in gw.logs().splitlines() if '"status":200' in line}
        # A reload keeps the minute's count.
        gw.signal(signal.SIGHUP)
        await gw.wait_log('"event":"config_reloaded"')
        assert await burst(gw, "fast-key", 3) == [429] * 3
        assert (await burst(gw, "paid-key", 1), await burst(gw, "paid-key", 1)) == (
            [200],
            [200],
        )
        assert await burst(gw, "paid-key", 1) == [429]  # 0.034 spent of 0.03
        assert await gw.stop() == 0
        await gw.start()
        assert await burst(gw, "paid-key", 1) == [429]  # spend rebuilt from the database
        assert '"event":"budgets_rebuilt"' in gw.logs()
    finally:
        gw.kill()
