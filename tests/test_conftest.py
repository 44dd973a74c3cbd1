"""The test set-up itself: what every test runs under."""

from __future__ import annotations

import asyncio


async def test_loops_run_in_debug_mode():
    assert asyncio.get_running_loop().get_debug()
