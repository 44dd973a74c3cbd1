"""The shared state behind the bench's scale-out targets ("redis+pg", "2 replicas").

They use the Redis and PostgreSQL servers the tests use ($GATEWAY_TEST_REDIS, default
redis://127.0.0.1:6379/0; $GATEWAY_TEST_POSTGRES, default postgresql://root@127.0.0.1:5432/test), each
target under a Redis key prefix and in a schema of its own, both removed afterwards: the servers' other
keys and schemas are never touched. Without a reachable server (or the `scale` extra) the targets are
skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.ledger.backends import masked

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


async def unreachable() -> str | None:
    """Why the scale targets cannot run here; None when Redis and PostgreSQL both answer."""
    try:
        import asyncpg
        import redis.asyncio as redis_asyncio
    except ImportError as exc:
        return f"the {exc.name} package is not installed (pip install -e '.[scale]')"
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return f"no Redis reachable at {masked(REDIS_URL)} ({type(exc).__name__}: {exc}); set GATEWAY_TEST_REDIS"
    finally:
        await client.aclose()
    try:
        conn = await asyncpg.connect(PG_URL, timeout=3)
    except Exception as exc:
        return f"no PostgreSQL reachable at {masked(PG_URL)} ({type(exc).__name__}: {exc}); set GATEWAY_TEST_POSTGRES"
    await conn.close()
    return None


@dataclass
class Shared:
    """One target's Redis prefix and PostgreSQL schema, and a connection to each for the bench's checks."""

    prefix: str
    schema: str
    redis: Any  # redis.asyncio.Redis
    pg: Any  # an asyncpg connection

    @property
    def database(self) -> str:
        """`database:` for the target's gateways."""
        return f"{PG_URL}{'&' if '?' in PG_URL else '?'}search_path={self.schema}"

    def state(self) -> dict[str, Any]:
        """`state:` for the target's gateways."""
        return {"redis": REDIS_URL, "prefix": self.prefix}

    async def rows(self) -> int:
        """Usage rows the target's gateways wrote (call once they have stopped)."""
        return int(await self.pg.fetchval(f"SELECT count(*) FROM {self.schema}.usage"))

    async def redis_load(self) -> tuple[float, int]:
        """The Redis server's CPU seconds and commands processed so far (all its clients', not only ours)."""
        info = await self.redis.info()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), int(info["total_commands_processed"])


@contextlib.asynccontextmanager
async def shared_state(name: str) -> AsyncIterator[Shared]:
    import asyncpg
    import redis.asyncio as redis_asyncio

    tag = f"{name}_{uuid.uuid4().hex[:10]}"
    client = redis_asyncio.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    pg = await asyncpg.connect(PG_URL, timeout=5)
    shared = Shared(f"gwbench-{tag}", f"gwbench_{tag}", client, pg)
    try:
        await pg.execute(f"CREATE SCHEMA {shared.schema}")
        yield shared
    finally:
        try:
            keys = [k async for k in client.scan_iter(match=f"{shared.prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            # A gateway still connected to the schema would hold its tables: wait a little, not forever.
            await pg.execute("SET lock_timeout = '10s'")
            await pg.execute(f"DROP SCHEMA IF EXISTS {shared.schema} CASCADE")
        finally:
            await pg.close()
            await client.aclose()
