"""Give memory back to the OS after a burst of connections closes (glibc only).

A thousand open streams grow the C heap by tens of MB of socket and parser buffers. Freed, those
pages stay in the process (glibc trims only the top of the heap), so RSS stays at the peak. Once a
second this compares the open connections with the peak since the last trim; when they have fallen
by half (from at least 256), `malloc_trim(0)` returns the free pages. It costs nothing otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import sys
from collections.abc import AsyncIterator, Callable

CHECK_S = 1.0
MIN_PEAK = 256


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return trim


async def trim_after_bursts(open_connections: Callable[[], int]) -> None:
    """Run until cancelled."""
    trim = _malloc_trim()
    if trim is None:
        return
    peak = 0
    while True:
        await asyncio.sleep(CHECK_S)
        now = open_connections()
        peak = max(peak, now)
        if peak >= MIN_PEAK and now <= peak // 2:
            trim(0)
            peak = now


@contextlib.asynccontextmanager
async def trimming(open_connections: Callable[[], int]) -> AsyncIterator[None]:
    task = asyncio.create_task(trim_after_bursts(open_connections), name="malloc-trim")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
