"""The lean upstream client: `Upstream` (gateway.http.upstream) without aiohttp's per-request machinery.

`LeanUpstream.request` writes an HTTP/1.1 request on a connection from an aiohttp connector's pool and
hands back the vendor's status, headers and body stream. It skips aiohttp's per-request client
machinery (a `ClientRequest`, a `ClientResponse`, a task to write the body, timers, traces, cookie and
redirect handling), which measured about 230k of the floor's 585k instructions a request (1.06x the
floor with it gone, against 1.4x through `ClientSession.request`); the gateway needs none of it, since
it sets its own timeouts, follows no redirects and keeps no cookies. What it keeps is aiohttp's: the
connector (pool, limits, DNS cache, TLS), the protocol and its C response parser, and the body stream.

aiohttp internals it uses, each checked by `unavailable()` before the process picks this path:
- `aiohttp.client_reqrep.ClientRequest` and `ConnectionKey`: one `ClientRequest` per origin is the
  key the connector pools connections by (`connector.connect(request, traces, timeout)`);
- `aiohttp.client_proto.ResponseHandler`: `set_response_params(skip_payload, read_until_eof,
  auto_decompress)` and `read()` for the parsed head and the body stream;
- `aiohttp.http.StreamWriter` to write a multipart body minding flow control;
- `TCPConnector._release` and `_conns` (a dict of deques of `(protocol, time)`), to reuse the newest
  idle connection first and close a burst's spare ones (see `Connector`);
- `TCPConnector._cleanup_closed_transports` and `_cleanup_closed_disabled`, as aiohttp closes a TLS one.
setup.cfg bounds aiohttp to the minor versions the suite has passed on; `unavailable()` refuses others.
"""

from __future__ import annotations

import asyncio
import functools
import inspect

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest, ConnectionKey
from aiohttp.connector import Connection
from aiohttp.http import RawResponseMessage, StreamWriter
from aiohttp.payload import Payload
from aiohttp.streams import EofStream, StreamReader
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.http.upstream import connector_options, open_session

# A body up to this size goes out in one write with the request head (one copy, one syscall).
_JOIN_BODY_BYTES = 64 * 1024
# The aiohttp minor versions the suite has passed this path on: (lowest, first untested).
TESTED = ((3, 12), (3, 15))


async def unavailable() -> str | None:
    """Why this path cannot be used with the aiohttp installed, or None when it can."""
    version = tuple(int(p) for p in aiohttp.__version__.split(".")[:2] if p.isdigit())
    if not TESTED[0] <= version < TESTED[1]:
        return f"aiohttp {aiohttp.__version__} is outside the versions it was tested on (3.12 to 3.14)"
    try:
        params = inspect.signature(ResponseHandler.set_response_params).parameters
        if not {"skip_payload", "read_until_eof", "auto_decompress"} <= params.keys():
            return "ResponseHandler.set_response_params has other parameters"
        if not callable(getattr(ResponseHandler, "read", None)):
            return "ResponseHandler has no read()"
        if not callable(getattr(aiohttp.TCPConnector, "_release", None)):
            return "TCPConnector has no _release()"
        connector = aiohttp.TCPConnector()
        conns = getattr(connector, "_conns", None)
        await connector.close()
        if not isinstance(conns, dict):
            return "TCPConnector has no _conns dict"
        ClientRequest("GET", URL("http://127.0.0.1"), loop=asyncio.get_running_loop())
    except Exception as exc:  # any shape aiohttp moved to
        return f"{type(exc).__name__}: {exc}"
    return None


class Connector(aiohttp.TCPConnector):
    """aiohttp's connector, reusing the most recently used idle connection first.

    aiohttp reuses idle connections oldest first, so every pooled connection stays in turn and none
    ever idles out while any request comes by: after a burst of a thousand streams, a thousand
    connections and their buffers stay open. Reused newest first, a steady load keeps cycling the
    few it needs and the rest sit at the far end of the pool, untouched, until aiohttp's keep-alive
    cleanup closes them or `close_idle` does once a burst is over (see gateway.http.memory). Closing
    beyond a fixed count as connections come back would instead cost a reconnect per request
    whenever more than that many requests are in flight (measured: a third fewer requests/s at 256
    connections).

    aiohttp has no setting for this, so it hooks the connector's internal `_release` and `_conns`;
    tests/gateway/http/test_memory.py fails if an upgrade moves them.
    """

    def _release(self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        super()._release(key, protocol, should_close=should_close)
        idle = self._conns.get(key)
        if idle and idle[-1][0] is protocol:  # kept: put it where `_get` takes from
            idle.appendleft(idle.pop())

    def close_idle(self, keep: int) -> int:
        """Close the idle connections beyond `keep` per host, the longest idle first; return how many."""
        closed = 0
        for key, idle in self._conns.items():
            while len(idle) > keep:
                protocol, _ = idle.pop()
                transport = protocol.transport
                protocol.close()
                if key.is_ssl and not self._cleanup_closed_disabled:  # as aiohttp does when it closes one
                    self._cleanup_closed_transports.append(transport)
                closed += 1
        return closed


class LeanResponse:
    """A vendor's answer: status and headers in hand, the body still to come from `content`.

    Once done with it, `release()` hands the connection back to the pool (aiohttp closes it instead
    if the body was not read to its end, or the vendor asked to close); `close()` drops it.
    """

    __slots__ = ("_conn", "content", "content_type", "headers", "status")

    def __init__(self, message: RawResponseMessage, content: StreamReader, conn: Connection) -> None:
        self.status: int = message.code
        self.headers: CIMultiDictProxy[str] = message.headers
        raw = message.headers.get("Content-Type")
        # As aiohttp's ClientResponse.content_type: the media type alone, lower case.
        self.content_type = raw.partition(";")[0].strip().lower() if raw else "application/octet-stream"
        self.content = content
        self._conn = conn

    async def read(self) -> bytes:
        """The rest of the body."""
        return await self.content.read()

    def release(self) -> None:
        self._conn.release()

    def close(self) -> None:
        self._conn.close()


class _Origin:
    """What one scheme://host:port needs: the request the connector keys and opens connections by, and
    the Host header. Made once per origin: a `ClientRequest` costs ~50k instructions to build."""

    __slots__ = ("host", "key")

    def __init__(self, origin: URL) -> None:
        host = origin.host_port_subcomponent
        if host is None:
            raise ValueError(f"no host in {origin}")
        self.key = ClientRequest("GET", origin, loop=asyncio.get_running_loop())
        self.host = host


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> tuple[str, str]:
    """An upstream URL as (origin, path and query), encoded as aiohttp would send them."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return str(parsed.origin()), parsed.raw_path_qs


@functools.lru_cache(maxsize=64)
def _connect_timeout(seconds: float) -> aiohttp.ClientTimeout:
    # sock_connect bounds opening a new socket (TCP and TLS); a pooled connection costs no timer.
    # Waiting for a free pool slot is bounded by the caller's first-byte deadline.
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds)


_HEADER_LINE = "{}: {}\r\n".format


def _head(method: str, target: str, host: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = "".join(map(_HEADER_LINE, headers.keys(), headers.values()))  # no Python loop per header
    # Names and values come from aiohttp's parser or the validated config, so this never fires; it
    # is the last line against header injection, and cheap (two counts over one string).
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        raise ValueError("an upstream header name or value holds a line break")
    size = "" if length is None else f"Content-Length: {length}\r\n"
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{lines}{size}\r\n".encode()


def _send(transport: asyncio.Transport, head: bytes, body: bytes | None) -> None:
    """Write one request, unless its connection closed meanwhile (reading the answer then fails)."""
    if transport.is_closing():
        return
    if not body:
        transport.write(head)
    elif len(body) <= _JOIN_BODY_BYTES:
        transport.write(head + body)  # one segment
    else:
        transport.writelines((head, body))


class LeanUpstream:
    """`Upstream` over the pool of a `Connector`, whose session serves the realtime WebSocket upgrade."""

    def __init__(self) -> None:
        self.connector = Connector(**connector_options())
        self.session = open_session(self.connector)
        self._origins: dict[str, _Origin] = {}

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | Payload | None, query: str, connect_s: float
    ) -> LeanResponse:
        """As `Upstream.request`; an answer that is not HTTP raises HttpProcessingError."""
        origin_url, target = _split(url)
        origin = self._origins.get(origin_url) or self._origin(origin_url)
        if query:
            target += ("&" if "?" in target else "?") + query
        if body is None:
            length: int | None = 0 if method in ("POST", "PUT", "PATCH") else None
        else:
            length = len(body) if isinstance(body, bytes) else body.size
        head = _head(method, target, origin.host, headers, length)
        conn = await self.connector.connect(origin.key, [], _connect_timeout(connect_s))
        protocol = conn.protocol
        try:
            assert protocol is not None
            transport = protocol.transport
            if transport is None or transport.is_closing():
                raise aiohttp.ServerDisconnectedError()
            # read_until_eof: an answer with neither Content-Length nor chunked framing ends when the
            # vendor closes the connection (HTTP/1.0 servers, some front ends); without it the parser
            # takes such a body as empty. aiohttp's own client sets it by default.
            protocol.set_response_params(skip_payload=method == "HEAD", read_until_eof=True, auto_decompress=False)
            loop = asyncio.get_running_loop()
            if isinstance(body, Payload):  # a multipart upload: written in bounded pieces, minding flow control
                transport.write(head)
                await body.write(StreamWriter(protocol, loop))
            else:
                # Sent when the loop next turns, with the other requests this turn made, as aiohttp's
                # client does through a task: written at once, each request woke the vendor's side
                # on its own (measured: 1.8 inter-processor interrupts a request against 1.0).
                loop.call_soon(_send, transport, head, body)
            while True:
                try:
                    message, payload = await protocol.read()
                except EofStream:
                    raise aiohttp.ServerDisconnectedError() from None
                if not 100 <= message.code < 200 or message.code == 101:
                    break  # an interim answer (100 Continue, 103 Early Hints) is followed by the real one
        except BaseException:
            conn.close()
            raise
        return LeanResponse(message, payload, conn)

    def _origin(self, origin_url: str) -> _Origin:
        origin = self._origins[origin_url] = _Origin(URL(origin_url))
        return origin

    def close_idle(self, keep: int) -> int:
        """Close the idle connections beyond `keep` per host; return how many."""
        return self.connector.close_idle(keep)

    async def close(self) -> None:
        await self.session.close()

