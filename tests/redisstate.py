"""The Redis server the shared-state tests run against, and a TCP proxy to cut it off with.

The tests use a real server: the one at $GATEWAY_TEST_REDIS (default redis://127.0.0.1:6379/0), each
test under a key prefix of its own that is deleted afterwards (never FLUSHALL: the server may be shared).
Without a reachable server they skip, saying so, and `make test` passes on a bare machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

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


class TcpProxy:
    """Forwards a local port to Redis until `cut()`, which closes the port and every connection through
    it (Redis "goes away" for the gateway, and only for it); `restore()` opens the same port again."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._pipes |= {writer, up_writer}
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)), asyncio.ensure_future(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for w in (writer, up_writer):
            w.close()
            self._pipes.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._pipes):
            w.close()
        self._pipes.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()
