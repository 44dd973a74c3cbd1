"""Where task rows live: `TaskStore`, the calls the task engine makes, and `SqliteTaskStore`, which keeps
them in the usage database's file so that a task's final state and its usage row commit together.

Every write is a compare-and-swap on `Task.version`: when two pollers (two processes) hold the same
version, one write wins and the other gets None and reads the row again. `settle()` is the one final
transition: status, billing and the usage row in one transaction, and never a second usage row for a
task. A PostgreSQL store goes behind the same calls.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import operator
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import orjson
import structlog

from gateway.ledger.sink import COLUMNS as USAGE_COLUMNS
from gateway.ledger.sink import UsageRow
from gateway.ledger.usage import SCHEMA as USAGE_SCHEMA
from gateway.ledger.usage import migrate as migrate_usage
from gateway.tasks.model import BILLED, CALLBACK_PENDING, REFUNDED, RESERVED, Task
from providers.tasks.base import FINAL

log = structlog.get_logger("gateway.tasks")

# Bumped with every change to the tasks table that adding a column cannot express (a rename, a new
# index, rewritten data); `start()` then runs the step from the version the file holds.
SCHEMA_VERSION = 1

COLUMNS = tuple(f.name for f in dataclasses.fields(Task))
_JSON = frozenset(f.name for f in dataclasses.fields(Task) if str(f.type).startswith("dict"))  # kept as JSON text
_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL", "dict": "TEXT"}

# Each partial index below serves only the queries whose WHERE repeats its condition word for word
# (that is how SQLite decides it may use one), so the conditions are written once, here. The poller's
# `due` reads only the open tasks' index, ordered by next poll: a range scan that stops at `limit`,
# however many finished tasks the table holds.
_FINAL_LIST = ", ".join(f"'{s}'" for s in sorted(FINAL))
_OPEN = f"status NOT IN ({_FINAL_LIST})"
_CALLBACK_WAITING = f"callback_state = '{CALLBACK_PENDING}'"
_HOLDING = f"billing = '{RESERVED}'"

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"
_INSERT = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
# The usage row goes in only if no row bills this task yet. Inside the settling transaction (which
# holds SQLite's one write lock from its start) no other writer can slip a row in between.
_INSERT_USAGE_ONCE = (
    f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) SELECT {', '.join('?' for _ in USAGE_COLUMNS)} "
    "WHERE NOT EXISTS (SELECT 1 FROM usage WHERE task_id = ?)"
)
_usage_values = operator.attrgetter(*USAGE_COLUMNS)

# `list(kind=...)`: a catalog, or one of these groups of catalogs.
KINDS = {"video": ("t2v", "i2v", "ref2v"), "image": ("t2i", "i2i")}


def _column_sql(f: dataclasses.Field[Any], *, added: bool = False) -> str:
    """The column of a Task field: NOT NULL unless the field may be None, with the field's default where
    it has a plain one, so that a column `added` to an older table fills its rows with that default."""
    kind = str(f.type).split("|")[0].split("[")[0].strip()  # "dict[str, Any] | None" -> "dict"
    sql = f"{f.name} {_SQL_TYPES[kind]}"
    default = "{}" if f.default_factory is dict else f.default
    if isinstance(default, str):
        sql += " DEFAULT '" + default.replace("'", "''") + "'"
    elif isinstance(default, int | float):
        sql += f" DEFAULT {default!r}"
    elif added:  # older rows have no value to give it
        return sql
    return sql + ("" if "None" in str(f.type) or f.name == "id" else " NOT NULL")


def _table() -> str:
    cols = [_column_sql(f) + (" PRIMARY KEY" if f.name == "id" else "") for f in dataclasses.fields(Task)]
    return f"CREATE TABLE IF NOT EXISTS tasks ({', '.join(cols)})"


# Statements, not a script: executescript() would commit the transaction they run in.
SCHEMA = (
    _table(),
    "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
)
INDEXES = (
    "CREATE INDEX IF NOT EXISTS tasks_key_created ON tasks (key_name, created_at)",
    f"CREATE INDEX IF NOT EXISTS tasks_due ON tasks (next_poll_at) WHERE {_OPEN}",
    f"CREATE INDEX IF NOT EXISTS tasks_callbacks ON tasks (callback_next_at) WHERE {_CALLBACK_WAITING}",
    f"CREATE INDEX IF NOT EXISTS tasks_reserved ON tasks (key_name) WHERE {_HOLDING}",
    "CREATE INDEX IF NOT EXISTS usage_task ON usage (task_id) WHERE task_id IS NOT NULL",
)


class TaskStore(Protocol):
    """Where task rows live. Reads give fresh copies; writes take the task as read and return the new
    row, or None when another writer changed it first (read it again and decide again)."""

    async def start(self) -> None:
        """Open the store, creating or upgrading its tables."""

    async def close(self) -> None: ...

    async def create(self, task: Task) -> None:
        """Insert a new task; it is on disk when this returns (the client is given its id only then)."""

    async def get(self, task_id: str, key_name: str) -> Task | None:
        """The task, only if it belongs to `key_name`: another key's task reads as missing."""

    async def get_any(self, task_id: str) -> Task | None:
        """The task, whoever owns it (the poller, admin)."""

    async def list(
        self, key_name: str, *, page: int = 1, limit: int = 20, status: str | None = None, kind: str | None = None
    ) -> tuple[builtins.list[Task], int]:
        """One page (from 1) of the key's tasks, newest first, and how many match in all. `kind`: a
        catalog (t2v...) or a group of them (`KINDS`)."""

    async def due(self, now: float, limit: int) -> builtins.list[Task]:
        """Unfinished tasks whose next poll is at or before `now`, the longest waiting first."""

    async def update(self, task: Task, **changes: Any) -> Task | None:
        """Apply `changes` if the row is still at `task.version`; the new row (version + 1), else None."""

    async def settle(self, task: Task, changes: dict[str, Any], row: UsageRow) -> Task | None:
        """The final transition: `changes` (a final status, billing `billed` or `refunded`) and the task's
        one usage row, together or not at all. None if the row moved past `task.version`, or is no
        longer holding its reservation (settled already)."""

    async def reserved_by_key(self) -> dict[str, float]:
        """What unsettled tasks hold against each key's budget (rebuilt after a restart)."""

    async def callbacks_due(self, now: float, limit: int) -> builtins.list[Task]:
        """Finished tasks whose callback is pending and due at or before `now`, the longest waiting first."""

    async def pending_count(self) -> int:
        """How many tasks are not finished."""

    async def lead(self) -> bool:
        """Whether this process is the one that polls: the store's replicas agree on one (the SQLite
        store has no others: always True; with `workers: N` only worker 0 asks)."""


class SqliteTaskStore:
    """`TaskStore` on SQLite, in the usage table's database file, on a connection of its own.

    `create` and `settle` are synced to disk before they return (`synchronous=FULL`): a client holds the
    id, or money moved. Other writes (poll progress, a few a second per thousand tasks) are `NORMAL`, as
    the usage writer's: safe from corruption, and a power cut can lose only the last progress, which the
    next poll reads again. One asyncio lock serializes this connection's calls, so a transaction's statements never interleave
    with another coroutine's; other processes are kept out by SQLite's lock (`busy_timeout_s`).
    """

    def __init__(self, path: str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement outside an explicit BEGIN is its own transaction, committed at once.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            # One transaction, so that two processes starting at once do not both add the same column.
            await db.executescript("BEGIN IMMEDIATE;" + USAGE_SCHEMA)
            try:
                await migrate_usage(db)  # the usage table's task_id column, before the index on it
                await _migrate(db, self.path)
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                await self._db.close()
                self._db = None

    async def create(self, task: Task) -> None:
        async with self._lock, self._synced():
            await self._conn.execute(_INSERT, [encode_value(name, getattr(task, name)) for name in COLUMNS])

    async def get(self, task_id: str, key_name: str) -> Task | None:
        found = await self._select(f"{_SELECT} WHERE id = ? AND key_name = ? AND deleted_at IS NULL", (task_id, key_name))
        return found[0] if found else None

    async def get_any(self, task_id: str) -> Task | None:
        found = await self._select(f"{_SELECT} WHERE id = ?", (task_id,))
        return found[0] if found else None

    async def list(
        self, key_name: str, *, page: int = 1, limit: int = 20, status: str | None = None, kind: str | None = None
    ) -> tuple[builtins.list[Task], int]:
        if page < 1 or limit < 1:
            raise ValueError(f"page and limit start at 1 (page={page}, limit={limit})")
        where, args = ["key_name = ?", "deleted_at IS NULL"], [key_name]
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if kind is not None:
            catalogs = KINDS.get(kind, (kind,))
            where.append(f"catalog IN ({', '.join('?' for _ in catalogs)})")
            args.extend(catalogs)
        clause = " AND ".join(where)
        db = self._conn
        async with self._lock:
            await db.execute("BEGIN")  # the count and the page from one snapshot
            try:
                async with db.execute(f"SELECT count(*) FROM tasks WHERE {clause}", args) as cur:
                    total = await _scalar(cur)
                query = f"{_SELECT} WHERE {clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
                async with db.execute(query, [*args, limit, (page - 1) * limit]) as cur:
                    rows = await cur.fetchall()
            finally:
                await db.execute("COMMIT")
        return [decode_row(r) for r in rows], total

    async def due(self, now: float, limit: int) -> builtins.list[Task]:
        query = f"{_SELECT} WHERE {_OPEN} AND next_poll_at <= ? ORDER BY next_poll_at LIMIT ?"
        return await self._select(query, (now, limit))

    async def update(self, task: Task, **changes: Any) -> Task | None:
        new, sql, args = cas(task, changes)
        async with self._lock:
            cur = await self._conn.execute(sql, args)
        return new if cur.rowcount == 1 else None

    async def settle(self, task: Task, changes: dict[str, Any], row: UsageRow) -> Task | None:
        if changes.get("status") not in FINAL or changes.get("billing") not in (BILLED, REFUNDED):
            raise ValueError(f"settle needs a final status and billing billed|refunded, not {changes!r}")
        if row.task_id not in (None, task.id):
            raise ValueError(f"usage row of task {row.task_id!r} given to settle task {task.id!r}")
        row = dataclasses.replace(row, task_id=task.id)
        new, sql, args = cas(task, {"finished_at": time.time(), **changes}, also=_HOLDING)
        db = self._conn
        async with self._lock, self._synced():
            # IMMEDIATE: the write lock from the start, so the usage row's check and its insert cannot be
            # split by another connection's write (and a read lock never has to be upgraded mid-way).
            await db.execute("BEGIN IMMEDIATE")
            try:
                cur = await db.execute(sql, args)
                if cur.rowcount != 1:
                    await db.execute("ROLLBACK")
                    return None
                cur = await db.execute(_INSERT_USAGE_ONCE, [*_usage_values(row), task.id])
                if cur.rowcount != 1:  # only by a writer outside this store: settle the task all the same
                    log.warning("task_usage_row_exists", task_id=task.id)
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
        return new

    async def reserved_by_key(self) -> dict[str, float]:
        query = f"SELECT key_name, sum(reserved) FROM tasks WHERE {_HOLDING} GROUP BY key_name"
        async with self._lock, self._conn.execute(query) as cur:
            return {key: float(total) for key, total in await cur.fetchall()}

    async def callbacks_due(self, now: float, limit: int) -> builtins.list[Task]:
        query = (
            f"{_SELECT} WHERE {_CALLBACK_WAITING} AND callback_next_at <= ? AND status IN ({_FINAL_LIST}) "
            "ORDER BY callback_next_at LIMIT ?"
        )
        return await self._select(query, (now, limit))

    async def pending_count(self) -> int:
        async with self._lock, self._conn.execute(f"SELECT count(*) FROM tasks WHERE {_OPEN}") as cur:
            return await _scalar(cur)

    async def lead(self) -> bool:
        return True  # one machine, one database file: worker 0's poller is the only one

    @contextlib.asynccontextmanager
    async def _synced(self) -> AsyncIterator[None]:
        """Commits within are synced to disk before they return (in WAL mode, FULL syncs each commit)."""
        await self._conn.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            await self._conn.execute("PRAGMA synchronous=NORMAL")

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("task store is not started (or already closed)")
        return self._db

    async def _select(self, query: str, args: Sequence[Any]) -> builtins.list[Task]:
        async with self._lock, self._conn.execute(query, args) as cur:
            rows = await cur.fetchall()
        return [decode_row(r) for r in rows]


async def _migrate(db: aiosqlite.Connection, path: str) -> None:
    """Create or upgrade the tasks table, inside the caller's transaction."""
    for statement in SCHEMA:
        await db.execute(statement)
    async with db.execute("SELECT version FROM schema_version WHERE component = 'tasks'") as cur:
        found = await cur.fetchone()
    version = found[0] if found else 0
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"{path}: tasks schema version {version} is newer than this gateway's ({SCHEMA_VERSION})")
    async with db.execute("PRAGMA table_info(tasks)") as cur:
        have = {r[1] for r in await cur.fetchall()}
    for f in dataclasses.fields(Task):  # a field added since: a column, null in older rows
        if f.name not in have:
            await db.execute(f"ALTER TABLE tasks ADD COLUMN {_column_sql(f, added=True)}")
    for statement in INDEXES:
        await db.execute(statement)
    await db.execute(
        "INSERT INTO schema_version (component, version) VALUES ('tasks', ?) "
        "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
        (SCHEMA_VERSION,),
    )


def cas(
    task: Task,
    changes: dict[str, Any],
    also: str = "",
    *,
    mark: Callable[[int], str] = lambda i: "?",
    encode: Callable[[str, Any], Any] | None = None,
) -> tuple[Task, str, builtins.list[Any]]:
    """The new row, and the UPDATE that writes `changes` only over `task.version` (and `also`): its
    parameters written by `mark` (SQLite's ?, PostgreSQL's $n) and encoded by `encode` (this store's)."""
    if "id" in changes or "version" in changes:
        raise ValueError("a task's id and version are not changed by hand")
    encode = encode or encode_value
    changes = {**changes, "version": task.version + 1, "updated_at": time.time()}
    new = dataclasses.replace(task, **changes)  # raises TypeError on a name Task does not have
    sets = ", ".join(f"{name} = {mark(i)}" for i, name in enumerate(changes, 1))
    n = len(changes)
    sql = f"UPDATE tasks SET {sets} WHERE id = {mark(n + 1)} AND version = {mark(n + 2)}" + (f" AND {also}" if also else "")
    return new, sql, [*(encode(name, getattr(new, name)) for name in changes), task.id, task.version]


def encode_value(name: str, value: Any) -> Any:
    """A field as a column holds it: the dicts as JSON text."""
    return orjson.dumps(value).decode() if name in _JSON and value is not None else value


def decode_row(row: Iterable[Any]) -> Task:
    """A row of COLUMNS as the Task it holds (SQLite and PostgreSQL alike)."""
    values = zip(COLUMNS, row, strict=True)
    return Task(**{n: orjson.loads(v) if n in _JSON and v is not None else v for n, v in values})


async def _scalar(cur: aiosqlite.Cursor) -> int:
    found = await cur.fetchone()
    return int(found[0]) if found else 0
