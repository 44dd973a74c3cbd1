"""`PgTaskStore`: the `TaskStore` (gateway.tasks.store) on PostgreSQL, for several replicas.

The same calls with the same results as `SqliteTaskStore`, on a small asyncpg pool. Every write is a
compare-and-swap (`UPDATE ... WHERE id = $n AND version = $m`): two replicas polling the same task both
read it, one write wins, the other gets None. `settle()` writes the final status and the task's usage
row in one transaction; the unique index on usage.task_id (gateway.ledger.pg_schema) makes a second row
for a task impossible, whoever tries. JSON fields are kept as JSON text, as in SQLite.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from gateway.ledger import pg_schema
from gateway.ledger.pg_usage import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S, close_pool, insert_rows
from gateway.ledger.sink import UsageRow
from gateway.tasks.model import BILLED, REFUNDED, Task
from gateway.tasks.store import COLUMNS, KINDS, cas, decode_row, encode_value
from providers.tasks.base import FINAL

log = structlog.get_logger("gateway.tasks")

_FINAL_LIST = ", ".join(f"'{s}'" for s in sorted(FINAL))
# The partial indexes' conditions, word for word (pg_schema), so the planner may use them.
_OPEN = pg_schema.OPEN
_CALLBACK_WAITING = pg_schema.CALLBACK_WAITING
_HOLDING = pg_schema.HOLDING

POLLER_LOCK = "gateway poller "  # + the schema: the advisory lock whose holder polls tasks for every replica
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"
_INSERT = f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))})"


class PgTaskStore:
    """`TaskStore` on PostgreSQL. `start()` opens the pool and brings the schema up to date; it may be
    called again after it failed (the database was down)."""

    def __init__(self, dsn: str, *, max_connections: int = 8) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self._pool: Any = None
        self._leader: Any = None  # the connection that holds (or asks for) the poller's advisory lock
        self._leading = False  # whether it holds it: this replica polls
        self._lead_lock = asyncio.Lock()

    async def start(self) -> None:
        pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.max_connections, timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
        )  # fmt: skip
        try:
            async with pool.acquire() as conn:
                await pg_schema.migrate(conn)
        except BaseException:
            pool.terminate()
            raise
        self._pool = pool

    async def close(self) -> None:
        leader, self._leader, self._leading = self._leader, None, False
        if leader is not None:
            leader.terminate()  # the lock goes with it: another replica takes over polling
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)

    @property
    def _db(self) -> Any:
        if self._pool is None:
            raise RuntimeError("task store is not started (or already closed)")
        return self._pool

    async def create(self, task: Task) -> None:
        await self._db.execute(_INSERT, *(_encode(name, getattr(task, name)) for name in COLUMNS))

    async def get(self, task_id: str, key_name: str) -> Task | None:
        found = await self._select(f"{_SELECT} WHERE id = $1 AND key_name = $2 AND deleted_at IS NULL", (task_id, key_name))
        return found[0] if found else None

    async def get_any(self, task_id: str) -> Task | None:
        found = await self._select(f"{_SELECT} WHERE id = $1", (task_id,))
        return found[0] if found else None

    async def list(
        self, key_name: str, *, page: int = 1, limit: int = 20, status: str | None = None, kind: str | None = None
    ) -> tuple[builtins.list[Task], int]:
        if page < 1 or limit < 1:
            raise ValueError(f"page and limit start at 1 (page={page}, limit={limit})")
        where: builtins.list[str] = ["key_name = $1", "deleted_at IS NULL"]
        args: builtins.list[Any] = [key_name]
        if status is not None:
            args.append(status)
            where.append(f"status = ${len(args)}")
        if kind is not None:
            args.append(builtins.list(KINDS.get(kind, (kind,))))
            where.append(f"catalog = ANY(${len(args)}::text[])")
        clause = " AND ".join(where)
        n = len(args)
        async with self._db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            total = int(await conn.fetchval(f"SELECT count(*) FROM tasks WHERE {clause}", *args))  # one snapshot
            rows = await conn.fetch(
                f"{_SELECT} WHERE {clause} ORDER BY created_at DESC, id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
                *args, limit, (page - 1) * limit,
            )  # fmt: skip
        return [decode_row(r) for r in rows], total

    async def due(self, now: float, limit: int) -> builtins.list[Task]:
        query = f"{_SELECT} WHERE {_OPEN} AND next_poll_at <= $1 ORDER BY next_poll_at LIMIT $2"
        return await self._select(query, (now, limit))

    async def update(self, task: Task, **changes: Any) -> Task | None:
        new, sql, args = _cas(task, changes)
        status = await self._db.execute(sql, *args)
        return new if status == "UPDATE 1" else None

    async def settle(self, task: Task, changes: dict[str, Any], row: UsageRow) -> Task | None:
        if changes.get("status") not in FINAL or changes.get("billing") not in (BILLED, REFUNDED):
            raise ValueError(f"settle needs a final status and billing billed|refunded, not {changes!r}")
        if row.task_id not in (None, task.id):
            raise ValueError(f"usage row of task {row.task_id!r} given to settle task {task.id!r}")
        row = dataclasses.replace(row, task_id=task.id)
        new, sql, args = _cas(task, {"finished_at": time.time(), **changes}, also=_HOLDING)
        async with self._db.acquire() as conn, conn.transaction():
            # The CAS takes the row lock: a second settle of the same task waits here, then finds the
            # version moved on and changes nothing.
            if await conn.execute(sql, *args) != "UPDATE 1":
                return None
            if await insert_rows(conn, [row], in_transaction=True) != 1:  # a row bills this task already
                log.warning("task_usage_row_exists", task_id=task.id)
        return new

    async def reserved_by_key(self) -> dict[str, float]:
        rows = await self._db.fetch(f"SELECT key_name, sum(reserved) FROM tasks WHERE {_HOLDING} GROUP BY key_name")
        return {key: float(total) for key, total in rows}

    async def callbacks_due(self, now: float, limit: int) -> builtins.list[Task]:
        query = (
            f"{_SELECT} WHERE {_CALLBACK_WAITING} AND callback_next_at <= $1 AND status IN ({_FINAL_LIST}) "
            "ORDER BY callback_next_at LIMIT $2"
        )
        return await self._select(query, (now, limit))

    async def pending_count(self) -> int:
        return int(await self._db.fetchval(f"SELECT count(*) FROM tasks WHERE {_OPEN}"))

    async def lead(self) -> bool:
        """One replica polls: the one holding the session advisory lock POLLER_LOCK on a connection of its
        own. The lock goes with the connection, so when that replica dies (or loses its connection) the
        next replica to ask takes it: no home-made election, PostgreSQL's lock is the arbiter."""
        async with self._lead_lock:  # the poll and callback loops both ask: one connection between them
            return await self._lead()

    async def _lead(self) -> bool:
        conn, errors = self._leader, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
        if conn is not None:
            try:
                if self._leading:  # still holding it: the connection (and so the lock) is alive
                    await conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_S)
                    return True
                # Not the leader: ask again on the same connection (not a new server process each round).
                # One lock per schema: gateways on other schemas of the same database poll their own tasks.
                if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1 || current_schema()))", POLLER_LOCK):
                    self._leading = True
                    log.info("task_poller_leading")
                return self._leading
            except errors:
                conn.terminate()
                if self._leading:
                    log.warning("task_poller_lock_lost")
                self._leader, self._leading = None, False
                return False
        try:
            self._leader = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S)
        except errors:
            return False
        return await self._lead()

    async def _select(self, query: str, args: Sequence[Any]) -> builtins.list[Task]:
        return [decode_row(r) for r in await self._db.fetch(query, *args)]


def _cas(task: Task, changes: dict[str, Any], also: str = "") -> tuple[Task, str, builtins.list[Any]]:
    return cas(task, changes, also, mark=lambda i: f"${i}", encode=_encode)


def _encode(name: str, value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL text cannot hold NUL (a vendor's message might)
        return value.replace("\x00", "\ufffd")
    return encode_value(name, value)
