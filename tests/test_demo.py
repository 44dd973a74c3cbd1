"""`make demo` keeps working: the stand-in vendor's streamed answer comes through the real gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow  # run by `make test` and CI; `make test-fast` leaves it out
def test_demo_streams_an_answer_end_to_end(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.demo", "--once"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    assert list(temp.iterdir()) == []  # its config, database and log went with it
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reached you as it arrived." in proc.stdout
    assert "'channel': 'stand-in', 'status': 200" in proc.stdout
