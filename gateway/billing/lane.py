"""A name's admission and settle on its slot of counters (gateway.billing.counters): its lane.

Every limited request is admitted once and settled once, so these two calls are most of what limits
cost a request. `PyLane` writes them in Python: it is the reference, and the fallback. The same lane in
C (`_lane.c`, an optional extension built at install when a compiler is there) does the same in a
quarter of the instructions; `LANE` is that one when it was built, unless GATEWAY_NO_EXTENSIONS=1 asks
for Python (tests/gateway/billing/test_lane.py holds the two to the same answers).

A slot is a sequence of numbers indexed from 0 (a process's own list, or its part of the counters file
that `workers: N` map), laid out as `Layout` says; a lane in C takes a buffer of doubles only.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from typing import NamedTuple, Protocol, TypeAlias

from gateway.billing import window


class Layout(NamedTuple):
    """Where a slot keeps each count (gateway.billing.counters makes the one layout there is)."""

    rpm: int  # the requests' window (gateway.billing.window)
    tpm: int  # the tokens' window
    period: int  # the budget period the spend belongs to
    spent: int
    held: int  # by async tasks
    reserved: int  # by requests in flight, all workers' together
    seconds: int  # buckets a window has (window.SECONDS)


class Lane(Protocol):
    def admit(
        self, now: float, rpm: int | None, tpm: int | None, tokens: float, budget: float | None, period: int, reserve: float,
        /,
    ) -> str | tuple[float, ...]:  # fmt: skip
        """Check every limit of one request and, when all allow it, charge them all at once: the counts
        left of the limits there are, in order (requests left, tokens left; both, one or none); else
        the limit that refuses it (requests | tokens | budget; nothing charged)."""
        ...

    def settle(self, second: int, tokens: float, reserve: float, cost: float, period: int, /) -> None:
        """A request admitted at `second` finished: its token estimate corrected by `tokens`, its
        reservation released and its cost spent."""
        ...

    def close(self) -> None:
        """Let go of the slot (a lane in C holds its buffer until then)."""
        ...


class PyLane:
    """`Lane` in Python, on a slot of this process's own (`fd` -1) or in the counters file, whose lock
    (`fd`) it then takes around each call. `column`: this worker's reservations in the file (0: none)."""

    __slots__ = ("column", "fd", "layout", "s")

    def __init__(self, slot: window.Doubles, column: int, fd: int, layout: Layout) -> None:
        self.s, self.column, self.fd, self.layout = slot, column, fd, layout

    def admit(
        self, now: float, rpm: int | None, tpm: int | None, tokens: float, budget: float | None, period: int, reserve: float,
        /,
    ) -> str | tuple[float, ...]:  # fmt: skip
        fd = self.fd
        if fd >= 0:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            return _admit(self.s, self.layout, self.column, now, rpm, tpm, tokens, budget, period, reserve)
        finally:
            if fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN)

    def settle(self, second: int, tokens: float, reserve: float, cost: float, period: int, /) -> None:
        fd = self.fd
        if fd >= 0:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            s, layout = self.s, self.layout
            if tokens:
                window.correct(s, layout.tpm, second, tokens)
            if reserve:
                column = self.column
                if column:  # this worker's own (in the file), so a restarted worker can drop what it held
                    held = s[column]
                    reserve = reserve if reserve < held else held
                    s[column] = held - reserve
                left = s[layout.reserved] - reserve
                s[layout.reserved] = left if left > 0 else 0.0
            if cost:
                if s[layout.period] != period:
                    s[layout.period], s[layout.spent] = period, cost
                else:
                    s[layout.spent] += cost
        finally:
            if fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        pass


def _admit(
    s: window.Doubles, layout: Layout, column: int, now: float, rpm: int | None, tpm: int | None, tokens: float,
    budget: float | None, period: int, reserve: float,
) -> str | tuple[float, ...]:  # fmt: skip
    now_s = int(now)
    limit = ""
    if budget is not None:
        if s[layout.period] != period:  # a new period starts at zero
            s[layout.period], s[layout.spent] = period, 0.0
        if s[layout.spent] + s[layout.held] + s[layout.reserved] >= budget:
            limit = "budget"
    if rpm is not None:
        if window.used(s, layout.rpm, now) >= rpm:
            limit = limit or "requests"
    if tpm is not None:
        if window.used(s, layout.tpm, now) + tokens > tpm:
            limit = limit or "tokens"
    if limit:
        return limit
    if reserve and budget is not None:
        s[layout.reserved] += reserve
        if column:  # this worker's own (in the file), so a restarted worker can drop what it held
            s[column] += reserve
    if tpm is not None and tokens:
        window.add(s, layout.tpm, now_s, tokens)
    if rpm is not None:
        window.add(s, layout.rpm, now_s, 1)
    requests_left = () if rpm is None else (rpm - window.used_now(s, layout.rpm),)
    return requests_left if tpm is None else (*requests_left, tpm - window.used_now(s, layout.tpm))


# What makes a name's lane: (slot, column, fd, layout) as PyLane takes them.
LaneType: TypeAlias = Callable[[window.Doubles, int, int, Layout], Lane]

CLane: LaneType | None
try:
    from gateway.billing._lane import Lane as CLane
except ImportError:  # built without a compiler: the Python lanes do the same
    CLane = None

# The lanes the counters make: in C when built, unless GATEWAY_NO_EXTENSIONS asks for Python.
LANE: LaneType = CLane if CLane is not None and not os.environ.get("GATEWAY_NO_EXTENSIONS") else PyLane
