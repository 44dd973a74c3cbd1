"""The counters behind rate limits and budgets on one machine.

A gateway of one process keeps them in its own memory (`LocalCounters.memory`). With `workers: N`,
`LocalCounters` keeps them in a small file mapped into memory (`data/gateway.counters` beside the
database), so the N processes share one set of counters and cannot grant N times a rate. Every change runs under an exclusive POSIX record lock on that file (`lockf`: per process, so
forked workers exclude each other). The file is made afresh when the gateway starts (spend is rebuilt
from the database then); a worker that dies and is restarted attaches to it again and drops the
reservations it held. A reload changes nothing here: counters are keyed by name, not by config.

Each name (a client key, or `channel:<name>`) has a slot: its rpm and tpm windows
(gateway.billing.window), and its budget: the period the spend belongs to, the spend, what async tasks
hold, and what each worker's requests in flight have reserved.

`LocalCounters` is a `CounterStore` (gateway.billing.store), the interface that the Redis store for
several machines (gateway.billing.redis_counters) implements too. Its calls never wait: the coroutines
answer without suspending. A client key's requests are admitted through its `lane`: the one check and
charge (`_admit`) bound to the key's slot, which `admit_now` runs too.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from functools import partial
from pathlib import Path

from gateway.billing import window
from gateway.billing.store import Grant, Lane, Standing

MAGIC = 0x67776331  # "gwc1"
MAX_WORKERS = 64
CAPACITY = 4096  # names (keys and channels) one file holds
_HEADER = 8  # doubles: magic, capacity, ...
_HASH = 0
_RPM = 1
_TPM = _RPM + window.SIZE
_PERIOD = _TPM + window.SIZE
_SPENT = _PERIOD + 1
_HELD = _SPENT + 1
_RESERVED_SUM = _HELD + 1  # the workers' reservations below, summed
_RESERVED = _RESERVED_SUM + 1
SLOT = _RESERVED + MAX_WORKERS
# What admit reads and writes on every request, spelled out (window.NEWEST is each window's first double).
_SECONDS = window.SECONDS
_RPM_TOTAL, _RPM_FIRST = _RPM + window.TOTAL, _RPM + window.FIRST
_TPM_TOTAL, _TPM_FIRST = _TPM + window.TOTAL, _TPM + window.FIRST


def slot_hash(name: str) -> float:
    """A name's 52-bit hash as a double (exact), never 0 (an empty slot)."""
    return float(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 12 | 1)


class LocalCounters:
    """The counters of one machine: in the file `create` makes, mapped by every worker (`workers: N`),
    or, for a process alone (`memory`), in lists of its own (no file, no lock: a list reads and writes
    faster than a memoryview of doubles, and these calls run on every limited request).

    Each name's slot is a sequence of its own, indexed from 0 (a list, or a view of its part of the
    file), so the calls index it with the layout's constants and nothing else."""

    def __init__(self, w: memoryview[float] | None = None, *, worker: int = 0, path: Path | None = None, fd: int = -1,
                 mm: mmap.mmap | None = None) -> None:  # fmt: skip
        self.path = path
        self._w, self._fd, self._mm = w, fd, mm
        # This worker's column of reservations in the file (0 in memory: there the sum is all there is).
        self._column = _RESERVED + worker % MAX_WORKERS if w is not None else 0
        self._slots: dict[str, window.Doubles] = {}
        # The file's lock (-1: none, in memory), held by `with self._locked:`, and taken by hand in admit
        # and settle, the calls of every request.
        self._lock_fd = fd
        self._locked = _Locked(fd)

    @classmethod
    def memory(cls) -> LocalCounters:
        """Counters for a process alone (`workers: 1`): they start empty, as a fresh file does."""
        return cls()

    @classmethod
    def create(cls, path: str | Path, *, worker: int = 0, capacity: int = CAPACITY) -> LocalCounters:
        """A fresh file (any old one is replaced): done once, when the gateway starts."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        size = (_HEADER + capacity * SLOT) * 8
        with open(tmp, "wb") as f:
            f.truncate(size)  # sparse: pages of unused slots cost nothing
            header = memoryview(bytearray(_HEADER * 8)).cast("d")
            header[0], header[1] = float(MAGIC), float(capacity)
            f.write(header.tobytes())
        os.replace(tmp, path)
        return cls.attach(path, worker=worker)

    @classmethod
    def attach(cls, path: str | Path, *, worker: int = 0) -> LocalCounters:
        """Map a file `create` made (a worker attaching to the parent's), dropping what worker
        `worker` reserved in an earlier life."""
        path = Path(path)
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        counters = cls(memoryview(mm).cast("d"), worker=worker, path=path, fd=fd, mm=mm)
        assert counters._w is not None
        if int(counters._w[0]) != MAGIC:
            counters.close()
            raise ValueError(f"{path} is not a counters file")
        counters.clear_worker()
        return counters

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._w is not None:
            for s in self._slots.values():
                if isinstance(s, memoryview):
                    s.release()
            self._w.release()
        self._slots.clear()
        if self._mm is not None:
            self._mm.close()
            os.close(self._fd)

    # -- the calls ------------------------------------------------------------------------------

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
        """Check every limit of one request and, when all allow it, charge them all at once."""
        return self.admit_now(name, now, rpm, tpm, tokens, budget, period, reserve)

    def admit_now(
        self, name: str, now: float, rpm: int | None, tpm: int | None, tokens: float, budget: float | None,
        period: int, reserve: float,
    ) -> Grant:  # fmt: skip
        """`admit` as the plain call it is (these counters never wait), with its arguments in order: the
        limiter's way (Limiter.admit_now) when it has no lane for the name (`lane`)."""
        with self._locked:
            s = self._slots.get(name) or self._slot(name)
            got = _admit(s, self._column, now, rpm, tpm, tokens, budget, period, reserve)
            if isinstance(got, str):
                return _refused(s, got, now, tokens, rpm, tpm)
            # An admitted request's own second is the newest in its windows: they empty when it leaves.
            reset = _SECONDS - (now - int(now))
            tokens_reset = window.reset_in(s, _TPM, now) if tpm is not None and not tokens else reset
            requests_left = got[0] if rpm is not None else None
            tokens_left = got[-1] if tpm is not None else None
            return Grant(None, 0.0, requests_left, reset, tokens_left, tokens_reset, int(now))

    def lane(self, name: str) -> Lane:
        """`name`'s own admission: `_admit` bound to its slot (and to the file's lock), for the limiter
        to call with a request's terms. Every limited request passes there, so it costs no more than the
        check and the charge: no name to look up, no Grant, only the counts its answer's headers need."""
        with self._locked:
            s = self._slot(name)
        if self._lock_fd < 0:
            return partial(_admit, s, self._column)
        return partial(_admit_locked, self._lock_fd, s, self._column)

    async def channel_admit(self, name: str, now: float, *, rpm: int | None, tpm: int | None, tokens: float) -> Grant:
        return self.admit_now(f"channel:{name}", now, rpm, tpm, tokens, None, 0, 0.0)

    def settle(
        self,
        name: str,
        second: int,
        tokens: float = 0.0,
        reserve: float = 0.0,
        cost: float = 0.0,
        period: int = 0,
        claim: str = "",  # (a Redis store's; these counters need none)
    ) -> None:
        """A request admitted at `second` finished: its token estimate corrected by `tokens`, its
        reservation released and its cost spent."""
        fd = self._lock_fd
        if fd >= 0:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            s = self._slots.get(name) or self._slot(name)
            if tokens:
                if s[_TPM] == second:  # window.correct, written out for a request that ended in its own second
                    i = _TPM_FIRST + second % _SECONDS
                    left = s[i] + tokens
                    if left < 0:  # an estimate is never taken back below zero
                        tokens, left = tokens - left, 0
                    s[i] = left
                    left = s[_TPM_TOTAL] + tokens
                    s[_TPM_TOTAL] = left if left > 0 else 0
                else:
                    window.correct(s, _TPM, second, tokens)
            if reserve:
                column = self._column
                if column:  # this worker's own (in the file), so a restarted worker can drop what it held
                    held = s[column]
                    reserve = reserve if reserve < held else held
                    s[column] = held - reserve
                left = s[_RESERVED_SUM] - reserve
                s[_RESERVED_SUM] = left if left > 0 else 0.0
            if cost:
                if s[_PERIOD] != period:
                    s[_PERIOD], s[_SPENT] = period, cost
                else:
                    s[_SPENT] += cost
        finally:
            if fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN)

    def hold(self, name: str, amount: float) -> None:
        """An async task's reservation, until `release` (it outlives requests and workers)."""
        with self._locked:
            self._slot(name)[_HELD] += amount

    def release(self, name: str, amount: float, cost: float, period: int) -> None:
        with self._locked:
            s = self._slot(name)
            s[_HELD] = max(s[_HELD] - amount, 0.0)
            _spent(s, period)
            s[_SPENT] += cost

    async def set_budget(self, name: str, period: int, spent: float, held: float | None = None) -> None:
        """Spend (and task holds) as the database has them: at start, and when a key's period changes."""
        with self._locked:
            s = self._slot(name)
            s[_PERIOD], s[_SPENT] = period, spent
            if held is not None:
                s[_HELD] = held

    async def standing(self, name: str, now: float, period: int) -> Standing:
        with self._locked:
            s = self._slot(name)
            return Standing(
                requests=window.used(s, _RPM, now),
                requests_reset=window.reset_in(s, _RPM, now),
                tokens=window.used(s, _TPM, now),
                tokens_reset=window.reset_in(s, _TPM, now),
                spent=_spent(s, period),
                reserved=s[_HELD] + s[_RESERVED_SUM],
            )

    def clear_worker(self) -> None:
        """Drop every reservation this worker index holds in the file: its requests in flight died with it."""
        w, col = self._w, self._column
        if w is None:
            return
        with self._locked:
            for at in range(_HEADER + col, len(w), SLOT):
                if w[at]:
                    w[at - col + _RESERVED_SUM] = max(w[at - col + _RESERVED_SUM] - w[at], 0.0)
                    w[at] = 0.0

    def _slot(self, name: str) -> window.Doubles:
        """`name`'s slot: found (or claimed) in the file by its hash, or made in memory. Inside the lock."""
        s = self._slots.get(name)
        if s is not None:
            return s
        w = self._w
        if w is None:
            s = self._slots[name] = [0] * SLOT  # ints while they count requests and tokens: int arithmetic is cheaper
            return s
        h = slot_hash(name)
        capacity = int(w[1])
        i = int(h) % capacity
        for _ in range(capacity):
            at = _HEADER + i * SLOT
            if w[at + _HASH] == h:
                break
            if w[at + _HASH] == 0.0:
                w[at + _HASH] = h
                break
            i = (i + 1) % capacity
        else:
            raise RuntimeError(f"{self.path}: more than {capacity} limited keys and channels")
        s = self._slots[name] = w[at : at + SLOT]
        return s


def _admit(
    s: window.Doubles, column: int, now: float, rpm: int | None, tpm: int | None, tokens: float, budget: float | None,
    period: int, reserve: float,
) -> str | tuple[float, ...]:  # fmt: skip
    """Check every limit of one request on its slot `s` and, when all allow it, charge them all at once:
    the counts left (`Lane`), else the limit that refuses it (requests | tokens | budget; nothing charged).
    Inside the lock. Every limited request passes here, so it is written out: windows that are behind
    move to this second (gateway.billing.window), and the indexes are the layout's constants."""
    now_s = int(now)
    limit = ""
    if budget is not None:
        if s[_PERIOD] != period:  # a new period starts at zero
            s[_PERIOD], s[_SPENT] = period, 0.0
        if s[_SPENT] + s[_HELD] + s[_RESERVED_SUM] >= budget:
            limit = "budget"
    if rpm is not None:
        if s[_RPM] < now_s:
            window.advance(s, _RPM, now_s)
        if s[_RPM_TOTAL] >= rpm:
            limit = limit or "requests"
    if tpm is not None:
        if s[_TPM] < now_s:
            window.advance(s, _TPM, now_s)
        if s[_TPM_TOTAL] + tokens > tpm:
            limit = limit or "tokens"
    if limit:
        return limit
    if reserve and budget is not None:
        s[_RESERVED_SUM] += reserve
        if column:  # this worker's own (in the file), so a restarted worker can drop what it held
            s[column] += reserve
    bucket = now_s % _SECONDS
    if tpm is not None:
        if tokens:
            s[_TPM_FIRST + bucket] += tokens
            s[_TPM_TOTAL] = tokens_used = s[_TPM_TOTAL] + tokens
        else:
            tokens_used = s[_TPM_TOTAL]
        if rpm is None:
            return (tpm - tokens_used,)
    if rpm is not None:
        s[_RPM_FIRST + bucket] += 1
        s[_RPM_TOTAL] = requests_used = s[_RPM_TOTAL] + 1
        return (rpm - requests_used, tpm - tokens_used) if tpm is not None else (rpm - requests_used,)
    return ()


def _admit_locked(
    fd: int, s: window.Doubles, column: int, now: float, rpm: int | None, tpm: int | None, tokens: float,
    budget: float | None, period: int, reserve: float,
) -> str | tuple[float, ...]:  # fmt: skip
    """`_admit` under the counters file's lock (`workers: N`)."""
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        return _admit(s, column, now, rpm, tpm, tokens, budget, period, reserve)
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


def _refused(s: window.Doubles, limit: str, now: float, tokens: float, rpm: int | None, tpm: int | None) -> Grant:
    """The Grant of a request some limit refused (inside the lock): how long until it would fit."""
    wait_requests = window.wait(s, _RPM, now, 1, rpm) if rpm is not None else 0.0
    wait_tokens = window.wait(s, _TPM, now, tokens, tpm) if tpm is not None else 0.0
    grant = Grant(limit, retry_after=max(wait_requests, wait_tokens), second=int(now))
    if limit != "budget":  # the one that must wait longest names the refusal
        grant.limit = "requests" if wait_requests >= wait_tokens else "tokens"
    if rpm is not None:
        grant.requests_left = max(rpm - window.used_now(s, _RPM), 0.0)
        grant.requests_reset = window.reset_in(s, _RPM, now)
    if tpm is not None:
        grant.tokens_left = max(tpm - window.used_now(s, _TPM), 0.0)
        grant.tokens_reset = window.reset_in(s, _TPM, now)
    return grant


def _spent(s: window.Doubles, period: int) -> float:
    """The spend in `period`; a slot still on an earlier period starts the new one at zero."""
    if s[_PERIOD] != period:
        s[_PERIOD], s[_SPENT] = period, 0.0
    return s[_SPENT]


class _Locked:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        if self._fd >= 0:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
