"""The `TaskStore` contract run on both stores, so SQLite and PostgreSQL give the same answers: key
isolation, paging, the poller's queue, compare-and-swap between two stores (two processes, or two
replicas), exactly one usage row per settled task, restarts. SQLite's own parts (its file, query plans,
upgrades) stay in test_store.py; PostgreSQL's schema is in tests/gateway/ledger/test_postgres.py.

The PostgreSQL runs skip, saying why, without asyncpg or a server (tests/pgstate.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger.sink import UsageRow
from gateway.tasks.backends import task_store
from gateway.tasks.model import BILLED, CALLBACK_DELIVERED, CALLBACK_PENDING, REFUNDED
from gateway.tasks.store import TaskStore
from providers.tasks.base import CREATED, FAILED, PENDING, RUNNING, SUCCEEDED, VENDOR_FAILED
from tests.gateway.tasks.test_store import make_task, usage_row


@dataclass
class Backend:
    name: str
    database: str  # `database:` in gateway.yaml
    query: Callable[..., Awaitable[list[tuple[Any, ...]]]]  # SQL with ? placeholders
    integrity_errors: tuple[type[BaseException], ...]


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "data" / "gateway.db"

        async def lite_query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(path)) as db:
                rows = db.execute(sql, args).fetchall()
                db.commit()
                return rows

        yield Backend("sqlite", str(path), lite_query, (sqlite3.IntegrityError,))
        return
    pgstate = pytest.importorskip("tests.pgstate")
    async with pgstate.fresh_schema() as pg:

        async def pg_query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
            parts = sql.split("?")
            numbered = "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))
            return await pg.fetch(numbered, *args)

        yield Backend("postgres", pg.url, pg_query, (pgstate.asyncpg.IntegrityConstraintViolationError,))


@pytest.fixture
async def open_store(backend: Backend) -> AsyncIterator[Callable[[], Awaitable[TaskStore]]]:
    """Stores on the one database, each on connections of its own, closed at the end."""
    opened: list[TaskStore] = []

    async def make() -> TaskStore:
        s = task_store(backend.database)
        await s.start()
        opened.append(s)
        return s

    yield make
    for s in opened:
        await s.close()


@pytest.fixture
async def store(open_store: Callable[[], Awaitable[TaskStore]]) -> TaskStore:
    return await open_store()


async def test_the_chooser_picks_by_database(backend: Backend, store: TaskStore):
    assert type(store).__name__ == {"sqlite": "SqliteTaskStore", "postgres": "PgTaskStore"}[backend.name]


async def test_create_get_and_key_isolation(store: TaskStore, backend: Backend):
    task = make_task()
    await store.create(task)
    assert await store.get(task.id, "app1") == task
    assert await store.get(task.id, "app2") is None
    assert await store.get("task_missing", "app1") is None
    assert await store.get_any(task.id) == task
    with pytest.raises(backend.integrity_errors):
        await store.create(make_task(id=task.id))


async def test_fields_round_trip(store: TaskStore):
    task = make_task(
        request={"prompt": "一只猫 🐈 \\u0000 \x00", "seconds": 5.5, "extra": {"nested": {"a": [1, None, "x"]}}},
        results={"videos": ["https://v.example/1.mp4"], "thumbnail": None},
        stored={"video/0": "data/tasks/x/0.mp4"},
        usage={"seconds": 5, "resolution": "720P"},
        price={"per_second": {"720P": 0.6, "1080P": 1.0}},
        results_expire_at=1234.5,
        callback_url="https://hooks.example/cb",
        callback_state=CALLBACK_PENDING,
        vendor_key_id="fp:1a2b",
        origin="https://gw.example",
        progress=42,
    )
    await store.create(task)
    assert await store.get_any(task.id) == task
    empty = make_task()
    await store.create(empty)
    got = await store.get_any(empty.id)
    assert got is not None and got.request == {} and got.usage is None and got.price is None


async def test_list_pages_newest_first_with_total_and_filters(store: TaskStore):
    tasks = [
        make_task(created_at=1000.0 + i, catalog="t2i" if i % 5 == 0 else "t2v", status=SUCCEEDED if i % 2 else RUNNING)
        for i in range(25)
    ]
    for t in tasks:
        await store.create(t)
    await store.create(make_task(key_name="app2", created_at=5000.0))
    newest = [t.id for t in reversed(tasks)]
    page1, total = await store.list("app1", page=1, limit=10)
    assert total == 25 and [t.id for t in page1] == newest[:10]
    page3, total = await store.list("app1", page=3, limit=10)
    assert total == 25 and [t.id for t in page3] == newest[20:]
    assert await store.list("app1", page=4, limit=10) == ([], 25)
    assert await store.list("nobody", page=1, limit=10) == ([], 0)
    done, total = await store.list("app1", page=1, limit=100, status=SUCCEEDED)
    assert total == 12 and all(t.status == SUCCEEDED for t in done)
    assert (await store.list("app1", page=1, limit=1, kind="t2i"))[1] == 5
    assert (await store.list("app1", page=1, limit=1, kind="image"))[1] == 5
    assert (await store.list("app1", page=1, limit=1, kind="video", status=RUNNING))[1] == 10
    hidden = await store.update(tasks[-1], deleted_at=9.0)  # DELETE hides a task from its key
    assert hidden is not None and (await store.list("app1", page=1, limit=1))[1] == 24
    assert await store.get(hidden.id, "app1") is None and await store.get_any(hidden.id) == hidden
    with pytest.raises(ValueError, match="page"):
        await store.list("app1", page=0, limit=10)


async def test_due_oldest_first_open_tasks_only(store: TaskStore):
    for status, at in [(RUNNING, 30.0), (PENDING, 10.0), (CREATED, 20.0), (RUNNING, 100.0), (SUCCEEDED, 1.0), (FAILED, 2.0)]:
        await store.create(make_task(status=status, next_poll_at=at))
    assert [t.next_poll_at for t in await store.due(50.0, 10)] == [10.0, 20.0, 30.0]
    assert [t.next_poll_at for t in await store.due(50.0, 2)] == [10.0, 20.0]
    assert await store.due(5.0, 10) == []
    assert await store.pending_count() == 4


async def test_postgres_reads_the_due_tasks_off_their_index(backend: Backend, store: TaskStore):
    if backend.name != "postgres":
        pytest.skip("SQLite's plans are checked in test_store.py")
    from gateway.tasks import pg_store

    for i in range(50):
        await store.create(make_task(status=SUCCEEDED if i % 2 else RUNNING, next_poll_at=float(i)))
    await backend.query("SET enable_seqscan = off")  # a table this small would be read whole, index or not
    try:
        for sql in (
            f"{pg_store._SELECT} WHERE {pg_store._OPEN} AND next_poll_at <= 10 ORDER BY next_poll_at LIMIT 5",
            f"SELECT count(*) FROM tasks WHERE {pg_store._OPEN}",
        ):
            plan = "\n".join(r[0] for r in await backend.query(f"EXPLAIN {sql}"))
            assert "tasks_due" in plan and "Sort" not in plan, plan
    finally:
        await backend.query("RESET enable_seqscan")


async def test_update_is_a_compare_and_swap(store: TaskStore):
    task = make_task()
    await store.create(task)
    new = await store.update(task, progress=40, vendor_status="RUNNING", results={"videos": []})
    assert new is not None and new.version == task.version + 1 and new.updated_at >= task.updated_at
    assert await store.get_any(task.id) == new
    assert await store.update(task, progress=50) is None
    got = await store.get_any(task.id)
    assert got is not None and got.progress == 40
    with pytest.raises(TypeError):
        await store.update(new, no_such_field=1)
    with pytest.raises(ValueError, match="version"):
        await store.update(new, version=7)


async def test_two_stores_racing_updates_one_wins(open_store: Callable[[], Awaitable[TaskStore]]):
    a, b = await open_store(), await open_store()
    task = make_task()
    await a.create(task)
    for _ in range(10):
        results = await asyncio.gather(a.update(task, progress=10), b.update(task, progress=20))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert await a.get_any(task.id) == winners[0]
        task = winners[0]


async def test_stores_racing_settles_bill_each_task_once(open_store: Callable[[], Awaitable[TaskStore]], backend: Backend):
    stores = [await open_store() for _ in range(3)]
    tasks = [make_task(request_id=f"req-{i}") for i in range(10)]
    for t in tasks:
        await stores[0].create(t)
    attempts = []
    for t in tasks:
        attempts += [
            stores[0].settle(t, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(t, 6.0)),
            stores[1].settle(t, {"status": FAILED, "billing": REFUNDED, "reason": VENDOR_FAILED}, usage_row(t, None)),
            stores[2].settle(t, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(t, 6.0)),
        ]
    results = await asyncio.gather(*attempts)
    for i, t in enumerate(tasks):
        winners = [r for r in results[3 * i : 3 * i + 3] if r is not None]
        assert len(winners) == 1, t.id
        final = await stores[1].get_any(t.id)
        assert final == winners[0] and final is not None and final.finished_at is not None
        rows = await backend.query("SELECT cost, request_id FROM usage WHERE task_id = ?", t.id)
        assert rows == [(6.0 if final.status == SUCCEEDED else None, t.request_id)]


async def test_settle_once(store: TaskStore, backend: Backend):
    task = make_task()
    await store.create(task)
    done = await store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(task))
    assert done is not None and done.status == SUCCEEDED and done.billing == BILLED and done.version == 1
    assert await store.settle(task, {"status": SUCCEEDED, "billing": BILLED}, usage_row(task)) is None
    assert await store.settle(done, {"status": FAILED, "billing": REFUNDED}, usage_row(done, None)) is None
    assert await backend.query("SELECT count(*), sum(cost) FROM usage WHERE task_id = ?", task.id) == [(1, 6.0)]
    assert await store.get_any(task.id) == done
    assert await store.update(done, callback_state=CALLBACK_DELIVERED) is not None


async def test_settle_is_all_or_nothing(store: TaskStore, backend: Backend):
    task = make_task()
    await store.create(task)
    bad = UsageRow(request_id=None, ts=1.0)  # type: ignore[arg-type]  # NOT NULL in the usage table
    with pytest.raises(backend.integrity_errors):
        await store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 1.0}, bad)
    assert await store.get_any(task.id) == task
    assert await backend.query("SELECT count(*) FROM usage") == [(0,)]
    assert await store.settle(task, {"status": FAILED, "billing": REFUNDED}, usage_row(task, None)) is not None


async def test_settle_checks_what_it_is_given(store: TaskStore):
    task = make_task()
    await store.create(task)
    with pytest.raises(ValueError, match="final status"):
        await store.settle(task, {"status": RUNNING, "billing": BILLED}, usage_row(task))
    other = usage_row(task)
    other.task_id = "task_other"
    with pytest.raises(ValueError, match="task_other"):
        await store.settle(task, {"status": SUCCEEDED, "billing": BILLED}, other)


async def test_never_a_second_usage_row_for_a_task(store: TaskStore, backend: Backend):
    task = make_task()
    await store.create(task)
    await backend.query("INSERT INTO usage (request_id, ts, task_id, cost) VALUES ('other', 1, ?, 3.0)", task.id)
    done = await store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(task))
    assert done is not None and done.billing == BILLED
    assert await backend.query("SELECT request_id, cost FROM usage WHERE task_id = ?", task.id) == [("other", 3.0)]


async def test_reserved_by_key(store: TaskStore):
    a1, a2 = make_task(reserved=2.5), make_task(reserved=1.5)
    for t in (a1, a2, make_task(key_name="app2", reserved=4.0), make_task(key_name="app3", reserved=9.0)):
        await store.create(t)
    assert await store.reserved_by_key() == {"app1": 4.0, "app2": 4.0, "app3": 9.0}
    await store.settle(a1, {"status": SUCCEEDED, "billing": BILLED, "cost": 2.0}, usage_row(a1))
    [app3] = (await store.list("app3", page=1, limit=1))[0]
    await store.settle(app3, {"status": FAILED, "billing": REFUNDED}, usage_row(app3, None))
    assert await store.reserved_by_key() == {"app1": 1.5, "app2": 4.0}


async def test_callbacks_due(store: TaskStore):
    cases = [
        (SUCCEEDED, CALLBACK_PENDING, 20.0),
        (FAILED, CALLBACK_PENDING, 10.0),
        (SUCCEEDED, CALLBACK_PENDING, 99.0),
        (SUCCEEDED, CALLBACK_DELIVERED, 1.0),
        (RUNNING, CALLBACK_PENDING, 1.0),
        (SUCCEEDED, None, None),
    ]
    for status, state, at in cases:
        await store.create(make_task(status=status, callback_url="https://h.example", callback_state=state, callback_next_at=at))
    due = await store.callbacks_due(50.0, 10)
    assert [(t.status, t.callback_next_at) for t in due] == [(FAILED, 10.0), (SUCCEEDED, 20.0)]
    assert len(await store.callbacks_due(50.0, 1)) == 1


async def test_survives_a_restart(open_store: Callable[[], Awaitable[TaskStore]]):
    first = await open_store()
    task = make_task(request={"prompt": "p"})
    await first.create(task)
    await first.close()
    with pytest.raises(RuntimeError, match="not started"):
        await first.get_any(task.id)
    second = await open_store()  # the tables are there already: start() is safe to repeat
    assert await second.get_any(task.id) == task


async def test_a_vendor_message_with_a_nul_is_kept(store: TaskStore):
    task = make_task()
    await store.create(task)
    new = await store.update(task, error="bad\x00frame", status=RUNNING)
    assert new is not None
    got = await store.get_any(task.id)
    assert got is not None and got.error in ("bad\x00frame", "bad\ufffdframe")  # PostgreSQL text holds no NUL

