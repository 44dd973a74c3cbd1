"""The counter store interface the limiter charges, and its local implementation.

`CounterStore` is what `Limiter` (gateway.billing.limiter) asks: check and charge one request's limits,
settle it, hold and release an async task's reservation, set a period's spend from the database, read
a name's standing. `LocalStore` answers from the counters file of one machine
(gateway.billing.counters); `RedisCounters` (gateway.billing.redis_counters) from Redis, for several
replicas, behind `Failover` (gateway.billing.failover), which falls back to a `LocalStore`.

The calls that decide something are coroutines. The calls that only record what happened (`settle`,
`hold`, `release`) are plain calls that never fail a request: a remote store queues them and writes
them in the background, so the end of a request waits for nothing.
"""

from __future__ import annotations

from typing import Protocol

from gateway.billing.counters import Grant, LocalCounters, Standing


class CounterStore(Protocol):
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
        """Check every limit of one request of client key `name` and, when all allow it, charge them all
        at once. A shared store that lost `period`'s spend answers `Grant("refill")` and charges nothing."""
        ...

    async def channel_admit(self, name: str, now: float, *, rpm: int | None, tpm: int | None, tokens: float) -> Grant:
        """The same for one attempt on channel `name` (its vendor account's own rpm/tpm)."""
        ...

    def settle(
        self,
        name: str,
        now: float,
        *,
        second: int,
        tokens: float = 0.0,
        reserve: float = 0.0,
        cost: float = 0.0,
        period: int = 0,
        claim: str = "",
    ) -> None:
        """A request admitted at `second` (with `claim`, from its Grant) finished: its token estimate
        corrected by `tokens`, its reservation released and its cost spent."""
        ...

    def hold(self, name: str, amount: float) -> None:
        """An async task's reservation, until `release` (it outlives requests and processes)."""
        ...

    def release(self, name: str, amount: float, cost: float, period: int) -> None: ...

    async def set_budget(self, name: str, period: int, spent: float, held: float | None = None) -> None:
        """`period`'s spend (and the task holds, unless None) as the database has them. A store shared by
        several replicas takes them only while it does not know that period's spend yet."""
        ...

    async def standing(self, name: str, now: float, period: int) -> Standing: ...

    async def aclose(self) -> None:
        """Write what is queued, then let go of the store."""
        ...


class LocalStore:
    """`CounterStore` over this machine's counters file: every call is a few array operations under a
    file lock, done inline (a coroutine frame is all the interface adds)."""

    __slots__ = ("counters",)

    def __init__(self, counters: LocalCounters) -> None:
        self.counters = counters

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
        return self.counters.admit(name, now, rpm=rpm, tpm=tpm, tokens=tokens, budget=budget, period=period, reserve=reserve)

    async def channel_admit(self, name: str, now: float, *, rpm: int | None, tpm: int | None, tokens: float) -> Grant:
        return self.counters.admit(f"channel:{name}", now, rpm=rpm, tpm=tpm, tokens=tokens)

    def settle(
        self,
        name: str,
        now: float,
        *,
        second: int,
        tokens: float = 0.0,
        reserve: float = 0.0,
        cost: float = 0.0,
        period: int = 0,
        claim: str = "",
    ) -> None:
        self.counters.settle(name, now, second=second, tokens=tokens, reserve=reserve, cost=cost, period=period)

    def hold(self, name: str, amount: float) -> None:
        self.counters.hold(name, amount)

    def release(self, name: str, amount: float, cost: float, period: int) -> None:
        self.counters.release(name, amount, cost, period)

    async def set_budget(self, name: str, period: int, spent: float, held: float | None = None) -> None:
        self.counters.set_budget(name, period, spent, held)

    async def standing(self, name: str, now: float, period: int) -> Standing:
        return self.counters.standing(name, now, period)

    def close(self) -> None:
        self.counters.close()

    async def aclose(self) -> None:
        self.counters.close()
