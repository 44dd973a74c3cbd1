"""Failover per SPEC section 3, against fake vendors that fail on cue.

Same tier (weighted) before a lower tier; never the same channel twice; retry only on connection
errors, timeouts before the first byte, 408/429/5xx and 401/403; never after the first byte; the
same body every time; the usage row names the channel that answered and counts the attempts.
"""

from __future__ import annotations

from collections import Counter

import aiohttp
import openai
import orjson
import pytest

from tests.conftest import KEYS, channel
from tests.fakevendor import Blackhole, Fault
from tests.faultkit import MESSAGES, eventually, post, stream_chat


async def test_same_tier_is_exhausted_before_a_lower_tier(vendor_factory, gateway_factory):
    a, b, low = await vendor_factory("a"), await vendor_factory("b"), await vendor_factory("low")
    a.fail_next(Fault("status", status=500))
    b.fail_next(Fault("status", status=503))
    gw = await gateway_factory({"keys": KEYS, "routing": {"retries": 2}, "channels": [
        channel("low", low, priority=0, model_map={"gpt-4o": "gpt-4o-low"}),
        channel("a", a, priority=10), channel("b", b, priority=10)]})
    r = await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0.5)
    assert r.choices[0].message.content == "hello from low"
    assert (len(a.requests), len(b.requests), len(low.requests)) == (1, 1, 1)
    # The same body was replayed on every attempt; only the mapped model name differs.
    sent = [v.requests[0].json() for v in (a, b, low)]
    assert sent[0] == sent[1] == {**sent[2], "model": "gpt-4o"}
    assert sent[2]["model"] == "gpt-4o-low" and sent[2]["temperature"] == 0.5
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"], row["upstream_model"]) == (200, 3, "low", "gpt-4o-low")


async def test_retry_budget_spent_inside_the_tier_never_reaches_lower(vendor_factory, gateway_factory):
    a, b, low = await vendor_factory("a"), await vendor_factory("b"), await vendor_factory("low")
    a.fail_next(Fault("status", status=500))
    b.fail_next(Fault("status", status=500))
    gw = await gateway_factory({"keys": KEYS, "routing": {"retries": 1}, "channels": [
        channel("a", a, priority=1), channel("b", b, priority=1), channel("low", low)]})
    status, body, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    assert status == 502
    err = orjson.loads(body)["error"]
    assert err["code"] == "upstream_error" and err["type"] == "upstream_error"
    [row] = await gw.rows()
    # The message names the last upstream error: the channel tried second.
    assert f"channel {row['channel']!r}" in err["message"]
    assert f"{row['channel']} failed with 500" in err["message"]
    assert low.requests == []
    assert (row["status"], row["attempts"]) == (502, 2)


async def test_failover_inside_a_tier_follows_the_weights(vendor_factory, gateway_factory):
    journal: list[str] = []
    a = await vendor_factory("a", journal=journal)
    b = await vendor_factory("b", journal=journal)
    low = await vendor_factory("low", journal=journal)
    n = 200
    for v in (a, b):
        v.fail_next(*[Fault("status", status=500)] * n)
    gw = await gateway_factory({"keys": KEYS, "routing": {"retries": 2, "failure_threshold": 10_000}, "channels": [
        channel("a", a, priority=1, weight=1), channel("b", b, priority=1, weight=3), channel("low", low)]})
    for _ in range(n):
        status, _, _ = await post(gw, {"model": "gpt-4o", "messages": []})
        assert status == 200
    tries = [journal[i : i + 3] for i in range(0, len(journal), 3)]
    assert all(t[2] == "low" and sorted(t[:2]) == ["a", "b"] for t in tries)
    firsts = Counter(t[0] for t in tries)
    assert 0.62 < firsts["b"] / n < 0.88  # weight 3 against 1


async def test_a_failed_channel_is_never_tried_twice(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.fail_next(*[Fault("status", status=500)] * 5)
    b.fail_next(*[Fault("status", status=500)] * 5)
    gw = await gateway_factory({"keys": KEYS, "routing": {"retries": 5}, "channels": [
        channel("a", a, api_keys=["vk-a1", "vk-a2", "vk-a3"]), channel("b", b)]})
    status, _, _ = await post(gw, {"model": "gpt-4o", "messages": []})
    assert status == 502
    assert (len(a.requests), len(b.requests)) == (1, 1)
    [row] = await gw.rows()
    assert row["attempts"] == 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 401, 403])
async def test_retried_statuses(vendor_factory, gateway_factory, status):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.fail_next(Fault("status", status=status))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", a, priority=1), channel("b", b)]})
    r = await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert r.choices[0].message.content == "hello from b"
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"]) == (200, 2, "b")


@pytest.mark.parametrize("status", [400, 404, 422, 409])
async def test_client_errors_are_passed_through_not_retried(vendor_factory, gateway_factory, status):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    vendor_body = {"error": {"message": f"vendor says {status}", "type": "invalid_request_error",
                             "param": "messages", "code": "bad_thing"}}
    a.fail_next(Fault("status", status=status, body=vendor_body))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", a, priority=1), channel("b", b)]})
    got, body, headers = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    assert got == status
    assert orjson.loads(body) == vendor_body  # the vendor's own answer, as it came
    assert headers["X-Request-Id"]
    assert b.requests == []
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"]) == (status, 1, "a")
    assert f"vendor says {status}" in row["error"]


async def test_sdk_sees_the_vendor_error(vendor, gateway_factory):
    vendor.fail_next(Fault("status", status=400, body={"error": {"message": "max_tokens is too large",
                                                               "type": "invalid_request_error"}}))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    with pytest.raises(openai.BadRequestError) as info:
        await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.message.endswith("max_tokens is too large")


async def test_vendor_error_echoing_the_key_is_masked(vendor, gateway_factory):
    key = "vk-a-secret"
    vendor.fail_next(Fault("status", status=400, body={"error": {"message": f"key {key} may not use this"}}))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    status, body, _ = await post(gw, {"model": "gpt-4o", "messages": []})
    assert status == 400
    assert key.encode() not in body
    assert orjson.loads(body)["error"]["message"] == "key *** may not use this"
    [row] = await gw.rows()
    assert key not in row["error"]


async def test_non_json_vendor_error_is_rendered_in_the_client_protocol(vendor, gateway_factory):
    vendor.fail_next(Fault("status", status=404, text="<html><body>Not Found</body></html>", content_type="text/html"))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    status, body, headers = await post(gw, {"model": "gpt-4o", "messages": []})
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    err = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "Not Found" in err["message"] and "404" in err["message"]


async def test_every_channel_rejects_its_key_502_names_the_error_not_the_key(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.reject_keys.add("vk-a-secret")
    b.reject_keys.add("vk-b-secret")
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", a, priority=1), channel("b", b)]})
    with pytest.raises(openai.APIStatusError) as info:
        await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == 502
    message = info.value.message
    assert "channel 'b'" in message and "401" in message and "Incorrect API key provided: ***" in message
    assert "secret" not in message
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"]) == (502, 2, "b")
    assert "secret" not in row["error"]


async def test_connection_refused_and_reset_fail_over(vendor_factory, gateway_factory):
    dead = await vendor_factory("dead")
    dead_url = dead.base_url
    await dead.close()  # nothing listens there any more: connection refused
    reset, ok = await vendor_factory("reset"), await vendor_factory("ok")
    reset.fail_next(Fault("reset"))
    gw = await gateway_factory({"keys": KEYS, "channels": [
        {**channel("dead", reset), "base_url": dead_url, "priority": 2},
        channel("reset", reset, priority=1), channel("ok", ok)]})
    r = await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert r.choices[0].message.content == "hello from ok"
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"]) == (200, 3, "ok")


async def test_connect_timeout_fails_over(vendor, gateway_factory):
    hole = Blackhole()
    try:
        gw = await gateway_factory({"keys": KEYS, "channels": [
            {**channel("hole", vendor), "base_url": hole.base_url, "priority": 1, "timeouts": {"connect_s": 0.2}},
            channel("ok", vendor)]})
        r = await gw.client().chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert r.choices[0].message.content == "hello from vendor"
        [row] = await gw.rows()
        assert (row["status"], row["attempts"], row["channel"]) == (200, 2, "ok")
    finally:
        hole.close()


async def test_every_attempt_timed_out_is_504(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.fail_next(Fault("hang"))
    b.fail_next(Fault("hang"))
    timeouts = {"first_byte_s": 0.2}
    gw = await gateway_factory({"keys": KEYS, "channels": [
        channel("a", a, priority=1, timeouts=timeouts), channel("b", b, timeouts=timeouts)]})
    status, body, _ = await post(gw, {"model": "gpt-4o", "messages": []})
    assert status == 504
    err = orjson.loads(body)["error"]
    assert err["code"] == "upstream_timeout"
    assert "channel 'b'" in err["message"] and "timed out" in err["message"]
    # Each hung vendor sees its connection closed when the gateway gives up on it (the vendor's side
    # learns of it a moment later: waited for, not assumed). On a loaded machine (loop debug on) the
    # deadline can pass before a request was even written: then that vendor got nothing to hang up.
    assert b.requests
    await eventually(lambda: all(v.disconnects == len(v.requests) for v in (a, b)), what="both vendors to see the hang-up")
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"]) == (504, 2, "b")


@pytest.mark.parametrize("kind", ["hang", "headers_hang", "headers_drop"])
async def test_stream_fails_over_until_the_first_byte(vendor_factory, gateway_factory, kind):
    """Headers alone are not the first byte: a vendor that sends them and stalls or dies is failed over."""
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.fail_next(Fault(kind))
    gw = await gateway_factory({"keys": KEYS, "channels": [
        channel("a", a, priority=1, timeouts={"first_byte_s": 0.3}), channel("b", b)]})
    texts, err = await stream_chat(gw)
    assert err is None
    assert texts == [f"tok{i} " for i in range(5)]
    if kind != "headers_drop":  # the gateway hung up on the stalled vendor
        assert a.disconnects == 1
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"], row["stream"]) == (200, 2, "b", 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (11, 5, 0)


async def test_no_retry_after_the_first_byte(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.fail_next(Fault("drop", after_chunks=2))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", a, priority=1), channel("b", b)]})
    texts, err = await stream_chat(gw)
    assert texts == ["tok0 ", "tok1 "]
    assert err is not None and "ended early" in err.message
    assert b.requests == []
    [row] = await gw.rows()
    assert (row["attempts"], row["channel"], row["status"]) == (1, "a", 502)


async def test_multipart_upload_is_replayed_byte_for_byte(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.fail_next(Fault("status", status=503))
    gw = await gateway_factory({"keys": KEYS, "channels": [
        channel("a", a, priority=1, models=["whisper-*"]), channel("b", b, models=["whisper-*"])]})
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("file", b"RIFF" + bytes(range(256)) * 40, filename="a.wav", content_type="audio/wav")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s, s.post(
        gw.url + "/v1/audio/transcriptions", data=form
    ) as r:
        assert r.status == 200
    assert a.requests[0].body == b.requests[0].body
    assert b"RIFF" + bytes(range(256)) in b.requests[0].body
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"]) == (200, 2, "b")
