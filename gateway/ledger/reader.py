"""Reading the usage table back: spend for budgets, and a key holder's own rows and daily costs.

Reads run on a short-lived read-only SQLite connection in a thread, so a slow query never blocks the
event loop and never holds the writer's connection. The PostgreSQL reader for several replicas
(gateway.ledger.pg_usage) goes behind the same calls (`UsageReader`); gateway.ledger.backends picks one.

Every read of rows or costs names one key: `key_name` None means the rows of requests made without a
key (a gateway with no `keys:`), never every key's.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.ledger.sink import COLUMNS

T = TypeVar("T")
DAY = 86400


@dataclass(frozen=True, slots=True)
class RowQuery:
    """Which of one key's rows: `start` <= ts < `end` (unix seconds; None: unbounded), one public
    `model` (None: any), leaving out rows of the `skip_endpoints`."""

    key_name: str | None
    start: float | None = None
    end: float | None = None
    model: str | None = None
    skip_endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RowPage:
    total: int  # rows matching the query, on every page
    rows: list[dict[str, Any]]  # this page's, newest first, every column of the usage table


@dataclass(frozen=True, slots=True)
class ModelDay:
    """One model's cost on one UTC day."""

    day: int  # unix seconds of the day's start
    model: str
    cost: float


class UsageReader(Protocol):
    async def spent_by_key(self, since: Mapping[str, float | None]) -> dict[str, float]:
        """Each named key's summed cost since its start time (None: ever)."""
        ...

    async def spent(self, key_name: str | None, start: float | None, end: float | None = None) -> float:
        """One key's summed cost with `start` <= ts < `end`."""
        ...

    async def rows(self, query: RowQuery, *, offset: int, limit: int) -> RowPage:
        """A page of one key's rows, newest first, and how many match in all."""
        ...

    async def daily_costs(self, key_name: str | None, start: float | None, end: float | None) -> list[ModelDay]:
        """One key's cost per UTC day and model, `start` <= ts < `end`, by day then model."""
        ...

    async def close(self) -> None:
        """Let go of connections kept between reads, if any."""
        ...


def _where(key_name: str | None, start: float | None, end: float | None) -> tuple[list[str], list[Any]]:
    where = ["key_name = ?" if key_name is not None else "key_name IS NULL"]
    params: list[Any] = [key_name] if key_name is not None else []
    if start is not None:
        where.append("ts >= ?")
        params.append(start)
    if end is not None:
        where.append("ts < ?")
        params.append(end)
    return where, params


class SqliteUsageReader:
    def __init__(self, path: str) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection | None:
        if not Path(self.path).exists():
            return None
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        db.execute("PRAGMA query_only = 1")
        return db

    def _read(self, read: Callable[[sqlite3.Connection], T], empty: T) -> T:
        """`read(db)` on a fresh read-only connection; `empty` when there is no database or table yet."""
        db = self._connect()
        if db is None:
            return empty
        try:
            return read(db)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return empty
            raise
        finally:
            db.close()

    def spent_by_key_now(self, since: Mapping[str, float | None]) -> dict[str, float]:
        def read(db: sqlite3.Connection) -> dict[str, float]:
            return {name: self._sum(db, name, start, None) for name, start in since.items()}

        return self._read(read, {})

    async def spent_by_key(self, since: Mapping[str, float | None]) -> dict[str, float]:
        return await asyncio.to_thread(self.spent_by_key_now, since)

    def spent_now(self, key_name: str | None, start: float | None, end: float | None = None) -> float:
        return self._read(lambda db: self._sum(db, key_name, start, end), 0.0)

    async def spent(self, key_name: str | None, start: float | None, end: float | None = None) -> float:
        return await asyncio.to_thread(self.spent_now, key_name, start, end)

    @staticmethod
    def _sum(db: sqlite3.Connection, key_name: str | None, start: float | None, end: float | None) -> float:
        where, params = _where(key_name, start, end)
        row = db.execute(f"SELECT SUM(cost) FROM usage WHERE {' AND '.join(where)}", params).fetchone()
        return float(row[0] or 0.0)

    def rows_now(self, query: RowQuery, *, offset: int, limit: int) -> RowPage:
        where, params = _where(query.key_name, query.start, query.end)
        if query.model is not None:
            where.append("model = ?")
            params.append(query.model)
        if query.skip_endpoints:
            # A row with no endpoint is kept: NOT IN would drop it along with the skipped ones.
            where.append(f"(endpoint IS NULL OR endpoint NOT IN ({', '.join('?' for _ in query.skip_endpoints)}))")
            params.extend(query.skip_endpoints)
        clause = " AND ".join(where)

        def read(db: sqlite3.Connection) -> RowPage:
            (total,) = db.execute(f"SELECT COUNT(*) FROM usage WHERE {clause}", params).fetchone()
            if not total or limit <= 0:
                return RowPage(int(total or 0), [])
            cursor = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM usage WHERE {clause} ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            return RowPage(int(total), [dict(zip(COLUMNS, r, strict=True)) for r in cursor])

        return self._read(read, RowPage(0, []))

    async def rows(self, query: RowQuery, *, offset: int, limit: int) -> RowPage:
        return await asyncio.to_thread(self.rows_now, query, offset=offset, limit=limit)

    def daily_costs_now(self, key_name: str | None, start: float | None, end: float | None) -> list[ModelDay]:
        where, params = _where(key_name, start, end)
        sql = (
            f"SELECT CAST(ts / {DAY} AS INTEGER) * {DAY} AS day, model, SUM(COALESCE(cost, 0)) FROM usage "
            f"WHERE {' AND '.join(where)} AND model IS NOT NULL GROUP BY day, model ORDER BY day, model"
        )

        def read(db: sqlite3.Connection) -> list[ModelDay]:
            return [ModelDay(int(day), str(model), float(cost)) for day, model, cost in db.execute(sql, params)]

        return self._read(read, [])

    async def daily_costs(self, key_name: str | None, start: float | None, end: float | None) -> list[ModelDay]:
        return await asyncio.to_thread(self.daily_costs_now, key_name, start, end)

    async def close(self) -> None:
        """Nothing to let go of: each read opens and closes its own connection."""
