"""Hand freed memory back to the operating system once a burst of requests is over.

After a burst (a thousand streams at once) the process holds tens of megabytes it no longer uses:
reference cycles the burst left behind wait for a full garbage collection, Python keeps freed objects
in 1 MB arenas that go back only when wholly empty, and the C library gives heap pages back on its own
only from the top of its heap. So once the requests in flight have fallen to a quarter of a big enough
peak, one full collection runs and then glibc's `malloc_trim(0)`, which returns every whole free page;
the peak then counts as a quarter of itself, so the last of a big burst is cleaned up after too. Both
together take a millisecond or two (start-up objects are frozen out of collections, see
gateway.server), and they run a couple of times a burst, not per request. Where the C library has no
`malloc_trim` (musl) only the collection runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
from collections.abc import Callable

# The fewest requests in flight that count as a burst worth cleaning up after.
BURST = 200
CHECK_EVERY_S = 0.25


def _libc_malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_malloc_trim = _libc_malloc_trim()


def release() -> None:
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim()


class Trimmer:
    """Watches a count of requests in flight and calls `release` after each burst has passed."""

    def __init__(
        self,
        in_flight: Callable[[], int],
        release: Callable[[], object] = release,
        *,
        burst: int | None = None,
        every_s: float | None = None,
    ) -> None:
        self._in_flight = in_flight
        self._release = release
        # Read at construction, not import: tests lower them rather than hold 200 requests.
        self._burst = BURST if burst is None else burst
        self._every_s = CHECK_EVERY_S if every_s is None else every_s
        self._peak = 0  # the most requests in flight since the last release (then a quarter of the one before)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self._every_s, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        now = self._in_flight()
        if now > self._peak:
            self._peak = now
        elif self._peak >= self._burst and now <= self._peak // 4:
            self._release()
            self._peak //= 4
        self._handle = asyncio.get_running_loop().call_later(self._every_s, self._check)
