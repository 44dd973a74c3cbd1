"""A whole answer, head and body, written to the client in one write."""

from __future__ import annotations

from aiohttp import web
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers  # aiohttp's C serializer: refuses CR, LF and NUL in headers
from multidict import CIMultiDict


class Answer(web.Response):
    """A `web.Response` with a bytes body, written as aiohttp writes it, in fewer steps.

    aiohttp's `prepare()` and `write_eof()` took ~64k instructions on a small JSON answer, a tenth of
    the gateway's whole request (measured): five coroutine layers and header checks for cases that do
    not arise here. This writes the same bytes: the same headers in the same order (Content-Length,
    Date, Server, and Connection as the client's keep-alive asks), through the same serializer, in one
    write. Anything else (HEAD, a status without a body, compression, cookies, a body that is not
    bytes) goes through aiohttp.

    The app registers no `on_response_prepare` signal, which this path would skip;
    tests/gateway/test_answer.py fails if one is added.
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
        await writer.write_eof(_serialize_headers(f"HTTP/{version[0]}.{version[1]} {status} {self._reason}", headers) + body)
        self._eof_sent = True
        self._body_length = writer.output_size
