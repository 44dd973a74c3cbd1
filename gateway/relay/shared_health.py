"""Channel key cooldowns shared by the replicas of a gateway, through Redis (`state.redis`).

When a replica puts a key in cooldown (gateway.relay.health), it adds it to one sorted set,
`P:{health}:cool`, as `<key id>:<channel>` (the key id is a short hash of the key, never the key)
scored by when the cooldown ends on Redis's clock. Every replica reads the set every INTERVAL_S in a
background task and cools those keys down itself for the time they have left: another replica's dead
key is skipped from at most INTERVAL_S after it was found dead, and no request waits on Redis for
health. Ended cooldowns leave the set at each write and read, and the set expires with its longest one.

When Redis cannot be reached each replica keeps its own health, as without `state.redis` (logged once
per outage); it catches up at the first read after.
"""

from __future__ import annotations

import asyncio

import structlog
from redis.asyncio import Redis

from config import Channel
from gateway import background
from gateway.billing.failover import ERRORS
from gateway.relay.health import key_id
from gateway.state import Runtime

log = structlog.get_logger("gateway.health")

INTERVAL_S = 0.5

# KEYS the set. ARGV member, cooldown in ms. -> when it ends (ms).
PUBLISH = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now_ms + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not old or tonumber(old) < until_ms then redis.call('ZADD', KEYS[1], until_ms, ARGV[1]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return until_ms
"""

# KEYS the set. -> now (ms), then member, end (ms), member, end, ... of the cooldowns still running.
READ = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local out = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
table.insert(out, 1, now_ms)
return out
"""


class HealthSync:
    def __init__(self, redis: Redis, runtime: Runtime, prefix: str, *, interval: float = INTERVAL_S) -> None:
        self._runtime = runtime
        self._key = f"{prefix}:{{health}}:cool"
        self._publish = redis.register_script(PUBLISH)
        self._read = redis.register_script(READ)
        self._interval = interval
        self._ids: dict[str, str] = {}  # vendor key -> its id, for the keys of the config in force
        self._ids_of: object = None  # the config they are of
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._down = False

    def start(self) -> None:
        self._runtime.health.on_cooldown = self.publish
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._runtime.health.on_cooldown == self.publish:
            self._runtime.health.on_cooldown = None
        await background.stop(self._loop)  # its refresh's timeout may take the cancel for its own
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def publish(self, channel: Channel, key: str, seconds: float) -> None:
        """Health.on_cooldown: written in the background (cooldowns are rare; a task each is cheap)."""
        task = asyncio.get_running_loop().create_task(self._send(f"{key_id(key)}:{channel.name}", seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, member: str, seconds: float) -> None:
        try:
            await self._publish(keys=[self._key], args=[member, max(int(seconds * 1000), 1)])
        except ERRORS as exc:
            self._failed(exc)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except ERRORS as exc:
                self._failed(exc)
            await asyncio.sleep(self._interval)

    async def refresh(self) -> None:
        """Cool down here the keys other replicas have cooled down."""
        reply = await self._read(keys=[self._key])
        if self._down:
            self._down = False
            log.info("health_sync_recovered")
        if len(reply) < 3:
            return
        now_ms = int(reply[0])
        cooling = {bytes(reply[i]).decode(): float(reply[i + 1]) for i in range(1, len(reply) - 1, 2)}
        runtime = self._runtime
        config, health = runtime.config, runtime.health
        if self._ids_of is not config:
            self._ids = {k: key_id(k) for c in config.channels for k in c.api_keys}
            self._ids_of = config
        for channel in config.channels:
            for key in channel.api_keys:
                until = cooling.get(f"{self._ids[key]}:{channel.name}")
                if until is not None:
                    health.cool_shared(channel, key, (until - now_ms) / 1000, until)

    def _failed(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            log.warning("health_sync_unreachable", error=str(exc)[:300] or type(exc).__name__,
                        detail="channel key health is this replica's own until Redis is back")  # fmt: skip
