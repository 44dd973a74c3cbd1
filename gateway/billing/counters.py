"""The counters behind rate limits and budgets, shared by every worker process of one gateway.

`LocalCounters` keeps them in a small file mapped into memory (`data/gateway.counters` beside the
database), so `workers: N` processes share one set of counters and N processes cannot grant N times a
rate. Every change runs under an exclusive POSIX record lock on that file (`lockf`: per process, so
forked workers exclude each other). The file is made afresh when the gateway starts (spend is rebuilt
from the database then); a worker that dies and is restarted attaches to it again and drops the
reservations it held. A reload changes nothing here: counters are keyed by name, not by config.

Each name (a client key, or `channel:<name>`) has a slot: its rpm and tpm windows
(gateway.billing.window), and its budget: the period the spend belongs to, the spend, what async tasks
hold, and what each worker's requests in flight have reserved.

`LocalStore` (gateway.billing.store) puts these calls behind the `CounterStore` interface that the Redis
store for several machines (gateway.billing.redis_counters) implements too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.billing import window

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


def slot_hash(name: str) -> float:
    """A name's 52-bit hash as a double (exact), never 0 (an empty slot)."""
    return float(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 12 | 1)


class LocalCounters:
    def __init__(self, path: Path, fd: int, mm: mmap.mmap, worker: int, *, shared: bool = True) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self._w = memoryview(mm).cast("d")
        self._worker = worker % MAX_WORKERS
        self._slots: dict[str, int] = {}
        # `with self._locked:` holds the file's lock; a process alone on the file (`workers: 1`) needs none,
        # and saves two system calls per call (a third of what a limited request's limits cost).
        self._locked: contextlib.AbstractContextManager[None] = _Locked(fd) if shared else contextlib.nullcontext()

    @classmethod
    def create(cls, path: str | Path, *, worker: int = 0, capacity: int = CAPACITY, shared: bool = True) -> LocalCounters:
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
        return cls.attach(path, worker=worker, shared=shared)

    @classmethod
    def attach(cls, path: str | Path, *, worker: int = 0, shared: bool = True) -> LocalCounters:
        """Map a file `create` made (a worker attaching to the parent's), dropping what worker
        `worker` reserved in an earlier life. `shared`: other processes use the file too (lock it)."""
        path = Path(path)
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        counters = cls(path, fd, mm, worker, shared=shared)
        if int(counters._w[0]) != MAGIC:
            counters.close()
            raise ValueError(f"{path} is not a counters file")
        counters.clear_worker()
        return counters

    def close(self) -> None:
        self._w.release()
        self._mm.close()
        os.close(self._fd)

    # -- the calls ------------------------------------------------------------------------------

    def admit(
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
        w, now_s = self._w, int(now)
        with self._locked:
            at = self._slot(name)
            grant = Grant(None, second=now_s)
            if budget is not None and self._spent(at, period) + self._reserved(at) >= budget:
                grant.limit = "budget"
            # Each wait() moves its window to now: what follows reads and adds without moving it again.
            wait_requests = window.wait(w, at + _RPM, now, 1, rpm) if rpm is not None else 0.0
            wait_tokens = window.wait(w, at + _TPM, now, tokens, tpm) if tpm is not None else 0.0
            if wait_requests > 0 or wait_tokens > 0:
                grant.retry_after = max(wait_requests, wait_tokens)
                grant.limit = grant.limit or ("requests" if wait_requests >= wait_tokens else "tokens")
            admitted = grant.limit is None
            if admitted:
                if rpm is not None:
                    window.put(w, at + _RPM, now_s, 1)
                if tpm is not None and tokens:
                    window.put(w, at + _TPM, now_s, tokens)
                if budget is not None and reserve:
                    w[at + _RESERVED + self._worker] += reserve
                    w[at + _RESERVED_SUM] += reserve
            # An admitted request's own second is the newest in the window: it empties when that one leaves.
            full_reset = window.SECONDS - (now - now_s)
            if rpm is not None:
                grant.requests_left = max(rpm - window.used_now(w, at + _RPM), 0.0)
                grant.requests_reset = full_reset if admitted else window.reset_in(w, at + _RPM, now)
            if tpm is not None:
                grant.tokens_left = max(tpm - window.used_now(w, at + _TPM), 0.0)
                grant.tokens_reset = full_reset if admitted and tokens else window.reset_in(w, at + _TPM, now)
            return grant

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
    ) -> None:
        """A request admitted at `second` finished: its token estimate corrected by `tokens`, its
        reservation released and its cost spent."""
        w = self._w
        with self._locked:
            at = self._slot(name)
            if tokens:
                window.correct(w, at + _TPM, second, int(now), tokens)
            if reserve or cost:
                i = at + _RESERVED + self._worker
                released = min(reserve, w[i])
                w[i] -= released
                w[at + _RESERVED_SUM] = max(w[at + _RESERVED_SUM] - released, 0.0)
                self._spent(at, period)
                w[at + _SPENT] += cost

    def hold(self, name: str, amount: float) -> None:
        """An async task's reservation, until `release` (it outlives requests and workers)."""
        with self._locked:
            self._w[self._slot(name) + _HELD] += amount

    def release(self, name: str, amount: float, cost: float, period: int) -> None:
        with self._locked:
            at = self._slot(name)
            self._w[at + _HELD] = max(self._w[at + _HELD] - amount, 0.0)
            self._spent(at, period)
            self._w[at + _SPENT] += cost

    def set_budget(self, name: str, period: int, spent: float, held: float | None = None) -> None:
        """Spend (and task holds) as the database has them: at start, and when a key's period changes."""
        with self._locked:
            at = self._slot(name)
            self._w[at + _PERIOD], self._w[at + _SPENT] = float(period), spent
            if held is not None:
                self._w[at + _HELD] = held

    def standing(self, name: str, now: float, period: int) -> Standing:
        w = self._w
        with self._locked:
            at = self._slot(name)
            return Standing(
                requests=window.used(w, at + _RPM, now),
                requests_reset=window.reset_in(w, at + _RPM, now),
                tokens=window.used(w, at + _TPM, now),
                tokens_reset=window.reset_in(w, at + _TPM, now),
                spent=self._spent(at, period),
                reserved=self._reserved(at),
            )

    def clear_worker(self) -> None:
        """Drop every reservation this worker index holds: its requests in flight died with it."""
        w, col = self._w, _RESERVED + self._worker
        with self._locked:
            for at in range(_HEADER + col, len(w), SLOT):
                if w[at]:
                    w[at - col + _RESERVED_SUM] = max(w[at - col + _RESERVED_SUM] - w[at], 0.0)
                    w[at] = 0.0

    # -- inside the lock ------------------------------------------------------------------------

    def _slot(self, name: str) -> int:
        at = self._slots.get(name)
        if at is not None:
            return at
        h, w = slot_hash(name), self._w
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
        self._slots[name] = at
        return at

    def _spent(self, at: int, period: int) -> float:
        """The spend in `period`; a slot still on an earlier period starts the new one at zero."""
        w = self._w
        if w[at + _PERIOD] != period:
            w[at + _PERIOD], w[at + _SPENT] = float(period), 0.0
        return w[at + _SPENT]

    def _reserved(self, at: int) -> float:
        return self._w[at + _HELD] + self._w[at + _RESERVED_SUM]


class _Locked:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
