"""`python -m gateway usage`: totals from the usage table (requests, errors, tokens, cost) by key, model,
channel, platform, status or UTC day, as a table, CSV or JSON, for one key or model and a span of time;
and `--replay-log`, which puts back the rows a gateway could only log (`usage_row_unsaved`, when its
disk was full)."""

from __future__ import annotations

import argparse
import asyncio
import calendar
import csv
import sqlite3
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from config import Config
from gateway.ledger.backends import is_postgres
from gateway.ledger.sink import COLUMNS, UsageRow
from gateway.ledger.usage import SCHEMA, insert_once

GROUPS = {
    "key": "key_name",
    "model": "model",
    "channel": "channel",
    "platform": "platform",
    "status": "status",
    "day": "date(ts, 'unixepoch')",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", type=groups, default=("key",), metavar="|".join(GROUPS),
                   help="group rows by one of these, or several joined by commas: key,day (default: key)")
    p.add_argument("--since", type=moment, metavar="HOURS|YYYY-MM-DD",
                   help="from this many hours ago, or from the start of this UTC day (default: all)")
    p.add_argument("--until", type=moment, metavar="HOURS|YYYY-MM-DD",
                   help="up to this many hours ago, or to the end of this UTC day (default: now)")
    p.add_argument("--key", help="only this key name")
    p.add_argument("--model", help="only this public model")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--replay-log", metavar="FILE", help="insert the usage_row_unsaved rows of a JSON log file "
                   "('-' for stdin) into the usage table; a row already there is not inserted again")


@dataclass(frozen=True, slots=True)
class Moment:
    """A --since/--until: hours back from now, or a UTC day (its start as a start, its end as an end)."""

    hours: float | None = None
    day: int | None = None  # unix seconds the day starts at

    def at(self, now: float, *, end: bool) -> float:
        if self.day is not None:
            return float(self.day + 86400 if end else self.day)
        return now - (self.hours or 0.0) * 3600


def groups(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: group by {', '.join(GROUPS)} (several joined by commas)")
    return tuple(dict.fromkeys(names))


def moment(text: str) -> Moment:
    try:
        hours = float(text)
    except ValueError:
        pass
    else:
        if hours >= 0 and hours != float("inf"):
            return Moment(hours=hours)
    try:
        return Moment(day=calendar.timegm(time.strptime(text, "%Y-%m-%d")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither hours back from now (24) nor a date (2025-01-31)") from None


def report(config: Config, args: argparse.Namespace) -> int:
    if args.replay_log:
        return replay_log(config, args.replay_log)
    conditions: list[tuple[str, str, object]] = []  # column, operator, value
    now = time.time()
    if args.since is not None:
        conditions.append(("ts", ">=", args.since.at(now, end=False)))
    if args.until is not None:
        conditions.append(("ts", "<", args.until.at(now, end=True)))
    if args.key:
        conditions.append(("key_name", "=", args.key))
    if args.model:
        conditions.append(("model", "=", args.model))
    if is_postgres(config.database):
        found = _pg_report(config.database, args.by, conditions)
        if found is None:
            return 1
        rows = found
    else:
        if not Path(config.database).exists():
            print(f"{config.database}: no usage database yet", file=sys.stderr)
            return 1
        where = " AND ".join(f"{column} {op} ?" for column, op, _ in conditions)
        grouped = ", ".join(GROUPS[name] for name in args.by)
        order = grouped if "day" in args.by else f"COUNT(*) DESC, {grouped}"  # days in order; else the busiest first
        sql = (
            f"SELECT {grouped}, COUNT(*), SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens), "
            f"SUM(total_tokens), ROUND(SUM(COALESCE(cost, 0)), 6), ROUND(AVG(latency_ms), 1) FROM usage "
            + (f"WHERE {where} " if where else "")
            + f"GROUP BY {grouped} ORDER BY {order}"
        )
        db = sqlite3.connect(f"file:{config.database}?mode=ro", uri=True)
        try:
            rows = db.execute(sql, [value for _, _, value in conditions]).fetchall()
        finally:
            db.close()
    header = (*args.by, "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost", "avg_latency_ms")
    if args.format == "json":
        sys.stdout.write(orjson.dumps([dict(zip(header, r, strict=True)) for r in rows], option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.format == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(rows)
    else:
        table = [header, *[tuple("" if v is None else str(v) for v in r) for r in rows]]
        widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
        for r in table:
            print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)))
    return 0


# PostgreSQL's spelling of GROUPS, and how each sorts as SQLite sorts it: text in byte order, nulls first.
PG_GROUPS = {
    "key": ("key_name", 'key_name COLLATE "C" NULLS FIRST'),
    "model": ("model", 'model COLLATE "C" NULLS FIRST'),
    "channel": ("channel", 'channel COLLATE "C" NULLS FIRST'),
    "platform": ("platform", 'platform COLLATE "C" NULLS FIRST'),
    "status": ("status", "status NULLS FIRST"),
    "day": ("to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", "1"),
}


def _pg_report(dsn: str, by: tuple[str, ...], conditions: list[tuple[str, str, object]]) -> list[tuple[object, ...]] | None:
    """The report's rows from PostgreSQL, in the same shape and order as from SQLite; None (and a
    message saying why) when there is no table or no server to read."""
    from gateway.ledger.backends import masked

    where = " AND ".join(f"{column} {op} ${i}" for i, (column, op, _) in enumerate(conditions, 1))
    grouped = ", ".join(PG_GROUPS[name][0] for name in by)
    order = ", ".join(PG_GROUPS[name][0] if name == "day" else PG_GROUPS[name][1] for name in by)
    sql = (
        f"SELECT {grouped}, count(*), sum((status >= 400)::int)::bigint, sum(prompt_tokens)::bigint, "
        "sum(completion_tokens)::bigint, sum(total_tokens)::bigint, round(sum(coalesce(cost, 0))::numeric, 6)::float8, "
        "round(avg(latency_ms)::numeric, 1)::float8 FROM usage "
        + (f"WHERE {where} " if where else "")
        + f"GROUP BY {grouped} ORDER BY {order if 'day' in by else 'count(*) DESC, ' + order}"
    )
    found = _pg_run(dsn, _pg_fetch(dsn, sql, [value for _, _, value in conditions]))
    if found is _NO_TABLE:
        print(f"{masked(dsn)}: no usage table yet", file=sys.stderr)
        return None
    return found if isinstance(found, list) else None


_NO_TABLE = object()


async def _pg_fetch(dsn: str, sql: str, params: list[object]) -> object:
    import asyncpg

    from gateway.ledger.pg_usage import connect

    conn = await connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *params)]
    except asyncpg.UndefinedTableError:
        return _NO_TABLE
    finally:
        await conn.close()


def _pg_run(dsn: str, work: Coroutine[Any, Any, object]) -> object:
    """Run `work` against PostgreSQL; None, with the reason printed (never the password), if it failed."""
    from gateway.ledger.backends import masked, redact

    try:
        return asyncio.run(work)
    except Exception as exc:
        print(f"{masked(dsn)}: {redact(f'{type(exc).__name__}: {exc}', dsn)}", file=sys.stderr)
        return None


def replay_log(config: Config, source: str) -> int:
    """Insert every `usage_row_unsaved` row of a JSON-lines log into the usage table, once."""
    stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # closed below
    try:
        rows, skipped = [], 0
        for line in stream:
            if b"usage_row_unsaved" not in line:
                continue
            try:
                entry = orjson.loads(line)
                rows.append(UsageRow(**{k: v for k, v in entry["row"].items() if k in COLUMNS}))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                skipped += 1
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if is_postgres(config.database):
        done = _pg_run(config.database, _pg_insert(config.database, rows))
        if not isinstance(done, int):
            return 1
        inserted = done
    else:
        inserted = _sqlite_insert(config.database, rows)
    print(f"{inserted} row(s) inserted, {len(rows) - inserted} already there, {skipped} line(s) unreadable")
    return 0


async def _pg_insert(dsn: str, rows: list[UsageRow]) -> int:
    from gateway.ledger import pg_schema
    from gateway.ledger.pg_usage import connect, insert_rows

    conn = await connect(dsn)
    try:
        await pg_schema.migrate(conn)
        return await insert_rows(conn, rows)
    finally:
        await conn.close()


def _sqlite_insert(database: str, rows: list[UsageRow]) -> int:
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(database)
    try:
        db.executescript(SCHEMA)
        inserted = insert_once(db, rows)
        db.commit()
    finally:
        db.close()
    return inserted
