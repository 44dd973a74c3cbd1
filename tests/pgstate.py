"""The PostgreSQL server the database tests run against, and a TCP proxy to cut it off with.

The tests use a real server: the one at $GATEWAY_TEST_POSTGRES (default
postgresql://root@127.0.0.1:5432/test), each test in a schema of its own (`search_path` in the URL
the gateway is given), dropped afterwards; the server's other schemas are never touched. Without
asyncpg, or without a reachable server, they skip saying so, and `make test` passes on a bare machine.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.tcpproxy import TcpProxy

asyncpg = pytest.importorskip("asyncpg", reason="the `asyncpg` package (extra `scale`) is not installed")

URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


@dataclass
class Pg:
    server_url: str  # the server, without a schema
    schema: str
    admin: Any  # an asyncpg connection of the test's own, on the schema

    @property
    def url(self) -> str:
        """`database:` for a gateway that uses this test's schema."""
        return f"{self.server_url}?search_path={self.schema}"

    def via(self, port: int, password: str | None = None) -> str:
        """The URL through a local port (a TcpProxy), optionally with a password in it."""
        parts = urlsplit(self.server_url)
        user = parts.username or ""
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, f"search_path={self.schema}", ""))

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.admin.fetch(sql, *args)]

    async def execute(self, sql: str, *args: Any) -> str:
        return str(await self.admin.execute(sql, *args))


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[Pg]:
    """A schema of this test's own on the test server (skip when there is none), dropped afterwards."""
    try:
        admin = await asyncpg.connect(URL, timeout=3)
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server reachable at {URL} ({type(exc).__name__}: {exc}): start one, or "
                    "point GATEWAY_TEST_POSTGRES at one")
    schema = f"gwtest_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.execute(f"SET search_path = {schema}")
        yield Pg(URL, schema, admin)
    finally:
        # Connections the test left open on the schema would hold its tables: the DROP waits at most a little.
        await admin.execute("SET lock_timeout = '10s'")
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


class PgProxy(TcpProxy):
    """A TcpProxy to the PostgreSQL test server (`via(port)` builds the gateway's URL through it)."""

    def __init__(self, url: str = URL) -> None:
        parts = urlsplit(url)
        super().__init__(parts.hostname or "127.0.0.1", parts.port or 5432)
