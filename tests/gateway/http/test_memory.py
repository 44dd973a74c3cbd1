"""Memory after a burst: spare upstream connections are closed, the heap is trimmed, taps copy."""

from __future__ import annotations

import asyncio
import sys

from gateway.http import memory, upstream
from gateway.relay.sse import UsageTap
from gateway.state import SERVICES
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


def _upstream(gw) -> upstream.Upstream:
    return gw.server.app[SERVICES].upstream


async def test_a_busy_pool_keeps_its_connections_and_reuses_the_newest_first(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]}, http_path="lean")  # its connector
    first = await _burst(gw, vendor, 8)
    assert len(first) == 8
    # More requests in flight than MAX_IDLE_PER_HOST must not cost a reconnect each: all 8 come back.
    second = await _burst(gw, vendor, 8)
    assert second == first
    # One at a time, requests take the connection handed back last, so the other 7 sit untouched
    # and can idle out (aiohttp's own order, oldest first, would cycle through all 8).
    client = gw.client()
    before = len(vendor.requests)
    for _ in range(5):
        await client.chat.completions.create(model="gpt-4o", messages=[])
    assert len({seen.peer_port for seen in vendor.requests[before:]}) == 1


async def test_closing_idle_connections_keeps_the_ones_used_last(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]}, http_path="lean")  # its connector
    await _burst(gw, vendor, 8)
    client = gw.client()
    before = len(vendor.requests)
    await client.chat.completions.create(model="gpt-4o", messages=[])
    last_used = vendor.requests[before].peer_port
    assert _upstream(gw).close_idle(2) == 6
    assert _upstream(gw).close_idle(2) == 0
    third = await _burst(gw, vendor, 8)
    assert len(third) == 8
    assert last_used in third
    assert len(third - {seen.peer_port for seen in vendor.requests[before - 8 : before]}) == 6  # 2 kept, 6 new


async def test_the_gateway_closes_a_bursts_spare_connections_once_it_has_passed(monkeypatch, vendor, gateway_factory):
    monkeypatch.setattr(memory, "BURST", 6)
    monkeypatch.setattr(memory, "CHECK_EVERY_S", 0.02)
    monkeypatch.setattr(upstream, "MAX_IDLE_PER_HOST", 3)
    released: list[int] = []  # requests still in flight, each holding a connection, when the spares were closed
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]}, http_path="lean")  # its connector
    drain = gw.server.app[SERVICES].drain
    monkeypatch.setattr(memory, "release", lambda: released.append(drain.in_flight))
    first = await _burst(gw, vendor, 8)
    for _ in range(100):  # checked every 20 ms: a few checks after the burst, or a slow machine's few more
        if released:
            break
        await asyncio.sleep(0.02)
    assert released
    second = await _burst(gw, vendor, 8)
    # The 3 idle ones kept, plus any still in use then (the trim runs once in-flight falls to a quarter
    # of the peak), which went back to the pool after it.
    assert len(first & second) == 3 + released[0]


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
    tap = UsageTap(PROVIDERS["openai"], "chat/completions")
    chunk = b'data: {"choices":[{"delta":{"content":"hello"}}]}\n\n'
    before = sys.getrefcount(chunk)
    assert tap.feed(chunk) is chunk
    assert sys.getrefcount(chunk) == before  # a burst of streams must not pin every chunk until its end
    assert tap.text_bytes == len("hello")
    assert tap.events == 1
