"""The rate limit and budget counters in Redis, shared by every replica of a gateway (`state.redis`).

Each call is one Lua script, run atomically on Redis's clock (`TIME`): a request's admission checks and
charges its key's rpm, tpm and budget in one script; its settle is one more, written in the
background. The scripts asked in one event-loop turn, or while the previous ones are on their way, go
to Redis together, in one write on a connection of their own, and each answer goes back to its caller
(`ScriptPipe`). Keys (P is `state.prefix`; the `{...}` part is the Redis Cluster hash tag, so all the
keys of one client key, or of one channel, sit in one slot and one script may touch them all):

    P:{k:NAME}:rpm             hash: second -> requests admitted in it (a sliding minute of 61 buckets,
    P:{k:NAME}:tpm             hash: second -> tokens charged in it      as gateway.billing.window),
                               and t (their total), n (the newest second the window was moved to)
    P:{k:NAME}:spent:PERIOD    hash: spent (cost settled in the budget period), ready (filled from the DB)
    P:{k:NAME}:resv            zset: "<id>|<amount>" of each request in flight, scored by when it lapses
    P:{k:NAME}:resv:sum        string: the amounts in resv
    P:{k:NAME}:held            string: what unfinished async tasks hold
    P:{c:CHANNEL}:rpm, :tpm    a channel's own rpm/tpm windows

No job resets anything: window buckets leave the minute (and the hash expires 62 s after it last
moved), a new budget period is a new key (expiring a day after the period ends), and a reservation not
settled within `state.reservation_ttl_s` (default 10 minutes: longer than any request) is dropped by the
next script that reads the set, so a replica that dies with requests in flight holds nothing for long.

A period's spend without `ready` (Redis flushed or restarted, or a new period) is not trusted: admit
answers "refill" and the limiter fills it from the database (`fill`). Settles add with HINCRBYFLOAT
whether or not the period is ready, and `fill` adds the database's sum to what they added (guarded by
HSETNX on `ready`, so of replicas racing to refill only the first adds): no settle is lost; one that
lands between a flush and the refill, and whose row the database already had, counts twice, which errs
on the side of the budget. Task holds are set from the database at the same moment.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from gateway.billing.lease import HEADROOM, Lease, Leases, Limits
from gateway.billing.limiter import period_end
from gateway.billing.redis_pipe import BATCH, TIMEOUT_S, ScriptPipe, _bulk, evalsha, evalsha_head
from gateway.billing.store import Grant, Standing

log = structlog.get_logger("gateway.billing")

MAX_CONNECTIONS = 64  # per process; a request waits (up to TIMEOUT_S) for one when all are busy
LINGER_S = 0.005  # a background write waits this long for others to go with it

# -- the scripts -----------------------------------------------------------------------------------

_COMMON = """
local W = 61
local function clock()
  local t = redis.call('TIME')
  local s = tonumber(t[1])
  return s, s + tonumber(t[2]) / 1000000
end

-- A window is a hash: 'n' the newest second it was moved to, 't' the total of its buckets, and one field
-- per second that admitted something (gateway.billing.window in Redis). `window` moves it to now_s (the
-- seconds that left the minute are dropped from it and from the total: O(seconds passed), most often
-- none) and answers the total, whether the window is empty, and whether it moved (at most once a second).
local function window(key, now_s)
  local h = redis.call('HMGET', key, 'n', 't')
  local newest = tonumber(h[1])
  if not newest then return 0, true, true end
  local total = tonumber(h[2]) or 0
  if now_s > newest then
    if now_s - newest >= W then
      redis.call('DEL', key)
      return 0, true, true
    end
    local gone = {}
    for sec = newest - W + 1, now_s - W do gone[#gone + 1] = tostring(sec) end
    if #gone > 0 then
      for _, v in ipairs(redis.call('HMGET', key, unpack(gone))) do
        if v then total = total - tonumber(v) end
      end
      redis.call('HDEL', key, unpack(gone))
    end
    if total < 0 then total = 0 end
    redis.call('HSET', key, 'n', now_s, 't', total)
    redis.call('EXPIRE', key, W + 1)  -- at each move (once a second at most): the hash lives while it counts
    return total, false, true
  end
  return total, false, false
end

-- Add `amount` to second now_s of a window `window` has just moved to now_s.
local function charge(key, now_s, amount, empty)
  redis.call('HINCRBYFLOAT', key, now_s, amount)
  redis.call('HINCRBYFLOAT', key, 't', amount)
  if empty then
    redis.call('HSET', key, 'n', now_s)
    redis.call('EXPIRE', key, W + 1)
  end
end

-- The window's buckets by second, for the answers that need them (a refusal's wait, a reset).
local function buckets(key)
  local flat, out = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do
    local sec = tonumber(flat[i])
    if sec then out[sec] = tonumber(flat[i + 1]) end
  end
  return out
end

-- Add `delta` (negative: an estimate was high, or a lease gave back) to what second `sec` (a string)
-- charged, while that second is still in the window as last moved: a later move dropped it already.
local function correct(key, sec, delta, now_s)
  local second = tonumber(sec)
  if delta == 0 or second > now_s then return end
  local h = redis.call('HMGET', key, 'n', sec)
  local newest = tonumber(h[1])
  if newest and second > newest - W then
    local v = tonumber(h[2]) or 0
    if delta < -v then delta = -v end
    if delta ~= 0 then
      redis.call('HINCRBYFLOAT', key, sec, delta)
      if tonumber(redis.call('HINCRBYFLOAT', key, 't', delta)) < 0 then redis.call('HSET', key, 't', 0) end
    end
  end
end

-- The amount a reservation's member ("<id>|<amount>") holds.
local function amount(member)
  return tonumber(string.match(member, '|(.*)$'))
end

-- Seconds until `amount` more fits under `limit`: 0 now, math.huge never (gateway.billing.window.wait).
local function wait(total, key, now, now_s, amount, limit)
  if amount > limit then return math.huge end
  local excess = total + amount - limit
  if excess <= 0 then return 0 end
  local b = buckets(key)
  for sec = now_s - W + 1, now_s do
    excess = excess - (b[sec] or 0)
    if excess <= 0 then return sec + W - now end
  end
  return W - (now - now_s)
end

local function reset_in(total, key, now, now_s)
  if total <= 0 then return 0 end
  local b = buckets(key)
  for sec = now_s, now_s - W + 1, -1 do
    if (b[sec] or 0) > 0 then return sec + W - now end
  end
  return 0
end

-- What the reservations still in time add up to; the lapsed ones leave the set and its sum.
local function reserved(zkey, skey, now_ms)
  local sum = tonumber(redis.call('GET', skey) or '0')
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', now_ms)
  if #gone > 0 then
    for _, m in ipairs(gone) do sum = sum - amount(m) end
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now_ms)
    if sum < 0 or redis.call('ZCARD', zkey) == 0 then sum = 0 end
    redis.call('SET', skey, sum, 'KEEPTTL')
  end
  return sum
end

local function spend(key, cost, expire_at)
  if tonumber(cost) ~= 0 then
    local spent = tonumber(redis.call('HINCRBYFLOAT', key, 'spent', cost))
    -- The period's key gets its end when it is made (here, or by the refill that fills it).
    if expire_at ~= '0' and spent == tonumber(cost) then redis.call('EXPIREAT', key, expire_at) end
  end
end
"""

# KEYS rpm, tpm, spent, resv, resv:sum, held. ARGV rpm, tpm, budget ('' where none), a reservation's ttl
# in ms (the key's: RedisCounters packs them once), then tokens, reserve, reservation member, and a
# lease asked beyond the request (gateway.billing.lease): requests (0: none), tokens, and its reservation's
# member (its amount is the request's reserve and the lease's; '' none). -> one string, its fields split
# by spaces (a bulk string is read in two steps, an array of nine in nineteen): status (ok | requests |
# tokens | budget | refill), retry_after (-1: never), requests left, requests reset, tokens left,
# tokens reset ('' where no limit), second, leased (1: the lease was charged too, and the request's own
# reservation is in the lease's), seconds left of the second.
ADMIT = _COMMON + """
local now_s, now = clock()
local rpm, tpm, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, reserve = tonumber(ARGV[5]), tonumber(ARGV[6])
local now_ms = math.floor(now * 1000)
local limit, retry, rsum, used = false, 0, 0, 0
if budget then
  local b = redis.call('HMGET', KEYS[3], 'ready', 'spent')
  if not b[1] then return 'refill 0  0  0 ' .. now_s .. ' 0 0' end
  rsum = reserved(KEYS[4], KEYS[5], now_ms)
  used = tonumber(b[2] or '0') + rsum + tonumber(redis.call('GET', KEYS[6]) or '0')
  if used >= budget then limit = 'budget' end
end
-- The reservations' keys live while requests reserve: their time is set when they may be new (nothing
-- reserved) and once a second (when a window moves), with a second to spare.
local refresh = not (rpm or tpm)
local rt, re, tt, te, moved
if rpm then
  rt, re, moved = window(KEYS[1], now_s)
  refresh = refresh or moved
  local w = wait(rt, KEYS[1], now, now_s, 1, rpm)
  if w > retry then retry = w; limit = limit or 'requests' end
end
if tpm then
  tt, te, moved = window(KEYS[2], now_s)
  refresh = refresh or moved
  local w = wait(tt, KEYS[2], now, now_s, tokens, tpm)
  if w > retry then retry = w; limit = limit or 'tokens' end
end
-- An admitted request's own second is the newest in its windows: they empty when that second leaves.
local full = W - (now - now_s)
local out = {limit or 'ok', retry == math.huge and '-1' or tostring(retry), '', '0', '', '0', now_s, '0', tostring(1 - (now - now_s))}
if not limit then
  -- A lease: granted whole, only while every limit stays under HEADROOM of it with the lease.
  local n, t, member = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[7]
  if n > 0 and (not rpm or rt + 1 + n <= rpm * HEADROOM) and (not tpm or tt + tokens + t <= tpm * HEADROOM) then
    if ARGV[10] == '' then
      member = ''
    elseif used + amount(ARGV[10]) <= budget * HEADROOM then
      member, reserve = ARGV[10], amount(ARGV[10])
    else
      n = 0
    end
    if n > 0 then out[8] = '1'; tokens = tokens + t end
  else
    n = 0
  end
  if rpm then
    charge(KEYS[1], now_s, 1 + n, re)
    rt = rt + 1 + n
  end
  if tpm and tokens ~= 0 then
    charge(KEYS[2], now_s, tokens, te)
    tt = tt + tokens
  end
  if budget and reserve > 0 and member ~= '' then
    local ttl = tonumber(ARGV[4])
    redis.call('ZADD', KEYS[4], now_ms + ttl, member)
    redis.call('INCRBYFLOAT', KEYS[5], reserve)
    if refresh or rsum <= 0 then
      redis.call('PEXPIRE', KEYS[4], ttl + 2000)
      redis.call('PEXPIRE', KEYS[5], ttl + 2000)
    end
  end
  if rpm then out[3] = tostring(math.max(rpm - rt, 0)); out[4] = tostring(full) end
  if tpm then
    out[5] = tostring(math.max(tpm - tt, 0))
    out[6] = tostring(tokens ~= 0 and full or reset_in(tt, KEYS[2], now, now_s))
  end
else
  if rpm then out[3] = tostring(math.max(rpm - rt, 0)); out[4] = tostring(reset_in(rt, KEYS[1], now, now_s)) end
  if tpm then out[5] = tostring(math.max(tpm - tt, 0)); out[6] = tostring(reset_in(tt, KEYS[2], now, now_s)) end
end
return table.concat(out, ' ')
""".replace("HEADROOM", repr(HEADROOM))

# KEYS tpm, spent, resv, resv:sum. ARGV when the period's key expires (0: never; RedisCounters packs it
# with the KEYS once), second admitted, token correction, reservation member ('' none), cost.
SETTLE = _COMMON + """
local now_s = clock()
correct(KEYS[1], ARGV[2], tonumber(ARGV[3]), now_s)
if ARGV[4] ~= '' and redis.call('ZREM', KEYS[3], ARGV[4]) == 1 then
  local sum = tonumber(redis.call('INCRBYFLOAT', KEYS[4], -amount(ARGV[4])))
  if sum < 1e-9 and (sum < 0 or redis.call('ZCARD', KEYS[3]) == 0) then redis.call('SET', KEYS[4], 0, 'KEEPTTL') end
end
spend(KEYS[2], ARGV[5], ARGV[1])
return 1
"""

# KEYS rpm, tpm, resv, resv:sum. ARGV the second a lease was charged in, the requests and tokens it did
# not use, its reservation's member ('' none), a reservation's ttl in ms, then the members of its
# requests still in flight ("<id>|<reserve>"): the lease's reservation becomes theirs, each settled on
# its own. A lease whose reservation lapsed already takes theirs with it.
RETIRE = _COMMON + """
local now_s, now = clock()
correct(KEYS[1], ARGV[1], -tonumber(ARGV[2]), now_s)
correct(KEYS[2], ARGV[1], -tonumber(ARGV[3]), now_s)
if ARGV[4] ~= '' and redis.call('ZREM', KEYS[3], ARGV[4]) == 1 then
  local lapse, delta = math.floor(now * 1000) + tonumber(ARGV[5]), -amount(ARGV[4])
  for i = 6, #ARGV do
    redis.call('ZADD', KEYS[3], lapse, ARGV[i])
    delta = delta + amount(ARGV[i])
  end
  local sum = tonumber(redis.call('INCRBYFLOAT', KEYS[4], delta))
  if sum < 1e-9 and (sum < 0 or redis.call('ZCARD', KEYS[3]) == 0) then redis.call('SET', KEYS[4], 0, 'KEEPTTL') end
end
return 1
"""

# KEYS spent, held. ARGV the database's spend, its holds ('' keep), expiry. -> 1 filled, 0 already ready.
FILL = _COMMON + """
if redis.call('HSETNX', KEYS[1], 'ready', '1') == 0 then return 0 end
spend(KEYS[1], ARGV[1], ARGV[3])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS held. ARGV amount (negative: released).
HOLD = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if held < 0 then held = 0 end
redis.call('SET', KEYS[1], held)
return 1
"""

# KEYS held, spent. ARGV amount released, cost, expiry.
RELEASE = _COMMON + """
local held = tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[1])
if held < 0 then held = 0 end
redis.call('SET', KEYS[1], held)
spend(KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS spent. ARGV cost, expiry. Spend settled on this machine while Redis was out of reach: added
# only to a period Redis still knows (one it lost is refilled from the database, which has it).
REPLAY = _COMMON + """
if redis.call('HEXISTS', KEYS[1], 'ready') == 0 then return 0 end
spend(KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS rpm, tpm, spent, resv, resv:sum, held. -> requests, their reset, tokens, their reset, spent,
# reserved, ready (1/0).
STANDING = _COMMON + """
local now_s, now = clock()
local rt = window(KEYS[1], now_s)
local tt = window(KEYS[2], now_s)
local b = redis.call('HMGET', KEYS[3], 'ready', 'spent')
local r = reserved(KEYS[4], KEYS[5], math.floor(now * 1000)) + tonumber(redis.call('GET', KEYS[6]) or '0')
return {tostring(rt), tostring(reset_in(rt, KEYS[1], now, now_s)), tostring(tt), tostring(reset_in(tt, KEYS[2], now, now_s)),
        b[2] or '0', tostring(r), b[1] and 1 or 0}
"""


def connect(url: str) -> Redis:
    """A client that gives up fast: one try, TIMEOUT_S to connect and for each reply (the caller falls
    back), and a new connection on the next call once Redis is back."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections




@dataclass(slots=True)
class Write:
    """A change queued for the background writer, with what it means should Redis not take it."""

    script: AsyncScript
    command: bytes  # its EVALSHA, packed (redis_pipe.evalsha)
    name: str  # the client key it changes
    period: int
    cost: float = 0.0  # spend it adds
    held: float = 0.0  # change to the task holds
    replay: bool = False  # spend this machine counted alone during an outage


class RedisCounters:
    """The `CounterStore` calls on Redis. Errors (Redis unreachable, slow) propagate: the policy for
    them is gateway.billing.failover's; `on_write_failed` hears of background writes that failed."""

    def __init__(self, redis: Redis, *, prefix: str = "gw", reservation_ttl_s: float = 600.0, lease: float = 0.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(int(reservation_ttl_s * 1000), 1)
        self._admit = redis.register_script(ADMIT)
        self._settle = redis.register_script(SETTLE)
        self._fill = redis.register_script(FILL)
        self._hold = redis.register_script(HOLD)
        self._release = redis.register_script(RELEASE)
        self._replay = redis.register_script(REPLAY)
        self._standing = redis.register_script(STANDING)
        self._retire = redis.register_script(RETIRE)
        # Shares of limits taken ahead of time (gateway.billing.lease); None: every admission asks Redis.
        self.leases = Leases(lease) if lease > 0 else None
        self.pipe = ScriptPipe(redis)  # admissions and background writes
        # What an admission's or a settle's EVALSHA starts with for one client key, period and limits: the
        # script, the KEYS and the ARGV that do not change from one request to the next, packed once.
        self._heads: dict[Limits, bytes] = {}
        self._settle_heads: dict[tuple[str, int], bytes] = {}
        self._bases: dict[str, str] = {}
        self._ids = f"{secrets.token_hex(5)}."  # this process's reservations: <ids><n>
        self._n = itertools.count(1)
        self._writes: deque[Write] = deque()
        # Settles with no reservation of their own in Redis, added up by key, period and second admitted
        # ([tokens, cost]) until the next write: one script for all of them.
        self._merged: dict[tuple[str, int, int], list[float]] = {}
        self._wake = asyncio.Event()
        self._sending = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.on_write_failed: Callable[[list[Write], BaseException], None] | None = None

    def base(self, name: str, kind: str = "k") -> str:
        """`P:{k:NAME}`: what every key of a client key (kind k) or channel (kind c) starts with."""
        ident = f"{kind}:{name}"
        base = self._bases.get(ident)
        if base is None:
            base = self._bases[ident] = f"{self.prefix}:{{{ident}}}"
        return base

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
        limits = (name, period, rpm, tpm, budget)
        member = self._member(budget, reserve)
        leases = self.leases
        if leases is not None:  # admitted from this key's lease, without asking Redis, while it lasts
            loop = asyncio.get_running_loop()
            while True:
                grant = leases.take(limits, tokens, reserve, member, loop.time())
                if grant is not None:
                    return grant
                asking = leases.asking.get(limits)
                if asking is None or loop.time() < leases.denied.get(limits, 0.0):
                    break
                await asking.wait()  # another admission of the key is asking for its next lease
        head = self._heads.get(limits)
        if head is None:
            if len(self._heads) >= 4096:  # names, periods and limits of the past
                self._heads.clear()
            b = self.base(name)
            keys = (f"{b}:rpm", f"{b}:tpm", f"{b}:spent:{period}", f"{b}:resv", f"{b}:resv:sum", f"{b}:held")
            head = self._heads[limits] = evalsha_head(self._admit, 6, 10) + b"".join(
                map(_bulk, (*keys, _opt(rpm), _opt(tpm), _opt(budget), self.ttl_ms))
            )
        own = b"".join((head, _bulk(tokens), _bulk(reserve), _bulk(member)))
        ask = leases.ask(limits, rpm, tpm, budget, tokens, reserve, loop.time()) if leases is not None and limits not in leases.asking else None
        if ask is None:
            return _grant((await self.pipe.call(self._admit, own + _NO_LEASE)).split(b" "), member or "-")
        assert leases is not None
        lease_member = f"{self._ids}{next(self._n):x}L|{reserve + ask.budget!r}" if member else ""
        asking = leases.asking[limits] = asyncio.Event()
        asked_at = loop.time()
        lease_tokens = ask.tokens if tpm is not None else 0
        try:
            reply = await self.pipe.call(self._admit, b"".join((own, _bulk(ask.requests), _bulk(lease_tokens), _bulk(lease_member))))
        finally:
            del leases.asking[limits]
            asking.set()
        fields = reply.split(b" ")
        grant = _grant(fields, member or "-")
        if fields[7] == b"1":  # the lease was charged with the request
            lease = leases.granted(limits, grant, ask, asked_at, asked_at + float(fields[8]), lease_member, member, reserve)
            loop.call_at(lease.deadline, self._end_lease, lease)
        elif grant.limit is None:  # admitted, but near a limit: no lease, and none asked for in this second
            leases.denied[limits] = asked_at + float(fields[8])
        return grant

    def _member(self, budget: float | None, reserve: float) -> str:
        """An admission's reservation in Redis, "<this process's id><n>|<amount>" ("" when it reserves none)."""
        return f"{self._ids}{next(self._n):x}|{reserve!r}" if budget is not None and reserve > 0 else ""

    def _end_lease(self, lease: Lease) -> None:
        """`lease`'s second is over: what it did not use goes back to Redis, and its reservation becomes
        its requests' in flight (written in the background, in order with their settles)."""
        if lease.retired:
            return
        assert self.leases is not None
        self.leases.ended(lease)
        name, period, rpm, tpm, _ = lease.key
        requests = lease.requests if rpm is not None else 0
        tokens = lease.tokens if tpm is not None else 0.0
        if not (requests or tokens or lease.member):
            return
        b = self.base(name)
        keys = (f"{b}:rpm", f"{b}:tpm", f"{b}:resv", f"{b}:resv:sum")
        command = evalsha(self._retire, keys, (lease.second, requests, tokens, lease.member, self.ttl_ms, *lease.inflight))
        self.write(Write(self._retire, command, name, period))

    def admit_now(
        self, name: str, now: float, rpm: int | None, tpm: int | None, tokens: float, budget: float | None,
        period: int, reserve: float,
    ) -> Grant | None:  # fmt: skip
        """An admission from the key's lease, or None (no lease, or too little left in it: await `admit`)."""
        leases = self.leases
        if leases is None:
            return None
        member = self._member(budget, reserve)
        return leases.take((name, period, rpm, tpm, budget), tokens, reserve, member, asyncio.get_running_loop().time())

    def lane(self, name: str) -> None:
        """None: an admission may wait for Redis (`admit_now` answers from a lease)."""
        return None

    async def channel_admit(self, name: str, now: float, *, rpm: int | None, tpm: int | None, tokens: float) -> Grant:
        b = self.base(name, "c")
        command = evalsha(self._admit, (f"{b}:rpm", f"{b}:tpm"), (_opt(rpm), _opt(tpm), "", 0, tokens, 0, "", 0, 0, ""))
        return _grant((await self.pipe.call(self._admit, command)).split(b" "), "-")

    async def standing(self, name: str, now: float, period: int) -> Standing:
        b = self.base(name)
        keys = [f"{b}:rpm", f"{b}:tpm", f"{b}:spent:{period}", f"{b}:resv", f"{b}:resv:sum", f"{b}:held"]
        requests, requests_reset, tokens, tokens_reset, spent, reserved, ready = await self._standing(keys=keys)
        return Standing(
            requests=float(requests), requests_reset=float(requests_reset), tokens=float(tokens),
            tokens_reset=float(tokens_reset), spent=float(spent), reserved=float(reserved), ready=bool(ready),
        )  # fmt: skip

    async def set_budget(self, name: str, period: int, spent: float, held: float | None = None) -> None:
        """Fill `period`'s spend (and the task holds) from the database, unless another replica has."""
        b = self.base(name)
        await self._fill(keys=[f"{b}:spent:{period}", f"{b}:held"], args=[spent, "" if held is None else held, _expiry(period)])

    # -- calls that record, written in the background --------------------------------------------

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
        member = claim if claim != "-" else ""
        if member and self.leases is not None and self.leases.settled(member):
            member = ""  # its reservation is inside its lease's, which goes when the lease ends
        if not member:  # nothing of its own to free: one write for all of them of this second, key and period
            if tokens or cost:
                merged = self._merged.get((name, period, second))
                if merged is None:
                    self._merged[(name, period, second)] = [tokens, cost]
                else:
                    merged[0] += tokens
                    merged[1] += cost
                self._wake_writer()
            return
        self.write(self._settle_write(name, period, second, tokens, member, cost))

    def _settle_write(self, name: str, period: int, second: int, tokens: float, member: str, cost: float) -> Write:
        head = self._settle_heads.get((name, period))
        if head is None:
            if len(self._settle_heads) >= 4096:
                self._settle_heads.clear()
            b = self.base(name)
            parts: tuple[str | int, ...] = (f"{b}:tpm", f"{b}:spent:{period}", f"{b}:resv", f"{b}:resv:sum", _expiry(period))
            head = self._settle_heads[(name, period)] = evalsha_head(self._settle, 4, 5) + b"".join(map(_bulk, parts))
        command = b"".join((head, _bulk(second), _bulk(tokens), _bulk(member), _bulk(cost)))
        return Write(self._settle, command, name, period, cost=cost)

    def hold(self, name: str, amount: float) -> None:
        self.write(Write(self._hold, evalsha(self._hold, [f"{self.base(name)}:held"], [amount]), name, 0, held=amount))

    def release(self, name: str, amount: float, cost: float, period: int) -> None:
        b = self.base(name)
        command = evalsha(self._release, [f"{b}:held", f"{b}:spent:{period}"], [amount, cost, _expiry(period)])
        self.write(Write(self._release, command, name, period, cost=cost, held=-amount))

    def replay(self, owed: dict[tuple[str, int], float]) -> None:
        for (name, period), cost in owed.items():
            command = evalsha(self._replay, [f"{self.base(name)}:spent:{period}"], [cost, _expiry(period)])
            self.write(Write(self._replay, command, name, period, cost=cost, replay=True))

    def write(self, change: Write) -> None:
        """Queue `change`; one task writes the queue in order, in pipelines (no task per call)."""
        self._writes.append(change)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._writer is None and not self._closing:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if not self._closing:  # the settles of the next few milliseconds go with these
                await asyncio.sleep(LINGER_S)
            self._wake.clear()
            await self.flush()
            if self._closing:
                return

    async def flush(self) -> None:
        """Send what is queued (once a batch already on its way has its answer); what Redis does not
        take goes to `on_write_failed`. A write whose connection broke after it was sent counts as not
        taken, although Redis may have run it: a settle may then count twice, never not at all."""
        async with self._sending:
            while self._writes or self._merged:
                merged, self._merged = self._merged, {}
                for (name, period, second), (tokens, cost) in merged.items():
                    self._writes.append(self._settle_write(name, period, second, tokens, "", cost))
                batch = [self._writes.popleft() for _ in range(min(len(self._writes), BATCH))]
                results = await self.pipe.gather((w.script, w.command) for w in batch)
                lost: list[Write] = []
                error: BaseException | None = None
                for w, r in zip(batch, results, strict=True):
                    if isinstance(r, ResponseError):  # Redis ran it and refused it: nothing to redo
                        log.error("state_write_refused", key_name=w.name, error=str(r)[:300])
                    elif isinstance(r, BaseException):  # the connection broke, or the reply was late
                        lost.append(w)
                        error = r
                if error is not None and self.on_write_failed is not None:
                    self.on_write_failed(lost, error)

    async def aclose(self) -> None:
        """Write what is queued (the client is its opener's to close)."""
        self._closing = True
        if self.leases is not None:  # what they did not use goes back now, not when their seconds end
            for lease in list(self.leases.live.values()):
                self._end_lease(lease)
        self._wake.set()
        if self._writer is not None:
            await self._writer
        await self.flush()
        await self.pipe.aclose()


_NO_LEASE = _bulk(0) + _bulk(0) + _bulk("")  # ADMIT's lease arguments when it asks for none


def _opt(value: float | None) -> float | str:
    return "" if value is None else value


def _expiry(period: int) -> int:
    """When a period's spend key may go: a day after the period ends (0: a total budget's, never)."""
    end = period_end(period)
    return 0 if end is None else int(end) + 86400


def _grant(fields: list[bytes], claim: str) -> Grant:
    """An ADMIT's answer, split at its spaces."""
    status, retry, requests_left, requests_reset, tokens_left, tokens_reset, second = fields[:7]
    limit = None if status == b"ok" else status.decode()
    retry_after = float(retry)
    return Grant(
        limit,
        retry_after=math.inf if retry_after < 0 else retry_after,
        requests_left=float(requests_left) if requests_left != b"" else None,
        requests_reset=float(requests_reset),
        tokens_left=float(tokens_left) if tokens_left != b"" else None,
        tokens_reset=float(tokens_reset),
        second=int(second),
        claim=claim,
    )
