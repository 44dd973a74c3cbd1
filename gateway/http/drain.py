"""The shutdown deadline for requests in flight.

On SIGTERM the server stops accepting and gives requests in flight `shutdown_grace_s` to finish.
aiohttp on its own would let a handler run on past that and then cancel it blind, which truncates a
stream with no word to the client and books it as a client hang-up. Instead every wait on the
upstream goes through a `Slot` (gateway.http.timer), whose timeout is pulled in to the deadline when
the drain begins, so the relay can end a stream with a proper error event and record why.
"""

from __future__ import annotations

import asyncio

from gateway.http.timer import Slot


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

    @property
    def in_flight(self) -> int:
        """Requests waiting on or reading from an upstream now."""
        return len(self._slots)

    def expired(self) -> bool:
        return self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline

    def track(self) -> Tracked:
        """`with drain.track() as slot`: a slot for the current task's waits, counted while the block runs."""
        return Tracked(self)


class Tracked:
    """A request's slot, counted in the drain while its `with` block runs."""

    __slots__ = ("_drain", "_slot")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._slot = Slot(drain)

    def __enter__(self) -> Slot:
        self._drain._slots.add(self._slot)
        return self._slot

    def __exit__(self, *exc: object) -> None:
        self._drain._slots.discard(self._slot)
        self._slot._disarm()
