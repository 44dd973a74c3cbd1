"""The CLI around serving: the usage report, and refusing an open proxy on a public address."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import yaml

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
