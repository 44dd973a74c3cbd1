"""Whole (non-stream) answers: idle_s bounds silence, not the whole read, and an answer too big to hold
streams through with its usage read off its end (issue 19, items 5 and 13)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import KEYS
from tests.faultkit import MESSAGES, post

USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}


def answer(filler: int, usage: bool = True) -> bytes:
    body = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "y" * filler}, "finish_reason": "stop"}]}  # fmt: skip
    if usage:
        body["usage"] = USAGE
    return orjson.dumps(body)


class Trickler:
    """A vendor that sends a JSON answer in `pieces`, `gap` seconds apart, without a Content-Length."""

    def __init__(self, body: bytes, pieces: int, gap: float) -> None:
        self.body, self.pieces, self.gap = body, pieces, gap
        self.gate: asyncio.Event | None = None  # when set up: the rest waits for it after the first piece
        self.server: TestServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        out = web.StreamResponse(headers={"Content-Type": "application/json"})
        await out.prepare(request)
        step = -(-len(self.body) // self.pieces)
        for i in range(0, len(self.body), step):
            if i and self.gate is not None:
                await self.gate.wait()
            await out.write(self.body[i : i + step])
            await asyncio.sleep(self.gap)
        await out.write_eof()
        return out


@pytest.fixture
async def trickler() -> AsyncIterator[Trickler]:
    vendor = Trickler(answer(1000), pieces=6, gap=0.0)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", vendor.handle)
    vendor.server = TestServer(app, host="127.0.0.1")
    await vendor.server.start_server()
    yield vendor
    await vendor.server.close()


def _channel(vendor: Trickler, **kw: object) -> dict[str, object]:
    return {"name": "t", "provider": "openai", "base_url": vendor.base_url, "api_keys": ["vk"], "models": ["gpt-*"], **kw}


async def test_idle_s_is_silence_not_a_deadline_for_a_whole_answer(trickler, gateway_factory):
    # Six pieces 0.15 s apart: 0.9 s in all, never 0.4 s of silence.
    trickler.gap = 0.15
    gw = await gateway_factory({"keys": KEYS, "channels": [_channel(trickler, timeouts={"idle_s": 0.4})]})
    status, body, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    assert (status, body) == (200, trickler.body)
    row = (await gw.rows())[-1]
    assert (row["status"], row["prompt_tokens"], row["estimated"]) == (200, 7, 0)


async def test_a_silent_whole_answer_still_times_out(trickler, gateway_factory):
    trickler.gap = 1.0
    gw = await gateway_factory({"keys": KEYS, "channels": [_channel(trickler, timeouts={"idle_s": 0.2})]})
    status, body, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    assert status == 504 and b"timed out" in body


@pytest.mark.parametrize("usage", [True, False], ids=["usage-at-the-end", "no-usage"])
async def test_an_answer_past_max_response_mb_streams_through_with_its_usage(usage, trickler, gateway_factory):
    # 600 KB against a 64 KB cap, in 6 pieces. The vendor holds the rest after its first piece until
    # the client has bytes: a gateway that held the whole answer would hang (bounded by wait_for).
    trickler.body = answer(600_000, usage=usage)
    trickler.gate = gate = asyncio.Event()
    gw = await gateway_factory({"keys": KEYS, "limits": {"max_response_mb": 0.0625}, "channels": [_channel(trickler)]})
    received = bytearray()

    async def fetch() -> tuple[int, str]:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s:
            async with s.post(f"{gw.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}) as r:
                async for chunk in r.content.iter_any():
                    received.extend(chunk)
                    gate.set()
                return r.status, r.headers["Content-Type"]

    assert await asyncio.wait_for(fetch(), 10) == (200, "application/json")
    assert bytes(received) == trickler.body
    row = (await gw.rows())[-1]
    if usage:
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["estimated"]) == (7, 5, 12, 0)
    else:
        assert row["estimated"] == 1


async def test_a_huge_error_body_is_cut_to_its_start(raw_vendor, gateway_factory):
    error = b'{"error":{"message":"bad request","type":"invalid_request_error"}}' + b" " * 5_000_000
    raw_vendor.answer = lambda _: b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(error), error)
    gw = await gateway_factory({"keys": KEYS, "channels": [
        {"name": "r", "provider": "openai", "base_url": raw_vendor.base_url, "api_keys": ["vk"], "models": ["gpt-*"]}]})
    status, body, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    assert status == 400 and b"bad request" in body and len(body) < 300_000  # its start, not 5 MB


def _raw_json(body: bytes, *headers: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


ODD = {
    # invalid UTF-8 in the text: the usage is still read
    "bad-utf8": (_raw_json(answer(10).replace(b"yyyy", b"y\xff\xfey", 1)), (7, 5, 12, 0)),
    # compressed although the gateway asked for identity: read for usage, passed on as it came
    "gzip": (_raw_json(gzip.compress(answer(10)), b"Content-Encoding: gzip"), (7, 5, 12, 0)),
    # an absurd count: clamped, and the row says it is a guess
    "absurd": (_raw_json(answer(10).replace(b'"prompt_tokens":7', b'"prompt_tokens":1e23')), (10**9, 5, 12, 1)),
}


@pytest.mark.parametrize("case", list(ODD))
async def test_usage_is_read_from_odd_vendor_answers(case, raw_vendor, gateway_factory):
    raw, (prompt, completion, total, estimated) = ODD[case]
    raw_vendor.answer = lambda _: raw
    gw = await gateway_factory({"keys": KEYS, "channels": [
        {"name": "r", "provider": "openai", "base_url": raw_vendor.base_url, "api_keys": ["vk"], "models": ["gpt-*"]}]})
    status, body, _ = await post(gw, {"model": "gpt-4o", "messages": MESSAGES})
    sent = raw.split(b"\r\n\r\n", 1)[1]
    # The client gets the bytes as they came (its library undoes the gzip, with the vendor's header).
    assert status == 200 and body == (gzip.decompress(sent) if case == "gzip" else sent)
    row = (await gw.rows())[-1]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["estimated"]) == (
        prompt, completion, total, estimated)
