"""The one pooled client session towards the vendors, and how its idle connections are kept."""

from __future__ import annotations

import resource

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey

# Idle connections kept per vendor host once a burst is over: enough for a steady load to find a warm
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
    """aiohttp's connector, reusing the most recently used idle connection first.

    aiohttp reuses idle connections oldest first, so every pooled connection stays in turn and none
    ever idles out while any request comes by: after a burst of a thousand streams, a thousand
    connections and their buffers stay open. Reused newest first, a steady load keeps cycling the
    few it needs and the rest sit at the far end of the pool, untouched, until aiohttp's keep-alive
    cleanup closes them or `close_idle` does once a burst is over (see gateway.memory). Closing
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


def open_session() -> aiohttp.ClientSession:
    connector = Connector(
        limit=connection_limit(),
        limit_per_host=0,  # vendors are few hosts; one cap for all is enough
        ttl_dns_cache=300,
        keepalive_timeout=30,  # below the idle cutoff of common vendor load balancers, so a reused connection is alive
    )
    # No skip_auto_headers: it sends every request down aiohttp's slow header path. A client that sent
    # no User-Agent gets aiohttp's; one that did has its own forwarded. No cookie jar: a cookie one
    # client's request earned from a vendor must not ride along on the next client's.
    return aiohttp.ClientSession(connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())


def close_idle(session: aiohttp.ClientSession, keep: int) -> int:
    """Close the session's idle connections beyond `keep` per host; return how many."""
    connector = session.connector
    return connector.close_idle(keep) if isinstance(connector, Connector) else 0
