"""Rate limits and budgets per client key and per channel, on the shared counters.

A request of a limited key is admitted by `Limiter.admit` before any vendor is tried: its rpm, its tpm
(charged with an estimate of the tokens it will use) and its budget (refused once the period's spend
plus what requests in flight and async tasks have reserved reaches it; the request then reserves its
own estimated cost) are checked and charged together. When it ends, `settle` corrects the token
estimate with the real count, releases the reservation and spends the real cost. Every answer to a
limited key carries OpenAI's x-ratelimit-* headers; a refusal is a 429 with an honest Retry-After.

Channels with their own `rpm`/`tpm` (a vendor account's quota) are charged per attempt: routing skips
a channel at its limit (`channel_wait`).

The counters are a `CounterStore` (gateway.billing.store): this machine's file, or Redis shared by
several replicas. A shared store that lost a period's spend (Redis flushed or restarted) says so at the
next admission; the limiter then refills that key's spend from the database (one read per key and
period, however many requests wait for it) before anything of that key is admitted.
"""

from __future__ import annotations

import asyncio
import calendar
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from config import Channel, ClientKey, Config
from gateway.billing.lane import Lane
from gateway.billing.store import CounterStore, Grant
from gateway.errors import GatewayError
from gateway.http.answer import lines_dict

log = structlog.get_logger("gateway.billing")

PERIODS = ("total", "daily", "monthly")
REFILL = "refill"  # Grant.limit of a shared store that lost the period's spend

# One key's spend in the budget period holding `now`, from the database (gateway.billing.startup).
SpendReader = Callable[[ClientKey, float], Awaitable[float]]
# Each key's reservations held by unfinished async tasks (gateway.tasks.store).
HeldReader = Callable[[], Awaitable[dict[str, float]]]


def period_id(kind: str, now: float) -> int:
    """Which budget period `now` falls in: 0 for total; else a number the kind's next period changes."""
    if kind == "daily":
        return 1_000_000 + int(now // 86400)
    if kind == "monthly":
        start, end, number = _month[0]
        if not start <= now < end:  # a month changes only with a day: one gmtime a day, not one a request
            start = now // 86400 * 86400
            t = time.gmtime(now)
            number = 2_000_000 + t.tm_year * 12 + t.tm_mon - 1
            _month[0] = start, start + 86400, number
        return number
    return 0


_month = [(0.0, 0.0, 0)]  # [(the day of the last call, from its start to its end; its month's period id)]


def period_bounds(kind: str, now: float) -> tuple[float | None, float | None]:
    """When the period holding `now` began and ends (None: unbounded), unix seconds, UTC calendar."""
    if kind == "daily":
        start = now // 86400 * 86400
        return start, start + 86400
    if kind == "monthly":
        t = time.gmtime(now)
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return float(start), float(calendar.timegm((year, month, 1, 0, 0, 0)))
    return None, None


def period_end(period: int) -> float | None:
    """When the period `period_id` numbered ends (None: never), unix seconds."""
    if period >= 2_000_000:
        year, month = divmod(period - 2_000_000, 12)  # month 0-11
        year, month = (year + 1, 1) if month == 11 else (year, month + 2)
        return float(calendar.timegm((year, month, 1, 0, 0, 0)))
    if period >= 1_000_000:
        return float((period - 1_000_000 + 1) * 86400)
    return None


@dataclass(slots=True)
class Ticket:
    """An admitted request's claims, to settle when it ends, and its answer's x-ratelimit-* headers."""

    name: str
    second: int
    tokens: int
    reserve: float
    period: int
    lines: bytes  # the headers as header lines (`rate_lines`), which a whole answer takes as they are
    claim: str = ""  # the store's own (Grant.claim)
    lane: Lane | None = field(default=None, compare=False)  # the lane that admitted it settles it (CounterStore.lane)

    @property
    def headers(self) -> dict[str, str]:
        """The same headers, for an answer that takes them one by one (a stream, an error)."""
        return lines_dict(self.lines)


@dataclass(slots=True)
class Balance:
    """A key's standing, for /v1/balance and its kin."""

    budget: float | None
    spent: float
    reserved: float
    remaining: float | None
    period: str
    period_start: float | None
    period_end: float | None
    rpm: int | None
    requests_used: int
    requests_left: int | None
    requests_reset_s: float
    tpm: int | None
    tokens_used: int
    tokens_left: int | None
    tokens_reset_s: float


class _Fast:
    """What `Limiter.admit_now` keeps of a key (replaced when a reload changes the key): the store's lane
    for it, if the store has lanes; the lines of an admitted request's x-ratelimit-* headers with its
    counts left to fill in; and the budget period of the day it last saw."""

    __slots__ = ("key", "lane", "lines", "period", "since", "until")

    def __init__(self, key: ClientKey, lane: Lane | None) -> None:
        self.key, self.lane, self.lines = key, lane, _admitted_lines(key.rpm, key.tpm)
        self.period, self.since, self.until = 0, math.inf, -math.inf

    def renew(self, now: float) -> None:
        """The period holding `now`, and the day it holds for (a month changes only with a day)."""
        key = self.key
        if key.budget is None or key.budget_period == "total":
            self.period, self.since, self.until = 0, -math.inf, math.inf
        else:
            self.period, self.since = period_id(key.budget_period, now), now // 86400 * 86400
            self.until = self.since + 86400


class Limiter:
    def __init__(self, counters: CounterStore, *, spend: SpendReader | None = None, held: HeldReader | None = None) -> None:
        self.counters = counters
        self.clock = time.time  # tests move it
        self.spend_reader, self.held_reader = spend, held
        self._fast: dict[str, _Fast] = {}  # by key name: what `admit_now` keeps of each key
        self._filling: dict[tuple[str, int], asyncio.Task[None]] = {}  # refills under way, one per key and period
        self.refused: Callable[[str], None] | None = None  # told each refusal's limit: requests | tokens | budget | channel

    async def admit(self, key: ClientKey, *, tokens: int, reserve: float, now: float | None = None) -> Ticket:
        """Admit one request of `key` (which has a limit), or raise its 429."""
        return self.admit_now(key, tokens, reserve, now) or await self.admit_waiting(key, tokens, reserve, now)

    async def admit_waiting(self, key: ClientKey, tokens: int, reserve: float, now: float | None = None) -> Ticket:
        """`admit` when `admit_now` answered None: the store's own coroutine (a Redis round trip)."""
        now = self.clock() if now is None else now
        period, reserve = _terms(key, now, reserve)
        grant = await self.counters.admit(
            key.name, now, rpm=key.rpm, tpm=key.tpm, tokens=tokens, budget=key.budget, period=period, reserve=reserve
        )
        if grant.limit is not None:
            grant = await self._refused(key, grant, tokens, reserve, period, now)
        return Ticket(key.name, grant.second, tokens, reserve, period, rate_lines(key, grant), grant.claim)

    def admit_now(self, key: ClientKey, tokens: int, reserve: float, now: float | None = None) -> Ticket | None:
        """`admit` as a plain call, when the store answers without waiting (CounterStore.admit_now): this
        machine's counters always, Redis's from a lease. None: await `admit_waiting`.

        Every limited request tries it first, so the common case is cheap (the limits, estimate and
        settle included, cost ~16k instructions a request under callgrind, docs/performance.md): on this
        machine's counters an admission is one call of the key's lane (gateway.billing.lane, in C when
        built), and its headers one formatting of two counts into lines made once per key (`_Fast`).
        The ticket carries the lane, which settles it."""
        now = self.clock() if now is None else now
        fast = self._fast.get(key.name)
        if fast is None or fast.key is not key:  # a key's first request, or a reload changed it
            fast = self._fast[key.name] = _Fast(key, self.counters.lane(key.name))
        if not fast.since <= now < fast.until:
            fast.renew(now)
        period = fast.period
        if key.budget is None:
            reserve = 0.0
        lane = fast.lane
        if lane is not None and (tokens or key.tpm is None):  # (no tokens: the tokens' reset is another)
            got = lane.admit(now, key.rpm, key.tpm, tokens, key.budget, period, reserve)
            if not isinstance(got, str):
                return Ticket(key.name, int(now), tokens, reserve, period, fast.lines % got, "", lane)
            # refused: the store's own call says by how much, for the 429's headers and Retry-After
        grant = self.counters.admit_now(key.name, now, key.rpm, key.tpm, tokens, key.budget, period, reserve)
        if grant is None:
            return None
        if grant.limit is not None:  # (never REFILL: only a shared store loses its spend, and says so in `admit`)
            raise self._refusal(key, grant, tokens, now)
        return Ticket(key.name, grant.second, tokens, reserve, period, rate_lines(key, grant), grant.claim)

    async def _refused(self, key: ClientKey, grant: Grant, tokens: int, reserve: float, period: int, now: float) -> Grant:
        """The grant of a request its store did not admit at once: admitted after refilling a shared
        store that lost the period's spend, or else its 429."""
        for _ in range(3):
            if grant.limit != REFILL:
                break
            await self.refill(key, period, now)
            grant = await self.counters.admit(
                key.name, now, rpm=key.rpm, tpm=key.tpm, tokens=tokens, budget=key.budget, period=period, reserve=reserve
            )
        else:  # flushed again after each refill
            raise GatewayError(503, "The gateway could not rebuild this key's spend; try again shortly.", headers={"Retry-After": "1"})
        if grant.limit is None:
            return grant
        raise self._refusal(key, grant, tokens, now)

    def settle(self, ticket: Ticket, tokens: int, cost: float | None) -> None:
        """Runs inline: a shared store queues it and writes it in the background."""
        lane = ticket.lane
        if lane is not None:
            lane.settle(ticket.second, tokens - ticket.tokens, ticket.reserve, cost or 0.0, ticket.period)
        else:
            self.counters.settle(
                ticket.name, ticket.second, tokens - ticket.tokens, ticket.reserve, cost or 0.0, ticket.period, ticket.claim
            )

    async def channel_wait(self, channel: Channel, tokens: int, now: float | None = None) -> float:
        """0 when the channel's own rpm/tpm let one more request through (it is then charged), else
        the seconds until they would."""
        now = self.clock() if now is None else now
        grant = await self.counters.channel_admit(channel.name, now, rpm=channel.rpm, tpm=channel.tpm, tokens=tokens)
        return grant.retry_after if grant.limit is not None else 0.0

    def hold(self, key: ClientKey, amount: float) -> None:
        """An async task's reservation against `key`'s budget, held until `release`. Not a coroutine: it
        follows a vendor's acceptance and must not fail; a shared store writes it in the background."""
        if amount:
            self.counters.hold(key.name, amount)

    def release(
        self,
        key: ClientKey,
        amount: float,
        cost: float | None,
        now: float | None = None,
    ) -> None:
        now = self.clock() if now is None else now
        self.counters.release(key.name, amount, cost or 0.0, period_id(key.budget_period, now))

    async def balance(self, key: ClientKey, now: float | None = None) -> Balance:
        now = self.clock() if now is None else now
        period = period_id(key.budget_period, now)
        s = await self.counters.standing(key.name, now, period)
        if not s.ready and key.budget is not None:
            await self.refill(key, period, now)
            s = await self.counters.standing(key.name, now, period)
        start, end = period_bounds(key.budget_period, now)
        return Balance(
            budget=key.budget,
            spent=round(s.spent, 8),
            reserved=round(s.reserved, 8),
            remaining=None if key.budget is None else round(max(key.budget - s.spent - s.reserved, 0.0), 8),
            period=key.budget_period,
            period_start=start,
            period_end=end,
            rpm=key.rpm,
            requests_used=int(s.requests),
            requests_left=None if key.rpm is None else max(key.rpm - int(s.requests), 0),
            requests_reset_s=round(s.requests_reset, 3),
            tpm=key.tpm,
            tokens_used=int(s.tokens),
            tokens_left=None if key.tpm is None else max(key.tpm - int(s.tokens), 0),
            tokens_reset_s=round(s.tokens_reset, 3),
        )

    async def refill(self, key: ClientKey, period: int, now: float) -> None:
        """Fill `key`'s spend in `period` from the database, once however many requests ask at once."""
        task = self._filling.get((key.name, period))
        if task is None:
            task = self._filling[(key.name, period)] = asyncio.get_running_loop().create_task(self._fill(key, period, now))
            task.add_done_callback(lambda _: self._filling.pop((key.name, period), None))
        try:
            await asyncio.shield(task)  # a waiter that leaves does not cancel the others' refill
        except GatewayError:
            raise
        except Exception as exc:
            log.error("budget_refill_failed", key_name=key.name, error=str(exc)[:300])
            raise GatewayError(
                503, "The gateway could not read this key's spend from its database; try again shortly.",
                headers={"Retry-After": "1"},
            ) from exc  # fmt: skip

    async def _fill(self, key: ClientKey, period: int, now: float) -> None:
        spent = await self.spend_reader(key, now) if self.spend_reader is not None else 0.0
        held = (await self.held_reader()).get(key.name, 0.0) if self.held_reader is not None else None
        await self.counters.set_budget(key.name, period, spent, held)
        log.info("budget_refilled", key_name=key.name, period=period, spent=round(spent, 6))

    async def aclose(self) -> None:
        for task in list(self._filling.values()):
            task.cancel()
        await self.counters.aclose()

    async def rebuild(
        self,
        config: Config,
        spent: dict[str, float],
        held: dict[str, float] | None,
        *,
        now: float | None = None,
        only: frozenset[str] | None = None,
    ) -> None:
        """Spend as the database has it (`spent`: each key's cost in its current period) and the
        reservations of unfinished async tasks (`held`; None: keep what is held): at start, before
        anything is admitted, and for a key a reload changed."""
        now = self.clock() if now is None else now
        for key in config.keys:
            if only is not None and key.name not in only:
                continue
            await self.counters.set_budget(
                key.name,
                period_id(key.budget_period, now),
                spent.get(key.name, 0.0),
                None if held is None else held.get(key.name, 0.0),
            )

    def _refusal(self, key: ClientKey, grant: Grant, tokens: int, now: float) -> GatewayError:
        """The 429 of a request `grant` refused (told to `refused`, the metrics' count)."""
        assert grant.limit is not None
        if self.refused is not None:
            self.refused(grant.limit)
        headers = lines_dict(rate_lines(key, grant))
        if grant.limit == "budget":
            _, end = period_bounds(key.budget_period, now)
            when = f"; it renews at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(end))}" if end else ""
            headers = {**headers, "x-should-retry": "false"}
            if end:
                headers["Retry-After"] = str(math.ceil(end - now))
            return GatewayError(
                429,
                f"Key {key.name!r} has used its budget of {key.budget:g} ({_period_text(key.budget_period)}){when}. "
                "Ask the gateway's operator for a larger budget.",
                type="insufficient_quota", code="insufficient_quota", headers=headers,
            )  # fmt: skip
        limit, unit, used, asked = (
            (key.rpm, "requests per min (RPM)", grant.requests_left, 1)
            if grant.limit == "requests"
            else (key.tpm, "tokens per min (TPM)", grant.tokens_left, tokens)
        )
        assert limit is not None and used is not None
        if math.isinf(grant.retry_after):
            return GatewayError(
                429,
                f"Request too large for key {key.name!r} on {unit}: Limit {limit}, Requested {asked}. "
                "Send a smaller request (or a lower max_tokens), or ask for a higher tpm.",
                type="tokens", code="rate_limit_exceeded", headers={**headers, "x-should-retry": "false"},
            )  # fmt: skip
        wait = grant.retry_after
        return GatewayError(
            429,
            f"Rate limit reached for key {key.name!r} on {unit}: Limit {limit}, Used {limit - int(used)}, "
            f"Requested {asked}. Please try again in {_duration(wait)}.",
            type=grant.limit, code="rate_limit_exceeded",
            headers={**headers, "Retry-After": str(max(math.ceil(wait), 1)), "retry-after-ms": str(math.ceil(wait * 1000))},
        )  # fmt: skip


def _terms(key: ClientKey, now: float, reserve: float) -> tuple[int, float]:
    """The budget period an admission at `now` charges, and its reservation (none without a budget)."""
    if key.budget is None:
        return 0, 0.0
    return period_id(key.budget_period, now), reserve


def channels_busy(model: str, wait: float) -> GatewayError:
    """Every candidate channel is at its own rpm/tpm."""
    return GatewayError(
        429,
        f"Every channel serving model {model!r} is at its rate limit; please try again in {_duration(wait)}.",
        type="requests", code="rate_limit_exceeded",
        headers={"Retry-After": str(max(math.ceil(wait), 1)), "retry-after-ms": str(math.ceil(wait * 1000))},
    )  # fmt: skip


def rate_lines(key: ClientKey, grant: Grant) -> bytes:
    """OpenAI's x-ratelimit-* headers for the limits `key` has, as the header lines of an HTTP/1.1
    answer ("name: value" CRLF each; the values are numbers and durations). Every answer to a limited
    key carries them, so they are made in one piece: six headers set and serialized one by one cost
    as much as the rest of the limits (measured, docs/performance.md)."""
    rpm, tpm, requests_left, tokens_left = key.rpm, key.tpm, grant.requests_left, grant.tokens_left
    if rpm is not None and requests_left is not None:
        if tpm is not None and tokens_left is not None:
            if grant.tokens_reset == grant.requests_reset and 60 < grant.requests_reset <= 61:
                # An admitted request's (see `_reset`): only its two counts change from one request to
                # the next, the rest is formatted once per pair of limits.
                return _admitted_lines(rpm, tpm) % (requests_left, tokens_left)
            reset = _reset(grant.requests_reset)
            # Windows that empty in the same second (a refused request's often do): one text for both.
            tokens_reset = reset if grant.tokens_reset == grant.requests_reset else _reset(grant.tokens_reset)
            return _BOTH % (rpm, requests_left, reset, tpm, tokens_left, tokens_reset)
        return _REQUESTS % (rpm, requests_left, _reset(grant.requests_reset))
    if tpm is not None and tokens_left is not None:
        return _TOKENS % (tpm, tokens_left, _reset(grant.tokens_reset))
    return b""


_REQUESTS = b"x-ratelimit-limit-requests: %d\r\nx-ratelimit-remaining-requests: %d\r\nx-ratelimit-reset-requests: %s\r\n"
_TOKENS = b"x-ratelimit-limit-tokens: %d\r\nx-ratelimit-remaining-tokens: %d\r\nx-ratelimit-reset-tokens: %s\r\n"
_BOTH = _REQUESTS + _TOKENS


def _admitted_lines(rpm: int | None, tpm: int | None) -> bytes:
    """The x-ratelimit-* lines of a request admitted under `rpm` and `tpm` (either may be None): resets of
    1m1s, the counts left to fill in (`%d`: requests, then tokens, of the limits there are)."""
    lines = _admitted.get((rpm, tpm))
    if lines is not None:
        return lines
    lines = b""
    if rpm is not None:
        lines += b"x-ratelimit-limit-requests: %d\r\nx-ratelimit-remaining-requests: %%d\r\nx-ratelimit-reset-requests: 1m1s\r\n" % rpm
    if tpm is not None:
        lines += b"x-ratelimit-limit-tokens: %d\r\nx-ratelimit-remaining-tokens: %%d\r\nx-ratelimit-reset-tokens: 1m1s\r\n" % tpm
    if len(_admitted) < 1000:  # pairs of limits come from the config: a few
        _admitted[(rpm, tpm)] = lines
    return lines


_admitted: dict[tuple[int | None, int | None], bytes] = {}


def _reset(seconds: float) -> bytes:
    """`_duration` for a header, each text made once. Every admitted request's reset is the rest of its
    minute, over 60 s and at most 61 s: 1m1s, whatever the milliseconds; a refused one's is under 62 s."""
    if 60 < seconds <= 61:
        return b"1m1s"
    ms = math.ceil(seconds * 1000)
    text = _resets.get(ms)
    if text is None:
        text = _ms_text(ms).encode()
        if len(_resets) < 100_000:
            _resets[ms] = text
    return text


_resets: dict[int, bytes] = {}


def _duration(seconds: float) -> str:
    """As OpenAI writes them: 120ms, 1.5s, 6m0s."""
    return _ms_text(math.ceil(seconds * 1000))


def _ms_text(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:g}s"
    minutes, rest = divmod(-(-ms // 1000), 60)
    return f"{minutes}m{rest}s"


def _period_text(kind: str) -> str:
    return {"daily": "per day, UTC", "monthly": "per calendar month, UTC"}.get(kind, "in total")
