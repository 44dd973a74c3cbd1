"""Two replicas on one PostgreSQL: a task created on one is read on the other, one replica polls (the
advisory lock's holder), and the other takes over when it goes; one usage row whoever settles. With
Redis too, a task's status is read from Redis on either replica (gateway.tasks.cache)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.state import SERVICES
from tests.faketasks import PENDING, RUNNING, SUCCEEDED, FakeTasks
from tests.pgstate import Pg, fresh_schema

VENDOR_KEY = "vendor-key"


@pytest.fixture
async def pg() -> AsyncIterator[Pg]:
    async with fresh_schema() as pg:
        yield pg


@pytest.fixture
async def shared() -> AsyncIterator[Any]:
    from tests import redisstate  # here, not above: the other tests need neither redis-py nor a server

    async with redisstate.shared_redis() as s:
        yield s


@pytest.fixture
async def fake() -> AsyncIterator[FakeTasks]:
    async with FakeTasks(api_key=VENDOR_KEY, file_size=4096) as fake:
        yield fake


def replica(pg: Pg, tmp_path: Path, fake: FakeTasks, name: str) -> dict[str, Any]:
    return {
        "database": pg.url,
        "spool": str(tmp_path / name / "rows.jsonl"),  # each replica's own files
        "keys": [{"name": "app1", "key": "key-one"}, {"name": "app2", "key": "key-two"}],
        "channels": [{"name": "wan", "provider": "dashscope", "base_url": fake.url, "api_keys": [VENDOR_KEY],
                      "models": ["wan2.6-t2v"]}],
        "models": {"wan2.6-t2v": {"catalog": "t2v", "price": {"per_second": 0.5}}},
        "tasks": {"poll_interval_s": 0.05},
    }  # fmt: skip


async def call(url: str, method: str, path: str, key: str = "key-one", **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url + path, headers={"Authorization": f"Bearer {key}"}, **kw) as r:
        return r.status, await r.json(content_type=None)


async def test_a_task_made_on_one_replica_is_read_and_finished_on_the_other(pg, tmp_path, fake, gateway_factory):
    a = await gateway_factory(replica(pg, tmp_path, fake, "a"))
    b = await gateway_factory(replica(pg, tmp_path, fake, "b"))
    store_a, store_b = a.server.app[SERVICES].tasks.store, b.server.app[SERVICES].tasks.store
    assert [await store_a.lead(), await store_b.lead()].count(True) == 1  # one replica polls
    leader, other = (a, b) if await store_a.lead() else (b, a)
    fake.script_next(PENDING, *[RUNNING] * 10, SUCCEEDED)
    status, created = await call(other.url, "POST", "/v1/video/generations", json={"model": "wan2.6-t2v", "prompt": "x"})
    assert status == 200, created
    status, seen = await call(leader.url, "GET", f"/v1/tasks/{created['id']}")
    assert status == 200 and seen["id"] == created["id"]  # read on the other replica
    status, _ = await call(leader.url, "GET", f"/v1/tasks/{created['id']}", key="key-two")
    assert status == 404  # and still only by its own key
    await asyncio.sleep(0.2)
    await leader.server.close()  # the polling replica goes away mid-task: the other takes over
    for _ in range(200):
        status, seen = await call(other.url, "GET", f"/v1/tasks/{created['id']}")
        if seen["status"] == "SUCCEEDED":
            break
        await asyncio.sleep(0.05)
    assert seen["status"] == "SUCCEEDED"
    rows = await pg.fetch("SELECT task_id, cost FROM usage WHERE task_id IS NOT NULL")
    assert rows == [(created["id"], pytest.approx(5 * 0.5))]


def counting(read: Callable[..., Awaitable[Any]], reads: list[str]) -> Callable[..., Awaitable[Any]]:
    async def counted(*args: Any) -> Any:
        reads.append(read.__name__)
        return await read(*args)

    return counted


async def test_a_status_read_on_either_replica_is_served_from_redis(
    pg, shared, tmp_path, fake, gateway_factory, monkeypatch
):
    a = await gateway_factory({**replica(pg, tmp_path, fake, "a"), "state": shared.state()})
    b = await gateway_factory({**replica(pg, tmp_path, fake, "b"), "state": shared.state()})
    fake.script_next(PENDING, RUNNING, SUCCEEDED)
    status, created = await call(a.url, "POST", "/v1/video/generations", json={"model": "wan2.6-t2v", "prompt": "x"})
    assert status == 200, created
    for _ in range(200):  # finished by whichever replica polls
        status, seen = await call(b.url, "GET", f"/v1/tasks/{created['id']}")
        if seen["status"] == "SUCCEEDED":
            break
        await asyncio.sleep(0.05)
    entry = orjson.loads(await shared.client.get(f"{shared.prefix}:{{t:{created['id']}}}"))
    assert (entry["status"], entry["key_name"], entry["billing"]) == ("SUCCEEDED", "app1", "billed")
    reads: list[str] = []
    for gw in (a, b):
        inner = gw.server.app[SERVICES].tasks.store.inner  # the PgTaskStore behind the cache
        for name in ("get", "get_any"):
            monkeypatch.setattr(inner, name, counting(getattr(inner, name), reads))
    for gw in (a, b):
        status, seen = await call(gw.url, "GET", f"/v1/tasks/{created['id']}")
        assert status == 200 and seen["status"] == "SUCCEEDED" and seen["id"] == created["id"]
        status, _ = await call(gw.url, "GET", f"/v1/tasks/{created['id']}", key="key-two")
        assert status == 404  # the cached row has an owner too
    assert reads == []  # every answer came from Redis
