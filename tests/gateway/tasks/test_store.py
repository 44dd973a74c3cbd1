"""The `TaskStore` contract, run once over each backend (`store_factory`): SQLite (files in tmp_path)
and PostgreSQL (the test's own schema; skipped, saying why, without asyncpg or a server). Key isolation,
paging, the poller's queue, compare-and-swap between two stores on one database (two processes, or two
replicas), exactly one usage row per settled task, restarts.

Then what only SQLite has: its query plans, PRAGMAs, the file it shares with the usage writer, and the
upgrades done on reopening it. PostgreSQL's own parts (EXPLAIN plans, the poller's advisory lock, its
schema versions) are in test_pg_store.py."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.ledger.sink import UsageRow
from gateway.ledger.usage import UsageWriter
from gateway.tasks import store as store_module
from gateway.tasks.backends import task_store
from gateway.tasks.model import BILLED, CALLBACK_DELIVERED, CALLBACK_PENDING, REFUNDED, RESERVED, Task, new_task_id
from gateway.tasks.store import SCHEMA_VERSION, SqliteTaskStore, TaskStore
from providers.tasks.base import CREATED, FAILED, PENDING, RUNNING, SUCCEEDED, VENDOR_FAILED


def make_task(**kw: Any) -> Task:
    fields: dict[str, Any] = {
        "id": new_task_id(),
        "key_name": "app1",
        "catalog": "t2v",
        "model": "wan2.6-t2v",
        "upstream_model": "wan2.6-t2v",
        "channel": "wan",
        "vendor": "dashscope",
        "dialect": "neutral",
        "request_id": "req-1",
        "status": RUNNING,
        "reserved": 5.0,
        **kw,
    }
    return Task(**fields)


def usage_row(task: Task, cost: float | None = 6.0) -> UsageRow:
    return UsageRow(
        request_id=task.request_id,
        ts=task.created_at,
        key_name=task.key_name,
        model=task.model,
        endpoint="tasks",
        status=200,
        cost=cost,
    )


@dataclass
class StoreFactory:
    """`await factory()` opens a store of one backend on the one database (`database:` as in gateway.yaml,
    through the chooser the gateway uses), each on connections of its own; all are closed at the end."""

    backend: str  # "sqlite" | "postgres"
    database: str
    query: Callable[..., Awaitable[list[tuple[Any, ...]]]]  # SQL with ? placeholders, straight to the database
    integrity_errors: tuple[type[BaseException], ...]  # what a broken constraint raises
    opened: list[TaskStore] = field(default_factory=list)

    async def __call__(self) -> TaskStore:
        s = task_store(self.database)
        await s.start()
        self.opened.append(s)
        return s

    async def close_all(self) -> None:
        for s in self.opened:
            await s.close()


@contextlib.asynccontextmanager
async def open_stores(backend: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A StoreFactory on a database of the test's own: "sqlite", a file in tmp_path (its folder is made by
    the store); "postgres", a fresh schema on the test server (tests/pgstate.py)."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "sqlite":
            path = tmp_path / "data" / "gateway.db"

            async def lite_query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
                with contextlib.closing(sqlite3.connect(path)) as db:
                    rows = db.execute(sql, args).fetchall()
                    db.commit()
                    return rows

            stores = StoreFactory(backend, str(path), lite_query, (sqlite3.IntegrityError,))
        else:
            from tests import pgstate  # here, not above: the SQLite runs need neither asyncpg nor a server

            pg = await stack.enter_async_context(pgstate.fresh_schema())

            async def pg_query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
                parts = sql.split("?")
                numbered = "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))
                return await pg.fetch(numbered, *args)

            stores = StoreFactory(backend, pg.url, pg_query, (pgstate.asyncpg.IntegrityConstraintViolationError,))
        stack.push_async_callback(stores.close_all)  # first out: the stores close before the schema is dropped
        yield stores


@pytest.fixture(params=["sqlite", "postgres"])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    async with open_stores(request.param, tmp_path) as stores:
        yield stores


@pytest.fixture
async def store(store_factory: StoreFactory) -> TaskStore:
    return await store_factory()


sqlite_only = pytest.mark.parametrize("store_factory", ["sqlite"], indirect=True)


# -- the contract, on both backends ----------------------------------------------------------------


async def test_the_chooser_picks_by_database(store_factory: StoreFactory, store: TaskStore):
    assert type(store).__name__ == {"sqlite": "SqliteTaskStore", "postgres": "PgTaskStore"}[store_factory.backend]


async def test_create_get_and_key_isolation(store: TaskStore, store_factory: StoreFactory):
    task = make_task()
    await store.create(task)
    assert await store.get(task.id, "app1") == task
    assert await store.get(task.id, "app2") is None  # another key's task reads as a missing one
    assert await store.get("task_missing", "app1") is None
    assert await store.get_any(task.id) == task
    assert await store.get_any("task_missing") is None
    with pytest.raises(store_factory.integrity_errors):
        await store.create(make_task(id=task.id))


async def test_fields_round_trip(store: TaskStore):
    task = make_task(
        request={
            "catalog": "t2v",
            "prompt": "一只猫 🐈 \\u0000 \x00",
            "seconds": 5.5,
            "media": [{"role": "first_frame", "bytes": 12}],
            "extra": {"watermark": False, "nested": {"a": [1, None, "x"]}},
        },
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
    empty = make_task()  # {} and None stay {} and None
    await store.create(empty)
    got = await store.get_any(empty.id)
    assert got is not None and got.request == {} and got.usage is None and got.price is None


async def test_writes_the_request_as_given(store: TaskStore, store_factory: StoreFactory):
    """The store keeps what it is given and nothing else: the caller has already left secrets out."""
    request = {
        "catalog": "t2i",
        "model": "wan2.2-t2i-plus",
        "prompt": "p",
        "media": [{"role": "reference", "bytes": 3}],
    }
    task = make_task(request=request, vendor_key_id="fp:1a2b")
    await store.create(task)
    [(raw, key_id)] = await store_factory.query("SELECT request, vendor_key_id FROM tasks WHERE id = ?", task.id)
    assert orjson.loads(raw) == request and key_id == "fp:1a2b"


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
    images, total = await store.list("app1", page=1, limit=100, kind="t2i")
    assert total == 5 and {t.catalog for t in images} == {"t2i"}
    assert (await store.list("app1", page=1, limit=1, kind="image"))[1] == 5
    assert (await store.list("app1", page=1, limit=1, kind="video"))[1] == 20
    assert (await store.list("app1", page=1, limit=1, kind="video", status=RUNNING))[1] == 10
    hidden = await store.update(tasks[-1], deleted_at=9.0)  # DELETE hides a task from its key
    assert hidden is not None and (await store.list("app1", page=1, limit=1))[1] == 24
    assert await store.get(hidden.id, "app1") is None and await store.get_any(hidden.id) == hidden
    with pytest.raises(ValueError, match="page"):
        await store.list("app1", page=0, limit=10)


async def test_due_oldest_first_open_tasks_only(store: TaskStore):
    for status, at in [
        (RUNNING, 30.0),
        (PENDING, 10.0),
        (CREATED, 20.0),
        (RUNNING, 100.0),
        (SUCCEEDED, 1.0),
        (FAILED, 2.0),
    ]:
        await store.create(make_task(status=status, next_poll_at=at))
    assert [t.next_poll_at for t in await store.due(50.0, 10)] == [10.0, 20.0, 30.0]
    assert [t.next_poll_at for t in await store.due(50.0, 2)] == [10.0, 20.0]
    assert await store.due(5.0, 10) == []
    assert await store.pending_count() == 4


async def test_update_is_a_compare_and_swap(store: TaskStore):
    task = make_task()
    await store.create(task)
    new = await store.update(task, progress=40, vendor_status="RUNNING", results={"videos": []})
    assert new is not None and new.version == task.version + 1 and new.updated_at >= task.updated_at
    assert await store.get_any(task.id) == new
    assert await store.update(task, progress=50) is None  # stale: someone wrote since it was read
    got = await store.get_any(task.id)
    assert got is not None and got.progress == 40
    with pytest.raises(TypeError):
        await store.update(new, no_such_field=1)
    with pytest.raises(ValueError, match="version"):
        await store.update(new, version=7)


async def test_two_stores_racing_updates_one_wins(store_factory: StoreFactory):
    a, b = await store_factory(), await store_factory()
    task = make_task()
    await a.create(task)
    for _ in range(10):
        results = await asyncio.gather(a.update(task, progress=10), b.update(task, progress=20))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert await a.get_any(task.id) == winners[0]
        task = winners[0]


async def test_stores_racing_settles_bill_each_task_once(store_factory: StoreFactory):
    stores = [await store_factory() for _ in range(3)]
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
        rows = await store_factory.query("SELECT cost, request_id FROM usage WHERE task_id = ?", t.id)
        assert rows == [(6.0 if final.status == SUCCEEDED else None, t.request_id)]


async def test_settle_once(store: TaskStore, store_factory: StoreFactory):
    task = make_task()
    await store.create(task)
    done = await store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(task))
    assert done is not None and done.status == SUCCEEDED and done.billing == BILLED and done.version == 1
    # Again with the same copy (stale), and with the fresh one (no longer holding a reservation): no-ops.
    assert await store.settle(task, {"status": SUCCEEDED, "billing": BILLED}, usage_row(task)) is None
    assert await store.settle(done, {"status": FAILED, "billing": REFUNDED}, usage_row(done, None)) is None
    assert await store_factory.query("SELECT count(*), sum(cost) FROM usage WHERE task_id = ?", task.id) == [(1, 6.0)]
    assert await store.get_any(task.id) == done
    # A finished task's own bookkeeping (its callback) still goes through update().
    assert await store.update(done, callback_state=CALLBACK_DELIVERED) is not None


async def test_settle_is_all_or_nothing(store: TaskStore, store_factory: StoreFactory):
    task = make_task()
    await store.create(task)
    bad = UsageRow(request_id=None, ts=1.0)  # type: ignore[arg-type]  # NOT NULL in the usage table
    with pytest.raises(store_factory.integrity_errors):
        await store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 1.0}, bad)
    assert await store.get_any(task.id) == task  # the status did not move without its usage row
    assert await store_factory.query("SELECT count(*) FROM usage") == [(0,)]
    assert await store.settle(task, {"status": FAILED, "billing": REFUNDED}, usage_row(task, None)) is not None


async def test_settle_checks_what_it_is_given(store: TaskStore):
    task = make_task()
    await store.create(task)
    with pytest.raises(ValueError, match="final status"):
        await store.settle(task, {"status": RUNNING, "billing": BILLED}, usage_row(task))
    with pytest.raises(ValueError, match="final status"):
        await store.settle(task, {"status": SUCCEEDED, "billing": RESERVED}, usage_row(task))
    other = usage_row(task)
    other.task_id = "task_other"
    with pytest.raises(ValueError, match="task_other"):
        await store.settle(task, {"status": SUCCEEDED, "billing": BILLED}, other)


async def test_never_a_second_usage_row_for_a_task(store: TaskStore, store_factory: StoreFactory):
    """Even when a row billing the task got in some other way, settling does not add another."""
    task = make_task()
    await store.create(task)
    await store_factory.query("INSERT INTO usage (request_id, ts, task_id, cost) VALUES ('other', 1, ?, 3.0)", task.id)
    done = await store.settle(task, {"status": SUCCEEDED, "billing": BILLED, "cost": 6.0}, usage_row(task))
    assert done is not None and done.billing == BILLED
    rows = await store_factory.query("SELECT request_id, cost FROM usage WHERE task_id = ?", task.id)
    assert rows == [("other", 3.0)]


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
        (SUCCEEDED, CALLBACK_PENDING, 99.0),  # not yet
        (SUCCEEDED, CALLBACK_DELIVERED, 1.0),
        (RUNNING, CALLBACK_PENDING, 1.0),  # not final: nothing to tell yet
        (SUCCEEDED, None, None),
    ]
    for status, state, at in cases:
        await store.create(
            make_task(status=status, callback_url="https://h.example", callback_state=state, callback_next_at=at)
        )
    due = await store.callbacks_due(50.0, 10)
    assert [(t.status, t.callback_next_at) for t in due] == [(FAILED, 10.0), (SUCCEEDED, 20.0)]
    assert len(await store.callbacks_due(50.0, 1)) == 1


async def test_survives_a_restart(store_factory: StoreFactory):
    first = await store_factory()
    task = make_task(request={"prompt": "p"})
    await first.create(task)
    await first.close()
    with pytest.raises(RuntimeError, match="not started"):
        await first.get_any(task.id)
    second = await store_factory()  # the tables are there already: start() is safe to repeat
    assert await second.get_any(task.id) == task


async def test_a_vendor_message_with_a_nul_is_kept(store: TaskStore):
    task = make_task()
    await store.create(task)
    new = await store.update(task, error="bad\x00frame", status=RUNNING)
    assert new is not None
    got = await store.get_any(task.id)
    assert got is not None and got.error in ("bad\x00frame", "bad\ufffdframe")  # PostgreSQL text holds no NUL


# -- SQLite's own ----------------------------------------------------------------------------------


@sqlite_only
async def test_sqlite_reads_the_due_tasks_off_their_index(store: TaskStore, store_factory: StoreFactory):
    for i in range(6):
        await store.create(make_task(status=SUCCEEDED if i % 2 else RUNNING, next_poll_at=float(i)))
    # The poller's queries read the open tasks' index in order, never the table or a sort.
    for sql in (
        "SELECT * FROM tasks WHERE {open} AND next_poll_at <= 1 ORDER BY next_poll_at LIMIT 5",
        "SELECT count(*) FROM tasks WHERE {open}",
    ):
        rows = await store_factory.query("EXPLAIN QUERY PLAN " + sql.format(open=store_module._OPEN))
        plan = " ".join(r[3] for r in rows)
        assert "USING INDEX tasks_due" in plan or "USING COVERING INDEX tasks_due" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


@sqlite_only
async def test_sqlite_stores_always_lead(store_factory: StoreFactory):
    """One machine, one file: no election, every store polls (with `workers: N` only worker 0 asks)."""
    a, b = await store_factory(), await store_factory()
    assert [await a.lead(), await b.lead(), await a.lead()] == [True, True, True]
    await a.close()
    assert await b.lead()


@sqlite_only
async def test_the_file_keeps_its_schema_version_across_reopens(store_factory: StoreFactory):
    await (await store_factory()).close()
    await store_factory()  # the file again, as after a restart
    version = await store_factory.query("SELECT version FROM schema_version WHERE component = 'tasks'")
    assert version == [(SCHEMA_VERSION,)]


@sqlite_only
async def test_upgrades_an_older_usage_table_and_refuses_a_newer_schema(store_factory: StoreFactory):
    db_path = Path(store_factory.database)
    db_path.parent.mkdir(parents=True)
    # a usage table from before task_id
    await store_factory.query(
        "CREATE TABLE usage (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts REAL NOT NULL, key_name TEXT)"
    )
    s = SqliteTaskStore(str(db_path))
    await s.start()
    await s.close()
    assert "task_id" in {r[1] for r in await store_factory.query("PRAGMA table_info(usage)")}
    await store_factory.query("UPDATE schema_version SET version = ? WHERE component = 'tasks'", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="newer"):
        await SqliteTaskStore(str(db_path)).start()


@sqlite_only
async def test_shares_the_file_with_the_usage_writer(store: TaskStore, store_factory: StoreFactory):
    writer = UsageWriter(store_factory.database, flush_interval_s=0.01)
    await writer.start()
    try:
        tasks = [make_task() for _ in range(20)]
        for t in tasks:
            await store.create(t)
        for i in range(200):
            writer.record(UsageRow(request_id=f"chat-{i}", ts=float(i), status=200))
        settled = await asyncio.gather(
            *(store.settle(t, {"status": SUCCEEDED, "billing": BILLED, "cost": 1.0}, usage_row(t, 1.0)) for t in tasks)
        )
        await writer.flush()
    finally:
        await writer.close()
    assert all(s is not None for s in settled)
    assert await store_factory.query("SELECT count(*), count(task_id) FROM usage") == [(220, 20)]


@sqlite_only
async def test_adds_the_columns_of_new_fields_to_an_older_table(store_factory: StoreFactory):
    first = await store_factory()
    task = make_task(request_id="req-9", poll_failures=2)
    await first.create(task)
    await first.close()
    # a table from before these fields
    await store_factory.query("ALTER TABLE tasks DROP COLUMN request_id")
    await store_factory.query("ALTER TABLE tasks DROP COLUMN poll_failures")
    second = await store_factory()
    got = await second.get_any(task.id)
    assert got is not None and (got.request_id, got.poll_failures) == ("", 0)  # the fields' defaults
    assert await second.update(got, request_id="req-10") is not None
