"""The one pooled client session towards the vendors, and the bounds of its connection pool."""

from __future__ import annotations

import resource
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey

# Idle connections kept open to one vendor host for reuse: enough for a steady load to find a warm
# connection (urllib3 keeps 10, httpx 20), few enough that a burst does not leave hundreds open.
MAX_IDLE_PER_HOST = 32


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
    """aiohttp's connector, with a bound on the idle connections it keeps per host.

    aiohttp keeps every connection it opened until its keep-alive runs out, and reuses them in turn,
    so after a burst of a thousand streams a thousand connections (and their buffers) stay open for
    as long as any request comes by. Here, once a host has more than `max_idle_per_host` idle
    connections, the one idle longest is closed. aiohttp has no setting for this, so it hooks the
    connector's internal `_release`; tests/gateway/test_memory.py fails if an upgrade moves it.
    """

    def __init__(self, *, max_idle_per_host: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_idle_per_host = max_idle_per_host

    def _release(self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False) -> None:
        super()._release(key, protocol, should_close=should_close)
        idle = self._conns.get(key)
        while idle is not None and len(idle) > self._max_idle_per_host:
            oldest, _ = idle.popleft()
            oldest.close()


def open_session() -> aiohttp.ClientSession:
    connector = Connector(
        max_idle_per_host=MAX_IDLE_PER_HOST,
        limit=connection_limit(),
        limit_per_host=0,  # vendors are few hosts; one cap for all is enough
        ttl_dns_cache=300,
        keepalive_timeout=30,  # below the idle cutoff of common vendor load balancers, so a reused connection is alive
    )
    # No skip_auto_headers: it sends every request down aiohttp's slow header path. A client that sent
    # no User-Agent gets aiohttp's; one that did has its own forwarded. No cookie jar: a cookie one
    # client's request earned from a vendor must not ride along on the next client's.
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
