"""The shutdown deadline for requests in flight, and the timer on every wait for the upstream.

On SIGTERM the server stops accepting and gives requests in flight `shutdown_grace_s` to finish.
aiohttp on its own would let a handler run on past that and then cancel it blind, which truncates a
stream with no word to the client and books it as a client hang-up. Instead every wait on the
upstream goes through a `Slot`, whose timeout is pulled in to the deadline when the drain begins, so
the relay can end a stream with a proper error event and record why.

A `Slot` is also the relay's timer: `async with slot.timeout_at(when)` behaves as `asyncio.timeout_at`
(TimeoutError on expiry, other cancellations pass through) at a fraction of its cost, which showed in
profiles because a request waits on its upstream at least twice and a stream once per idle read.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from aiohttp import web


class Drain:
    def __init__(self) -> None:
        self.deadline: float | None = None  # loop time; None while serving normally
        self._slots: set[Slot] = set()

    def begin(self, grace_s: float) -> None:
        """Shutdown has started: requests in flight have `grace_s` seconds left."""
        deadline = asyncio.get_running_loop().time() + grace_s
        if self.deadline is not None and self.deadline <= deadline:
            return
        self.deadline = deadline
        for slot in self._slots:
            slot.cap(deadline)

    def expired(self) -> bool:
        return self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline

    def track(self) -> Slot:
        """A slot for the current task's waits, counted in the drain while its `with` block runs."""
        return Slot(self)


class Slot:
    """One request's waits on its upstream; at most one is under way at a time, in the task that made it."""

    __slots__ = ("_active", "_cancelling", "_drain", "_fired", "_handle", "_loop", "_task", "_when")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(self._loop)
        assert task is not None, "a Slot belongs to a task"
        self._task = task
        self._when: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._active = self._fired = False
        self._cancelling = 0

    def __enter__(self) -> Slot:
        self._drain._slots.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._drain._slots.discard(self)
        self._disarm()

    def timeout_at(self, when: float | None) -> Slot:
        """`asyncio.timeout_at(when)`, but never past the shutdown deadline. Enter it at once."""
        deadline = self._drain.deadline
        if deadline is not None and (when is None or deadline < when):
            when = deadline
        self._when = when
        self._fired = False
        return self

    async def __aenter__(self) -> None:
        self._active = True
        self._cancelling = self._task.cancelling()
        if self._when is not None:
            self._handle = self._loop.call_at(self._when, self._fire)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        self._disarm()
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
        self._disarm()
        self._when = deadline
        self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._fired = True
        self._task.cancel()

    def _disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


DRAIN = web.AppKey("drain", Drain)
