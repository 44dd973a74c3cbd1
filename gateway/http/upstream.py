"""The process's one client towards the vendors: send a request, get status, headers and a body stream.

Two implementations answer the same calls, and one is chosen at start (gateway.http.paths):
- `SessionUpstream`, here: aiohttp's public `ClientSession.request`;
- `LeanUpstream` (gateway.http.lean_client): the same requests over the same kind of pool, without
  aiohttp's per-request client machinery. It uses aiohttp internals, listed in its docstring.
tests/gateway/http/test_paths.py sends the same raw vendor answers through both and compares what the
client gets.
"""

from __future__ import annotations

import resource
from typing import Any, Protocol

import aiohttp
from aiohttp.payload import Payload
from multidict import CIMultiDictProxy
from yarl import URL

# Idle connections kept per vendor host once a burst is over: enough for a steady load to find a warm
# connection (urllib3 keeps 10, httpx 20), few enough that a burst does not leave hundreds open.
MAX_IDLE_PER_HOST = 32
# Headers aiohttp's client would add on its own. The gateway sends what the client sent (and its own
# User-Agent and Accept-Encoding), as the lean path does.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


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


def connector_options() -> dict[str, Any]:
    return {
        "limit": connection_limit(),
        "limit_per_host": 0,  # vendors are few hosts; one cap for all is enough
        "ttl_dns_cache": 300,
        "keepalive_timeout": 30,  # below the idle cutoff of common vendor load balancers, so a reused connection is alive
    }


def open_session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    # No cookie jar: a cookie one client's request earned from a vendor must not ride along on the
    # next client's. No decompression: bodies go to the client as the vendor sent them.
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())


class Response(Protocol):
    """A vendor's answer: status and headers in hand, the body still to come from `content`.

    Once done with it, `release()` hands the connection back to the pool (it is closed instead if the
    body was not read to its end, or the vendor asked to close); `close()` drops it.
    """

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> CIMultiDictProxy[str]: ...
    @property
    def content_type(self) -> str:
        """The media type alone, lower case; application/octet-stream when none was sent."""
    @property
    def content(self) -> aiohttp.StreamReader: ...
    async def read(self) -> bytes: ...
    def release(self) -> Any: ...
    def close(self) -> None: ...


class Upstream(Protocol):
    session: aiohttp.ClientSession  # for the WebSocket upgrade of realtime sessions

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | Payload | None, query: str, connect_s: float
    ) -> Response:
        """Send one request and wait for the vendor's status and headers.

        `headers` must not name Host, Content-Length, Transfer-Encoding or Connection: those are set
        here. `query` (already encoded) is appended to the URL's own. Nothing is retried and no
        redirect is followed; interim answers (1xx) are skipped. A body with neither length nor
        chunked framing is read until the vendor closes. Raises aiohttp's exceptions.
        """

    def close_idle(self, keep: int) -> int:
        """Close the idle connections beyond `keep` per host; return how many."""

    async def close(self) -> None: ...


class SessionUpstream:
    """`Upstream` on aiohttp's public client API alone."""

    def __init__(self) -> None:
        self.session = open_session(aiohttp.TCPConnector(**connector_options()))

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | Payload | None, query: str, connect_s: float
    ) -> Response:
        if query:
            url += ("&" if "?" in url else "?") + query
        return await self.session.request(
            method,
            URL(url, encoded=True),  # the client's query goes on as it was encoded
            headers=headers,
            data=body,
            skip_auto_headers=_NO_AUTO_HEADERS,
            allow_redirects=False,
            # As the lean path: only opening a socket is timed here; every other wait is the caller's.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_s),
        )

    def close_idle(self, keep: int) -> int:
        return 0  # aiohttp's public API closes idle connections only by their keep-alive timeout

    async def close(self) -> None:
        await self.session.close()
