"""The counter store interface the limiter charges, and the types its calls answer with.

`CounterStore` is what `Limiter` (gateway.billing.limiter) asks: check and charge one request's limits,
settle it, hold and release an async task's reservation, set a period's spend from the database, read
a name's standing. `LocalCounters` (gateway.billing.counters) answers from the counters file of one
machine; `RedisCounters` (gateway.billing.redis_counters) from Redis, for several replicas, behind
`Failover` (gateway.billing.failover), which falls back to the machine's `LocalCounters`.

The calls that decide something are coroutines, and `admit` has a plain twin (`admit_now`) for the
admissions a store answers without waiting. A store whose admissions never wait (this machine's
counters) also gives each key a `lane` (gateway.billing.lane): its admission and settle bound to the
key's counters, the limiter's way for every request of that key. The calls that only record what
happened (`settle`, `hold`, `release`) are plain calls that never fail a request: a remote store
queues them and writes them in the background, so the end of a request waits for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.billing.lane import Lane


@dataclass(slots=True)
class Grant:
    """What `admit` decided. `limit` names what refused it: requests | tokens | budget (None: admitted)."""

    limit: str | None
    retry_after: float = 0.0
    requests_left: float | None = None
    requests_reset: float = 0.0
    tokens_left: float | None = None
    tokens_reset: float = 0.0
    second: int = 0  # when it was admitted, to settle the token estimate against
    # What the store that admitted it needs back to settle it: "" for these local counters; the Redis
    # store's reservation (gateway.billing.redis_counters), so a request admitted by Redis settles there.
    claim: str = ""


@dataclass(slots=True)
class Standing:
    """A name's counters now: used this minute, and spend in the current budget period."""

    requests: float
    requests_reset: float
    tokens: float
    tokens_reset: float
    spent: float
    reserved: float  # requests in flight and async tasks not settled yet
    ready: bool = True  # False: a shared store lost the period's spend (a Redis flush); refill it first


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

    def admit_now(
        self, name: str, now: float, rpm: int | None, tpm: int | None, tokens: float, budget: float | None,
        period: int, reserve: float,
    ) -> Grant | None:  # fmt: skip
        """`admit` when the store can answer without waiting (this machine's counters always, Redis's from
        a lease), else None: then await `admit`. Positional: it runs for every limited request."""
        ...

    def lane(self, name: str) -> Lane | None:
        """`name`'s lane, for a store whose admissions never wait (this machine's counters); None for one
        that may (Redis: `admit_now`, then `admit`). Asked once per key, and again after a reload."""
        ...

    async def channel_admit(self, name: str, now: float, *, rpm: int | None, tpm: int | None, tokens: float) -> Grant:
        """The same for one attempt on channel `name` (its vendor account's own rpm/tpm)."""
        ...

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
        """A request admitted at `second` (with `claim`, from its Grant) finished: its token estimate
        corrected by `tokens`, its reservation released and its cost spent. Its arguments may come in
        order (the limiter passes them so, once per limited request: cheaper than keywords)."""
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
