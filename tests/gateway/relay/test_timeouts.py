"""Timeouts on a started stream: idle upstream -> error event + row; keepalive comments while it thinks.

Connect and first-byte timeouts fail over and are covered in test_failover.py.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import GatewayError
from gateway.relay import pump
from providers import ANTHROPIC, GEMINI, OPENAI
from tests.conftest import KEYS, channel
from tests.fakevendor import Fault
from tests.faultkit import MESSAGES, eventually, post, stream_chat

STREAM_BODY = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}


def events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e]


async def test_idle_upstream_mid_stream_ends_with_error_event_and_row(vendor, gateway_factory):
    vendor.fail_next(Fault("idle", after_chunks=2, seconds=30))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor, timeouts={"idle_s": 0.3})]})
    texts, err = await stream_chat(gw)
    assert texts == ["tok0 ", "tok1 "]
    assert err is not None
    assert err.message == "The upstream stream ended early: upstream sent nothing for 0.3s."
    assert err.code == "stream_interrupted"
    await eventually(lambda: vendor.disconnects == 1, what="the vendor connection to close")
    [row] = await gw.rows()
    assert (row["status"], row["stream"], row["channel"], row["attempts"]) == (504, 1, "a", 1)
    assert "sent nothing for 0.3s" in row["error"]
    # No usage came from the vendor, so it is estimated from what was streamed and sent.
    assert row["estimated"] == 1
    assert row["completion_tokens"] == len("tok0 tok1 ") // 4
    assert row["prompt_tokens"] > 0


async def test_idle_error_event_is_the_last_event_on_the_wire(vendor, gateway_factory):
    vendor.fail_next(Fault("idle", after_chunks=1, seconds=30))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor, timeouts={"idle_s": 0.2})]})
    status, body, headers = await post(gw, STREAM_BODY)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    evs = events(body)
    assert evs[0].startswith(b'data: {"id"')
    assert evs[-1].startswith(b"data: ")
    err = orjson.loads(evs[-1][len(b"data: "):])["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "stream_interrupted"


async def test_slow_chunks_within_idle_timeout_are_fine(vendor_factory, gateway_factory):
    vendor = await vendor_factory("slow", chunks=3, chunk_delay=0.15)
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor, timeouts={"idle_s": 0.5})]})
    texts, err = await stream_chat(gw)
    assert err is None and texts == ["tok0 ", "tok1 ", "tok2 "]


async def test_keepalive_comment_while_the_upstream_is_silent(vendor, gateway_factory, monkeypatch):
    monkeypatch.setattr(pump, "KEEPALIVE_S", 0.1)
    vendor.fail_next(Fault("idle", after_chunks=1, seconds=0.5), Fault("idle", after_chunks=1, seconds=0.5))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor, timeouts={"idle_s": 5})]})
    status, body, _ = await post(gw, STREAM_BODY)
    assert status == 200
    evs = events(body)
    assert evs[0].startswith(b"data: ") and b"tok0" in evs[0]
    assert evs[1] == b": keepalive"  # after the first chunk, during the silence
    assert b"tok1" in [e for e in evs if e != b": keepalive"][1]
    assert evs[-1] == b"data: [DONE]"
    # The SDK skips comments: the client sees the whole answer.
    texts, err = await stream_chat(gw)
    assert err is None and texts == [f"tok{i} " for i in range(5)]
    rows = await gw.rows()
    assert [(r["status"], r["error"]) for r in rows] == [(200, None), (200, None)]


async def test_no_keepalive_before_the_stream_starts(vendor, gateway_factory, monkeypatch):
    monkeypatch.setattr(pump, "KEEPALIVE_S", 0.05)
    vendor.fail_next(Fault("slow", seconds=0.4))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor)]})
    status, body, _ = await post(gw, STREAM_BODY)
    assert status == 200
    assert events(body)[0].startswith(b"data: {")  # nothing went out before the first byte could fail over
    assert b": keepalive" not in body


async def test_keepalive_does_not_reset_the_idle_timeout(vendor, gateway_factory, monkeypatch):
    monkeypatch.setattr(pump, "KEEPALIVE_S", 0.05)
    vendor.fail_next(Fault("idle", after_chunks=1, seconds=30))
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("a", vendor, timeouts={"idle_s": 0.4})]})
    _, body, _ = await post(gw, STREAM_BODY)
    evs = events(body)
    assert b": keepalive" in evs
    assert b"stream_interrupted" in evs[-1]


@pytest.mark.parametrize(
    ("protocol", "prefix", "shape"),
    [
        (OPENAI, b"data: ", {"error": {"message": "m.", "type": "upstream_error", "param": None, "code": "c"}}),
        (ANTHROPIC, b"event: error\ndata: ", {"type": "error", "error": {"type": "timeout_error", "message": "m."}}),  # Anthropic names a 504 so
        (GEMINI, b"data: ", {"error": {"code": 504, "message": "m.", "status": "DEADLINE_EXCEEDED"}}),
    ],
)
def test_error_event_in_each_protocol(protocol, prefix, shape):
    event = GatewayError(504, "m.", type="upstream_error", code="c").sse_event(protocol)
    assert event.startswith(prefix) and event.endswith(b"\n\n")
    assert orjson.loads(event[len(prefix):]) == shape


async def test_keepalive_and_error_never_land_inside_a_half_sent_event(gateway_factory, monkeypatch):
    """An upstream that stops mid-event: no comment goes into the event; the error event starts clean."""
    monkeypatch.setattr(pump, "KEEPALIVE_S", 0.05)

    async def half(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"hel')
        await asyncio.sleep(0.6)  # past the idle timeout, with keepalives due meanwhile
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", half)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        ch = {"name": "half", "provider": "openai", "base_url": str(server.make_url("/v1")), "models": ["gpt-*"],
              "timeouts": {"idle_s": 0.3}}
        gw = await gateway_factory({"keys": KEYS, "channels": [ch]})
        _, body, _ = await post(gw, {**STREAM_BODY, "stream_options": {"include_usage": True}})
    finally:
        await server.close()
    assert b"keepalive" not in body
    assert body.startswith(b'data: {"choices":[{"index":0,"delta":{"content":"hel\n\ndata: {"error":')
