"""`gateway keys`: what an operator needs to manage client keys without a secret ever sitting in a file:
list the keys with their limits and spend, hash a key for `key_sha256:`, make a new one."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from config import Config, sha256_hex

HELP = """\
  gateway keys [list] [--config PATH] [--format table|json]
        each client key's name, models, platforms, tags, limits, its spend in the current budget period
        (UTC calendar day or month, or ever) and remaining budget, from the usage database
        (never a key or its hash); works without the secrets' variables set
  gateway keys hash < keyfile
        read one key from stdin (prompted without echo on a terminal), print its sha256 for key_sha256:
  gateway keys new --name NAME [--prefix sk-gw-]
        print a fresh random key, then the gateway.yaml entry that holds only its hash
"""


def add_arguments(p: argparse.ArgumentParser, config_help: str) -> None:
    p.add_argument("--config", help=config_help)
    p.add_argument("--format", choices=("table", "json"), default="table")
    sub = p.add_subparsers(dest="keys_command", metavar="{list,hash,new}")
    p_list = sub.add_parser("list", help="each key's limits and spend (the default)")
    p_list.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    p_list.add_argument("--format", choices=("table", "json"), default=argparse.SUPPRESS)
    sub.add_parser("hash", help="sha256 of a key read from stdin, for key_sha256:")
    p_new = sub.add_parser("new", help="a fresh random key and its gateway.yaml entry")
    p_new.add_argument("--name", required=True, help="the key's name in gateway.yaml (shows in the usage table)")
    p_new.add_argument("--prefix", default="sk-gw-", help="text before the random part (default: sk-gw-)")


def hash_key() -> int:
    key = getpass.getpass("key: ") if sys.stdin.isatty() else sys.stdin.read()
    key = key.strip()
    if not key:
        print("no key on stdin: pipe one in, e.g. `gateway keys hash < keyfile`", file=sys.stderr)
        return 1
    print(sha256_hex(key))
    return 0


def new_key(name: str, prefix: str) -> int:
    if not name.strip():
        print("--name must not be empty", file=sys.stderr)
        return 1
    key = prefix + secrets.token_urlsafe(32)
    print(key)
    print()
    print("# Give the key above to the client: it is not stored anywhere. Under keys: in gateway.yaml:")
    entry = yaml.safe_dump([{"name": name, "key_sha256": sha256_hex(key)}], sort_keys=False, allow_unicode=True)
    print("".join(f"  {line}" for line in entry.splitlines(keepends=True)), end="")
    return 0


def list_keys(config: Config, fmt: str) -> int:
    from gateway.billing.limiter import period_bounds  # here: `keys hash` and `keys new` need none of the server

    now = time.time()
    bounds = {k.name: period_bounds(k.budget_period, now) for k in config.keys}
    spend = _spend(config.database, {name: start for name, (start, _) in bounds.items()})
    rows: list[dict[str, Any]] = []
    for k in config.keys:
        spent = spend.get(k.name, 0.0) if spend is not None else None
        start, end = bounds[k.name]
        rows.append({
            "name": k.name,
            "models": list(k.models.patterns) if k.models is not None else None,
            "platforms": sorted(k.platforms) if k.platforms is not None else None,
            "tags": sorted(k.tags) if k.tags is not None else None,
            "rpm": k.rpm,
            "tpm": k.tpm,
            "budget": k.budget,
            "budget_period": k.budget_period,
            "period_start": _date(start),
            "period_end": _date(end),
            "spend": None if spent is None else round(spent, 6),
            "remaining": None if k.budget is None or spent is None else round(k.budget - spent, 6),
        })  # fmt: skip
    if fmt == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if not rows:
        print(f"no keys in {config.source or 'the config'}")
        return 0
    header = [h for h in rows[0] if h not in ("period_start", "period_end")]  # the table says the period's kind
    table = [header, *[[_cell(r[h], all_if_none=h in ("models", "platforms", "tags")) for h in header] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _date(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%d", time.gmtime(ts)) if ts is not None else None


def _cell(value: Any, *, all_if_none: bool) -> str:
    if value is None:
        return "*" if all_if_none else "-"
    if isinstance(value, list):
        return ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _spend(database: str, since: dict[str, float | None]) -> dict[str, float] | None:
    """Each key's cost in its current budget period (`since`: when the period began; None: ever);
    None when there is no database to read."""
    from gateway.ledger.backends import is_postgres, masked, redact, usage_reader
    from gateway.ledger.reader import SqliteUsageReader

    if is_postgres(database):
        try:
            return asyncio.run(usage_reader(database).spent_by_key(since))
        except Exception as exc:  # unreachable, refused: the list still shows the limits
            print(f"{masked(database)}: spend not read: {redact(f'{type(exc).__name__}: {exc}', database)}", file=sys.stderr)
            return None
    if not Path(database).exists():
        return None
    try:
        return SqliteUsageReader(database).spent_by_key_now(since)
    except sqlite3.Error:
        return None
