"""What the limiter does while Redis cannot be reached (`state.on_redis_error`).

`Failover` is the `CounterStore` of a gateway with `state.redis`: every call goes to Redis
(gateway.billing.redis_counters) and, when Redis fails (refused, reset, or silent for
redis_counters.TIMEOUT_S), to this machine's own counters (`LocalCounters`) instead; with
`on_redis_error: refuse` a call that decides something answers 503 instead. What only records
(settle, hold, release) always falls back: the request it belongs to is over.

An outage is logged once when it begins (`state_redis_unreachable`) and once when it ends
(`state_redis_recovered`, with how many calls fell back); every call that fell back is counted
(`gateway_state_fallbacks_total{action, reason}`). While Redis is out, it is tried again at most
once every RETRY_S, so a dead Redis does not cost every request a timeout.

During an outage each machine limits on its own: rates per machine, and budgets from the spend the
database had when the outage began (`on_outage` refills the local counters) plus this machine's own.
Spend counted here meanwhile is added to Redis when it is back, to the periods Redis still knows (a
period it lost is refilled from the database, which has those rows).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from gateway import background
from gateway.billing.counters import LocalCounters
from gateway.billing.redis_counters import RedisCounters, Write
from gateway.billing.store import Grant, Standing
from gateway.errors import GatewayError

log = structlog.get_logger("gateway.billing")

RETRY_S = 1.0
ERRORS = (RedisError, OSError, TimeoutError)

T = TypeVar("T")

# Counts one call that fell back: (action: local | refuse, reason: connect | timeout | error).
FallbackCounter = Callable[[str, str], None]


def unavailable() -> GatewayError:
    return GatewayError(
        503,
        "The gateway's shared state (Redis) is unreachable, and this gateway is set to refuse requests "
        "rather than count them alone (state.on_redis_error: refuse). Try again shortly.",
        code="state_unavailable", headers={"Retry-After": "1"},
    )  # fmt: skip


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, (RedisTimeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "connect"
    return "error"


class Outage:
    """Whether Redis answers one of its users in this process (the limiter's store, the task cache):
    since when it does not, why, how many calls went without it since, and when to try it again (at
    most once every RETRY_S, so a dead Redis does not cost every call a timeout)."""

    def __init__(self, count: FallbackCounter | None = None) -> None:
        self.since: float | None = None  # monotonic; None while Redis answers
        self.reason = ""
        self.fallbacks = 0  # calls that went without Redis in the current (or last) outage
        self._retry_at = 0.0
        self._count = count

    def usable(self) -> bool:
        """Whether to ask Redis now: always while it answers; once every RETRY_S while it does not."""
        return self.since is None or time.monotonic() >= self._retry_at

    def trying(self) -> None:
        """A call is asking a Redis that was out: the others meanwhile do not wait on it too."""
        self._retry_at = time.monotonic() + RETRY_S

    def failed(self, exc: BaseException) -> bool:
        """Redis did not answer; True when this begins an outage (the caller says so, once)."""
        now = time.monotonic()
        self._retry_at = now + RETRY_S
        if self.since is not None:
            return False
        self.since, self.reason, self.fallbacks = now, reason_of(exc), 0
        return True

    def recovered(self) -> float | None:
        """Redis answered: how long the outage that this ends lasted (seconds), or None if none did."""
        if self.since is None:
            return None
        seconds, self.since = round(time.monotonic() - self.since, 3), None
        return seconds

    def counted(self, action: str) -> None:
        """One call went without Redis: local | refuse."""
        self.fallbacks += 1
        if self._count is not None:
            self._count(action, self.reason or "error")


class Failover:
    def __init__(self, shared: RedisCounters, local: LocalCounters, *, refuse: bool, count: FallbackCounter | None = None) -> None:
        self.shared, self.local = shared, local
        self.refuse = refuse
        self.outage = Outage(count)
        self.on_outage: Callable[[], Awaitable[None]] | None = None  # refills the local counters from the database
        shared.on_write_failed = self._write_failed
        self._owed: dict[tuple[str, int], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def down(self) -> bool:
        return self.outage.since is not None

    @property
    def fallbacks(self) -> int:
        return self.outage.fallbacks

    # -- calls that decide ---------------------------------------------------------------------

    async def admit(
        self,
        name: str,
        now: float,
        *,
        rpm: int | None,
        tpm: int | None,
        tokens: float,
        budget: float | None = None,
        period: int = 0,
        reserve: float = 0.0,
    ) -> Grant:
        if self._try():
            grant = await self._ask(lambda: self.shared.admit(
                name, now, rpm=rpm, tpm=tpm, tokens=tokens, budget=budget, period=period, reserve=reserve
            ))  # fmt: skip
            if grant is not None:
                return grant
        return await self._fallback().admit(name, now, rpm=rpm, tpm=tpm, tokens=tokens, budget=budget, period=period, reserve=reserve)

    def admit_now(
        self, name: str, now: float, rpm: int | None, tpm: int | None, tokens: float, budget: float | None,
        period: int, reserve: float,
    ) -> Grant | None:  # fmt: skip
        """Redis's lease while Redis answers; while it does not, the local counters (or the 503), except
        when it is time to try Redis again: then None, and `admit` tries it."""
        if self.outage.since is None:
            return self.shared.admit_now(name, now, rpm, tpm, tokens, budget, period, reserve)
        if self._try():
            return None
        return self._fallback().admit_now(name, now, rpm, tpm, tokens, budget, period, reserve)

    def lane(self, name: str) -> None:
        """None: which store answers changes with Redis's health (`admit_now` asks the one that does)."""
        return None

    async def channel_admit(self, name: str, now: float, *, rpm: int | None, tpm: int | None, tokens: float) -> Grant:
        if self._try():
            grant = await self._ask(lambda: self.shared.channel_admit(name, now, rpm=rpm, tpm=tpm, tokens=tokens))
            if grant is not None:
                return grant
        return await self._fallback().channel_admit(name, now, rpm=rpm, tpm=tpm, tokens=tokens)

    async def standing(self, name: str, now: float, period: int) -> Standing:
        if self._try():
            standing = await self._ask(lambda: self.shared.standing(name, now, period))
            if standing is not None:
                return standing
        return await self._fallback().standing(name, now, period)

    async def set_budget(self, name: str, period: int, spent: float, held: float | None = None) -> None:
        """Into both: the local counters are the fallback, and should know the database's spend."""
        await self.local.set_budget(name, period, spent, held)
        if self._try():
            await self._ask(lambda: self.shared.set_budget(name, period, spent, held))

    # -- calls that record ---------------------------------------------------------------------

    def settle(
        self,
        name: str,
        second: int,
        tokens: float = 0.0,
        reserve: float = 0.0,
        cost: float = 0.0,
        period: int = 0,
        claim: str = "",
    ) -> None:
        if not claim:  # admitted by the local counters, during an outage: its reservation and tokens are theirs
            down = self.outage.since is not None
            # Its cost goes where spend is counted now: here while Redis is out (and owed to it), else Redis.
            self.local.settle(name, second=second, tokens=tokens, reserve=reserve, cost=cost if down else 0.0, period=period)
            if down:
                self._owe(name, period, cost)
            elif cost:
                self.shared.settle(name, second=second, cost=cost, period=period, claim="-")
        elif self._try():
            self.shared.settle(name, second=second, tokens=tokens, reserve=reserve, cost=cost, period=period, claim=claim)
        else:
            self._record_locally(name, period, cost=cost)

    def hold(self, name: str, amount: float) -> None:
        if self._try():
            self.shared.hold(name, amount)
        else:
            self._record_locally(name, 0, held=amount)

    def release(self, name: str, amount: float, cost: float, period: int) -> None:
        if self._try():
            self.shared.release(name, amount, cost, period)
        else:
            self._record_locally(name, period, cost=cost, held=-amount)

    def _write_failed(self, batch: list[Write], exc: BaseException) -> None:
        self._failed(exc)
        for w in batch:
            if w.replay:
                self._owe(w.name, w.period, w.cost)  # already counted here: only still owed to Redis
            else:
                self._record_locally(w.name, w.period, cost=w.cost, held=w.held)

    def _record_locally(self, name: str, period: int, *, cost: float = 0.0, held: float = 0.0) -> None:
        """A change Redis did not take, on this machine's counters (never refused: its request is over).
        The request's reservation and token estimate were Redis's: the reservation lapses there."""
        self.outage.counted("local")
        if held > 0:
            self.local.hold(name, held)
        elif held < 0 or cost:
            if held < 0:
                self.local.release(name, -held, cost, period)
            else:
                self.local.settle(name, second=0, cost=cost, period=period)
        self._owe(name, period, cost)

    def _owe(self, name: str, period: int, cost: float) -> None:
        if cost and self.outage.since is not None:
            self._owed[(name, period)] = self._owed.get((name, period), 0.0) + cost

    # -- the outage ------------------------------------------------------------------------------

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """`call`'s answer from Redis, or None (the outage noted) when Redis did not give one."""
        for retry in (True, False):
            try:
                answer = await call()
            except RedisConnectionError as exc:
                # A connection Redis closed while it sat idle in the pool (a Redis restart) fails on its
                # first use: once more, on another. A Redis that is down refuses that one at once too.
                if not retry:
                    self._failed(exc)
            except ERRORS as exc:
                self._failed(exc)
                return None
            else:
                seconds = self.outage.recovered()
                if seconds is not None:
                    self._recovered(seconds)
                return answer
        return None

    def _try(self) -> bool:
        return self.outage.usable()

    def _failed(self, exc: BaseException) -> None:
        if not self.outage.failed(exc):
            return
        # The idle connections are to the Redis that went away: none is used again.
        self._spawn(self.shared.redis.connection_pool.disconnect(inuse_connections=False))
        log.warning(
            "state_redis_unreachable", reason=self.outage.reason, error=str(exc)[:300] or type(exc).__name__,
            on_redis_error="refuse" if self.refuse else "local",
            detail="requests are refused until it is back" if self.refuse else "limits are counted on this machine alone until it is back",
        )  # fmt: skip
        if self.on_outage is not None:
            self._spawn(self.on_outage(), "state_outage_refill_failed")

    def _recovered(self, seconds: float) -> None:
        log.info("state_redis_recovered", seconds=seconds, fallbacks=self.outage.fallbacks)
        owed, self._owed = self._owed, {}
        if owed:
            self.shared.replay(owed)

    def _fallback(self) -> LocalCounters:
        """The local counters for a call that decides, or the 503 when set to refuse."""
        self.outage.counted("refuse" if self.refuse else "local")
        if self.refuse:
            raise unavailable()
        return self.local

    def _spawn(self, work: Awaitable[None], failed: str = "state_disconnect_failed") -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception(failed)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        await self.shared.aclose()
        await background.stop(*self._tasks)
        self.local.close()
