"""The relay's timer (gateway.http.timer.Slot): asyncio.timeout_at semantics with one timer across waits."""

from __future__ import annotations

import asyncio

import pytest

from gateway.http.drain import Drain
from gateway.http.timer import _CLOCK_SLACK, Slot


async def test_moving_deadlines_reuse_one_timer_and_still_expire(monkeypatch):
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    arm = Slot._arm

    def counting_arm(self: Slot, when: float) -> None:
        armed.append(when)
        arm(self, when)

    monkeypatch.setattr(Slot, "_arm", counting_arm)
    drain = Drain()
    with drain.track() as slot:
        for _ in range(5):  # chunks keep coming: each wait ends well before its deadline
            with slot.timeout_at(loop.time() + 0.2):
                await asyncio.sleep(0.05)
        assert len(armed) <= 2  # the first timer, and at most one re-arm when it went off early
        deadline = loop.time() + 0.1
        with pytest.raises(TimeoutError):  # the slot's timer ended the wait: the sleep would not have
            with slot.timeout_at(deadline):
                await asyncio.sleep(10)
        assert loop.time() >= deadline - _CLOCK_SLACK  # never early
        assert not slot.cut()


async def test_an_earlier_deadline_than_the_armed_timer_is_kept():
    loop = asyncio.get_running_loop()
    with Drain().track() as slot:
        with slot.timeout_at(loop.time() + 30):
            await asyncio.sleep(0)
        deadline = loop.time() + 0.05
        with pytest.raises(TimeoutError):  # the later, armed timer did not stand in for this deadline
            with slot.timeout_at(deadline):
                await asyncio.sleep(10)
        assert deadline - _CLOCK_SLACK <= loop.time() < deadline + 29  # ended by its own deadline, not the 30 s one


async def test_drain_pulls_the_wait_under_way_forward_and_says_so():
    loop = asyncio.get_running_loop()
    drain = Drain()
    with drain.track() as slot:
        loop.call_later(0.05, drain.begin, 0.05)
        with pytest.raises(TimeoutError):
            with slot.timeout_at(loop.time() + 30):
                await asyncio.sleep(10)
        assert slot.cut()


async def test_a_cancellation_from_elsewhere_is_not_turned_into_a_timeout():
    loop = asyncio.get_running_loop()

    async def wait() -> None:
        with Drain().track() as slot:
            with slot.timeout_at(loop.time() + 30):
                await asyncio.sleep(10)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_deadline_waits_for_ever_and_a_stale_timer_does_not_fire_on_a_later_wait():
    loop = asyncio.get_running_loop()
    finished = False
    with Drain().track() as slot:
        stale = loop.time() + 0.02
        with slot.timeout_at(stale):
            pass  # done at once; its timer stays armed
        with slot.timeout_at(None):
            await asyncio.sleep(0.1)  # the old timer goes off meanwhile and must not cut this wait
            finished = True
        assert loop.time() > stale  # the stale timer's time came during the wait, so it was put to the test
    assert finished and not slot.cut()
