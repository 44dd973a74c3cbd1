"""Health per channel key: threshold, cooldown, one probe, recovery, 401/403 at once, logged changes."""

from __future__ import annotations

import asyncio

import structlog

from config import Channel, GlobSet, Routing
from gateway.relay.health import Health, key_id
from gateway.relay.routing import order
from tests.conftest import KEYS, channel
from tests.fakevendor import Fault
from tests.faultkit import MESSAGES, post, stream_chat

ROUTING = Routing(retries=2, failure_threshold=3, cooldown_s=30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ch(name: str, keys: tuple[str, ...] = ("k1",), priority: int = 0) -> Channel:
    return Channel(name=name, provider="openai", platform="openai", base_url="http://x", api_keys=keys,
                   models=GlobSet(("*",)), priority=priority)


def test_cooldown_after_threshold_then_one_probe_then_recovery():
    clock = Clock()
    health, a = Health(clock), ch("a")
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            health.failure(a, "k1", ROUTING, cool_now=False, reason="upstream answered 500")
        assert not health.cooling(a)  # below the threshold: one bad answer disables nothing
        health.failure(a, "k1", ROUTING, cool_now=False, reason="upstream answered 500")
        assert health.cooling(a)
        clock.now += 29
        assert health.cooling(a)
        clock.now += 2  # cooldown over
        assert not health.cooling(a)
        assert health.pick_key(a) == "k1"  # this request is the probe...
        assert health.cooling(a)  # ...so the others still treat the key as cooling meanwhile
        health.success(a, "k1")
        assert not health.cooling(a)
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [("channel_key_cooldown", "warning"), ("channel_key_probe", "info"),
                      ("channel_key_recovered", "info")]
    assert logs[0]["channel"] == "a" and logs[0]["key_id"] == key_id("k1") and logs[0]["failures"] == 3
    assert "k1" not in str(logs)


def test_success_resets_the_count_of_consecutive_failures():
    health, a = Health(Clock()), ch("a")
    for _ in range(10):
        health.failure(a, "k1", ROUTING, cool_now=False, reason="x")
        health.failure(a, "k1", ROUTING, cool_now=False, reason="x")
        health.success(a, "k1")
    assert not health.cooling(a)


def test_failed_probe_cools_again_at_once():
    clock = Clock()
    health, a = Health(clock), ch("a")
    health.failure(a, "k1", ROUTING, cool_now=True, reason="upstream answered 401")
    assert health.cooling(a)
    clock.now += 31
    assert health.pick_key(a) == "k1"
    health.failure(a, "k1", ROUTING, cool_now=False, reason="upstream answered 500")
    assert health.cooling(a)
    clock.now += 31
    assert not health.cooling(a)


def test_probe_without_verdict_is_released():
    clock = Clock()
    health, a = Health(clock), ch("a")
    health.failure(a, "k1", ROUTING, cool_now=True, reason="401")
    clock.now += 31
    health.pick_key(a)
    assert health.cooling(a)
    health.release(a, "k1")  # the client hung up during the probe
    assert not health.cooling(a)


def test_cooling_key_is_skipped_while_the_channel_has_another():
    health, a = Health(Clock()), ch("a", keys=("k1", "k2"))
    health.failure(a, "k1", ROUTING, cool_now=True, reason="upstream answered 403")
    assert not health.cooling(a)
    assert [health.pick_key(a) for _ in range(4)] == ["k2"] * 4


def test_channel_with_every_key_cooling_goes_last_not_out():
    health = Health(Clock())
    hot, warm = ch("hot", priority=10), ch("warm", priority=0)
    health.failure(hot, "k1", ROUTING, cool_now=True, reason="401")
    assert [c.name for c in order([hot, warm], health)] == ["warm", "hot"]
    assert health.pick_key(hot) == "k1"  # still usable as the last resort


async def test_cooldown_probe_and_recovery_end_to_end(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    gw = await gateway_factory({"keys": KEYS, "routing": {"failure_threshold": 2, "cooldown_s": 0.3},
                                "channels": [channel("a", a, priority=1), channel("b", b)]})
    with structlog.testing.capture_logs() as logs:
        a.fail_next(Fault("status", status=500), Fault("status", status=502))
        for _ in range(2):
            status, _, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
            assert status == 200  # failed over to b
        assert len(a.requests) == 2
        status, _, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
        assert status == 200 and len(a.requests) == 2  # a is cooling: b went first
        await asyncio.sleep(0.35)
        status, _, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
        assert status == 200 and len(a.requests) == 3  # the probe, which brings a back
        status, _, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
        assert len(a.requests) == 4
    health_events = [e["event"] for e in logs if e["event"].startswith("channel_key")]
    assert health_events == ["channel_key_cooldown", "channel_key_probe", "channel_key_recovered"]
    rows = await gw.rows()
    assert [(r["channel"], r["attempts"]) for r in rows] == [("b", 2), ("b", 2), ("b", 1), ("a", 1), ("a", 1)]


async def test_vendor_401_cools_that_key_at_once(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.reject_keys.add("vk-bad")
    gw = await gateway_factory({"keys": KEYS, "routing": {"failure_threshold": 5}, "channels": [
        channel("a", a, priority=1, api_keys=["vk-bad", "vk-good"]), channel("b", b)]})
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            status, _, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
            assert status == 200
    assert [s.headers["Authorization"] for s in a.requests] == ["Bearer vk-bad", "Bearer vk-good", "Bearer vk-good"]
    [cool] = [e for e in logs if e["event"] == "channel_key_cooldown"]
    assert cool["key_id"] == key_id("vk-bad") and "401" in cool["reason"] and "vk-bad" not in str(logs)
    rows = await gw.rows()
    assert [(r["channel"], r["attempts"]) for r in rows] == [("b", 2), ("a", 1), ("a", 1)]


async def test_only_channel_cooling_is_still_tried(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "routing": {"failure_threshold": 1, "cooldown_s": 60},
                                "channels": [channel("a", vendor)]})
    vendor.fail_next(Fault("status", status=500))
    status, _, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    assert status == 502
    assert gw.runtime.health.cooling(gw.runtime.config.channels[0])
    status, _, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    assert status == 200
    assert not gw.runtime.health.cooling(gw.runtime.config.channels[0])


async def test_stream_broken_mid_way_counts_against_the_key(vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "routing": {"failure_threshold": 1, "cooldown_s": 60},
                                "channels": [channel("a", vendor)]})
    vendor.fail_next(Fault("drop", after_chunks=1))
    with structlog.testing.capture_logs() as logs:
        _, err = await stream_chat(gw)
    assert err is not None
    [cool] = [e for e in logs if e["event"] == "channel_key_cooldown"]
    assert "mid-stream" in cool["reason"]
