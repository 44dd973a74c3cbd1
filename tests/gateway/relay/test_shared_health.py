"""Channel key cooldowns shared by replicas through Redis (gateway.relay.shared_health), on a real server.

Two gateway apps on one Redis are two replicas. Without a reachable server these tests skip
(tests.redisstate).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from config import Channel, GlobSet
from gateway.relay.health import Health, key_id
from tests.conftest import KEYS, Gateway, channel
from tests.procs import free_port
from tests.redisstate import Shared, shared_redis

shared_health = pytest.importorskip("gateway.relay.shared_health", reason="the `redis` package (extra `scale`) is not installed")


@pytest.fixture
async def shared():
    async with shared_redis() as s:
        yield s


def replica(vendor: Any, state: dict[str, Any]) -> dict[str, Any]:
    dead = {"name": "dead", "provider": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "api_keys": ["vk-dead-secret"], "models": ["gpt-*"], "priority": 10}
    return {"keys": KEYS, "routing": {"failure_threshold": 1, "cooldown_s": 60},
            "channels": [dead, channel("good", vendor)], "state": state}  # fmt: skip


async def ask(gw: Gateway) -> Any:
    return await gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )


async def test_one_replicas_cooldown_spares_the_other(gateway_factory, vendor, shared: Shared):
    config = replica(vendor, shared.state())
    a = await gateway_factory(config)
    b = await gateway_factory(config)
    assert (await ask(a)).http_response.status_code == 200  # the dead channel first, then the good one
    assert [(r["attempts"], r["channel"]) for r in await a.rows()] == [(2, "good")]
    dead = b.runtime.config.channels[0]
    deadline = time.monotonic() + 5
    while b.runtime.health.status(dead)[0].usable:  # B hears of it within the sync interval
        assert time.monotonic() < deadline, "the other replica never heard of the cooldown"
        await asyncio.sleep(0.05)
    assert 55 < b.runtime.health.status(dead)[0].cooldown_s <= 60
    assert (await ask(b)).http_response.status_code == 200
    assert [(r["attempts"], r["channel"]) for r in await b.rows()][-1] == (1, "good")  # straight to the good one
    members = await shared.client.zrange(f"{shared.prefix}:{{health}}:cool", 0, -1)
    assert members == [f"{key_id('vk-dead-secret')}:dead".encode()]  # the key's id, never the key


async def test_without_redis_each_replica_keeps_its_own_health(gateway_factory, vendor):
    gw = await gateway_factory(replica(vendor, {"redis": f"redis://127.0.0.1:{free_port()}/0"}))  # nothing listens there
    for attempts in (2, 1):  # the cooldown holds locally all the same
        assert (await ask(gw)).http_response.status_code == 200
        assert (await gw.rows())[-1]["attempts"] == attempts


def test_a_shared_cooldown_is_taken_once():
    now = [1000.0]
    health = Health(lambda: now[0])
    a = Channel(name="a", provider="openai", platform="openai", base_url="http://x", api_keys=("k1",), models=GlobSet(("*",)))
    health.cool_shared(a, "k1", 30, mark=5000.0)
    assert health.cooling(a)
    now[0] += 31
    assert health.pick_key(a) == "k1"  # the probe after it
    health.success(a, "k1")
    health.cool_shared(a, "k1", 1, mark=5000.0)  # the same cooldown, read again before it left the set
    assert not health.cooling(a)
    health.cool_shared(a, "k1", 30, mark=9000.0)  # another replica found it dead again
    assert health.cooling(a)
