"""The usage table and its writer: one row per client request, batched off the request path.

`UsageWriter.record()` only appends to an in-memory queue; a background task writes batches with
aiosqlite in WAL mode. `BatchedWriter` is the part that does not depend on the database (batches,
spool, held rows, recovery), which the PostgreSQL writer (gateway.ledger.pg_usage) shares. When the database cannot be written (disk full, locked, read-only, missing),
the batch goes to a JSONL spool beside the database (`data/gateway.spool.jsonl` by default), which is
replayed into the table on the next start, or as soon as a later write succeeds. If even the spool
cannot be written, each row is logged at critical level. A row is never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import operator
import sqlite3
from dataclasses import fields
from itertools import chain
from pathlib import Path

import aiosqlite
import orjson
import structlog

from gateway.ledger import spool
from gateway.ledger.sink import COLUMNS, UsageRow

log = structlog.get_logger("gateway.usage")


# One row's values in column order. dataclasses.astuple deep-copies every field: ~30 us a row, on the event loop.
_values = operator.attrgetter(*COLUMNS)
_COLUMN_LIST = ", ".join(COLUMNS)
_PLACEHOLDERS = ", ".join("?" for _ in COLUMNS)
# A batch goes in as multi-row INSERTs, not executemany: the sqlite3 module lets go of the GIL around
# every statement step, and a step per row made the writer thread and the event loop trade the GIL
# hundreds of times a second under load (about a fifth of the CPU per request, measured). Statements
# carry a power of two of rows, so a handful of statement texts serve every batch size from the
# statement cache, each within SQLite's limit on bound parameters.
_MAX_PARAMETERS = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
_MAX_ROWS_PER_INSERT = 1 << ((_MAX_PARAMETERS // len(COLUMNS)).bit_length() - 1)  # the largest power of two that fits


@functools.lru_cache(maxsize=64)
def _insert_rows(n: int) -> str:
    return f"INSERT INTO usage ({_COLUMN_LIST}) VALUES " + ", ".join([f"({_PLACEHOLDERS})"] * n)


# A replayed spool row goes in only if it is not there yet (a replay cut short may be run again).
_INSERT_ONCE = (
    f"INSERT INTO usage ({_COLUMN_LIST}) SELECT {_PLACEHOLDERS} "
    "WHERE NOT EXISTS (SELECT 1 FROM usage WHERE ts = ? AND request_id = ?)"
)


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


class BatchedWriter:
    """What every `UsageSink` does whatever its database: rows batched off the request path, spooled
    when the database cannot take them, held in memory when even the spool cannot, replayed when the
    database is back. A subclass says how to connect, insert, probe and disconnect (`UsageWriter`:
    SQLite; gateway.ledger.pg_usage: PostgreSQL). `record()` is safe to call from any request handler.

    While the database cannot take writes, batches go to the spool as soon as they are taken, so rows
    wait in memory no longer than when all is well; a cheap probe asks whether it takes writes again at
    most once every `retry_s`, doubling after each probe that fails up to `max_retry_s` (backoff), and
    then the spool is replayed.
    """

    def __init__(
        self,
        spool_path: Path,
        *,
        batch_size: int,
        flush_interval_s: float,
        retry_s: float,
        max_retry_s: float | None = None,
    ) -> None:
        self.spool_path = spool_path
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_s = retry_s
        self.max_retry_s = retry_s if max_retry_s is None else max(max_retry_s, retry_s)
        self._retry_in = retry_s  # the wait before the next recovery probe, doubled by each that fails
        self._retry_at = 0.0  # loop time of the next recovery probe while unhealthy
        self._rows: list[UsageRow] = []  # recorded, not yet taken by a batch (a list: Queue costs ~3 us a row)
        self._pending = asyncio.Event()
        self._lock = asyncio.Lock()  # one batch in flight at a time, so flush() sees every row
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._full = asyncio.Event()  # set by record() when a batch's worth of rows is waiting, and by close()
        self._closed = False
        # Rows neither the database nor the spool could take (a full disk holds both): kept here and
        # tried again with every batch, up to MAX_HELD; past that a row is dropped, counted and logged.
        self._held: list[UsageRow] = []
        self.dropped = 0
        self._reported = False  # the current outage has been logged
        self.written = 0
        self.spooled = 0  # rows appended to the spool since start
        self.healthy = False

    # -- what a database's writer says ---------------------------------------------------------------

    @property
    def _where(self) -> dict[str, str]:
        """Log fields naming the database (never a password)."""
        raise NotImplementedError

    @property
    def _connected(self) -> bool:
        raise NotImplementedError

    async def _connect(self) -> None:
        """Open the database, create or upgrade its tables and check it takes writes; raise if it does not
        (leaving nothing open)."""
        raise NotImplementedError

    async def _probe(self) -> None:
        """Raise unless the open connection takes a write now."""
        raise NotImplementedError

    async def _insert(self, batch: list[UsageRow]) -> None:
        """Insert the batch in one transaction; raise (with nothing of it written) if that fails."""
        raise NotImplementedError

    async def _insert_once(self, rows: list[UsageRow]) -> None:
        """Insert, in one transaction, the rows the table does not hold yet (a replayed spool)."""
        raise NotImplementedError

    def _keep_connection(self, exc: BaseException) -> bool:
        """After a failed batch: whether the connection is still good (only busy), or must be opened afresh."""
        return False

    async def _disconnect(self) -> None:
        raise NotImplementedError

    def _describe(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    # -- the sink ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database and replay any spool. A database that cannot be opened does not stop the
        gateway: rows go to the spool until it can be (readyz says not ready meanwhile)."""
        async with self._lock:
            if await self._open():
                await self._replay_spool()
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    def record(self, row: UsageRow) -> None:
        if self._closed:  # a straggler after shutdown: the spool is all that is left
            self._spool_now([row], "usage writer already closed")
            return
        rows = self._rows
        rows.append(row)
        if len(rows) == 1:
            self._pending.set()
        elif len(rows) == self.batch_size:
            self._full.set()  # a batch is ready: no need to wait out the flush interval

    async def flush(self) -> None:
        """Write every row queued so far, now."""
        async with self._lock:
            await self._write(self._drain())

    @property
    def queued(self) -> int:
        """Rows recorded and not yet taken by a batch."""
        return len(self._rows)

    @property
    def held(self) -> int:
        """Rows kept in memory because neither the database nor the spool could take them."""
        return len(self._held)

    async def close(self) -> None:
        """Write (or spool) every queued row, then close the database."""
        self._closing.set()
        self._full.set()
        self._pending.set()
        if self._task is not None:
            await self._task
            self._task = None
        while True:  # a handler may record a row while the last batch is being written
            await self.flush()
            if not self._rows:
                self._closed = True
                break
        if self._held:  # the process is going: the log is the last place these rows can go
            held, self._held = self._held, []
            _log_unsaved(held, "usage database and spool unavailable at shutdown")
        if self._connected:
            await self._disconnect()

    async def writable(self) -> bool:
        """Whether the last write (or probe) went into the table. While it did not, a probe here (at
        most once every `retry_s`, or the backoff's wait) lets an idle gateway notice the database is
        back, and replay."""
        if not self.healthy or self._held:
            async with self._lock:
                if self._held:
                    await self._write([])  # held rows first: the disk may have room again
                await self._recover()
        return self.healthy and not self._held

    async def _open(self) -> bool:
        try:
            await self._connect()
        except Exception as exc:
            self._unhealthy("usage_db_open_failed", exc)
            return False
        self.healthy = True
        return True

    async def _recover(self) -> None:
        """While unhealthy, when the backoff allows: does the database take writes again? If it does,
        replay the spool. Called with the lock held."""
        loop = asyncio.get_running_loop()
        if self.healthy or loop.time() < self._retry_at:
            return
        self._retry_at = loop.time() + self._retry_in
        self._retry_in = min(self._retry_in * 2, self.max_retry_s)  # the next probe waits longer
        if not self._connected:
            if not await self._open():
                return
        else:
            try:
                await self._probe()  # still locked, or gone: later
            except Exception:
                return
        self.healthy, self._reported, self._retry_in = True, False, self.retry_s
        log.info("usage_db_recovered", **self._where)
        await self._replay_spool()

    def _unhealthy(self, event: str, exc: BaseException) -> None:
        if not self._reported:  # once per outage: every batch meanwhile logs only where its rows went
            log.error(event, **self._where, error=self._describe(exc), spool=str(self.spool_path))
            self._reported = True
        self.healthy = False

    async def _run(self) -> None:
        """Write what waits once a batch's worth has come or `flush_interval_s` has passed since the
        first of it, whichever is sooner, all of it in one transaction. So a row waits in memory at most
        `flush_interval_s` plus one commit: what a SIGKILL can lose (docs/performance.md)."""
        while not self._closing.is_set():
            await self._pending.wait()
            if len(self._rows) < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval_s):
                        await self._full.wait()
            self._pending.clear()
            self._full.clear()
            async with self._lock:
                await self._write(self._drain())
            if self._rows:
                self._pending.set()

    def _drain(self) -> list[UsageRow]:
        rows, self._rows = self._rows, []
        return rows

    async def _write(self, batch: list[UsageRow]) -> None:
        """Insert the batch; when that fails, spool it. Called with the lock held."""
        if self._held:  # rows an earlier batch could not place go first, in order
            batch, self._held = self._held + batch, []
        if not batch:
            return
        if not self.healthy:
            # Spooled at once, at the rate rows come: waiting on a database that failed would only keep
            # them in memory, where a crash loses them.
            await self._spool(batch, "usage database unavailable")
            await self._recover()
            return
        try:
            await self._insert(batch)
        except Exception as exc:
            self._unhealthy("usage_db_write_failed", exc)
            self._retry_at = asyncio.get_running_loop().time() + self._retry_in
            if not self._keep_connection(exc):  # read-only, full, gone: a fresh connection will see the fix
                with contextlib.suppress(Exception):
                    await self._disconnect()
            await self._spool(batch, self._describe(exc))
            return
        self.written += len(batch)

    async def _spool(self, batch: list[UsageRow], reason: str) -> None:
        error = await asyncio.to_thread(self._append_spool, batch, reason)
        if error is None:
            return
        # Neither the database nor the spool (a full disk holds both): keep the rows and try again with
        # the next batch, or when /readyz asks; only past MAX_HELD are rows dropped, counted and logged.
        room = MAX_HELD - len(self._held)
        self._held.extend(batch[:room])
        if len(batch) > room:
            dropped = batch[room:]
            self.dropped += len(dropped)
            _log_unsaved(dropped, f"{reason}; spool: {error}; {MAX_HELD} rows already held")
        log.error("usage_rows_held", rows=len(self._held), dropped=self.dropped, spool=str(self.spool_path), error=error)

    def _spool_now(self, batch: list[UsageRow], reason: str) -> None:
        """For a row recorded after close: the spool, or else the log."""
        error = self._append_spool(batch, reason)
        if error is not None:
            _log_unsaved(batch, f"{reason}; spool: {error}")

    def _append_spool(self, batch: list[UsageRow], reason: str) -> str | None:
        """Append the batch to the spool; the error, or None once it is there."""
        data = b"".join(orjson.dumps(dataclasses.asdict(r)) + b"\n" for r in batch)
        try:
            spool.append(self.spool_path, data)
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        self.spooled += len(batch)
        log.warning("usage_rows_spooled", rows=len(batch), spool=str(self.spool_path), reason=reason)
        return None

    async def _replay_spool(self) -> None:
        """Move spooled rows into the table. Safe to repeat: a row already there is not inserted again."""
        try:
            claimed_paths = await asyncio.to_thread(spool.claim, self.spool_path)
        except OSError as exc:
            log.error("usage_spool_replay_failed", spool=str(self.spool_path), error=f"{type(exc).__name__}: {exc}")
            return
        for path in claimed_paths:
            claimed = spool.Claim(path)
            try:
                data = await asyncio.to_thread(claimed.read)
            except OSError as exc:  # left where it is, for the next replay
                log.error("usage_spool_replay_failed", spool=str(path), error=f"{type(exc).__name__}: {exc}")
                continue
            if data is None:
                continue
            replayed = False
            try:
                rows = _parse_spool(data, path)
                await self._insert_once(rows)
                replayed = True
                log.info("usage_spool_replayed", rows=len(rows), spool=str(path))
            except Exception as exc:
                log.error("usage_spool_replay_failed", spool=str(path), error=self._describe(exc))
            finally:
                await asyncio.to_thread(claimed.release, replayed)


class UsageWriter(BatchedWriter):
    """The `UsageSink` of one process on SQLite: it owns the database connection, in WAL mode."""

    def __init__(
        self,
        path: str,
        *,
        spool_path: str | None = None,
        batch_size: int = 512,
        flush_interval_s: float = 0.1,
        busy_timeout_s: float = 5.0,
        retry_s: float = 1.0,
    ) -> None:
        # On another disk when configured so, so that a full disk does not take both at once.
        super().__init__(
            Path(spool_path) if spool_path else Path(path).with_suffix(".spool.jsonl"),
            batch_size=batch_size, flush_interval_s=flush_interval_s, retry_s=retry_s,
        )  # fmt: skip
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: aiosqlite.Connection | None = None

    @property
    def _where(self) -> dict[str, str]:
        return {"path": self.path}

    @property
    def _connected(self) -> bool:
        return self._db is not None

    async def _connect(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            await db.executescript(SCHEMA)
            await migrate(db)
            await db.commit()
            # SQLite opens a file it may not write read-only, without a word: ask for a write lock.
            await _probe_write(db, self.busy_timeout_s, self.busy_timeout_s)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def _probe(self) -> None:
        assert self._db is not None
        await _probe_write(self._db, min(self.busy_timeout_s, 0.1), self.busy_timeout_s)

    async def _insert(self, batch: list[UsageRow]) -> None:
        assert self._db is not None
        try:
            done = 0
            while done < len(batch):
                n = min(_MAX_ROWS_PER_INSERT, 1 << ((len(batch) - done).bit_length() - 1))
                chunk = batch[done : done + n]
                await self._db.execute(_insert_rows(n), list(chain.from_iterable(map(_values, chunk))))  # no Python loop per value
                done += n
            await self._db.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.rollback()  # no half batch may ride along with the next commit
            raise

    async def _insert_once(self, rows: list[UsageRow]) -> None:
        assert self._db is not None
        try:
            await self._db.executemany(_INSERT_ONCE, [(*_values(r), r.ts, r.request_id) for r in rows])
            await self._db.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._db.rollback()
            raise

    def _keep_connection(self, exc: BaseException) -> bool:
        return _is_busy(exc)

    async def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()


# Rows kept in memory while neither the database nor the spool can take them (about 1 KB each).
MAX_HELD = 100_000


def _log_unsaved(rows: list[UsageRow], error: str) -> None:
    """The last resort: each row as a critical log line, which `gateway usage --replay-log` reads back."""
    for r in rows:
        log.critical("usage_row_unsaved", row=dataclasses.asdict(r), error=error)


async def _probe_write(db: aiosqlite.Connection, wait_s: float, busy_timeout_s: float) -> None:
    """Raise unless `db` can take a write within `wait_s`: take the write lock and start a write (a
    delete of nothing: a connection SQLite opened read-only still takes the lock), then roll back.
    The connection's own busy timeout is `busy_timeout_s` again afterwards."""
    await db.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
    try:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("DELETE FROM usage WHERE 0")
        finally:
            await db.rollback()
    finally:
        with contextlib.suppress(Exception):
            await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")


def _is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock: this one is fine, and waits its turn."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _parse_spool(data: bytes, path: Path) -> list[UsageRow]:
    rows: list[UsageRow] = []
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields_ = orjson.loads(line)
            rows.append(UsageRow(**{k: v for k, v in fields_.items() if k in COLUMNS}))
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            # Kept in the log verbatim: an operator can still recover it by hand.
            log.error("usage_spool_bad_line", spool=str(path), line=n, text=line[:4096].decode("utf-8", "replace"),
                      error=str(exc))
    return rows


def insert_once(db: sqlite3.Connection, rows: list[UsageRow]) -> int:
    """Insert the rows a table does not hold yet (same ts and request_id), synchronously; how many went in."""
    before = db.total_changes
    db.executemany(_INSERT_ONCE, [(*_values(r), r.ts, r.request_id) for r in rows])
    return db.total_changes - before


async def migrate(db: aiosqlite.Connection) -> None:
    """Add columns that a newer UsageRow has and an older database lacks."""
    async with db.execute("PRAGMA table_info(usage)") as cur:
        have = {row[1] for row in await cur.fetchall()}
    for f in fields(UsageRow):
        if f.name not in have:
            await db.execute(f"ALTER TABLE usage ADD COLUMN {f.name} {_sql_type(f)}")
