"""The lean answer writer: a whole JSON answer, head and body, written to the client in one write.

`LeanAnswer` is the twin of `web.Response` (gateway.http.answer chooses one at start). aiohttp's
`prepare()` and `write_eof()` took ~64k instructions on a small JSON answer, a tenth of the gateway's
whole request (measured: 634k -> 605k instructions a request, and 0.835x -> 0.913x the floor's
requests/s at 32 connections with the other cuts of that session).

aiohttp internals it uses, each checked by `unavailable()` before the process picks this path:
- `StreamResponse.__init__(_real_headers=...)`, to take the relay's headers over without a copy;
- `request._payload_writer` (its `length`, `write_eof()` and `output_size`), to write head and body
  in one call;
- `aiohttp.http_writer._serialize_headers`, aiohttp's C serializer, which refuses CR, LF and NUL;
- the response's `_status`, `_reason`, `_headers`, `_keep_alive`, `_compression`, `_cookies`,
  `_chunked`, `_eof_sent`, `_must_be_empty_body`, `_body_length` and `_payload_writer`, read or set as
  `StreamResponse.prepare()` and `web.Response` do.
It skips the app's `on_response_prepare` signal, so gateway.http.paths picks `web.Response` when any
handler is connected to it (or refuses to start when this path was forced).
"""

from __future__ import annotations

import inspect

import aiohttp
from aiohttp import web
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers  # aiohttp's C serializer: refuses CR, LF and NUL in headers
from multidict import CIMultiDict

from gateway.http.answer import TakesLines, lines_dict

# The aiohttp minor versions the suite has passed this path on: (lowest, first untested).
TESTED = ((3, 12), (3, 15))


def unavailable() -> str | None:
    """Why this path cannot be used with the aiohttp installed, or None when it can."""
    version = tuple(int(p) for p in aiohttp.__version__.split(".")[:2] if p.isdigit())
    if not TESTED[0] <= version < TESTED[1]:
        return f"aiohttp {aiohttp.__version__} is outside the versions it was tested on (3.12 to 3.14)"
    if "_real_headers" not in inspect.signature(web.StreamResponse.__init__).parameters:
        return "StreamResponse takes no _real_headers"
    if "_payload_writer" not in getattr(web.BaseRequest, "ATTRS", ()):
        return "BaseRequest keeps no _payload_writer"
    return None


class LeanAnswer(TakesLines, web.Response):
    """A `web.Response` with a bytes body, written as aiohttp writes it, in fewer steps.

    It writes the same bytes: the same headers in the same order (Content-Length, Date, Server, and
    Connection as the client's keep-alive asks), through the same serializer, then the header lines it
    was given (gateway.http.answer.add_lines), in one write. Anything
    else (HEAD, a status without a body, compression, cookies, a body that is not bytes) goes through
    aiohttp. tests/gateway/http/test_lean_answer.py compares the bytes with `web.Response`'s.
    """

    def __init__(self, status: int, body: bytes, headers: CIMultiDict[str]) -> None:
        """`headers` are taken over, not copied (web.Response would copy them)."""
        web.StreamResponse.__init__(self, status=status, _real_headers=headers)
        self._body = body
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE  # as web.Response sets them, should compression be enabled
        self._zlib_executor = None

    async def prepare(self, request: web.BaseRequest) -> None:
        body = self._body
        status = self._status
        if (
            type(body) is not bytes
            or self._payload_writer is not None
            or self._eof_sent
            or status < 200
            or status in (204, 304)
            or request.method == "HEAD"
            or self._compression
            or self._cookies
            or self._chunked
        ):
            if self.lines:
                self._headers.update(lines_dict(self.lines))
            await super().prepare(request)
            return
        keep_alive = self._keep_alive
        if keep_alive is None:
            self._keep_alive = keep_alive = request.keep_alive
        version = request.version
        headers = self._headers
        headers["Content-Length"] = str(len(body))
        if body:
            headers.setdefault("Content-Type", "application/octet-stream")
        if "Date" not in headers:
            headers["Date"] = rfc822_formatted_time()
        headers.setdefault("Server", SERVER_SOFTWARE)
        if "Connection" not in headers:
            if keep_alive:
                if version == HttpVersion10:
                    headers["Connection"] = "keep-alive"
            elif version == HttpVersion11:
                headers["Connection"] = "close"
        self._must_be_empty_body = False
        writer = request._payload_writer
        writer.length = len(body)
        head = _serialize_headers(f"HTTP/{version[0]}.{version[1]} {status} {self._reason}", headers)
        lines = self.lines  # go before the blank line that ends the head
        await writer.write_eof(b"".join((head[:-2], lines, b"\r\n", body)) if lines else head + body)
        self._eof_sent = True
        self._body_length = writer.output_size
