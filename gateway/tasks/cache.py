"""Task rows cached in Redis for every replica's status reads (`state.redis`): `CachedTaskStore` wraps
the PostgreSQL `TaskStore`, so that a client polling a task's status on any replica is answered from
Redis, and the database is read once per change of the row rather than once per poll.

One key per task, `P:{t:ID}` (P is `state.prefix`; the braces are the Redis Cluster hash tag), holds
the row as JSON: every field of `Task`, its owner key's name and `version` included. No key is in it:
`vendor_key_id` is a fingerprint and `request` is what `TaskRequest.describe()` keeps. It does hold
the client's and the vendor's URLs (callback, media, results), as the database does.

`get` and `get_any` ask Redis first and apply the database's own condition to the row they find (a key
never sees another key's task, nor a deleted one); a miss reads the database and fills the entry.
Writes go to the database first and, once it took them, the new row to Redis with WRITE, which
replaces an entry only with a newer version: replicas racing, or a fill racing a write, never leave an
older row behind. Lists and the poller's queries go to the database alone.

An entry lives OPEN_TTL_S while its task is unfinished and FINAL_TTL_S after. While Redis cannot be
reached, reads and writes go to the database alone (counted in `gateway_state_fallbacks_total
{action="local"}`, logged once per outage), Redis tried again at most once every RETRY_S, as the
limiter does (gateway.billing.failover). The rows this process wrote meanwhile are written to Redis
when it answers again; an entry they should have replaced is served stale until then, and never past
its time to live (should this process die first).
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.billing.failover import ERRORS, FallbackCounter, Outage
from gateway.ledger.sink import UsageRow
from gateway.tasks.model import Task
from gateway.tasks.store import TaskStore

log = structlog.get_logger("gateway.tasks")

# An unfinished task's row is rewritten at each of its polls (every tasks.poll_interval_s, 5 s by
# default, longer as polls back off), each write renewing its entry; the time to live bounds how long a
# write Redis did not take leaves an older status served (to a client that polls every few seconds, a
# poll or two), and how often a task nobody writes costs a database read (once per 15 s, all replicas
# together). A finished task changes only when its callback is delivered or it is deleted, and is what
# clients read most (its results): five minutes, which also bounds how late a delete made while Redis was
# out shows on the other replicas.
OPEN_TTL_S = 15.0
FINAL_TTL_S = 300.0
MAX_OWED = 10_000  # rows kept to write once Redis is back; past that their entries end with their time to live
REPLAY_BATCH = 512

_FIELDS = frozenset(f.name for f in dataclasses.fields(Task))
_FLOATS = frozenset(f.name for f in dataclasses.fields(Task) if str(f.type).startswith("float"))

# KEYS the task's entry. ARGV the row (JSON), its version, time to live (ms). -> 1 written, 0 left as it
# was (it holds this version or a newer one; its time to live is left too).
WRITE = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, row = pcall(cjson.decode, old)
  if ok and type(row) == 'table' and tonumber(row['version']) and tonumber(row['version']) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""

T = TypeVar("T")


class CachedTaskStore:
    """`TaskStore` over `inner`, with `get` and `get_any` answered from Redis when it can. It owns the
    Redis client: `close()` closes both."""

    def __init__(
        self,
        inner: TaskStore,
        redis: Redis,
        *,
        prefix: str = "gw",
        open_ttl_s: float = OPEN_TTL_S,
        final_ttl_s: float = FINAL_TTL_S,
        count: FallbackCounter | None = None,
    ) -> None:
        self.inner = inner
        self.redis = redis
        self.prefix = prefix
        self._open_ttl_ms = max(int(open_ttl_s * 1000), 1)
        self._final_ttl_ms = max(int(final_ttl_s * 1000), 1)
        self._write = redis.register_script(WRITE)
        self.outage = Outage(count)
        self._owed: dict[str, Task] = {}  # task id -> the newest row Redis did not take
        self._running = False  # between start() and close(): outside, every call is the inner store's alone

    def key(self, task_id: str) -> str:
        return f"{self.prefix}:{{t:{task_id}}}"

    async def start(self) -> None:
        await self.inner.start()
        self._running = True

    async def close(self) -> None:
        self._running = False
        try:
            await self.inner.close()
        finally:
            await self.redis.aclose()

    # -- reads: Redis first ----------------------------------------------------------------------

    async def get(self, task_id: str, key_name: str) -> Task | None:
        cached = await self._cached(task_id)
        if cached is not None:  # the inner stores' condition, on the cached row
            return cached if cached.key_name == key_name and cached.deleted_at is None else None
        task = await self.inner.get(task_id, key_name)
        if task is not None:
            await self._fill(task)
        return task

    async def get_any(self, task_id: str) -> Task | None:
        cached = await self._cached(task_id)
        if cached is not None:
            return cached
        task = await self.inner.get_any(task_id)
        if task is not None:
            await self._fill(task)
        return task

    # -- writes: the database, then Redis ------------------------------------------------------------

    async def create(self, task: Task) -> None:
        await self.inner.create(task)
        await self.write_through(task)

    async def update(self, task: Task, **changes: Any) -> Task | None:
        new = await self.inner.update(task, **changes)
        await self._written(task, new)
        return new

    async def settle(self, task: Task, changes: dict[str, Any], row: UsageRow) -> Task | None:
        new = await self.inner.settle(task, changes, row)
        await self._written(task, new)
        return new

    async def write_through(self, task: Task) -> None:
        """`task`, a row the database holds, into its entry unless the entry is as new; kept to write
        when Redis is back if Redis does not take it now."""
        if await self._redis(lambda: self._put(task)) is None:
            self._owe(task)

    async def _written(self, task: Task, new: Task | None) -> None:
        if new is not None:
            await self.write_through(new)
            return
        # The compare-and-swap lost: another writer moved the row on, and wrote it through (or its entry
        # times out). `task` may have been read from a stale entry, and the caller is to read it again:
        # bring the entry up to the row that won. Never delete it: an absent entry takes any version,
        # and a fill of an older row racing the delete could land after it.
        if not self.outage.usable():
            return
        try:
            latest = await self.inner.get_any(task.id)
        except Exception as exc:  # best effort: the write's own answer (None) stands
            log.warning("task_cache_refresh_failed", task_id=task.id, error=f"{type(exc).__name__}: {exc}"[:300])
            return
        if latest is not None:
            await self._fill(latest)

    # -- the rest: the database alone ---------------------------------------------------------------

    async def list(
        self, key_name: str, *, page: int = 1, limit: int = 20, status: str | None = None, kind: str | None = None
    ) -> tuple[builtins.list[Task], int]:
        return await self.inner.list(key_name, page=page, limit=limit, status=status, kind=kind)

    async def due(self, now: float, limit: int) -> builtins.list[Task]:
        return await self.inner.due(now, limit)

    async def reserved_by_key(self) -> dict[str, float]:
        return await self.inner.reserved_by_key()

    async def callbacks_due(self, now: float, limit: int) -> builtins.list[Task]:
        return await self.inner.callbacks_due(now, limit)

    async def pending_count(self) -> int:
        return await self.inner.pending_count()

    async def lead(self) -> bool:
        return await self.inner.lead()

    # -- Redis ------------------------------------------------------------------------------------

    async def _cached(self, task_id: str) -> Task | None:
        """The entry's row, or None: no entry, Redis out of reach, or a row this gateway cannot read."""
        key = self.key(task_id)
        raw = await self._redis(lambda: self._get(key))
        if raw is None:
            return None
        try:
            return _decode(raw)
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
            log.warning("task_cache_unreadable", key=key[:200], error=f"{type(exc).__name__}: {exc}"[:300])
            return None

    async def _fill(self, task: Task) -> None:
        """A row just read from the database: into Redis if it can, and nothing owed if not."""
        await self._redis(lambda: self._put(task), counted=False)

    async def _get(self, key: str) -> bytes | None:
        raw: Any = await self.redis.get(key)
        return None if raw is None else bytes(raw)

    async def _put(self, task: Task, client: Any = None) -> Any:
        """WRITE `task` (with `client` a pipeline: queued in it)."""
        ttl = self._final_ttl_ms if task.final else self._open_ttl_ms
        return await self._write(keys=[self.key(task.id)], args=[orjson.dumps(task), task.version, ttl], client=client)

    async def _redis(self, call: Callable[[], Awaitable[T]], *, counted: bool = True) -> T | None:
        """`call`'s answer, or None when Redis is out (or does not answer now): the caller uses the
        database alone, and the call is `counted` as one that fell back."""
        if not self._running:
            return None
        outage = self.outage
        if not outage.usable():
            if counted:
                outage.counted("local")
            return None
        if outage.since is not None:
            outage.trying()
        try:
            if outage.since is not None and self._owed:
                # Back, perhaps: first the rows Redis missed, so that it answers nothing older than they are.
                await self._replay()
            try:
                answer = await call()
            except RedisConnectionError:  # one Redis closed while it sat in the pool (a restart): on another
                answer = await call()
        except ERRORS as exc:
            if outage.failed(exc):
                log.warning(
                    "task_cache_unreachable", reason=outage.reason, error=str(exc)[:300] or type(exc).__name__,
                    detail="task reads and writes go to the database alone until it is back",
                )  # fmt: skip
            if counted:
                outage.counted("local")
            return None
        seconds = outage.recovered()
        if seconds is not None:
            log.info("task_cache_recovered", seconds=seconds, fallbacks=outage.fallbacks)
        return answer

    async def _replay(self) -> None:
        """Write the rows Redis missed (each only over an older entry); what it does not take stays owed."""
        owed, self._owed = builtins.list(self._owed.values()), {}
        for start in range(0, len(owed), REPLAY_BATCH):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for task in owed[start : start + REPLAY_BATCH]:
                        await self._put(task, pipe)
                    await pipe.execute()
            except BaseException:
                for task in owed[start:]:
                    self._owe(task)
                raise
        log.info("task_cache_rewritten", rows=len(owed))

    def _owe(self, task: Task) -> None:
        held = self._owed.get(task.id)
        if held is None and len(self._owed) >= MAX_OWED:
            return
        if held is None or held.version < task.version:
            self._owed[task.id] = task

def _decode(raw: bytes) -> Task:
    # Fields another version of the gateway wrote are left out; JSON's 2 is the database's 2.0.
    fields: dict[str, Any] = {
        n: float(v) if n in _FLOATS and isinstance(v, int) else v for n, v in orjson.loads(raw).items() if n in _FIELDS
    }
    return Task(**fields)
