"""The upstream dies after the first byte: no retry, a final error event (never a silent cut), a row."""

from __future__ import annotations

import aiohttp
import orjson

from tests.conftest import KEYS, channel
from tests.fakevendor import Fault
from tests.faultkit import MESSAGES, stream_chat


async def test_upstream_dies_mid_stream(vendor_factory, gateway_factory):
    a, b = await vendor_factory("a"), await vendor_factory("b")
    a.fail_next(Fault("drop", after_chunks=3))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", a, priority=1), channel("b", b)]})
    async with aiohttp.ClientSession() as s, s.post(
        gw.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
        headers={"Authorization": "Bearer test-key"},
    ) as r:
        assert r.status == 200
        body = await r.read()  # a clean end of the HTTP body: the error is said in the stream itself
    events = [e for e in body.split(b"\n\n") if e]
    assert [orjson.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1]] == ["tok0 ", "tok1 ", "tok2 "]
    err = orjson.loads(events[-1][len(b"data: "):])["error"]
    assert err["code"] == "stream_interrupted" and "broke mid-stream" in err["message"]
    assert b.requests == []  # the client already had bytes: never retried
    [row] = await gw.rows()
    assert (row["status"], row["attempts"], row["channel"], row["stream"]) == (502, 1, "a", 1)
    assert "broke mid-stream" in row["error"]
    assert row["estimated"] == 1 and row["completion_tokens"] == len("tok0 tok1 tok2 ") // 4


async def test_sdk_raises_on_the_error_event(vendor, gateway_factory):
    vendor.fail_next(Fault("drop", after_chunks=1))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    texts, err = await stream_chat(gw, stream_options={"include_usage": True})
    assert texts == ["tok0 "]
    assert err is not None and "The upstream stream ended early" in err.message


async def test_binary_body_cut_mid_way_is_not_a_clean_end(vendor, gateway_factory):
    vendor.fail_next(Fault("binary_drop", after_chunks=3))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    async with aiohttp.ClientSession() as s, s.post(
        gw.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"Authorization": "Bearer test-key"},
    ) as r:
        assert r.status == 200
        got = b""
        try:
            async for chunk in r.content.iter_any():
                got += chunk
            cut = False
        except aiohttp.ClientPayloadError:
            cut = True
    assert cut, "a truncated binary body must not look complete"
    assert 0 < len(got) <= 300
    [row] = await gw.rows()
    assert (row["status"], row["attempts"]) == (502, 1)
