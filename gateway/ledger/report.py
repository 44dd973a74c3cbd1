"""`python -m gateway usage`: totals from the usage table as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
import time
from pathlib import Path

import orjson

from config import Config

GROUPS = {
    "key": "key_name",
    "model": "model",
    "channel": "channel",
    "platform": "platform",
    "status": "status",
    "day": "date(ts, 'unixepoch')",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", choices=sorted(GROUPS), default="key", help="group rows by (default: key)")
    p.add_argument("--since", type=float, help="hours back from now (default: all)")
    p.add_argument("--key", help="only this key name")
    p.add_argument("--model", help="only this public model")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")


def report(config: Config, args: argparse.Namespace) -> int:
    if not Path(config.database).exists():
        print(f"{config.database}: no usage database yet", file=sys.stderr)
        return 1
    where, params = [], []
    if args.since is not None:
        where.append("ts >= ?")
        params.append(time.time() - args.since * 3600)
    if args.key:
        where.append("key_name = ?")
        params.append(args.key)
    if args.model:
        where.append("model = ?")
        params.append(args.model)
    group = GROUPS[args.by]
    sql = (
        f"SELECT {group} AS grp, COUNT(*), SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens), "
        f"SUM(total_tokens), ROUND(SUM(COALESCE(cost, 0)), 6), ROUND(AVG(latency_ms), 1) FROM usage "
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + "GROUP BY grp ORDER BY COUNT(*) DESC"
    )
    db = sqlite3.connect(f"file:{config.database}?mode=ro", uri=True)
    try:
        rows = db.execute(sql, params).fetchall()
    finally:
        db.close()
    header = (args.by, "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost", "avg_latency_ms")
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
