"""What only `PgTaskStore` has: its plans (EXPLAIN), the poller's advisory lock (`lead()`), and schema
versions kept across restarts. The `TaskStore` contract itself runs on both backends in test_store.py;
the schema's steps and upgrades are in tests/gateway/ledger/test_postgres.py.

Skipped, saying why, without asyncpg or a server (tests/pgstate.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from providers.tasks.base import RUNNING, SUCCEEDED
from tests.gateway.tasks.test_store import StoreFactory, make_task, open_stores

pg_store = pytest.importorskip("gateway.tasks.pg_store", reason="the `asyncpg` package (extra `scale`) is not installed")
pg_schema = pytest.importorskip("gateway.ledger.pg_schema")


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """PgTaskStores on the test's own schema."""
    async with open_stores("postgres", tmp_path) as stores:
        yield stores


async def test_reads_the_due_tasks_off_their_index(stores: StoreFactory):
    store = await stores()
    for i in range(50):
        await store.create(make_task(status=SUCCEEDED if i % 2 else RUNNING, next_poll_at=float(i)))
    await stores.query("SET enable_seqscan = off")  # a table this small would be read whole, index or not
    try:
        for sql in (
            f"{pg_store._SELECT} WHERE {pg_store._OPEN} AND next_poll_at <= 10 ORDER BY next_poll_at LIMIT 5",
            f"SELECT count(*) FROM tasks WHERE {pg_store._OPEN}",
        ):
            plan = "\n".join(r[0] for r in await stores.query(f"EXPLAIN {sql}"))
            assert "tasks_due" in plan and "Sort" not in plan, plan
    finally:
        await stores.query("RESET enable_seqscan")


async def test_one_store_leads_and_another_takes_over_when_it_closes(stores: StoreFactory):
    a, b = await stores(), await stores()
    first = [await a.lead(), await b.lead()]
    assert first.count(True) == 1, first  # PostgreSQL's advisory lock: one holder
    leader, other = (a, b) if first[0] else (b, a)
    assert [await leader.lead(), await other.lead()] == [True, False]  # the leader keeps it while it lives
    await leader.close()  # its lock connection goes, and the lock with it
    assert await other.lead()
    third = await stores()
    assert [await third.lead(), await other.lead()] == [False, True]


async def test_a_leader_that_loses_its_connection_is_taken_over(stores: StoreFactory):
    a, b = await stores(), await stores()
    assert await a.lead() and not await b.lead()
    holders = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = hashtext(? || current_schema())::oid AND granted"
    [(pid,)] = await stores.query(holders, pg_store.POLLER_LOCK)
    assert await stores.query("SELECT pg_terminate_backend(?, 5000)", pid) == [(True,)]  # as a network cut would
    assert await b.lead()  # the lock went with the connection: the next to ask takes it
    assert not await a.lead()  # and the old leader, finding its connection gone, does not get it back


async def test_restarts_keep_the_schema_at_its_version(stores: StoreFactory):
    await (await stores()).close()
    await stores()  # start() again on an up-to-date schema: nothing to do, nothing done twice
    versions = [v for (v,) in await stores.query("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, pg_schema.VERSION + 1))


async def test_gateways_on_other_schemas_lead_their_own(stores: StoreFactory, tmp_path: Path):
    """The lock is per schema: a gateway on another schema of the same database polls its own tasks."""
    here = await stores()
    assert await here.lead()
    async with open_stores("postgres", tmp_path / "elsewhere") as elsewhere:
        assert await (await elsewhere()).lead()
