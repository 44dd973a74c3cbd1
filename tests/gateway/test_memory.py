"""Memory after a burst: idle upstream connections are capped, the heap is trimmed, taps copy."""

from __future__ import annotations

import asyncio
import sys

import pytest

from gateway import memory, upstream
from gateway.sse import SSETap
from providers import PROVIDERS
from tests.conftest import KEYS, channel
from tests.fakevendor import Fault


async def _burst(gw, vendor, n: int) -> set[int]:
    """n requests at once, each held by the vendor so that each needs a connection of its own."""
    vendor.fail_next(*[Fault("slow", seconds=0.3)] * n)
    first = len(vendor.requests)
    client = gw.client()
    await asyncio.gather(*(client.chat.completions.create(model="gpt-4o", messages=[]) for _ in range(n)))
    return {seen.peer_port for seen in vendor.requests[first:]}


@pytest.mark.parametrize(("cap", "reused"), [(2, 2), (32, 8)])
async def test_a_burst_leaves_no_more_idle_connections_than_the_cap(monkeypatch, vendor, gateway_factory, cap, reused):
    monkeypatch.setattr(upstream, "MAX_IDLE_PER_HOST", cap)
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]})
    first = await _burst(gw, vendor, 8)
    assert len(first) == 8
    # The next burst finds only the connections the pool kept; the rest were closed when handed back.
    second = await _burst(gw, vendor, 8)
    assert len(first & second) == reused


async def test_memory_is_released_once_a_burst_has_passed():
    in_flight = 0
    trims: list[int] = []
    trimmer = memory.Trimmer(lambda: in_flight, lambda: trims.append(in_flight), burst=100, every_s=0.01)
    trimmer.start()

    async def hold(n: int) -> None:
        nonlocal in_flight
        in_flight = n
        await asyncio.sleep(0.05)  # a few checks

    try:
        await hold(10)
        await hold(900)  # a burst
        await hold(300)  # still draining: above a quarter of the peak
        assert trims == []
        await hold(200)
        assert trims == [200]  # once, not at every check while load stays at 200
        await hold(40)  # the rest of the burst: a quarter of what counts as its peak now (225)
        assert trims == [200, 40]
        await hold(90)
        await hold(5)  # the peak since was too small to count as a burst
        assert trims == [200, 40]
    finally:
        trimmer.stop()


def test_a_tap_holds_copies_not_the_chunks_it_was_fed():
    tap = SSETap(PROVIDERS["openai"], "chat/completions", strip_usage=False)
    chunk = b'data: {"choices":[{"delta":{"content":"hello"}}]}\n\n'
    before = sys.getrefcount(chunk)
    assert tap.feed(chunk) is chunk
    assert sys.getrefcount(chunk) == before  # a burst of streams must not pin every chunk until its end
    assert tap.text_bytes == len("hello")
    assert tap.events == 1
