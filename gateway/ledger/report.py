"""`python -m gateway usage`: totals from the usage table (requests, errors, tokens, cost) by key, model,
channel, platform, status or UTC day, as a table, CSV or JSON, for one key or model and a span of time;
and `--replay-log`, which puts back the rows a gateway could only log (`usage_row_unsaved`, when its
disk was full)."""

from __future__ import annotations

import argparse
import calendar
import csv
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from config import Config
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
    if not Path(config.database).exists():
        print(f"{config.database}: no usage database yet", file=sys.stderr)
        return 1
    where, params = [], []
    now = time.time()
    if args.since is not None:
        where.append("ts >= ?")
        params.append(args.since.at(now, end=False))
    if args.until is not None:
        where.append("ts < ?")
        params.append(args.until.at(now, end=True))
    if args.key:
        where.append("key_name = ?")
        params.append(args.key)
    if args.model:
        where.append("model = ?")
        params.append(args.model)
    grouped = ", ".join(GROUPS[name] for name in args.by)
    order = grouped if "day" in args.by else "COUNT(*) DESC"  # days in order; else the busiest first
    sql = (
        f"SELECT {grouped}, COUNT(*), SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens), "
        f"SUM(total_tokens), ROUND(SUM(COALESCE(cost, 0)), 6), ROUND(AVG(latency_ms), 1) FROM usage "
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + f"GROUP BY {grouped} ORDER BY {order}"
    )
    db = sqlite3.connect(f"file:{config.database}?mode=ro", uri=True)
    try:
        rows = db.execute(sql, params).fetchall()
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
    Path(config.database).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(config.database)
    try:
        db.executescript(SCHEMA)
        inserted = insert_once(db, rows)
        db.commit()
    finally:
        db.close()
    print(f"{inserted} row(s) inserted, {len(rows) - inserted} already there, {skipped} line(s) unreadable")
    return 0
