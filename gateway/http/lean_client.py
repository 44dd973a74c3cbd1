"""The one pooled client session towards the vendors, and the lean request path over its connections.

`Upstream.request` sends an HTTP/1.1 request on a connection from the session's pool and hands back
the vendor's status, headers and body stream. It skips aiohttp's per-request client machinery (a
`ClientRequest`, a `ClientResponse`, a task to write the body, timers, traces, cookie and redirect
handling), which measured about 230k of the floor's 585k instructions a request; the gateway needs
none of it, since it sets its own timeouts, follows no redirects and keeps no cookies. What it keeps
is aiohttp's: the connector (pool, limits, DNS cache, TLS), the protocol and its C response parser,
and the body stream. The WebSocket upgrade for realtime sessions goes through the session itself.
"""

from __future__ import annotations

import asyncio
import functools
import resource
from urllib.parse import unquote_plus

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest, ConnectionKey
from aiohttp.connector import Connection
from aiohttp.http import RawResponseMessage, StreamWriter
from aiohttp.payload import Payload
from aiohttp.streams import EofStream, StreamReader
from multidict import CIMultiDictProxy
from yarl import URL

# Idle connections kept per vendor host once a burst is over: enough for a steady load to find a warm
# connection (urllib3 keeps 10, httpx 20), few enough that a burst does not leave hundreds open.
MAX_IDLE_PER_HOST = 32
# A body up to this size goes out in one write with the request head (one copy, one syscall).
_JOIN_BODY_BYTES = 64 * 1024


def connection_limit() -> int:
    """How many upstream connections the pool may hold at once.

    Every request in flight holds one (a stream, for minutes), so a cap below the number of clients
    would queue requests until their first-byte timeout. The real bound is file descriptors: each
    request uses one towards the client and one towards the vendor, so half the process's budget.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 32768
    return max(100, soft // 2 - 64)  # 64 for the listener, the database, logs and spare


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
    tests/gateway/test_memory.py fails if an upgrade moves them.
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


class Response:
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


def upstream_query(raw: str) -> str:
    """A client's raw query string minus `key=`, which carries the client's own key on some routes."""
    if "key" not in raw and "%" not in raw:
        return raw
    return "&".join(p for p in raw.split("&") if unquote_plus(p.partition("=")[0]) != "key")


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


class Upstream:
    """The process's one pooled client session towards the vendors, and requests sent over its pool."""

    def __init__(self) -> None:
        self.connector = Connector(
            limit=connection_limit(),
            limit_per_host=0,  # vendors are few hosts; one cap for all is enough
            ttl_dns_cache=300,
            keepalive_timeout=30,  # below the idle cutoff of common vendor load balancers, so a reused connection is alive
        )
        # For the WebSocket upgrade of realtime sessions. No cookie jar: a cookie one client's request
        # earned from a vendor must not ride along on the next client's.
        self.session = aiohttp.ClientSession(
            connector=self.connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        self._origins: dict[str, _Origin] = {}

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | Payload | None, query: str, connect_s: float
    ) -> Response:
        """Send one request and wait for the vendor's status and headers.

        `headers` must not name Host, Content-Length, Transfer-Encoding or Connection: those are set
        here. Nothing is retried and no redirect is followed. Raises aiohttp's exceptions, and
        HttpProcessingError for an answer that is not HTTP.
        """
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
        return Response(message, payload, conn)

    def _origin(self, origin_url: str) -> _Origin:
        origin = self._origins[origin_url] = _Origin(URL(origin_url))
        return origin

    def close_idle(self, keep: int) -> int:
        """Close the idle connections beyond `keep` per host; return how many."""
        return self.connector.close_idle(keep)

    async def close(self) -> None:
        await self.session.close()

