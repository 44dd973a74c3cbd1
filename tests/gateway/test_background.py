"""Background loops stop for sure (gateway.background), even when a cancel comes to them as a timeout."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from gateway import background


async def timed_out_once() -> None:
    """A library's timeout that expires as the cancel comes (redis-py's, or asyncio.wait_for on 3.11):
    the caller gets TimeoutError, and the cancel is spent."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise TimeoutError("Timeout reading from server") from None


async def test_a_loop_that_took_its_cancel_for_a_timeout_is_cancelled_again():
    rounds = []

    async def loop() -> None:
        while True:  # as the health sync and the task poller: an error is logged, and the loop goes on
            rounds.append(1)
            try:
                await timed_out_once()
            except TimeoutError:
                pass
            await asyncio.sleep(10)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # one cancel was not enough: the loop sleeps on
    began = time.monotonic()
    await background.stop(task, grace=0.2)
    assert task.cancelled() and time.monotonic() - began < 1 and len(rounds) == 1


async def test_tasks_that_ended_or_failed_and_none_are_fine():
    async def fail() -> None:
        raise ValueError("a stopping loop's error")

    failed = asyncio.create_task(fail())
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await background.stop(failed, done, None)  # nothing raised, and the error is retrieved (no warning at exit)
    assert failed.done() and done.done()


async def test_the_health_sync_stops_when_its_refresh_took_the_cancel_for_a_timeout(monkeypatch: pytest.MonkeyPatch):
    shared_health = pytest.importorskip("gateway.relay.shared_health", reason="the `redis` package (extra `scale`) is not installed")
    from redis.asyncio import Redis

    redis = Redis(host="127.0.0.1", port=1)  # never connected: refresh is replaced below
    runtime: Any = SimpleNamespace(health=SimpleNamespace(on_cooldown=None))
    sync = shared_health.HealthSync(redis, runtime, "gwtest", interval=3600)
    refreshed = asyncio.Event()

    async def refresh() -> None:
        refreshed.set()
        await timed_out_once()

    monkeypatch.setattr(sync, "refresh", refresh)
    sync.start()
    await refreshed.wait()
    stopping = asyncio.create_task(sync.stop())
    try:
        done, _ = await asyncio.wait({stopping}, timeout=5)
        assert done, "the sync's loop sleeps on: one cancel was taken for a timeout"
        assert sync._loop is not None and sync._loop.done()
    finally:
        await background.stop(stopping, sync._loop)
        await redis.aclose()
