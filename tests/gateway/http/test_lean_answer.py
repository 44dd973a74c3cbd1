"""Answer writes, byte for byte, what aiohttp's web.Response writes, seen on a raw socket."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.app import create_app
from gateway.http.answer import add_lines
from gateway.http.lean_answer import LeanAnswer
from gateway.state import Runtime
from tests.conftest import KEYS, make_config

BODY = b'{"id":"chatcmpl-1","object":"chat.completion"}'


def _headers() -> CIMultiDict[str]:
    return CIMultiDict([("Content-Type", "application/json"), ("OpenAI-Processing-Ms", "12"),
                        ("X-Request-Id", "r1"), ("X-Ratelimit-Remaining", "99")])


LINES = b"x-ratelimit-limit-requests: 100\r\nx-ratelimit-remaining-requests: 99\r\nx-ratelimit-reset-requests: 1m1s\r\n"


async def _serve(request: web.Request) -> web.StreamResponse:
    status = int(request.query.get("status", "200"))
    body = BODY if status not in (204, 304) else b""
    kind = request.match_info["kind"]
    answer = LeanAnswer(status, body, _headers()) if kind.startswith("answer") else web.Response(status=status, body=body, headers=_headers())
    if kind.endswith("-lines"):
        add_lines(answer, LINES)
    return answer


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/{kind}", _serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


async def _exchange(port: int, requests: list[bytes]) -> list[bytes]:
    """Send each request on one connection and read its whole answer (to the connection's end for the last)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for n, raw in enumerate(requests):
            writer.write(raw)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
            if n == len(requests) - 1 and b"close" in raw.lower():
                rest = await asyncio.wait_for(reader.read(), 5)  # the server must close after it
            elif length and not raw.startswith(b"HEAD"):
                rest = await asyncio.wait_for(reader.readexactly(int(length.group(1))), 5)
            else:
                rest = b""
            answers.append(re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", head + rest))
    finally:
        writer.close()
    return answers


@pytest.mark.parametrize(
    "requests",
    [
        [b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"] * 2,  # kept alive, reused
        [b"GET /%s?status=404 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /%s?status=503 HTTP/1.1\r\nHost: x\r\n\r\n"],
        [b"GET /%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
        [b"GET /%s HTTP/1.0\r\n\r\n"],  # closed after the answer
        [b"GET /%s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"] * 2,
        [b"HEAD /%s HTTP/1.1\r\nHost: x\r\n\r\n"],  # no body: aiohttp's own path
        [b"GET /%s?status=204 HTTP/1.1\r\nHost: x\r\n\r\n"],
    ],
    ids=["keep-alive", "errors", "close", "http/1.0", "http/1.0 keep-alive", "head", "204"],
)
async def test_answer_writes_what_web_response_writes(port, requests):
    ours = await _exchange(port, [r.replace(b"%s", b"answer") for r in requests])
    theirs = await _exchange(port, [r.replace(b"%s", b"response") for r in requests])
    assert ours == theirs
    assert all(a.startswith(b"HTTP/1.") for a in ours)


@pytest.mark.parametrize("request_line", [b"GET /%s HTTP/1.1", b"HEAD /%s HTTP/1.1", b"GET /%s?status=503 HTTP/1.1"])
async def test_header_lines_given_to_an_answer_are_written_as_headers(port, request_line):
    """The limiter's x-ratelimit-* lines: appended to the lean writer's head, set one by one on any other
    answer (and on the lean writer's own fallback, HEAD): the same headers either way."""
    def headers(raw: bytes) -> list[bytes]:
        return sorted(raw.split(b"\r\n\r\n")[0].split(b"\r\n")[1:])

    request = request_line + b"\r\nHost: x\r\n\r\n"
    (ours,) = await _exchange(port, [request.replace(b"%s", b"answer-lines")])
    (theirs,) = await _exchange(port, [request.replace(b"%s", b"response-lines")])
    assert headers(ours) == headers(theirs)
    assert set(LINES.rstrip(b"\r\n").split(b"\r\n")) <= set(headers(ours))
    assert ours.split(b"\r\n\r\n", 1)[1] == theirs.split(b"\r\n\r\n", 1)[1]


async def test_the_answer_reaches_the_client_whole_with_its_head_in_one_write(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /answer HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.read(65536), 5)  # loopback: one write arrives as one read
    writer.close()
    assert first.endswith(b"\r\n\r\n" + BODY)
    assert b"\r\nContent-Length: %d\r\n" % len(BODY) in first


async def test_the_app_registers_no_response_signal_answer_would_skip(tmp_path):
    app = create_app(Runtime(make_config({"keys": KEYS, "channels": []}, tmp_path)))
    assert not app.on_response_prepare
