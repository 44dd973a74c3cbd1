"""The usage table and its writer: one row per client request, batched off the request path.

`UsageWriter.record()` only appends to an in-memory queue; a background task writes batches with
aiosqlite in WAL mode. When the database cannot be written (disk full, locked, read-only), the batch
goes to a JSONL spool beside the database, replayed into the table on the next start. A row is
never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import operator
import os
from dataclasses import dataclass, fields
from pathlib import Path

import aiosqlite
import orjson
import structlog

log = structlog.get_logger("gateway.usage")


@dataclass(slots=True)
class UsageRow:
    request_id: str
    ts: float
    key_name: str | None = None
    platform: str | None = None
    endpoint: str | None = None
    model: str | None = None
    upstream_model: str | None = None
    channel: str | None = None
    stream: int = 0
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    attempts: int = 0
    cost: float | None = None
    error: str | None = None
    estimated: int = 0  # 1 when token counts are estimated, not reported by the vendor
    images: int = 0
    input_chars: int = 0
    audio_seconds: float = 0.0


COLUMNS = tuple(f.name for f in fields(UsageRow))
# One row's values in column order. dataclasses.astuple deep-copies every field: ~30 us a row, on the event loop.
_values = operator.attrgetter(*COLUMNS)
_INSERT = f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"


def _sql_type(f: dataclasses.Field[object]) -> str:
    base = str(f.type).split("|")[0].strip()  # "int | None" -> "int"
    return {"int": "INTEGER", "float": "REAL", "str": "TEXT"}[base]


def _column_sql() -> str:
    cols = ["id INTEGER PRIMARY KEY"]
    for f in fields(UsageRow):
        cols.append(f"{f.name} {_sql_type(f)}" + (" NOT NULL" if f.name in ("request_id", "ts") else ""))
    return ", ".join(cols)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage ({_column_sql()});
CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_key_ts ON usage (key_name, ts);
"""


class UsageWriter:
    """Owns the database connection; `record()` is safe to call from any request handler."""

    def __init__(self, path: str, *, batch_size: int = 512, flush_interval_s: float = 0.2) -> None:
        self.path = path
        self.spool_path = Path(path).with_suffix(".spool.jsonl")
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._queue: asyncio.Queue[UsageRow] = asyncio.Queue()
        self._pending = asyncio.Event()
        self._lock = asyncio.Lock()  # one batch in flight at a time, so flush() sees every row
        self._db: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.spooled = 0
        self.healthy = False

    async def start(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.executescript(SCHEMA)
        await self._migrate()
        await self._db.commit()
        self.healthy = True
        await self._replay_spool()
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    def record(self, row: UsageRow) -> None:
        self._queue.put_nowait(row)
        self._pending.set()

    async def flush(self) -> None:
        """Write every row queued so far, now."""
        async with self._lock:
            await self._write(self._drain())

    async def close(self) -> None:
        """Flush every queued row, then close the database."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def writable(self) -> bool:
        if self._db is None:
            return False
        try:
            await self._db.execute("SELECT 1 FROM usage LIMIT 1")
        except Exception:
            return False
        return self.healthy and os.access(Path(self.path).parent, os.W_OK)

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            # Let a burst gather so one transaction carries many rows.
            if self._queue.qsize() < self.batch_size:
                await asyncio.sleep(self.flush_interval_s)
            self._pending.clear()
            async with self._lock:
                # Shielded: cancelling the writer at shutdown must not abandon a batch half written.
                await asyncio.shield(self._write(self._drain(self.batch_size)))
            if not self._queue.empty():
                self._pending.set()

    def _drain(self, limit: int | None = None) -> list[UsageRow]:
        out: list[UsageRow] = []
        while not self._queue.empty() and (limit is None or len(out) < limit):
            out.append(self._queue.get_nowait())
        return out

    async def _write(self, batch: list[UsageRow]) -> None:
        if not batch:
            return
        try:
            assert self._db is not None, "usage writer is closed"
            await self._db.executemany(_INSERT, [_values(r) for r in batch])
            await self._db.commit()
        except Exception as exc:
            self.healthy = False
            self._spool(batch, exc)
            return
        if not self.healthy:
            log.info("usage_db_recovered")
            self.healthy = True
        self.written += len(batch)

    def _spool(self, batch: list[UsageRow], exc: Exception) -> None:
        log.error("usage_db_write_failed", error=f"{type(exc).__name__}: {exc}", rows=len(batch), spool=str(self.spool_path))
        try:
            with self.spool_path.open("ab") as f:
                for r in batch:
                    f.write(orjson.dumps(dataclasses.asdict(r)) + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as spool_exc:
            # Last resort: the rows go to the log, where an operator can still recover them.
            for r in batch:
                log.critical("usage_row_unsaved", row=dataclasses.asdict(r), error=str(spool_exc))
            return
        self.spooled += len(batch)

    async def _replay_spool(self) -> None:
        if not self.spool_path.exists():
            return
        rows: list[UsageRow] = []
        for n, line in enumerate(self.spool_path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                rows.append(UsageRow(**{k: v for k, v in data.items() if k in COLUMNS}))
            except (orjson.JSONDecodeError, TypeError) as exc:
                log.error("usage_spool_bad_line", line=n, error=str(exc))
        assert self._db is not None
        await self._db.executemany(_INSERT, [_values(r) for r in rows])
        await self._db.commit()
        self.spool_path.unlink()
        log.info("usage_spool_replayed", rows=len(rows))

    async def _migrate(self) -> None:
        """Add columns that a newer UsageRow has and an older database lacks."""
        assert self._db is not None
        async with self._db.execute("PRAGMA table_info(usage)") as cur:
            have = {row[1] for row in await cur.fetchall()}
        for f in fields(UsageRow):
            if f.name not in have:
                await self._db.execute(f"ALTER TABLE usage ADD COLUMN {f.name} {_sql_type(f)}")
