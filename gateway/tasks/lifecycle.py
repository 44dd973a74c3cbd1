"""The task layer's life in one process: the store opened with the app (retried while the database
cannot be opened, the rest of the gateway serving meanwhile; with replicas, its rows cached in Redis),
the engine, and the poller in one process only (worker 0 with `workers: N`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from gateway import background
from gateway.ledger.backends import is_postgres
from gateway.logs import worker_index
from gateway.state import Services
from gateway.tasks.backends import task_store
from gateway.tasks.engine import TaskEngine
from gateway.tasks.poller import Poller
from gateway.tasks.store import TaskStore

log = structlog.get_logger("gateway.tasks")

RETRY_OPEN_S = 5.0


@contextlib.asynccontextmanager
async def running(services: Services) -> AsyncIterator[None]:
    store = _store(services)
    retry: asyncio.Task[None] | None = None
    if not await _open(services, store):
        retry = asyncio.create_task(_keep_opening(services, store), name="task-store-open")
    try:
        yield
    finally:
        await background.stop(retry)
        if services.poller is not None:
            await services.poller.stop()
            services.poller = None
        services.tasks = None
        await store.close()


def _store(services: Services) -> TaskStore:
    """The store of `database:`; on PostgreSQL with `state.redis` (replicas), behind the Redis cache
    (gateway.tasks.cache). A SQLite file is this machine's alone: a cache other replicas read would
    answer for rows their own databases do not hold."""
    config = services.runtime.config
    store = task_store(config.database)
    url = config.state.redis  # `state:` changes apply at a restart
    if url and is_postgres(config.database):
        from gateway.billing.redis_counters import connect  # redis is an optional extra
        from gateway.tasks.cache import CachedTaskStore

        metrics = services.metrics
        count = metrics.state_fallback if metrics is not None else None
        store = CachedTaskStore(store, connect(url), prefix=config.state.prefix, count=count)
    return store


async def _open(services: Services, store: TaskStore) -> bool:
    try:
        await store.start()
    except Exception as exc:  # the database cannot be opened: tasks answer 503 until it can
        log.error("task_store_unavailable", error=f"{type(exc).__name__}: {exc}", retry_in_s=RETRY_OPEN_S)
        return False
    services.tasks = TaskEngine(store, services)
    if worker_index() == 0:
        services.poller = Poller(services.tasks)
        services.poller.start()
    return True


async def _keep_opening(services: Services, store: TaskStore) -> None:
    while True:
        await asyncio.sleep(RETRY_OPEN_S)
        if await _open(services, store):
            log.info("task_store_opened")
            return
