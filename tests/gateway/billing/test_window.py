"""The sliding minute behind rpm and tpm, and the shared counters file it lives in."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random

import pytest

from gateway.billing import window
from gateway.billing.counters import LocalCounters


def fresh() -> memoryview[float]:
    return memoryview(bytearray(window.SIZE * 8)).cast("d")


def test_a_full_window_waits_for_its_oldest_second():
    w = fresh()
    for t in (100.2, 110.5, 130.9):
        assert window.wait(w, 0, t, 1, 3) == 0
        window.add(w, 0, int(t), 1)
    assert window.used(w, 0, 131.0) == 3
    # The request of second 100 is counted until second 161 begins: the fourth fits then, not before.
    assert window.wait(w, 0, 131.0, 1, 3) == pytest.approx(30.0)
    assert window.wait(w, 0, 160.99, 1, 3) == pytest.approx(0.01)
    assert window.wait(w, 0, 161.0, 1, 3) == 0
    assert window.used(w, 0, 161.0) == 2


def test_no_sixty_seconds_ever_admit_more_than_the_limit():
    w, admitted = fresh(), []
    t = 1000.0
    while t < 1300:
        if window.wait(w, 0, t, 1, 10) == 0:
            window.add(w, 0, int(t), 1)
            admitted.append(t)
        t += 0.37
    assert len(admitted) > 40
    for start in admitted:
        assert sum(1 for a in admitted if start <= a < start + 60) <= 10


def test_amounts_correct_and_too_large():
    w = fresh()
    window.add(w, 0, 50, 800)
    assert window.wait(w, 0, 50.5, 300, 1000) == pytest.approx(60.5)
    window.correct(w, 0, 50, -700)  # the estimate was 800, the request used 100
    assert window.used(w, 0, 51.0) == 100
    assert window.wait(w, 0, 51.0, 300, 1000) == 0
    assert math.isinf(window.wait(w, 0, 51.0, 1001, 1000))
    window.correct(w, 0, 50, 20)  # settled later (the window has not moved since): still held, corrected
    assert window.used(w, 0, 80.0) == 120
    assert window.used(w, 0, 200.0) == 0  # second 50 has left the window
    window.correct(w, 0, 50, 5)  # nothing to correct any more
    assert window.used(w, 0, 200.0) == 0


def test_reset_is_when_the_newest_second_leaves():
    w = fresh()
    window.add(w, 0, 10, 1)
    window.add(w, 0, 30, 1)
    assert window.reset_in(w, 0, 35.5) == pytest.approx(55.5)
    assert window.reset_in(w, 0, 95.0) == 0


def _admit_many(path: str, worker: int, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def admit() -> int:
        counters = LocalCounters.attach(path, worker=worker)
        grants = [await counters.admit("k", 1000.0 + i * 0.001, rpm=50, tpm=None, tokens=0) for i in range(n)]
        counters.close()
        return sum(g.limit is None for g in grants)

    out.put(asyncio.run(admit()))


def test_processes_sharing_the_file_grant_the_limit_once(tmp_path):
    """Four processes hammering one key's rpm of 50 admit exactly 50 between them."""
    path = tmp_path / "gw.counters"
    LocalCounters.create(path).close()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_admit_many, args=(str(path), i, 200, out)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(out.get(timeout=5) for _ in procs) == 50


async def test_budget_reservations_and_a_restarted_worker(tmp_path):
    path = tmp_path / "gw.counters"
    one = LocalCounters.create(path, worker=1)
    two = LocalCounters.attach(path, worker=2)
    await one.set_budget("k", 0, spent=4.0, held=1.0)
    assert (await one.admit("k", 0, rpm=None, tpm=None, tokens=0, budget=10, reserve=3.0)).limit is None
    assert (await two.admit("k", 0, rpm=None, tpm=None, tokens=0, budget=10, reserve=3.0)).limit is None
    # 4 spent + 1 held by a task + 6 reserved by requests in flight: the budget is reached.
    assert (await two.admit("k", 0, rpm=None, tpm=None, tokens=0, budget=10, reserve=0.1)).limit == "budget"
    assert (await two.standing("k", 0, 0)).reserved == pytest.approx(7.0)
    one.close()
    again = LocalCounters.attach(path, worker=1)  # worker 1 died with a request in flight, and came back
    assert (await again.standing("k", 0, 0)).reserved == pytest.approx(4.0)
    two.settle("k", second=0, reserve=3.0, cost=2.5)
    s = await two.standing("k", 0, 0)
    assert (s.spent, s.reserved) == (pytest.approx(6.5), pytest.approx(1.0))
    assert (await two.standing("k", 0, period=7)).spent == 0  # a new period starts at zero
    again.close()
    two.close()
    assert path.exists()


def test_a_file_that_is_not_counters_is_refused(tmp_path):
    path = tmp_path / "gw.counters"
    path.write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match="not a counters file"):
        LocalCounters.attach(path)


async def test_memory_and_file_counters_answer_alike(tmp_path):
    """A process alone counts in lists of its own, workers in the shared file: one script of admissions,
    refusals and settles over three minutes gets the same answers from both."""
    memory, file = LocalCounters.memory(), LocalCounters.create(tmp_path / "gw.counters")
    rng = random.Random(7)
    try:
        for counters in (memory, file):
            await counters.set_budget("k", 3, spent=1.0, held=0.5)
        now = 1000.0
        for _ in range(600):
            now += rng.choice((0.01, 0.2, 0.9, 3.0, 30.0))
            tokens, reserve = rng.randint(0, 400), rng.choice((0.0, 0.25))
            asked = {"rpm": 12, "tpm": 3000, "tokens": tokens, "budget": 20.0, "period": 3, "reserve": reserve}
            grants = [await c.admit("k", now, **asked) for c in (memory, file)]  # type: ignore[arg-type]
            assert grants[0] == grants[1]
            if grants[0].limit is None and rng.random() < 0.8:
                used, cost = rng.randint(0, 600) - tokens, rng.choice((0.0, 0.1))
                for c in (memory, file):
                    c.settle("k", second=grants[0].second, tokens=used, reserve=reserve, cost=cost, period=3)
        standings = [await c.standing("k", now, 3) for c in (memory, file)]
        assert standings[0] == standings[1]
    finally:
        file.close()
