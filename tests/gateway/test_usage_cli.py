"""`gateway usage` by key, model, channel and day over a span of dates, and `gateway keys` with each key's
spend in its current budget period: run as the operator runs them, on a database of known rows."""

from __future__ import annotations

import calendar
import csv
import hashlib
import io
import sqlite3
import time
from pathlib import Path

import orjson

from gateway.ledger.sink import UsageRow
from gateway.ledger.usage import SCHEMA, insert_once
from tests.gateway.test_cli import run, write


def day(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d"))


def fill(db_path: Path, rows: list[UsageRow]) -> None:
    db = sqlite3.connect(db_path)
    try:
        db.executescript(SCHEMA)
        insert_once(db, rows)
        db.commit()
    finally:
        db.close()


def row(rid: str, ts: float, key: str, cost: float | None, model: str = "gpt-4o", channel: str = "main") -> UsageRow:
    return UsageRow(
        request_id=rid,
        ts=ts,
        key_name=key,
        model=model,
        channel=channel,
        status=200,
        prompt_tokens=10,
        completion_tokens=2,
        total_tokens=12,
        cost=cost,
        latency_ms=5.0,
    )


ROWS = [
    row("a", day("2025-03-01") + 10, "app1", 0.25),
    row("b", day("2025-03-02") + 10, "app1", 1.0, model="claude-x", channel="claude"),
    row("c", day("2025-03-02") + 86399, "app2", 9.0),
    row("d", day("2025-03-03") + 1, "app1", 0.5),
]


def test_usage_by_key_and_day_between_dates(tmp_path: Path):
    cfg = write(tmp_path, {})
    fill(tmp_path / "u.db", ROWS)
    proc = run(
        "usage",
        "--config",
        str(cfg),
        "--by",
        "key,day",
        "--since",
        "2025-03-02",
        "--until",
        "2025-03-02",
        "--format",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    got = [(r["key"], r["day"], r["requests"], r["cost"]) for r in orjson.loads(proc.stdout)]
    assert got == [("app1", "2025-03-02", 1, 1.0), ("app2", "2025-03-02", 1, 9.0)]  # --until: to the end of that day

    by_day = orjson.loads(run("usage", "--config", str(cfg), "--by", "day", "--key", "app1", "--format", "json").stdout)
    assert [(r["day"], r["cost"]) for r in by_day] == [("2025-03-01", 0.25), ("2025-03-02", 1.0), ("2025-03-03", 0.5)]

    by_channel = run("usage", "--config", str(cfg), "--by", "channel", "--since", "2025-03-02", "--format", "csv")
    table = list(csv.reader(io.StringIO(by_channel.stdout)))
    assert table[0] == [
        "channel",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "avg_latency_ms",
    ]
    assert {r[0]: float(r[6]) for r in table[1:]} == {"main": 9.5, "claude": 1.0}

    by_model = run("usage", "--config", str(cfg), "--by", "model", "--until", "2025-03-01").stdout.splitlines()
    assert by_model[0].split()[:2] == ["model", "requests"] and by_model[1].split()[:2] == ["gpt-4o", "1"]
    # Hours back from now still work; a date this far back leaves nothing.
    assert orjson.loads(run("usage", "--config", str(cfg), "--since", "24", "--format", "json").stdout) == []


def test_usage_refuses_what_is_neither_hours_nor_a_date(tmp_path: Path):
    cfg = write(tmp_path, {})
    fill(tmp_path / "u.db", ROWS)
    bad = run("usage", "--config", str(cfg), "--since", "last week")
    assert bad.returncode == 2 and "neither hours back from now (24) nor a date (2025-01-31)" in bad.stderr
    bad = run("usage", "--config", str(cfg), "--by", "key,colour")
    assert bad.returncode == 2 and "group by key, model, channel, platform, status, day" in bad.stderr


def test_keys_show_spend_in_the_current_period(tmp_path: Path):
    now = time.time()
    month_start = calendar.timegm((*time.gmtime(now)[:2], 1, 0, 0, 0))
    today = now // 86400 * 86400
    cfg = write(
        tmp_path,
        {
            "keys": [
                {"name": "daily", "key": "daily-secret", "budget": 10, "budget_period": "daily", "rpm": 5, "tpm": 900},
                {"name": "monthly", "key": "monthly-secret", "budget": 5, "budget_period": "monthly"},
                {"name": "open", "key": "open-secret"},
            ]
        },
    )
    fill(
        tmp_path / "u.db",
        [
            row("y", today - 60, "daily", 4.0),  # yesterday: not in today's period
            row("t", now - 1, "daily", 1.0),
            row("m", month_start - 60, "monthly", 3.0),  # last month
            row("n", now - 1, "monthly", 2.0),
            row("o", 1000.0, "open", 1.5),
        ],
    )
    proc = run("keys", "list", "--config", str(cfg), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    daily, monthly, open_ = orjson.loads(proc.stdout)
    assert (daily["rpm"], daily["tpm"], daily["budget"], daily["budget_period"]) == (5, 900, 10.0, "daily")
    assert daily["period_start"] == time.strftime("%Y-%m-%d", time.gmtime(today))
    assert (daily["spend"], daily["remaining"]) == (1.0, 9.0)
    assert (monthly["spend"], monthly["remaining"]) == (2.0, 3.0)
    assert monthly["period_start"] == time.strftime("%Y-%m-%d", time.gmtime(month_start))
    assert (open_["spend"], open_["remaining"], open_["budget_period"], open_["period_start"]) == (
        1.5,
        None,
        "total",
        None,
    )
    table = run("keys", "--config", str(cfg)).stdout
    lines = table.splitlines()
    assert lines[1].split() == ["daily", "*", "*", "*", "5", "900", "10", "daily", "1", "9"]
    assert lines[2].split() == ["monthly", "*", "*", "*", "-", "-", "5", "monthly", "2", "3"]
    for secret in ("daily-secret", "monthly-secret", "open-secret"):
        assert secret not in proc.stdout + table
        assert hashlib.sha256(secret.encode()).hexdigest() not in proc.stdout + table


def test_keys_without_a_database_show_no_spend(tmp_path: Path):
    cfg = write(tmp_path, {"keys": [{"name": "app1", "key": "k", "budget": 3}]})
    (entry,) = orjson.loads(run("keys", "--config", str(cfg), "--format", "json").stdout)
    assert entry["spend"] is None and entry["remaining"] is None
