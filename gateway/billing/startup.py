"""Opening the limiter with the app: the shared counters file, and the spend rebuilt from the database.

The process that starts the gateway (the only one, or the parent of `workers: N`) makes the counters
afresh and fills each budget from the usage table (cost in the key's current period) and from the
async tasks still holding a reservation; workers attach to that file. A reload that changes a key's
budget period, or adds a key, refills that key from the database.

With `state.redis` the counters file becomes the fallback behind Redis (`share`): the limiter asks Redis
first (gateway.billing.failover), and refills a key's spend from the database whenever Redis has lost it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from config import ClientKey, Config
from gateway.billing import lane
from gateway.billing.counters import LocalCounters
from gateway.billing.limiter import HeldReader, Limiter, SpendReader, period_bounds
from gateway.ledger.backends import usage_reader

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.billing.failover import FallbackCounter

log = structlog.get_logger("gateway.billing")


def counters_path(config: Config) -> Path:
    """Beside a SQLite database (data/gateway.counters); in `config.data_dir` with PostgreSQL."""
    return Path(config.local_file(".counters"))


async def open_limiter(config: Config, *, fresh: bool, worker: int = 0, held: HeldReader | None = None) -> Limiter:
    """The limiter over this machine's counters: for a process alone (`workers: 1`) in its own memory,
    filled from the database; with `workers: N` in the counters file, made and filled from the database
    when `fresh` (or missing), else attached to as it is."""
    spend = spend_reader(config.database)
    if fresh or config.workers == 1:  # (workers attach to what their parent made, and said)
        say_lanes(config.keys)
    if config.workers == 1:
        limiter = Limiter(LocalCounters.memory(), spend=spend, held=held)
        await refill(limiter, config, config.keys, held=held)
        return limiter
    path = counters_path(config)
    if fresh or not path.exists():
        limiter = Limiter(LocalCounters.create(path, worker=worker), spend=spend, held=held)
        await refill(limiter, config, config.keys, held=held)
        return limiter
    return Limiter(LocalCounters.attach(path, worker=worker), spend=spend, held=held)


def say_lanes(keys: tuple[ClientKey, ...]) -> None:
    """Warn, once at start, when limited keys will be admitted by the Python lanes because the C ones
    were not built (gateway.billing.lane): the install had no compiler, and said little of it."""
    if lane.LANE is lane.PyLane and not os.environ.get("GATEWAY_NO_EXTENSIONS") and any(k.limited for k in keys):
        log.warning(
            "limits_in_python",
            detail="gateway/billing/_lane.c was not built (no C compiler at install): each limited request "
            "costs ~10k instructions more. Reinstall with a compiler, or set GATEWAY_NO_EXTENSIONS=1 to "
            "choose this.",
        )


def spend_reader(database: str) -> SpendReader:
    """One key's spend in its current budget period, from the usage table (SQLite or PostgreSQL)."""
    reader = usage_reader(database)

    async def spent(key: ClientKey, now: float) -> float:
        start = period_bounds(key.budget_period, now)[0]
        return (await reader.spent_by_key({key.name: start})).get(key.name, 0.0)

    return spent


def share(
    limiter: Limiter,
    client: Redis,
    current: Callable[[], Config],
    *,
    count: FallbackCounter | None = None,
) -> Limiter:
    """`limiter` with Redis (`current().state`) in front of its counters file, which becomes the fallback."""
    from gateway.billing.failover import Failover  # redis is an optional extra: imported only when configured
    from gateway.billing.redis_counters import RedisCounters

    local = limiter.counters
    assert isinstance(local, LocalCounters)
    state = current().state
    store = Failover(
        RedisCounters(client, prefix=state.prefix, reservation_ttl_s=state.reservation_ttl_s, lease=state.lease),
        local, refuse=state.on_redis_error == "refuse", count=count,
    )  # fmt: skip
    alone = Limiter(local, spend=limiter.spend_reader, held=limiter.held_reader)

    async def outage() -> None:  # the local counters stand in for Redis: give them the database's spend
        config = current()
        await refill(alone, config, config.keys, held=limiter.held_reader)

    store.on_outage = outage
    return Limiter(store, spend=limiter.spend_reader, held=limiter.held_reader)


async def refill(
    limiter: Limiter,
    config: Config,
    keys: tuple[ClientKey, ...],
    *,
    held: HeldReader | None = None,
) -> None:
    """Set `keys`' spend (and task holds) in the current period from the database."""
    now = time.time()
    budgeted = {k.name: period_bounds(k.budget_period, now)[0] for k in keys if k.budget is not None}
    if not budgeted:
        return
    spent = await usage_reader(config.database).spent_by_key(budgeted)
    holds = await held() if held is not None else None
    await limiter.rebuild(config, spent, holds, now=now, only=frozenset(budgeted))
    log.info(
        "budgets_rebuilt",
        keys=len(budgeted),
        spent=round(sum(spent.values()), 6),
        held=round(sum((holds or {}).values()), 6),
    )


def refill_on_reload(limiter: Limiter, first: Config) -> Callable[[Config], None]:
    """A reload hook: keys that are new, or whose budget or period changed, are refilled from the database."""
    previous = {k.name: k for k in first.keys}
    tasks: set[asyncio.Task[None]] = set()

    def reloaded(new: Config) -> None:
        nonlocal previous
        changed = tuple(
            k for k in new.keys
            if (old := previous.get(k.name)) is None or (old.budget_period, old.budget) != (k.budget_period, k.budget)
        )  # fmt: skip
        previous = {k.name: k for k in new.keys}
        if changed:
            task = asyncio.get_running_loop().create_task(refill(limiter, new, changed))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return reloaded


def close_limiter(limiter: Limiter) -> None:
    """Let go of a limiter over the counters file alone (the supervisor's); an app's: `Limiter.aclose`."""
    assert isinstance(limiter.counters, LocalCounters)
    with contextlib.suppress(Exception):
        limiter.counters.close()
