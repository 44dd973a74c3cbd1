"""A replica's share of a key's limits, taken from Redis ahead of time and admitted from locally.

Asking Redis on every admission costs each request a round trip, and a replica at 32 connections then
waits on Redis more than it works (docs/scaling.md, "Leases"). So an admission that asks Redis also asks
for a little more (gateway.billing.redis_counters, ADMIT): `requests` more requests, `tokens` more
tokens and `budget` more reservation, charged there at once, in the same second and on the same
reservation as the request itself. The replica then admits that key's next requests from what it was
given, without asking, until the lease runs out or its second ends.

What keeps the limits exact:
- **A lease is charged before it is used.** Redis counts it in its windows and reservations like the
  requests it stands for, so the replicas together never admit more than a limit, however they share it.
- **A lease lives only to the end of the second Redis charged it in** (measured on this machine's clock
  from when it was asked, which is earlier than when Redis charged it). What a second admitted is
  counted for the next 61 seconds; a request admitted later from it would be counted for less.
- **What a lease did not use goes back** (RETIRE) when it ends: its requests and tokens leave that
  second's buckets, and its reservation becomes the reservations of its requests still in flight (each
  settled on its own, as an admission asked of Redis is), so nothing reserved outlives its request.
- **It is small and stays clear of the limit.** A lease takes at most `share` of a limit (state.lease,
  default 2%), and Redis grants one only while the key stays under 90% of each limit with it; closer to
  a limit, each admission asks Redis alone. Keys with small limits (rpm under 50 at 2%) never lease.

What it costs: a replica that holds part of a lease it will not use makes the others see that much less
for at most a second; the x-ratelimit-remaining-* of its own admissions count as if the unused part
were free, which it will be by the end of the second.

`Lease` is the bookkeeping, without I/O (unit-tested alone); `Leases` keeps one per key and limits and
sizes the next: it doubles when a lease runs out before its second ends, and is what the key admitted a
second while a lease lasted when one ends unspent.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from gateway.billing.store import Grant

# A client key's limits as one admission gives them: name, budget period, rpm, tpm, budget.
Limits = tuple[str, int, int | None, int | None, float | None]
MAX_REQUESTS = 1 << 20  # in one lease
HEADROOM = 0.9  # Redis grants a lease only while each limit stays under this share of it with the lease


@dataclass(slots=True)
class Ask:
    """What an admission asks Redis for beyond its own request: a lease of `requests` requests,
    `tokens` tokens (inf: the key has no tpm) and `budget` reservation (the admission's own reservation
    is added to it)."""

    requests: int
    tokens: float
    budget: float


@dataclass(slots=True)
class Lease:
    """What Redis granted beyond one admission: left to admit locally until `deadline` (loop time)."""

    key: Limits  # the Leases entry it belongs to
    second: int  # Redis's second it was charged in (a settle corrects that second's tokens)
    start: float  # loop time it was asked for
    deadline: float
    requests: float  # left: requests, tokens and reservation
    tokens: float
    budget: float
    requests_base: float | None  # x-ratelimit-remaining-* with nothing of the lease left (None: no limit)
    tokens_base: float | None
    member: str  # the reservation Redis holds for it ("" none); its amount is what it was granted in all
    asked: int  # requests granted
    inflight: dict[str, float] = field(default_factory=dict)  # member -> reserve of requests it admitted
    retired: bool = False

    def take(self, tokens: float, reserve: float, member: str, now: float) -> Grant | None:
        """One request admitted from the lease (`member` names its reservation), or None: it has too
        little left, or its second is over."""
        if now >= self.deadline or self.requests < 1 or tokens > self.tokens or reserve > self.budget:
            return None
        self.requests -= 1
        self.tokens -= tokens
        if reserve:
            self.budget -= reserve
            self.inflight[member] = reserve
        left = self.deadline - now  # of its second: the request's windows empty a minute after it ends
        reset = 60.0 + (left if left < 1.0 else 1.0)
        return Grant(
            None,
            requests_left=None if self.requests_base is None else self.requests_base + self.requests,
            requests_reset=reset,
            tokens_left=None if self.tokens_base is None else self.tokens_base + self.tokens,
            tokens_reset=reset,
            second=self.second,
            claim=member or "-",
        )

    @property
    def used(self) -> int:
        return self.asked - int(self.requests)


class Leases:
    """This process's leases, one per client key and limits, and how large the next of each should be."""

    def __init__(self, share: float) -> None:
        self.share = share  # of a limit, at most, in one lease
        self.current: dict[Limits, Lease] = {}
        self._size: dict[Limits, int] = {}  # requests the next lease of a key asks for
        self.inflight: dict[str, Lease] = {}  # member -> the lease that admitted it, until it settles
        self.live: dict[int, Lease] = {}  # every lease not ended yet (a replaced one lasts to its second's end)
        self.asking: dict[Limits, asyncio.Event] = {}  # keys whose next lease is being asked for
        self.denied: dict[Limits, float] = {}  # keys Redis refused a lease, until when not to ask again

    def ask(
        self, key: Limits, rpm: int | None, tpm: int | None, budget: float | None, tokens: float, reserve: float,
        now: float = 0.0,
    ) -> Ask | None:  # fmt: skip
        """What to ask for beyond one admission of `key` (None: nothing; its limits are too small, or
        Redis refused it a lease in this second: it is near a limit)."""
        if self.share <= 0 or now < self.denied.get(key, 0.0):
            return None
        n = self._size.get(key, 4)
        if rpm is not None:
            n = min(n, int(rpm * self.share))
        if tpm is not None and tokens > 0:
            n = min(n, int(tpm * self.share / tokens))
        if budget is not None and reserve > 0:
            n = min(n, int(budget * self.share / reserve))
        if n < 1:
            return None
        # Without a tpm Redis charges no tokens, and the lease admits requests of any size.
        return Ask(n, n * tokens if tpm is not None else math.inf, n * reserve)

    def take(self, key: Limits, tokens: float, reserve: float, member: str, now: float) -> Grant | None:
        """One request of `key` admitted from its lease, or None (no lease, or too little left in it).
        A lease that ran out before its second ended makes the next one twice its size."""
        lease = self.current.get(key)
        if lease is None:
            return None
        grant = lease.take(tokens, reserve, member, now)
        if grant is None:
            if now < lease.deadline and lease.requests < 1:
                self._size[key] = min(2 * lease.asked, MAX_REQUESTS)
            return None
        if reserve:
            self.inflight[member] = lease
        return grant

    def granted(
        self, key: Limits, grant: Grant, ask: Ask, start: float, deadline: float, lease_member: str, member: str, reserve: float
    ) -> Lease:
        """Redis charged `ask` with the admission that `grant` answers (reserved as `member`, held in
        `lease_member` with the lease's): the key's lease until `deadline`. The admission's
        x-ratelimit-remaining-* count the lease as free, as those of the requests it admits will."""
        lease = Lease(
            key, grant.second, start, deadline, ask.requests, ask.tokens, ask.budget, grant.requests_left,
            grant.tokens_left, lease_member, ask.requests,
        )  # fmt: skip
        if grant.requests_left is not None:
            grant.requests_left += ask.requests
        if grant.tokens_left is not None:
            grant.tokens_left += ask.tokens
        if member:
            lease.inflight[member] = reserve
            self.inflight[member] = lease
        self.denied.pop(key, None)
        self.current[key] = lease
        self.live[id(lease)] = lease
        return lease

    def settled(self, member: str) -> bool:
        """A request admitted with reservation `member` ended: True when its lease still holds that
        reservation (nothing of its own to free in Redis), False when Redis holds it as its own."""
        lease = self.inflight.pop(member, None)
        if lease is None:
            return False
        del lease.inflight[member]
        return True

    def ended(self, lease: Lease) -> None:
        """`lease`'s second is over (the caller gives back what is left): a lease that was not all used
        makes the next one the size of what was (and at least one)."""
        lease.retired = True
        self.live.pop(id(lease), None)
        if self.current.get(lease.key) is lease:
            del self.current[lease.key]
        if lease.requests >= 1:  # as many as it admitted a second while it lasted
            self._size[lease.key] = min(max(math.ceil(lease.used / max(lease.deadline - lease.start, 0.1)), 1), MAX_REQUESTS)
        for member in lease.inflight:
            self.inflight.pop(member, None)
