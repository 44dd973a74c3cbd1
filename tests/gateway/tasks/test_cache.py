"""The task rows cached in Redis (gateway.tasks.cache), against a real Redis server.

Two `CachedTaskStore`s over one SQLite file and one Redis are two replicas; each one's inner store
counts its reads, so a test sees which answers came from Redis. The `TaskStore` contract of
test_store.py runs over the cached store too. Without a Redis server these tests skip (tests.redisstate).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.tasks.model import BILLED, Task
from gateway.tasks.store import SqliteTaskStore, TaskStore
from providers.tasks.base import RUNNING, SUCCEEDED
from tests.gateway.tasks import test_store as contract
from tests.gateway.tasks.test_store import StoreFactory, make_task, open_stores, usage_row
from tests.redisstate import RedisProxy, Shared, shared_redis

cache = pytest.importorskip("gateway.tasks.cache", reason="the `redis` package (extra `scale`) is not installed")
redis_counters = pytest.importorskip("gateway.billing.redis_counters")
failover = pytest.importorskip("gateway.billing.failover")


@pytest.fixture
async def shared() -> AsyncIterator[Shared]:
    async with shared_redis() as s:
        yield s


class CountingStore(SqliteTaskStore):
    """The inner store, counting the reads that reach it."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reads = 0

    async def get(self, task_id: str, key_name: str) -> Task | None:
        self.reads += 1
        return await super().get(task_id, key_name)

    async def get_any(self, task_id: str) -> Task | None:
        self.reads += 1
        return await super().get_any(task_id)


@dataclass
class Replica:
    store: Any  # gateway.tasks.cache.CachedTaskStore
    inner: CountingStore
    fallbacks: list[tuple[str, str]]


@pytest.fixture
async def replicas(tmp_path: Path, shared: Shared) -> AsyncIterator[Callable[..., Awaitable[Replica]]]:
    """`await replicas(url=..., **CachedTaskStore args)`: a replica's store on the test's database file and Redis."""
    opened: list[Replica] = []

    async def make(url: str | None = None, **kw: Any) -> Replica:
        inner = CountingStore(str(tmp_path / "gateway.db"))
        fallbacks: list[tuple[str, str]] = []
        client = redis_counters.connect(url or shared.url)
        store = cache.CachedTaskStore(inner, client, prefix=shared.prefix, count=lambda *a: fallbacks.append(a), **kw)
        await store.start()
        opened.append(r := Replica(store, inner, fallbacks))
        return r

    yield make
    for r in opened:
        await r.store.close()


async def entry(shared: Shared, task_id: str) -> dict[str, Any] | None:
    raw = await shared.client.get(f"{shared.prefix}:{{t:{task_id}}}")
    return None if raw is None else dict(orjson.loads(raw))


async def test_a_task_made_on_one_replica_is_read_on_another_from_redis(replicas, shared: Shared):
    a, b = await replicas(), await replicas()
    task = make_task(vendor_key_id="fp:1a2b", callback_url="https://hooks.example/cb")
    await a.store.create(task)
    assert await b.store.get(task.id, "app1") == task
    assert await b.store.get_any(task.id) == task
    assert b.inner.reads == 0  # both answered by Redis
    cached = await entry(shared, task.id)
    assert cached == orjson.loads(orjson.dumps(task))  # the row's fields, owner and version included
    assert cached is not None and set(cached) == {f.name for f in dataclasses.fields(Task)}
    assert 0 < await shared.client.pttl(f"{shared.prefix}:{{t:{task.id}}}") <= cache.OPEN_TTL_S * 1000


async def test_an_update_is_what_the_other_replica_reads_next(replicas, shared: Shared):
    a, b = await replicas(), await replicas()
    task = make_task(status=RUNNING)
    await a.store.create(task)
    running = await a.store.update(task, progress=50)
    assert running is not None and running.version == 1
    assert await b.store.get(task.id, "app1") == running
    done = await a.store.settle(running, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(running))
    assert done is not None and done.version == 2
    seen = await b.store.get(task.id, "app1")
    assert seen == done and seen.status == SUCCEEDED
    assert b.inner.reads == 0
    # A finished task's entry lives longer than an unfinished one's.
    assert await shared.client.pttl(f"{shared.prefix}:{{t:{task.id}}}") > cache.OPEN_TTL_S * 1000


async def test_a_miss_reads_the_database_once_and_fills_the_entry(replicas, shared: Shared):
    a, b = await replicas(), await replicas()
    task = make_task()
    await a.inner.create(task)  # written around the cache (as by a gateway without it)
    assert await b.store.get(task.id, "app1") == task
    assert await b.store.get(task.id, "app1") == task
    assert await b.store.get_any(task.id) == task
    assert b.inner.reads == 1
    assert await b.store.get("task_missing", "app1") is None  # a missing task is not cached: read each time
    assert b.inner.reads == 2 and await entry(shared, "task_missing") is None


async def test_an_older_version_never_replaces_a_newer_one(replicas, shared: Shared, monkeypatch):
    # Order, not outages: on a loaded machine a connection slower than TIMEOUT_S would make a write one
    # owed for later (the outage tests below cover that), and the entry older than the test expects.
    monkeypatch.setattr(redis_counters, "TIMEOUT_S", 5.0)
    a, b = await replicas(), await replicas()
    task = make_task()
    await a.store.create(task)
    v1 = await a.store.update(task, progress=10)
    v2 = await a.store.update(v1, progress=20)
    assert v1 is not None and v2 is not None
    await b.store.write_through(v1)  # a replica late with its write, or a fill read before v2
    await b.store.write_through(task)
    assert (await entry(shared, task.id) or {})["version"] == 2
    assert await b.store.get(task.id, "app1") == v2
    # Many versions written at once by two replicas, in any order: the newest stays.
    await shared.client.delete(f"{shared.prefix}:{{t:{task.id}}}")
    versions = [dataclasses.replace(v2, version=n, progress=n) for n in range(30)]
    random.Random(7).shuffle(versions)
    await asyncio.gather(*((a if i % 2 else b).store.write_through(t) for i, t in enumerate(versions)))
    assert (await entry(shared, task.id) or {})["progress"] == 29


async def test_another_keys_task_reads_as_missing(replicas, shared: Shared):
    a, b = await replicas(), await replicas()
    task = make_task()
    await a.store.create(task)
    assert await b.store.get(task.id, "app2") is None  # from the cached row
    assert b.inner.reads == 0
    await shared.client.delete(f"{shared.prefix}:{{t:{task.id}}}")
    assert await b.store.get(task.id, "app2") is None  # from the database
    assert b.inner.reads == 1 and await entry(shared, task.id) is None
    # DELETE /v1/videos/{id} hides it from its own key too; get_any (the poller, admin) still sees it.
    await a.store.create(other := make_task())
    gone = await a.store.update(other, deleted_at=time.time())
    assert await b.store.get(other.id, "app1") is None
    assert await b.store.get_any(other.id) == gone
    assert b.inner.reads == 1


async def test_a_lost_compare_and_swap_brings_a_stale_entry_up_to_date(replicas, shared: Shared):
    a, b = await replicas(), await replicas()
    task = make_task()
    await a.store.create(task)
    moved = await a.inner.update(task, progress=70)  # written around the cache: the entry is stale
    assert moved is not None
    stale = await b.store.get(task.id, "app1")
    assert stale == task
    assert await b.store.update(stale, progress=80) is None  # the caller reads again, and gets the winner
    assert await b.store.get(task.id, "app1") == moved


async def test_redis_unreachable_then_back(replicas, shared: Shared, monkeypatch):
    monkeypatch.setattr(failover, "RETRY_S", 0.2)
    proxy = await RedisProxy().start()
    try:
        a, b = await replicas(proxy.url), await replicas()
        task = make_task(status=RUNNING)
        await a.store.create(task)
        await proxy.cut()
        started = time.monotonic()
        assert await a.store.get(task.id, "app1") == task  # the database answers
        done = await a.store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(task))
        assert done is not None and await a.store.get(task.id, "app1") == done
        # Redis tried once, not by every call: one try fails at once, or (redis-py 5.0's pool, which waits
        # for a connection) after TIMEOUT_S, twice with the retry on another connection.
        assert time.monotonic() - started < 2 * redis_counters.TIMEOUT_S + 0.5
        assert a.inner.reads == 2
        assert a.fallbacks == [("local", "connect")] * 3  # two reads and the write
        assert await b.store.get(task.id, "app1") == task  # the entry the missed write should have replaced
        await proxy.restore()
        await asyncio.sleep(0.25)
        assert await a.store.get(task.id, "app1") == done  # Redis again, and the missed write made up for
        assert await b.store.get(task.id, "app1") == done
        assert b.inner.reads == 0
    finally:
        await proxy.cut()


async def test_a_missed_write_is_served_stale_no_longer_than_its_ttl(replicas, shared: Shared):
    proxy = await RedisProxy().start()
    try:
        # Longer than the missed write takes to fail (at once, or 2 x TIMEOUT_S on redis-py 5.0's pool).
        a, b = await replicas(proxy.url, open_ttl_s=1.5), await replicas()
        task = make_task(status=RUNNING)
        await a.store.create(task)
        await proxy.cut()  # and a never gets it back (as if it died): nothing makes up for its write
        done = await a.store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(task))
        assert await b.store.get(task.id, "app1") == task
        await asyncio.sleep(1.55)
        assert await b.store.get(task.id, "app1") == done
        assert b.inner.reads == 1
    finally:
        await proxy.cut()


async def test_closing_the_store_closes_its_redis_client(replicas):
    a = await replicas()
    await a.store.close()
    with pytest.raises(RuntimeError, match="not started"):
        await a.store.get("task_x", "app1")  # the inner store's answer: nothing is read from Redis after close


# -- the TaskStore contract (test_store.py), over the cached store ------------------------------------


@dataclass
class CachedStores(StoreFactory):
    shared: Shared | None = None

    async def __call__(self) -> TaskStore:
        assert self.shared is not None
        client = redis_counters.connect(self.shared.url)
        s = cache.CachedTaskStore(SqliteTaskStore(self.database), client, prefix=self.shared.prefix)
        await s.start()
        self.opened.append(s)
        return s


@pytest.fixture
async def store_factory(tmp_path: Path, shared: Shared) -> AsyncIterator[StoreFactory]:
    async with open_stores("sqlite", tmp_path) as plain:
        fields = {f.name: getattr(plain, f.name) for f in dataclasses.fields(StoreFactory)}
        yield CachedStores(**fields, shared=shared)  # the same `opened` list: closed with the plain one's


@pytest.fixture
async def store(store_factory: StoreFactory) -> TaskStore:
    return await store_factory()


# Collected here by these names, they take this module's `store_factory` and `store`. The chooser's
# test and SQLite's own are left out.
test_contract_create_get_and_key_isolation = contract.test_create_get_and_key_isolation
test_contract_fields_round_trip = contract.test_fields_round_trip
test_contract_writes_the_request_as_given = contract.test_writes_the_request_as_given
test_contract_list_pages = contract.test_list_pages_newest_first_with_total_and_filters
test_contract_due = contract.test_due_oldest_first_open_tasks_only
test_contract_update_is_a_compare_and_swap = contract.test_update_is_a_compare_and_swap
test_contract_two_stores_racing_updates = contract.test_two_stores_racing_updates_one_wins
test_contract_racing_settles = contract.test_stores_racing_settles_bill_each_task_once
test_contract_settle_once = contract.test_settle_once
test_contract_settle_is_all_or_nothing = contract.test_settle_is_all_or_nothing
test_contract_settle_checks = contract.test_settle_checks_what_it_is_given
test_contract_never_a_second_usage_row = contract.test_never_a_second_usage_row_for_a_task
test_contract_reserved_by_key = contract.test_reserved_by_key
test_contract_callbacks_due = contract.test_callbacks_due
test_contract_survives_a_restart = contract.test_survives_a_restart
test_contract_nul = contract.test_a_vendor_message_with_a_nul_is_kept
