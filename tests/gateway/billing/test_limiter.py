"""The limiter's own arithmetic: its fast path on this machine's counters against the awaited one, the
x-ratelimit-* lines it makes, and the budget periods it charges."""

from __future__ import annotations

import calendar
import random
import time
from typing import Any

import pytest

from config import ClientKey
from gateway.billing.counters import LocalCounters
from gateway.billing.limiter import _BOTH, Limiter, Ticket, _reset, period_id, rate_lines
from gateway.billing.store import Grant
from gateway.errors import GatewayError


class Awaited:
    """This machine's counters seen only through the CounterStore calls, as a shared store is: the
    limiter awaits them instead of taking its fast path."""

    def __init__(self, inner: LocalCounters) -> None:
        self.inner = inner

    def admit_now(self, *args: Any) -> None:  # a store that never answers without waiting
        return None

    def lane(self, name: str) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


SHAPES = [
    {"rpm": 12, "tpm": 3000, "budget": 1.0, "budget_period": "monthly"},
    {"rpm": 12},
    {"tpm": 3000, "budget": 1.0, "budget_period": "daily"},
    {"budget": 1.0},
    {"rpm": 12, "budget": 1.0},
]


@pytest.mark.parametrize("on_file", [False, True], ids=["memory", "file"])
async def test_the_fast_path_answers_as_the_awaited_one(tmp_path, on_file):
    """`admit_now` (this machine's counters: the key's lane, no coroutine) and `admit` over the store's
    coroutines: one script of admissions, refusals, settles and reloads (a key's limits change under
    the same name) gets the same tickets, headers, 429s and balances from both, for every shape of
    limits a key may have, in one process's memory and in the file `workers: N` share."""
    if on_file:
        stores = LocalCounters.create(tmp_path / "fast.counters"), LocalCounters.create(tmp_path / "awaited.counters")
    else:
        stores = LocalCounters.memory(), LocalCounters.memory()
    fast, awaited = Limiter(stores[0]), Limiter(Awaited(stores[1]))  # type: ignore[arg-type]
    key = ClientKey(name="k", key_sha256="x", **SHAPES[0])
    now = calendar.timegm((2026, 1, 30, 12, 0, 0)) + 0.5
    assert awaited.admit_now(key, 1, 0.0, now=now - 1) is None  # (and charged nothing)
    rng = random.Random(11)
    seen: set[str] = set()
    for step in range(1500):
        if step % 300 == 0:  # a reload: the same name, other limits
            key = ClientKey(name="k", key_sha256="x", **SHAPES[step // 300])
        # Now and then a day or a month goes by (new budget periods), or time steps back (the period
        # before again: a test clock, or a clock set back).
        now += rng.choice((0.01, 0.2, 0.9, 3.0, 30.0) * 20 + (86400.0, 86400.0 * 31, -86400.0 * 2))
        tokens = rng.choice((0, rng.randint(1, 400)))  # no tokens: an endpoint billed otherwise
        reserve = rng.choice((0.0, 0.02))
        answers: list[Ticket | tuple[int, str, dict[str, str]]] = []
        for limiter in (fast, awaited):
            try:
                answers.append(await limiter.admit(key, tokens=tokens, reserve=reserve, now=now))
            except GatewayError as err:
                answers.append((err.status, err.message, err.headers))
        assert answers[0] == answers[1], (step, key)  # (tickets compare without the lane that settles them)
        ticket = answers[0]
        seen.add("admitted" if isinstance(ticket, Ticket) else str(ticket[2].get("x-should-retry", ticket[1][:30])))
        if isinstance(ticket, Ticket) and rng.random() < 0.8:
            used, cost = rng.randint(0, 600), rng.choice((None, 0.01))
            for limiter, t in zip((fast, awaited), answers, strict=True):
                assert isinstance(t, Ticket)
                limiter.settle(t, used, cost)  # (the fast one's on the store's own calls here)
        if step % 300 == 299:
            assert await fast.balance(key, now) == await awaited.balance(key, now)
    assert "admitted" in seen and len(seen) >= 3, seen  # admissions and refusals of several kinds
    assert fast._fast["k"].lane is not None and awaited._fast["k"].lane is None  # each took its own path
    for store in stores:
        store.close()


@pytest.mark.parametrize(
    "grant",
    [
        Grant(None, 0.0, 99, 60.5, 4000, 60.5, 1),  # admitted: both resets 1m1s
        Grant(None, 0.0, 99.0, 61.0, 0.0, 61.0, 1),  # admitted by Redis: floats
        Grant(None, 0.0, 99, 60.5, 4000, 30.25, 1),  # admitted with no tokens: its own tokens reset
        Grant("requests", 3.0, 0.0, 60.2, 3.0, 20.0, 1),  # refused
    ],
)
def test_rate_lines_of_an_admitted_request_are_the_general_ones(grant):
    key = ClientKey(name="k", key_sha256="x", rpm=100, tpm=5000)
    general = _BOTH % (100, grant.requests_left, _reset(grant.requests_reset), 5000, grant.tokens_left, _reset(grant.tokens_reset))
    assert rate_lines(key, grant) == general


def test_monthly_period_ids_follow_the_calendar_back_and_forth():
    days = [calendar.timegm((2024, 2, 28, 12, 0, 0)) + d * 86400 + s for d in range(-40, 40) for s in (0.0, 43_199.5)]
    for now in days + days[::-1] + [0.0, calendar.timegm((2024, 3, 1, 0, 0, 0)) - 1e-3]:
        t = time.gmtime(now)
        assert period_id("monthly", now) == 2_000_000 + t.tm_year * 12 + t.tm_mon - 1
