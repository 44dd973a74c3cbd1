"""Stopping background tasks for sure: the loops a process runs beside its requests (health sync,
the task poller, the metrics refresh, retries) end with the app, however their last await ended."""

from __future__ import annotations

import asyncio
from typing import Any

GRACE_S = 1.0


async def stop(*tasks: asyncio.Task[Any] | None, grace: float = GRACE_S) -> None:
    """Cancel `tasks` and wait until every one has ended.

    One cancel is not always enough. When a library's own timeout expires in the same moment as the
    cancel (redis-py's connect and reply timeouts, `asyncio.wait_for` on Python 3.11), the task may get
    the timeout's error instead of CancelledError, and a loop that catches that error runs on as if
    nothing had been asked: a replica under load then hung for ever at shutdown (seen in a test). So a
    task still running `grace` seconds after its cancel is cancelled again, until it ends. What each
    ended with is read here: a stopping loop's error is not news."""
    given = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=grace)
    for task in given:
        if not task.cancelled():
            task.exception()
