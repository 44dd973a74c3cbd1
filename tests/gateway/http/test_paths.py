"""The lean twins and aiohttp's public API give the client the same answer, and the choice between them.

The vendor is a raw TCP server, so each case is the exact bytes a vendor may send. Every case goes
through a gateway on the lean path and one on the public path; the client must see the same status,
headers (but for Date and the request id) and body, and the vendor the same request.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from gateway.app import create_app
from gateway.http import lean_answer, lean_client
from gateway.http.answer import public_answer
from gateway.http.lean_answer import LeanAnswer
from gateway.http.lean_client import LeanUpstream
from gateway.http.paths import HttpPathError
from gateway.http.upstream import SessionUpstream
from gateway.state import SERVICES, Runtime
from tests.conftest import KEYS, channel, make_config
from tests.rawvendor import RawVendor

JSON = b'{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}'
SSE = (b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
       b"data: [DONE]\n\n")
GZIPPED = gzip.compress(JSON, mtime=0)


def _chunked(body: bytes, size: int = 40) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def _head(status: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


# name -> (raw answer, close after it, what the client must get: status and body)
CASES: dict[str, tuple[bytes, bool, int, bytes]] = {
    "content-length": (_head(b"200 OK", b"Content-Type: application/json", b"Content-Length: %d" % len(JSON),
                             b"X-Vendor: a") + JSON, False, 200, JSON),
    "chunked-sse": (_head(b"200 OK", b"Content-Type: text/event-stream", b"Transfer-Encoding: chunked",
                          b"X-Vendor: b") + _chunked(SSE), False, 200, SSE),
    "close-delimited": (_head(b"200 OK", b"Content-Type: application/json") + JSON, True, 200, JSON),
    "close-delimited-sse": (_head(b"200 OK", b"Content-Type: text/event-stream") + SSE, True, 200, SSE),
    "interim-1xx": (_head(b"100 Continue") + _head(b"103 Early Hints", b"Link: </a>; rel=preload")
                    + _head(b"200 OK", b"Content-Type: application/json", b"Content-Length: %d" % len(JSON)) + JSON,
                    False, 200, JSON),
    "no-content-204": (_head(b"204 No Content", b"X-Vendor: c"), False, 204, b""),
    "connection-close": (_head(b"200 OK", b"Content-Type: application/json", b"Content-Length: %d" % len(JSON),
                               b"Connection: close") + JSON, True, 200, JSON),
    "gzip-anyway": (_head(b"200 OK", b"Content-Type: application/json", b"Content-Encoding: gzip",
                          b"Content-Length: %d" % len(GZIPPED)) + GZIPPED, False, 200, GZIPPED),
    "vendor-404": (_head(b"404 Not Found", b"Content-Type: application/json", b"Content-Length: 29")
                   + b'{"error":{"message":"nope"}}\n', False, 404, b'{"error":{"message":"nope"}}\n'),
    "binary-chunked": (_head(b"200 OK", b"Content-Type: audio/mpeg", b"Transfer-Encoding: chunked")
                       + _chunked(bytes(range(256)) * 8, 500), False, 200, bytes(range(256)) * 8),
}


def _request_lines(raw: bytes) -> tuple[bytes, frozenset[bytes], bytes]:
    """A request as its request line, its header lines (order and the vendor's port aside) and its body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *headers = head.split(b"\r\n")
    return line, frozenset(h.lower() for h in headers if not h.lower().startswith(b"host:")), body


async def _through(mode: str, case: str, tmp_path: Any) -> tuple[int, list[tuple[str, str]], bytes, tuple[Any, ...]]:
    answer, close_after, _, _ = CASES[case]
    vendor = RawVendor(answer=lambda _: answer, close_after=close_after)
    vendor.server = await asyncio.start_server(vendor._serve, "127.0.0.1", 0)
    config = make_config({"keys": KEYS, "channels": [channel("raw", vendor)]}, tmp_path / mode)
    server = TestServer(create_app(Runtime(config), http_path=mode), host="127.0.0.1")
    await server.start_server()
    try:
        assert isinstance(server.app[SERVICES].upstream, LeanUpstream if mode == "lean" else SessionUpstream)
        stream = case.endswith("sse")
        body = {"model": "gpt-4o", "messages": [], "stream": stream, "stream_options": {"include_usage": True}}
        headers = {"Authorization": "Bearer test-key", "User-Agent": "parity", "X-Request-Id": "r1"}
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.post(server.make_url("/v1/chat/completions"), json=body, headers=headers) as r:
                got = await r.read()
                seen = [(k, v) for k, v in r.headers.items() if k != "Date"]  # in the order sent
                status = r.status
    finally:
        await server.close()
        vendor.server.close()
    return status, seen, got, tuple(_request_lines(r) for r in vendor.requests)


@pytest.mark.parametrize("case", list(CASES))
async def test_both_paths_give_the_client_the_same_answer(case, tmp_path):
    (tmp_path / "lean").mkdir()
    (tmp_path / "public").mkdir()
    lean = await _through("lean", case, tmp_path)
    public = await _through("public", case, tmp_path)
    assert lean == public
    _, _, status, body = CASES[case]
    assert lean[0] == status and lean[2] == body  # and both are right, not merely alike
    headers = CIMultiDict(lean[1])
    assert headers["X-Request-Id"] == "r1"
    requests = lean[3]
    assert len(requests) == 1 and b"accept-encoding: identity" in requests[0][1]  # gzip refused up front
    if case == "gzip-anyway":
        assert headers["Content-Encoding"] == "gzip"  # a vendor that compresses anyway is passed on as it sent


@pytest.mark.parametrize("client", [LeanUpstream, SessionUpstream], ids=["lean", "public"])
async def test_head_reads_no_body_on_either_client(client, raw_vendor):
    raw_vendor.answer = lambda _: _head(b"200 OK", b"Content-Type: application/json", b"Content-Length: 100")
    upstream = client()
    try:
        response = await upstream.request("HEAD", f"{raw_vendor.url}/v1/models", {}, None, "", 5.0)
        assert (response.status, response.headers["Content-Length"], await response.read()) == (200, "100", b"")
        response.release()
        response = await upstream.request("HEAD", f"{raw_vendor.url}/v1/models", {}, None, "", 5.0)
        assert response.status == 200  # the connection stayed usable: no body was waited for
        response.release()
    finally:
        await upstream.close()
    assert all(r.startswith(b"HEAD /v1/models HTTP/1.1\r\n") for r in raw_vendor.requests)


async def test_auto_takes_the_lean_twins_on_a_tested_aiohttp(gateway_factory, vendor):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]}, http_path="auto")
    services = gw.server.app[SERVICES]
    assert isinstance(services.upstream, LeanUpstream) and services.answer is LeanAnswer


async def test_an_untested_aiohttp_gets_the_public_api_or_a_loud_refusal(monkeypatch, gateway_factory, vendor):
    monkeypatch.setattr(aiohttp, "__version__", "3.99.0")
    assert "outside the versions" in (await lean_client.unavailable() or "")
    assert "outside the versions" in (lean_answer.unavailable() or "")
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]}, http_path="auto")
    services = gw.server.app[SERVICES]
    assert isinstance(services.upstream, SessionUpstream) and services.answer is public_answer
    answer = await gw.client().chat.completions.create(model="gpt-4o", messages=[])
    assert answer.usage is not None
    with pytest.raises(HttpPathError, match=r"lean path cannot be used: aiohttp 3\.99\.0"):
        await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]}, http_path="lean")


async def test_a_mode_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(HttpPathError, match="GATEWAY_HTTP_PATH='fast': expected one of auto, lean, public"):
        create_app(Runtime(make_config({}, tmp_path)), http_path="fast")


async def _with_signal(mode: str, tmp_path: Any, vendor: Any) -> tuple[TestServer, list[int]]:
    app = create_app(Runtime(make_config({"keys": KEYS, "channels": [channel("v", vendor)]}, tmp_path)), http_path=mode)
    prepared: list[int] = []

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        prepared.append(response.status)
        response.headers["X-Prepared"] = "1"

    app.on_response_prepare.append(on_prepare)
    return TestServer(app, host="127.0.0.1"), prepared


async def test_on_response_prepare_keeps_working_under_auto(tmp_path, vendor):
    server, prepared = await _with_signal("auto", tmp_path, vendor)
    await server.start_server()
    try:
        assert server.app[SERVICES].answer is public_answer  # the lean writer stepped aside
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s:
            async with s.post(server.make_url("/v1/chat/completions"), json={"model": "gpt-4o", "messages": []}) as r:
                assert r.status == 200 and r.headers["X-Prepared"] == "1"
        assert prepared == [200]
    finally:
        await server.close()


async def test_on_response_prepare_is_refused_loudly_when_lean_is_forced(tmp_path, vendor):
    server, _ = await _with_signal("lean", tmp_path, vendor)
    with pytest.raises(HttpPathError, match="on_response_prepare"):
        await server.start_server()
    await server.close()


def test_the_lean_answer_takes_the_relays_headers_over():
    headers = CIMultiDict({"Content-Type": "application/json"})
    assert LeanAnswer(200, b"{}", headers).headers is headers
