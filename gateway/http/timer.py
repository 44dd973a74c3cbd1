"""The timer on every wait for the upstream: one request's `Slot`.

`with slot.timeout_at(when)` behaves as `async with asyncio.timeout_at(when)` (TimeoutError on expiry,
other cancellations pass through) at a fraction of its cost, which showed in profiles because a
request waits on its upstream at least twice and a stream once per idle read. Arming a timer needs no
await, so it is a plain `with`: no coroutines. A wait never runs past the shutdown deadline of the
drain the slot belongs to (gateway.http.drain).
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.http.drain import Drain


class Slot:
    """One request's waits on its upstream; at most one is under way at a time, in the task that made it.

    The slot keeps one loop timer across its waits: a wait whose deadline is no earlier than the armed
    timer reuses it, and a timer that fires before the current deadline (the stream moved on since)
    re-arms itself. A stream thus costs a timer per idle period, not one per chunk.
    """

    __slots__ = ("_active", "_armed_at", "_cancelling", "_drain", "_fired", "_handle", "_loop", "_task", "_when")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(self._loop)
        assert task is not None, "a Slot belongs to a task"
        self._task = task
        self._when: float | None = None  # the deadline of the wait under way (or the last one)
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf  # when the timer, if any, goes off
        self._active = self._fired = False
        self._cancelling = 0

    def timeout_at(self, when: float | None) -> Slot:
        """`asyncio.timeout_at(when)`, but never past the shutdown deadline. Enter it at once."""
        deadline = self._drain.deadline
        if deadline is not None and (when is None or deadline < when):
            when = deadline
        self._when = when
        self._fired = False
        return self

    def __enter__(self) -> None:
        self._active = True
        self._cancelling = self._task.cancelling()
        when = self._when
        if when is not None and (self._handle is None or self._armed_at > when):
            self._arm(when)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._active = False  # the timer stays armed for the next wait, or until the slot is left
        # As asyncio.Timeout: the cancellation it caused becomes TimeoutError; one from elsewhere stays.
        if self._fired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def cut(self) -> bool:
        """True when the last wait ended because the shutdown deadline came, not its own."""
        deadline = self._drain.deadline
        return self._fired and deadline is not None and self._when == deadline

    def cap(self, deadline: float) -> None:
        """The drain began: bring a wait under way forward to the deadline."""
        if not self._active or self._fired or (self._when is not None and self._when <= deadline):
            return
        self._when = deadline
        if self._armed_at > deadline:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        self._disarm()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        when = self._when
        if not self._active or self._fired or when is None:
            return  # no wait under way: the next one arms a timer of its own
        if when > self._loop.time() + _CLOCK_SLACK:
            self._arm(when)  # the wait under way has a later deadline than the one armed for
            return
        self._fired = True
        self._task.cancel()

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_at = math.inf


# Loop timers have millisecond resolution and may go off that much early.
_CLOCK_SLACK = 0.001

