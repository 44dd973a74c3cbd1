"""Leases: a replica's share of a key's limits taken from Redis ahead of time (gateway.billing.lease).

The bookkeeping alone first, then against a real Redis server ($GATEWAY_TEST_REDIS, default
127.0.0.1:6379; without one those tests skip, tests.redisstate): several stores on one Redis are
several replicas, each with its own connection and its own leases.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from typing import Any

import openai
import pytest

from config import ClientKey
from gateway.billing.lease import Ask, Lease, Leases
from gateway.billing.limiter import Limiter, Ticket
from gateway.billing.store import Grant
from gateway.errors import GatewayError
from gateway.state import SERVICES
from tests.conftest import channel
from tests.redisstate import Shared, shared_redis

LIMITS = ("k", 0, 1000, 100_000, 10.0)


def lease(**kw: Any) -> Lease:
    fields: dict[str, Any] = {
        "key": LIMITS, "second": 100, "start": 49.0, "deadline": 50.0, "requests": 3, "tokens": 30.0, "budget": 0.3,
        "requests_base": 500.0, "tokens_base": 9000.0, "member": "a.1L|0.4", "asked": 3,
    }  # fmt: skip
    return Lease(**{**fields, **kw})


def test_a_lease_admits_until_a_limit_of_it_runs_out():
    one = lease()
    grant = one.take(10, 0.1, "a.2|0.1", now=49.5)
    assert grant is not None and grant.limit is None and grant.claim == "a.2|0.1" and grant.second == 100
    # The unused part of the lease counts as free, as it will be when the lease ends.
    assert (grant.requests_left, grant.tokens_left) == (502.0, 9020.0)
    assert 60 < grant.requests_reset <= 61 and grant.tokens_reset == grant.requests_reset
    assert one.inflight == {"a.2|0.1": 0.1}
    assert one.take(25, 0, "", now=49.5) is None  # more tokens than are left
    assert one.take(1, 0.25, "a.3|0.25", now=49.5) is None  # more reservation than is left
    assert one.take(20, 0, "", now=49.5).claim == "-"  # type: ignore[union-attr]
    assert one.take(0, 0, "", now=49.5) is not None
    assert one.take(0, 0, "", now=49.5) is None  # no request left
    assert one.used == 3


def test_a_lease_ends_with_its_second():
    one = lease()
    assert one.take(1, 0, "", now=50.0) is None
    assert one.requests == 3


def test_leases_are_a_small_share_of_each_limit():
    leases = Leases(0.02)
    ask = leases.ask(LIMITS, 1000, None, None, 70, 0)
    assert ask is not None and ask.requests == 4  # the first is small
    assert ask.tokens == math.inf  # no tpm: the lease admits requests of any size
    assert leases.ask(LIMITS, 100, None, None, 0, 0).requests == 2  # type: ignore[union-attr]  # 2% of 100
    assert leases.ask(LIMITS, 49, None, None, 0, 0) is None  # under one request: every admission asks Redis
    assert leases.ask(LIMITS, None, 10_000, None, 100, 0).requests == 2  # type: ignore[union-attr]  # 200 tokens
    assert leases.ask(LIMITS, None, 10_000, None, 300, 0) is None
    ask = leases.ask(LIMITS, None, None, 10.0, 50, 0.05)
    assert ask is not None and (ask.requests, ask.tokens, ask.budget) == (4, math.inf, 0.2)
    assert leases.ask(LIMITS, None, None, 1.0, 0, 0.05) is None
    assert Leases(0).ask(LIMITS, 10**9, None, None, 0, 0) is None  # state.lease: 0


def granted(leases: Leases, n: int, start: float, member: str = "", reserve: float = 0.0) -> Lease:
    """A lease of `n` requests (10 tokens and 0.1 reserved each) Redis charged with an admission."""
    grant = Grant(None, requests_left=500.0, tokens_left=9000.0, second=int(start))
    lease = leases.granted(LIMITS, grant, Ask(n, 10.0 * n, 0.1 * n), start, start + 1.0, "a.0L|1.0" if member else "", member, reserve)
    # The admission's own x-ratelimit-remaining-* count the lease as free.
    assert (grant.requests_left, grant.tokens_left) == (500.0 + n, 9000.0 + 10 * n)
    return lease


def test_the_next_lease_doubles_when_one_runs_out_and_shrinks_to_what_was_used():
    leases = Leases(0.02)
    first = granted(leases, 4, start=9.0)
    for _ in range(4):
        assert leases.take(LIMITS, 0, 0, "", now=9.5) is not None
    assert leases.take(LIMITS, 0, 0, "", now=9.5) is None  # ran out within its second
    assert leases.ask(LIMITS, 1000, None, None, 0, 0).requests == 8  # type: ignore[union-attr]
    second = granted(leases, 8, start=9.75)
    for _ in range(3):
        leases.take(LIMITS, 0, 0, "", now=10.5)
    leases.ended(first)
    assert leases.current[LIMITS] is second  # a replaced lease ending leaves the current one
    leases.ended(second)
    assert LIMITS not in leases.current and not leases.live
    assert leases.ask(LIMITS, 1000, None, None, 0, 0).requests == 3  # type: ignore[union-attr]  # 3 in its 1 s


def test_a_settled_request_frees_its_reservation_in_its_lease_until_the_lease_ends():
    leases = Leases(0.02)
    one = granted(leases, 4, start=48.5, member="a.1|0.1", reserve=0.1)
    assert leases.take(LIMITS, 0, 0.1, "a.2|0.1", now=49.0) is not None
    assert leases.take(LIMITS, 0, 0.1, "a.3|0.1", now=49.0) is not None
    assert one.inflight == {"a.1|0.1": 0.1, "a.2|0.1": 0.1, "a.3|0.1": 0.1}  # the admission that asked for it too
    assert leases.settled("a.2|0.1") and not leases.settled("a.2|0.1")
    assert one.inflight == {"a.1|0.1": 0.1, "a.3|0.1": 0.1}
    leases.ended(one)
    assert not leases.settled("a.3|0.1")  # its lease ended: Redis holds its reservation as its own now


def test_redis_refusing_a_lease_stops_asking_for_the_rest_of_its_second():
    leases = Leases(0.02)
    leases.denied[LIMITS] = 20.0
    assert leases.ask(LIMITS, 1000, None, None, 0, 0, now=19.9) is None
    assert leases.ask(LIMITS, 1000, None, None, 0, 0, now=20.0) is not None
    granted(leases, 4, start=20.0)
    assert LIMITS not in leases.denied


# -- against Redis -----------------------------------------------------------------------------------

redis_counters = pytest.importorskip("gateway.billing.redis_counters", reason="the `redis` package (extra `scale`) is not installed")


@pytest.fixture
async def shared():
    async with shared_redis() as s:
        yield s


async def replicas(shared: Shared, n: int, **kw: Any) -> list[Any]:
    return [redis_counters.RedisCounters(redis_counters.connect(shared.url), prefix=shared.prefix, **kw) for _ in range(n)]


async def close(stores: list[Any]) -> None:
    for store in stores:
        await store.aclose()
        await store.redis.aclose()


async def second_start() -> None:
    """Just after a second begins (Redis's clock is this machine's): a lease taken now lasts ~1 s."""
    await asyncio.sleep(1.02 - time.time() % 1)


async def window_total(shared: Shared, kind: str) -> float:
    return float(await shared.client.hget(f"{shared.prefix}:{{k:k}}:{kind}", "t") or 0)


async def test_a_lease_admits_most_requests_without_asking_redis(shared: Shared):
    [store] = await replicas(shared, 1, lease=0.02)
    limiter = Limiter(store)
    key = ClientKey("k", "0" * 64, rpm=100_000, tpm=10_000_000)
    try:
        tickets = []
        began = time.monotonic()
        for _ in range(300):
            tickets.append(await limiter.admit(key, tokens=50, reserve=0))
        seconds = time.monotonic() - began
        assert store.pipe.round_trips < 30  # 300 admissions; leases of 4, 8, 16, ... requests
        remaining = [int(t.headers["x-ratelimit-remaining-requests"]) for t in tickets]
        # Each admission leaves one less, lease or not. Only where a second ended: an admission asked of Redis
        # before the ended lease's unused part went back (written in the background) counts that part as used,
        # so one step falls by more and a later one rises (docs/scaling.md). At most two steps a second.
        steps = [a - b for a, b in itertools.pairwise(remaining)]
        assert remaining[0] == 99_999 and sum(step != 1 for step in steps) <= 2 * (math.ceil(seconds) + 1)
        for t in tickets:
            limiter.settle(t, 20, None)  # each used 20 of the 50 tokens estimated
        await store.aclose()  # ends the leases: what they did not use goes back
        assert await window_total(shared, "rpm") == 300
        assert await window_total(shared, "tpm") == 300 * 20
    finally:
        await close([store])


async def test_a_key_without_tpm_leases_requests_of_any_size(shared: Shared):
    [store] = await replicas(shared, 1, lease=0.02)
    limiter = Limiter(store)
    key = ClientKey("k", "0" * 64, rpm=10_000)
    try:
        await second_start()
        for tokens in (10, 5000, 40, 100_000):
            await limiter.admit(key, tokens=tokens, reserve=0)
        assert store.pipe.round_trips == 1  # the first took a lease of four; the others came from it
        assert not await shared.client.exists(f"{shared.prefix}:{{k:k}}:tpm")  # no tokens counted anywhere
    finally:
        await close([store])


def count_leased(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Admissions answered from a lease from now on ([count], through a wrapper around Leases.take)."""
    take = Leases.take
    leased = [0]

    def counted(self: Leases, *args: Any) -> Grant | None:
        grant = take(self, *args)
        leased[0] += grant is not None
        return grant

    monkeypatch.setattr(Leases, "take", counted)
    return leased


async def test_replicas_with_leases_never_admit_past_a_limit_and_give_back_what_they_did_not_use(shared: Shared, monkeypatch):
    stores = await replicas(shared, 3, lease=0.05)
    limiters = [Limiter(s) for s in stores]
    key = ClientKey("k", "0" * 64, rpm=600)
    try:

        async def client(limiter: Limiter, n: int) -> int:
            admitted = 0
            for _ in range(n):
                try:
                    await limiter.admit(key, tokens=0, reserve=0)
                    admitted += 1
                except GatewayError as err:
                    assert err.status == 429 and err.type == "requests"
                await asyncio.sleep(random.random() / 1000)
            return admitted

        leased = count_leased(monkeypatch)
        burst = await asyncio.gather(*(client(limiters[i % 3], 40) for i in range(24)))  # 960 asked
        # Never past the limit; short of it by at most one lease (30) a replica, held unused when the burst ended.
        assert 510 <= sum(burst) <= 600
        assert sum(leased) >= sum(burst) / 2  # most admitted from leases, without asking Redis
        await asyncio.sleep(1.1)  # the leases' second ends: what they did not use goes back
        for s in stores:
            await s.flush()
        more = sum(await asyncio.gather(*(client(limiters[i % 3], 20) for i in range(6))))
        assert sum(burst) + more == 600  # exactly the limit, once nothing is held
        assert await window_total(shared, "rpm") == 600
    finally:
        await close(stores)


async def test_a_leases_reservation_becomes_its_requests_in_flight_when_it_ends(shared: Shared):
    [store, other] = await replicas(shared, 2, lease=0.05)
    limiter = Limiter(store)
    key = ClientKey("k", "0" * 64, budget=10.0)
    try:
        await store.set_budget("k", 0, 0.0, 0.0)
        await second_start()
        tickets = [await limiter.admit(key, tokens=0, reserve=0.1) for _ in range(3)]
        assert store.pipe.round_trips == 1  # one admission, which took a lease of four more
        standing = await other.standing("k", 0, 0)
        assert standing.reserved == pytest.approx(0.5)  # the lease holds what its requests may spend
        limiter.settle(tickets[0], 0, 0.07)  # one ends while its lease lasts: its reservation stays the lease's
        await store.flush()
        assert (await other.standing("k", 0, 0)).reserved == pytest.approx(0.5)
        await asyncio.sleep(1.1)  # the lease's second ends: two requests still in flight hold their own
        await store.flush()
        standing = await other.standing("k", 0, 0)
        assert (standing.spent, standing.reserved) == (pytest.approx(0.07), pytest.approx(0.2))
        for t in tickets[1:]:
            limiter.settle(t, 0, 0.05)
        await store.flush()
        standing = await other.standing("k", 0, 0)
        assert (standing.spent, standing.reserved) == (pytest.approx(0.17), pytest.approx(0))
    finally:
        await close([store, other])


async def test_a_lease_of_a_replica_that_died_lapses(shared: Shared):
    [dead, other] = await replicas(shared, 2, lease=0.05, reservation_ttl_s=1)
    key = ClientKey("k", "0" * 64, budget=1.0)
    try:
        await dead.set_budget("k", 0, 0.0, 0.0)
        await second_start()
        ticket: Ticket = await Limiter(dead).admit(key, tokens=0, reserve=0.01)
        assert ticket.claim != "-"
        assert dead.leases is not None
        for one in dead.leases.live.values():  # it dies: its lease never ends, its request never settles
            one.retired = True
        dead.leases.live.clear()
        assert (await other.standing("k", 0, 0)).reserved == pytest.approx(0.05)
        await asyncio.sleep(1.2)
        assert (await other.standing("k", 0, 0)).reserved == 0
    finally:
        await close([dead, other])


async def test_near_a_limit_every_admission_asks_redis(shared: Shared):
    [store] = await replicas(shared, 1, lease=0.1)
    limiter = Limiter(store)
    key = ClientKey("k", "0" * 64, rpm=100)
    try:
        for _ in range(100):
            await limiter.admit(key, tokens=0, reserve=0)
        with pytest.raises(GatewayError):
            await limiter.admit(key, tokens=0, reserve=0)
        assert await window_total(shared, "rpm") == 100  # no lease was charged past 90 of 100
        assert store.leases is not None and not any(
            lease.requests for lease in store.leases.live.values()
        )  # fmt: skip
    finally:
        await close([store])


async def test_two_gateway_replicas_with_leases_hold_a_keys_rpm_and_budget(gateway_factory, vendor, shared: Shared, monkeypatch):
    """Through the gateway and the OpenAI client: a burst on two replicas that lease (5% of rpm 200 and
    of a budget of 3.0, which 260 requests in flight at once do not reach) never admits past the rpm, and
    every admitted request is billed once, its reservation freed."""
    # Leases, not outages: 260 requests at once on two replicas in one process can stall the loop past
    # TIMEOUT_S on a slow machine, and an admission that falls back to this machine's counters is
    # counted there alone (by design; the failover tests cover it), beyond the rpm this test checks.
    monkeypatch.setattr(redis_counters, "TIMEOUT_S", 5.0)

    def config() -> dict[str, Any]:
        return {
            "keys": [{"name": "k", "key": "test-key", "rpm": 200, "budget": 3.0}],
            "channels": [channel("main", vendor)],
            "models": {"gpt-4o": {"catalog": "t2t", "price": {"input": 100.0, "output": 200.0}}},
            "state": shared.state(lease=0.05),
        }

    a = await gateway_factory(config())
    b = await gateway_factory(config())  # the same usage database, as replicas have
    vendor.chunks = 1
    clients = [a.client(), b.client()]

    async def one(i: int) -> Any:
        return await clients[i % 2].chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=16
        )

    leased = count_leased(monkeypatch)
    results = await asyncio.gather(*(one(i) for i in range(260)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) + len(refused) == 260 and len(ok) <= 200
    assert {r.body["code"] for r in refused} == {"rate_limit_exceeded"}
    assert len(ok) >= 180  # at most a lease per replica refused early
    remaining = [int(r.headers["x-ratelimit-remaining-requests"]) for r in ok]
    assert all(0 <= n < 200 for n in remaining)
    stores = [gw.server.app[SERVICES].limiter.counters.shared for gw in (a, b)]  # type: ignore[union-attr]
    # Most were admitted from leases. (Not counted in round trips: the 60 refusals, and the admissions near
    # the limit, each ask Redis for themselves, and a slow machine spreads the burst over more seconds.)
    assert leased[0] > len(ok) / 2
    for gw, store in zip((a, b), stores, strict=True):
        await gw.server.app[SERVICES].usage.flush()
        await store.aclose()  # ends the leases, writes the settles
    rows = [r for r in await a.rows() if r["status"] == 200]
    assert len(rows) == len(ok)
    spent = float(await shared.client.hget(f"{shared.prefix}:{{k:k}}:spent:0", "spent"))
    assert spent == pytest.approx(sum(r["cost"] for r in rows))
    left = float(await shared.client.get(f"{shared.prefix}:{{k:k}}:resv:sum") or 0)
    assert left == pytest.approx(0), await shared.client.zrange(f"{shared.prefix}:{{k:k}}:resv", 0, -1)  # which are left
    assert await window_total(shared, "rpm") == len(ok)
