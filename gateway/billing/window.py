"""A sliding minute of counts, in one-second buckets: the arithmetic behind rpm and tpm.

A window is 63 numbers in a flat sequence (a process's own list, or a `memoryview` of doubles shared
between worker processes, gateway.billing.counters): [newest second seen, total, bucket 0 .. bucket 60]. Bucket `s % 61`
holds what was admitted in second `s`; it is counted until second s + 61 begins. Moving to a later
second empties the buckets of the seconds that fell out, so each call costs O(seconds elapsed).

The count is conservative: what was admitted at 10.0 s or at 10.9 s is counted until 71.0 s, at least
a full minute, so no 60-second span ever admits more than the limit (a GCRA with a minute's burst
could admit twice the limit in one). Retry-After is when enough of the oldest buckets leave for the
request to fit.
"""

from __future__ import annotations

import math
from typing import TypeAlias

SECONDS = 61  # buckets: a minute, and the second a request was admitted in
SIZE = SECONDS + 2  # doubles a window takes
# Where windows live: a worker's memoryview of the shared counters file, or a process's own list.
Doubles: TypeAlias = "list[float] | memoryview[float]"

NEWEST, TOTAL, FIRST = 0, 1, 2  # a window's fields (gateway.billing.counters reads them too)


def advance(w: Doubles, at: int, now_s: int) -> None:
    """Empty the buckets of seconds that have left the minute ending at `now_s`."""
    newest = int(w[at + NEWEST])
    if now_s <= newest:
        return
    if now_s - newest >= SECONDS:
        for i in range(at + FIRST, at + SIZE):
            w[i] = 0
        w[at + TOTAL] = 0
    else:
        total = w[at + TOTAL]
        for s in range(newest + 1, now_s + 1):
            i = at + FIRST + s % SECONDS
            total -= w[i]
            w[i] = 0
        w[at + TOTAL] = total if total > 0 else 0
    w[at + NEWEST] = now_s


def used(w: Doubles, at: int, now: float) -> float:
    now_s = int(now)
    if w[at + NEWEST] < now_s:
        advance(w, at, now_s)
    return w[at + TOTAL]


def wait(w: Doubles, at: int, now: float, amount: float, limit: float) -> float:
    """Seconds until `amount` more fits under `limit` (0: it fits now; inf: it never will)."""
    if amount > limit:
        return math.inf
    now_s = int(now)
    if w[at + NEWEST] < now_s:  # (each caller asks first: the call costs more than the question)
        advance(w, at, now_s)
    excess = w[at + TOTAL] + amount - limit
    if excess <= 0:
        return 0.0
    for s in range(now_s - SECONDS + 1, now_s + 1):  # oldest second first
        excess -= w[at + FIRST + s % SECONDS]
        if excess <= 0:
            return s + SECONDS - now  # that second's bucket leaves the window then
    return SECONDS - (now - now_s)  # only rounding left: the window's end frees it


def add(w: Doubles, at: int, now_s: int, amount: float) -> None:
    if w[at + NEWEST] < now_s:
        advance(w, at, now_s)
    w[at + FIRST + now_s % SECONDS] += amount
    w[at + TOTAL] += amount


def correct(w: Doubles, at: int, second: int, delta: float) -> None:
    """Settle an estimate: add `delta` (negative when the estimate was high) to what `second` admitted,
    if the window still holds that second (`advance` empties its bucket later, corrected as it is then)."""
    if w[at + NEWEST] - second >= SECONDS or second > w[at + NEWEST]:
        return
    i = at + FIRST + second % SECONDS
    delta = max(delta, -w[i])
    w[i] += delta
    total = w[at + TOTAL] + delta
    w[at + TOTAL] = total if total > 0 else 0


def used_now(w: Doubles, at: int) -> float:
    """The total of a window `wait` (or `advance`) has just moved to the present second."""
    return w[at + TOTAL]


def reset_in(w: Doubles, at: int, now: float) -> float:
    """Seconds until the window is empty again (OpenAI's x-ratelimit-reset-*)."""
    now_s = int(now)
    if w[at + NEWEST] < now_s:
        advance(w, at, now_s)
    if w[at + TOTAL] <= 0:
        return 0.0
    for s in range(now_s, now_s - SECONDS, -1):  # newest second first
        if w[at + FIRST + s % SECONDS] > 0:
            return s + SECONDS - now
    return 0.0
