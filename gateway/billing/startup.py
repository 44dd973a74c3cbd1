"""Opening the limiter with the app: the shared counters file, and the spend rebuilt from the database.

The process that starts the gateway (the only one, or the parent of `workers: N`) makes the counters
afresh and fills each budget from the usage table (cost in the key's current period) and from the
async tasks still holding a reservation; workers attach to that file. A reload that changes a key's
budget period, or adds a key, refills that key from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from config import ClientKey, Config
from gateway.billing.counters import LocalCounters
from gateway.billing.limiter import Limiter, period_bounds
from gateway.ledger.reader import SqliteUsageReader

log = structlog.get_logger("gateway.billing")

# Each key's reservations held by unfinished async tasks (gateway.tasks.store), read at start.
HeldReader = Callable[[], Awaitable[dict[str, float]]]


def counters_path(database: str) -> Path:
    return Path(database).with_suffix(".counters")


async def open_limiter(config: Config, *, fresh: bool, worker: int = 0, held: HeldReader | None = None) -> Limiter:
    """The limiter over `config`'s counters file: made and filled from the database when `fresh` (or
    missing), else attached to as it is."""
    path = counters_path(config.database)
    if fresh or not path.exists():
        limiter = Limiter(LocalCounters.create(path, worker=worker))
        await refill(limiter, config, config.keys, held=held)
        return limiter
    return Limiter(LocalCounters.attach(path, worker=worker))


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
    spent = await SqliteUsageReader(config.database).spent_by_key(budgeted)
    holds = await held() if held is not None else None
    limiter.rebuild(config, spent, holds, now=now, only=frozenset(budgeted))
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
    with contextlib.suppress(Exception):
        limiter.counters.close()
