"""Limits shared by replicas through Redis (`state.redis`), against a real Redis server.

Two gateway apps on one Redis are two replicas; they share one usage database, as replicas do. The
server is $GATEWAY_TEST_REDIS (default 127.0.0.1:6379); without one these tests skip (tests.redisstate).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import structlog

from config import ClientKey
from gateway.billing.counters import LocalCounters
from gateway.billing.limiter import Limiter, Ticket
from gateway.errors import GatewayError
from gateway.state import SERVICES
from tests.conftest import Gateway, channel
from tests.procs import GatewayProcess, free_port
from tests.redisstate import RedisProxy, Shared, shared_redis

failover = pytest.importorskip("gateway.billing.failover", reason="the `redis` package (extra `scale`) is not installed")
redis_counters = pytest.importorskip("gateway.billing.redis_counters")

PRICE = {"input": 1000.0, "output": 2000.0}  # per 1M tokens: a request of 11 + 3 tokens costs 0.017
COST = 0.017


@pytest.fixture
async def shared():
    async with shared_redis() as s:
        yield s


def replica(vendor: Any, state: dict[str, Any], **key: Any) -> dict[str, Any]:
    return {
        "keys": [{"name": "app1", "key": "test-key", **key}, {"name": "free", "key": "free-key"}],
        "channels": [channel("main", vendor)],
        "models": {"gpt-4o": {"catalog": "t2t", "price": PRICE}},
        "state": state,
    }


async def ask(client: openai.AsyncOpenAI, **kw: Any) -> Any:
    return await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **kw
    )


def limiter_of(gw: Gateway) -> Limiter:
    limiter = gw.server.app[SERVICES].limiter
    assert limiter is not None
    return limiter


async def settled(*gws: Gateway) -> None:
    """Usage rows in the database and settles in Redis, both written in the background."""
    for gw in gws:
        await gw.server.app[SERVICES].usage.flush()
        await limiter_of(gw).counters.shared.flush()  # type: ignore[attr-defined]


async def test_two_replicas_grant_one_rpm_between_them(gateway_factory, vendor, shared: Shared):
    a = await gateway_factory(replica(vendor, shared.state(), rpm=10))
    b = await gateway_factory(replica(vendor, shared.state(), rpm=10))
    clients = [a.client(), b.client()]
    results = await asyncio.gather(*(ask(clients[i % 2]) for i in range(40)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert (len(ok), len(refused)) == (10, 30)
    assert {r.body["type"] for r in refused} == {"requests"}
    assert all(55 <= int(r.response.headers["Retry-After"]) <= 61 for r in refused)
    key = a.runtime.config.keys[0]
    for gw in (a, b):  # each replica sees the one minute
        balance = await limiter_of(gw).balance(key)
        assert (balance.requests_used, balance.requests_left) == (10, 0)
    # Not one key of the state is the client key's secret; every key of app1 carries its hash tag.
    keys = {k.decode() for k in await shared.keys()}
    assert keys and all("{k:app1}" in k for k in keys) and not any("test-key" in k for k in keys)


async def test_two_gateway_processes_share_one_rpm_and_write_their_settles_before_exiting(tmp_path: Path, vendor, shared: Shared):
    config = replica(vendor, shared.state(), rpm=10, budget=1000.0)
    config["database"] = str(tmp_path / "usage.db")  # one database for both, as replicas have
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        procs.append(GatewayProcess(tmp_path / name, config))
    try:
        for proc in procs:
            await proc.start()

        async def one(proc: GatewayProcess, session: aiohttp.ClientSession) -> int:
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
            async with session.post(proc.url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer test-key"}) as r:
                await r.read()
                return r.status

        async with aiohttp.ClientSession() as session:
            statuses = await asyncio.gather(*(one(procs[i % 2], session) for i in range(40)))
        assert (statuses.count(200), statuses.count(429)) == (10, 30)
        for proc in procs:
            assert await proc.stop() == 0  # SIGTERM: the queued settles are written before the process ends
            assert "Traceback" not in proc.logs() and "state_redis_unreachable" not in proc.logs()
        spent = await shared.client.hget(f"{shared.prefix}:{{k:app1}}:spent:0", "spent")
        assert float(spent) == pytest.approx(10 * COST)
    finally:
        for proc in procs:
            proc.kill()


async def test_a_budget_is_not_overspent_across_replicas(gateway_factory, vendor, shared: Shared):
    budget = 0.1  # each request costs 0.017 and reserves ~0.0328 (max_tokens 16)
    a = await gateway_factory(replica(vendor, shared.state(), budget=budget))
    b = await gateway_factory(replica(vendor, shared.state(), budget=budget))
    vendor.chunks = 1
    clients = [a.client(), b.client()]
    results = await asyncio.gather(*(ask(clients[i % 2], max_tokens=16) for i in range(60)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) + len(refused) == 60 and ok and refused
    assert {r.body["code"] for r in refused} == {"insufficient_quota"}
    for i in range(20):  # one at a time now, on either replica, until the budget is spent
        await settled(a, b)
        try:
            ok.append(await ask(clients[i % 2], max_tokens=16))
        except openai.RateLimitError:
            break
    await settled(a, b)
    spent = sum(r["cost"] or 0 for r in await a.rows())
    assert spent == pytest.approx(COST * len(ok))
    reserve = (100 / 4 * 1000 + 16 * 2000) / 1e6
    assert budget <= spent < budget + reserve  # past the budget by at most one request's reservation
    balance = await limiter_of(b).balance(a.runtime.config.keys[0])
    assert balance.spent == pytest.approx(spent) and balance.reserved == pytest.approx(0) and balance.remaining == 0


async def test_the_reservations_of_a_replica_that_died_lapse(gateway_factory, vendor, shared: Shared):
    a = await gateway_factory(replica(vendor, shared.state(reservation_ttl_s=1), budget=1.0))
    b = await gateway_factory(replica(vendor, shared.state(reservation_ttl_s=1), budget=1.0))
    key = a.runtime.config.keys[0]
    await limiter_of(a).admit(key, tokens=0, reserve=1.0)  # a request in flight on A, which then dies: never settled
    with pytest.raises(openai.RateLimitError) as info:
        await ask(b.client())
    assert info.value.body["code"] == "insufficient_quota"
    assert (await limiter_of(b).balance(key)).reserved == pytest.approx(1.0)
    await asyncio.sleep(1.2)
    assert (await ask(b.client())).http_response.status_code == 200
    await settled(b)
    balance = await limiter_of(b).balance(key)
    assert balance.reserved == pytest.approx(0) and balance.spent == pytest.approx(COST)


async def test_a_flushed_redis_is_refilled_from_the_database(gateway_factory, vendor, shared: Shared):
    a = await gateway_factory(replica(vendor, shared.state(), budget=10.0, rpm=100))
    b = await gateway_factory(replica(vendor, shared.state(), budget=10.0, rpm=100))
    key = a.runtime.config.keys[0]
    for i in range(4):
        await ask((a if i % 2 else b).client())
    await settled(a, b)
    assert (await limiter_of(a).balance(key)).spent == pytest.approx(4 * COST)
    await shared.flush()  # FLUSHALL (and SCRIPT FLUSH), as far as this gateway can tell
    with structlog.testing.capture_logs() as logs:
        assert (await ask(b.client())).http_response.status_code == 200
    assert [e["spent"] for e in logs if e["event"] == "budget_refilled"] == [pytest.approx(4 * COST)]
    await settled(b)
    balance = await limiter_of(a).balance(key)
    assert balance.spent == pytest.approx(5 * COST) and balance.requests_used == 1  # the minute went with the flush


async def test_replicas_racing_to_refill_add_the_database_once(shared: Shared):
    client = redis_counters.connect(shared.url)
    store = redis_counters.RedisCounters(client, prefix=shared.prefix)
    try:
        grant = await store.admit("k", 0, rpm=None, tpm=None, tokens=0, budget=1.0, period=7, reserve=0.1)
        assert grant.limit == "refill"  # nothing known of period 7: nothing charged, fill it first
        store.settle("k", second=0, cost=0.25, period=7, claim="-")  # a request that ended meanwhile
        await store.flush()
        await asyncio.gather(*(store.set_budget("k", 7, 0.5, 0.125) for _ in range(5)))
        standing = await store.standing("k", 0, 7)
        assert (standing.spent, standing.reserved, standing.ready) == (0.75, 0.125, True)
    finally:
        await store.aclose()
        await client.aclose()


async def test_rates_on_redis_keep_the_windows_semantics(shared: Shared):
    """The Lua windows answer as gateway.billing.window does: headers, the real token count, Retry-After."""
    client = redis_counters.connect(shared.url)
    limiter = Limiter(redis_counters.RedisCounters(client, prefix=shared.prefix))
    key = ClientKey("k", "0" * 64, rpm=3, tpm=200)
    try:
        ticket = await limiter.admit(key, tokens=100, reserve=0)
        assert ticket.headers["x-ratelimit-remaining-tokens"] == "100"
        assert ticket.headers["x-ratelimit-remaining-requests"] == "2"
        limiter.settle(ticket, 14, None)  # it used 14 tokens, not the 100 estimated
        await limiter.counters.flush()  # type: ignore[attr-defined]
        balance = await limiter.balance(key)
        assert (balance.requests_used, balance.tokens_used) == (1, 14)
        with pytest.raises(GatewayError) as info:
            await limiter.admit(key, tokens=5000, reserve=0)
        assert "Request too large" in info.value.message
        for _ in range(2):
            await limiter.admit(key, tokens=1, reserve=0)
        with pytest.raises(GatewayError) as info:
            await limiter.admit(key, tokens=1, reserve=0)
        assert info.value.type == "requests" and 55 <= int(info.value.headers["Retry-After"]) <= 61
    finally:
        await limiter.aclose()
        await client.aclose()


async def test_a_window_keeps_its_total_beside_its_buckets(shared: Shared):
    """Admissions and settles across several seconds keep the hash's total ('t') equal to its buckets,
    and 'n' on the newest second: no admission reads every bucket."""
    client = redis_counters.connect(shared.url)
    counters = redis_counters.RedisCounters(client, prefix=shared.prefix)
    try:
        seconds = set()
        for _ in range(30):  # ~2 s
            grant = await counters.admit("k", 0, rpm=1000, tpm=100_000, tokens=10)
            assert grant.limit is None
            seconds.add(grant.second)
            counters.settle("k", second=grant.second, tokens=-4, claim="-")  # it used 6 of the 10 estimated
            await asyncio.sleep(0.07)
        await counters.flush()
        assert len(seconds) >= 2
        for kind, each in (("rpm", 1), ("tpm", 6)):
            window = {k.decode(): float(v) for k, v in (await client.hgetall(f"{shared.prefix}:{{k:k}}:{kind}")).items()}
            newest, total = window.pop("n"), window.pop("t")
            assert total == sum(window.values()) == 30 * each and newest == max(seconds)
    finally:
        await counters.aclose()
        await client.aclose()


async def test_reservations_keys_expire(shared: Shared):
    """A reservation's set and sum get a time to live (when they may be new, and once a second after),
    so a key nobody uses again leaves nothing behind."""
    client = redis_counters.connect(shared.url)
    counters = redis_counters.RedisCounters(client, prefix=shared.prefix, reservation_ttl_s=30)
    base = f"{shared.prefix}:{{k:k}}"
    try:
        await counters.set_budget("k", 0, 0.0, 0.0)
        for _ in range(3):
            assert (await counters.admit("k", 0, rpm=100, tpm=None, tokens=0, budget=10.0, reserve=0.5)).limit is None
        assert 0 < await client.pttl(f"{base}:rpm") <= 62_000
        for name in ("resv", "resv:sum"):
            assert 30_000 < await client.pttl(f"{base}:{name}") <= 32_000
    finally:
        await counters.aclose()
        await client.aclose()


async def start_of_a_second(client) -> int:
    """Redis's current second, read early in it: a test that sets buckets relative to "now" must not see the
    second turn (and a bucket leave the minute) before its admissions run."""
    seconds, micros = await client.time()
    if micros > 200_000:
        await asyncio.sleep((1_000_000 - micros) / 1e6 + 0.01)
        seconds, micros = await client.time()
    return int(seconds)


async def test_moving_a_window_drops_the_seconds_that_left_it(shared: Shared):
    """A window last moved 5 s ago: the seconds that left the minute since leave its buckets and its
    total; what is left is what rpm counts, and the refusal waits for the oldest second that remains."""
    client = redis_counters.connect(shared.url)
    counters = redis_counters.RedisCounters(client, prefix=shared.prefix)
    key = f"{shared.prefix}:{{k:k}}:rpm"
    try:
        now = await start_of_a_second(client)
        old = {now - 64: 3, now - 62: 2, now - 61: 1, now - 60: 5, now - 10: 7}  # the last two are in the minute
        await client.hset(key, mapping={**{str(s): n for s, n in old.items()}, "n": now - 5, "t": sum(old.values())})
        grant = await counters.admit("k", 0, rpm=13, tpm=None, tokens=0)
        assert grant.limit is None and grant.requests_left == 0  # 5 + 7 still counted, + this one
        window = await client.hgetall(key)
        assert sorted(int(k) for k in window if k not in (b"n", b"t")) == sorted([now - 60, now - 10, grant.second])
        assert float(window[b"t"]) == 13
        refused = await counters.admit("k", 0, rpm=13, tpm=None, tokens=0)
        assert refused.limit == "requests" and 0 < refused.retry_after <= 2  # second now-60 leaves at now+1
        await client.hset(key, mapping={"n": grant.second - 70})  # a window untouched for over a minute
        assert (await counters.admit("k", 0, rpm=13, tpm=None, tokens=0)).requests_left == 12
    finally:
        await counters.aclose()
        await client.aclose()


async def test_an_unreachable_redis_falls_back_to_local_counters(gateway_factory, vendor, shared: Shared):
    proxy = await RedisProxy().start()
    gw = await gateway_factory(replica(vendor, {**shared.state(), "redis": proxy.url}, budget=10.0, rpm=100))
    key = gw.runtime.config.keys[0]
    client = gw.client()
    try:
        for _ in range(2):
            await ask(client)
        await settled(gw)
        with structlog.testing.capture_logs() as logs:
            await proxy.cut()
            for _ in range(3):  # served all the same, counted on this machine
                raw = await ask(client)
                assert raw.http_response.status_code == 200 and raw.headers["x-ratelimit-limit-requests"] == "100"
            store = limiter_of(gw).counters
            assert store.down  # type: ignore[attr-defined]
            text = gw.server.app[SERVICES].metrics.render()[0].decode()  # type: ignore[union-attr]
            assert 'gateway_state_fallbacks_total{action="local",reason="connect"}' in text
            await proxy.restore()
            await asyncio.sleep(failover.RETRY_S + 0.1)
            await ask(client)  # Redis again: what was spent meanwhile is added to it
            await settled(gw)
        events = [e["event"] for e in logs if e["event"].startswith("state_redis")]
        assert events == ["state_redis_unreachable", "state_redis_recovered"]
        assert next(e for e in logs if e["event"] == "state_redis_recovered")["fallbacks"] >= 3
        balance = await limiter_of(gw).balance(key)
        assert balance.spent == pytest.approx(6 * COST) and not store.down  # type: ignore[attr-defined]
    finally:
        await proxy.cut()


async def test_refuse_answers_503_while_redis_is_unreachable(gateway_factory, vendor):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: needs no Redis server
    gw = await gateway_factory(replica(vendor, {"redis": dead, "on_redis_error": "refuse"}, rpm=10))
    with pytest.raises(openai.InternalServerError) as info:
        await ask(gw.client())
    err = info.value
    assert err.status_code == 503 and err.body["code"] == "state_unavailable"
    assert "shared state (Redis) is unreachable" in err.body["message"]
    assert err.response.headers["Retry-After"] == "1"
    # A key without limits asks nothing of the shared state: served.
    assert (await ask(gw.client("free-key"))).http_response.status_code == 200
    text = gw.server.app[SERVICES].metrics.render()[0].decode()  # type: ignore[union-attr]
    assert 'gateway_state_fallbacks_total{action="refuse",reason="connect"} 1.0' in text


def count_batches(monkeypatch: pytest.MonkeyPatch, after: Callable[[], Any] | None = None) -> list[int]:
    """The EVALSHAs in each write to Redis from now on (the script calls' batches), through a wrapper
    around redis-py's `send_packed_command`; `after` runs once, right after the first such write."""
    from redis.asyncio.connection import AbstractConnection

    send = AbstractConnection.send_packed_command
    batches: list[int] = []

    async def counted(conn: Any, command: Any, check_health: bool = True) -> None:
        await send(conn, command, check_health)
        data = command if isinstance(command, bytes) else b"".join(command)
        if b"EVALSHA" in data:
            batches.append(data.count(b"EVALSHA"))
            if after is not None and len(batches) == 1:
                await after()

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return batches


async def test_concurrent_admissions_go_in_one_batch_and_admit_exactly_the_limit(shared: Shared, monkeypatch):
    client = redis_counters.connect(shared.url)
    counters = redis_counters.RedisCounters(client, prefix=shared.prefix)
    limiter = Limiter(counters)
    key = ClientKey("k", "0" * 64, rpm=25, tpm=10_000)
    batches = count_batches(monkeypatch)
    try:
        many = (limiter.admit(key, tokens=2, reserve=0) for _ in range(100))
        results = await asyncio.gather(*many, return_exceptions=True)
        tickets = [r for r in results if isinstance(r, Ticket)]
        refused = [r for r in results if isinstance(r, GatewayError)]
        assert (len(tickets), len(refused)) == (25, 75)
        assert {r.type for r in refused} == {"requests"}
        assert all(55 <= int(r.headers["Retry-After"]) <= 61 for r in refused)
        # Each script answered on its own: the remaining counts went down one by one.
        remaining = sorted(int(t.headers["x-ratelimit-remaining-requests"]) for t in tickets)
        assert remaining == list(range(25))
        assert batches in ([100], [100, 100])  # one batch (sent again if the script was not loaded yet)
        for t in tickets:
            limiter.settle(t, 1, None)
        await counters.flush()
        assert batches[-1] in (1, 2)  # the settles: one script for each second they were admitted in
        await shared.client.script_flush()  # NOSCRIPT for a whole batch: loaded once, the batch sent again
        many = (limiter.admit(key, tokens=2, reserve=0) for _ in range(10))
        results = await asyncio.gather(*many, return_exceptions=True)
        assert all(isinstance(r, GatewayError) for r in results) and batches[-2:] == [10, 10]
        balance = await limiter.balance(key)
        assert (balance.requests_used, balance.tokens_used) == (25, 25)
        await limiter.admit(ClientKey("alone", "1" * 64, rpm=1), tokens=0, reserve=0)
        assert batches[-1] == 1  # alone: sent at once, nothing waited for
    finally:
        await limiter.aclose()
        await client.aclose()


async def test_a_redis_cut_mid_batch_sends_every_admission_of_it_to_the_fallback(shared: Shared, monkeypatch, tmp_path: Path):
    proxy = await RedisProxy().start()
    client = redis_counters.connect(proxy.url)
    local = LocalCounters.create(tmp_path / "gateway.counters")
    store = failover.Failover(redis_counters.RedisCounters(client, prefix=shared.prefix), local, refuse=False)
    limiter = Limiter(store)
    key = ClientKey("k", "0" * 64, rpm=100)
    try:
        assert (await limiter.admit(key, tokens=0, reserve=0)).claim == "-"  # a Redis grant; the connection made
        batches = count_batches(monkeypatch, after=proxy.cut)  # the batch written, then Redis gone before its answers
        with structlog.testing.capture_logs() as logs:
            tickets = await asyncio.gather(*(limiter.admit(key, tokens=0, reserve=0) for _ in range(8)))
        assert batches[0] == 8
        assert all(t.claim == "" for t in tickets)  # every one admitted by the local counters
        assert store.down and store.fallbacks == 8
        assert (await local.standing("k", time.time(), 0)).requests == 8
        assert [e["event"] for e in logs if e["event"].startswith("state_redis")] == ["state_redis_unreachable"]
    finally:
        await limiter.aclose()
        await client.aclose()
        await proxy.cut()


async def test_a_connection_redis_closed_while_idle_fails_no_call(shared: Shared):
    """As the pool checks a connection before lending it, the script calls' own connection is made
    again when Redis closed it meanwhile (a restart): the writes behind it are not lost to the fallback."""
    from redis.asyncio import Redis

    name = f"{shared.prefix}-conn"
    client = Redis.from_url(shared.url, client_name=name, socket_timeout=2)
    counters = redis_counters.RedisCounters(client, prefix=shared.prefix)
    failed: list[BaseException] = []
    counters.on_write_failed = lambda batch, exc: failed.append(exc)

    async def kill() -> int:
        ids = [c["id"] for c in await shared.client.client_list() if c.get("name") == name]
        for i in ids:
            await shared.client.client_kill_filter(_id=i)
        await asyncio.sleep(0.05)  # the server's FIN arrives
        return len(ids)

    try:
        grant = await counters.admit("k", 0, rpm=10, tpm=None, tokens=0)
        assert await kill()
        counters.settle("k", second=grant.second, cost=0.5, period=0, claim="-")
        await counters.flush()
        await kill()
        grant = await counters.admit("k", 0, rpm=10, tpm=None, tokens=0)
        assert (grant.limit, grant.requests_left) == (None, 8) and not failed
        assert float(await shared.client.hget(f"{shared.prefix}:{{k:k}}:spent:0", "spent")) == 0.5
    finally:
        await counters.aclose()
        await client.aclose()


async def test_an_error_redis_answers_is_its_calls_alone(shared: Shared):
    client = redis_counters.connect(shared.url)
    pipe = redis_counters.ScriptPipe(client)
    # Scripts of this test only, so the first batch surely meets NOSCRIPT for both.
    echo = client.register_script(f"-- {shared.prefix}\nreturn ARGV[1]")
    refuse = client.register_script(f"-- {shared.prefix}\nreturn redis.error_reply('refused ' .. ARGV[1])")
    try:
        calls = ((echo, "a"), (refuse, "b"), (echo, 1.5))
        answers = await pipe.gather((script, redis_counters.evalsha(script, [], [arg])) for script, arg in calls)
        assert answers[0] == b"a" and answers[2] == b"1.5"
        assert isinstance(answers[1], Exception) and "refused b" in str(answers[1])
        assert pipe.round_trips == 2  # NOSCRIPT for all three: both scripts loaded, the batch sent again
    finally:
        await pipe.aclose()
        await client.aclose()
