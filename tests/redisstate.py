"""The Redis server the shared-state tests run against, and a TCP proxy to cut it off with.

The tests use a real server: the one at $GATEWAY_TEST_REDIS (default redis://127.0.0.1:6379/0), each
test under a key prefix of its own that is deleted afterwards (never FLUSHALL: the server may be shared).
Without a reachable server they skip, saying so, and `make test` passes on a bare machine.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.tcpproxy import TcpProxy

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the `redis` package (extra `scale`) is not installed")

URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@dataclass
class Shared:
    url: str
    prefix: str
    client: Any  # redis.asyncio.Redis

    def state(self, **kw: Any) -> dict[str, Any]:
        """gateway.yaml's `state:` for this test."""
        return {"redis": self.url, "prefix": self.prefix, **kw}

    async def keys(self) -> list[bytes]:
        return [k async for k in self.client.scan_iter(match=f"{self.prefix}:*", count=500)]

    async def flush(self) -> None:
        """What FLUSHALL does to this test's keys (and to the scripts), without touching anyone else's."""
        keys = await self.keys()
        if keys:
            await self.client.delete(*keys)
        await self.client.script_flush()


@contextlib.asynccontextmanager
async def shared_redis() -> AsyncIterator[Shared]:
    client = redis_asyncio.Redis.from_url(URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"no Redis server reachable at {URL} ({exc}): start one, or point GATEWAY_TEST_REDIS at one")
    shared = Shared(URL, f"gwtest-{uuid.uuid4().hex[:12]}", client)
    try:
        yield shared
    finally:
        keys = await shared.keys()
        if keys:
            await client.delete(*keys)
        await client.aclose()


class RedisProxy(TcpProxy):
    """A TcpProxy to Redis: `cut()` and Redis "goes away" for the gateway, and only for it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379) -> None:
        super().__init__(host, port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
