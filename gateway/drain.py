"""The shutdown deadline for requests in flight.

On SIGTERM the server stops accepting and gives requests in flight `shutdown_grace_s` to finish.
aiohttp on its own would let a handler run on past that and then cancel it blind, which truncates a
stream with no word to the client and books it as a client hang-up. Instead every wait on the
upstream goes through a `Slot`, whose timeout is pulled in to the deadline when the drain begins, so
the relay can end a stream with a proper error event and record why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

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

    @contextlib.contextmanager
    def track(self) -> Iterator[Slot]:
        slot = Slot(self)
        self._slots.add(slot)
        try:
            yield slot
        finally:
            self._slots.discard(slot)


class Slot:
    """One request's waits on its upstream; at most one is under way at a time."""

    __slots__ = ("_drain", "_timeout")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._timeout: asyncio.Timeout | None = None

    def timeout_at(self, when: float | None) -> asyncio.Timeout:
        """`asyncio.timeout_at(when)`, but never past the shutdown deadline. Enter it at once."""
        deadline = self._drain.deadline
        if deadline is not None and (when is None or deadline < when):
            when = deadline
        self._timeout = asyncio.timeout_at(when)
        return self._timeout

    def cut(self) -> bool:
        """True when the last wait ended because the shutdown deadline came, not its own."""
        tm, deadline = self._timeout, self._drain.deadline
        return deadline is not None and tm is not None and tm.expired() and tm.when() == deadline

    def cap(self, deadline: float) -> None:
        tm = self._timeout
        if tm is None or tm.expired():
            return
        when = tm.when()
        if when is None or when > deadline:
            with contextlib.suppress(RuntimeError):  # that wait is already over
                tm.reschedule(deadline)


DRAIN = web.AppKey("drain", Drain)
