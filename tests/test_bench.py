"""`python -m tests.bench --quick` still runs end to end, so `make bench` does not rot. No timing is asserted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.scale import unreachable

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # run by `make test` and CI; `make test-fast` leaves it out
def test_bench_quick_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gateway / floor" in proc.stdout
    summary = json.loads(out.read_text())
    targets = {"direct", "floor", "gateway", "quiet", "2 workers", "no metrics", "limited", "10k tasks"}
    # The scale-out targets run when the servers the tests use answer; skipped, the bench says why.
    skipped = asyncio.run(unreachable())
    if skipped is None:
        targets |= {"redis+pg", "2 replicas"}
        assert "redis_pg_rps_lo" in summary["ratios"] and "replicas2_rps_lo" in summary["ratios"]
        assert summary["targets"]["redis+pg"]["redis_cpu_us_per_req"] > 0
    else:
        assert summary["scale_skipped"] and "redis+pg, 2 replicas: skipped" in proc.stdout
    assert set(summary["targets"]) == targets
    assert "limited_rps_lo" in summary["ratios"] and "10k_tasks_rps_lo" in summary["ratios"]
    for name, (have, want) in summary["rows"].items():
        assert have == want, f"{name}: {have} usage rows for {want} answered requests"
    assert all(t["errors"] == 0 for t in summary["targets"].values())
