"""The CLI around serving: the usage report, and refusing an open proxy on a public address."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import yaml

from gateway.ledger.sink import UsageRow
from tests.conftest import KEYS, channel

ROOT = Path(__file__).parent.parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_serve_refuses_public_listen_without_keys(tmp_path: Path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(tmp_path / "u.db")}))
    proc = run("serve", "--config", str(cfg), "--listen", "0.0.0.0:18080")
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0:18080 with no keys" in proc.stderr


async def test_usage_report(vendor, gateway_factory, tmp_path: Path):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("main", vendor)],
                                "models": {"gpt-4o": {"price": {"input": 1000000, "output": 2000000}}}})
    client = gw.client()
    for _ in range(3):
        await client.chat.completions.create(model="gpt-4o", messages=[])
    rows = await gw.rows()
    assert rows[0]["cost"] == 11 * 1 + 3 * 2  # no cached_input price: cached tokens bill as input
    cfg = tmp_path / "g.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(gw.db_path)}))
    proc = run("usage", "--config", str(cfg), "--by", "model", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (report,) = orjson.loads(proc.stdout)
    assert report["model"] == "gpt-4o" and report["requests"] == 3 and report["total_tokens"] == 42
    table = run("usage", "--config", str(cfg)).stdout.splitlines()
    assert table[0].split()[:3] == ["key", "requests", "errors"] and table[1].split()[:2] == ["app1", "3"]


def test_replay_log_puts_unsaved_rows_back_once(tmp_path: Path):
    db = tmp_path / "usage.db"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"database": str(db)}))
    rows = [UsageRow(request_id=f"r{i}", ts=1000.0 + i, key_name="app1", status=200, total_tokens=i) for i in range(3)]
    log = tmp_path / "gateway.log"
    lines = [orjson.dumps({"row": dataclasses.asdict(r), "error": "disk full", "event": "usage_row_unsaved",
                           "level": "critical"}) for r in rows]
    log.write_bytes(b"\n".join([b'{"event":"request"}', *lines, b"usage_row_unsaved but not JSON"]) + b"\n")
    first = run("usage", "--config", str(config), "--replay-log", str(log))
    assert first.returncode == 0 and first.stdout.strip() == "3 row(s) inserted, 0 already there, 1 line(s) unreadable"
    again = run("usage", "--config", str(config), "--replay-log", str(log))
    assert again.stdout.strip() == "0 row(s) inserted, 3 already there, 1 line(s) unreadable"
    got = sqlite3.connect(db).execute("SELECT request_id, ts, key_name, total_tokens FROM usage ORDER BY id").fetchall()
    assert got == [(f"r{i}", 1000.0 + i, "app1", i) for i in range(3)]
