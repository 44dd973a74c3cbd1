"""The counters behind rate limits and budgets on one machine.

A gateway of one process keeps them in its own memory (`LocalCounters.memory`). With `workers: N`,
`LocalCounters` keeps them in a small file mapped into memory (`data/gateway.counters` beside the
database), so the N processes share one set of counters and cannot grant N times a rate. Every change
runs under an exclusive POSIX record lock on that file (`lockf`: per process, so forked workers exclude
each other). The file is made afresh when the gateway starts (spend is rebuilt from the database then);
a worker that dies and is restarted attaches to it again and drops the reservations it held. A reload
changes nothing here: counters are keyed by name, not by config.

Each name (a client key, or `channel:<name>`) has a slot: its rpm and tpm windows
(gateway.billing.window), and its budget: the period the spend belongs to, the spend, what async tasks
hold, and what each worker's requests in flight have reserved.

`LocalCounters` is a `CounterStore` (gateway.billing.store), the interface that the Redis store for
several machines (gateway.billing.redis_counters) implements too. Its calls never wait: the coroutines
answer without suspending. Each name's admission and settle are its `lane` (gateway.billing.lane): the
one check and charge, and the settle, bound to its slot; in C when that was built at install.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from pathlib import Path

from gateway.billing import window
from gateway.billing.lane import LANE, Lane, LaneType, Layout, PyLane
from gateway.billing.store import Grant, Standing

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
_SECONDS = window.SECONDS
LAYOUT = Layout(_RPM, _TPM, _PERIOD, _SPENT, _HELD, _RESERVED_SUM, _SECONDS)  # what a lane needs to know of it


def slot_hash(name: str) -> float:
    """A name's 52-bit hash as a double (exact), never 0 (an empty slot)."""
    return float(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 12 | 1)


class LocalCounters:
    """The counters of one machine: in the file `create` makes, mapped by every worker (`workers: N`),
    or, for a process alone (`memory`), in slots of its own (no file, no lock).

    Each name's slot is a sequence of its own, indexed from 0 (a buffer of doubles, a list for Python's
    lanes, or a view of its part of the file), so the calls index it with the layout's constants."""

    def __init__(self, w: memoryview[float] | None = None, *, worker: int = 0, path: Path | None = None, fd: int = -1,
                 mm: mmap.mmap | None = None, lane: LaneType = LANE) -> None:  # fmt: skip
        self.path = path
        self._w, self._fd, self._mm = w, fd, mm
        # This worker's column of reservations in the file (0 in memory: there the sum is all there is).
        self._column = _RESERVED + worker % MAX_WORKERS if w is not None else 0
        self._slots: dict[str, window.Doubles] = {}
        self._lanes: dict[str, Lane] = {}  # the names' lanes (made as asked for), in C when it was built
        self._lane_type = lane
        # The file's lock (-1: none, in memory), held by `with self._locked:`; a lane takes it itself.
        self._lock_fd = fd
        self._locked = _Locked(fd)

    @classmethod
    def memory(cls, *, lane: LaneType = LANE) -> LocalCounters:
        """Counters for a process alone (`workers: 1`): they start empty, as a fresh file does."""
        return cls(lane=lane)

    @classmethod
    def create(cls, path: str | Path, *, worker: int = 0, capacity: int = CAPACITY, lane: LaneType = LANE) -> LocalCounters:
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
        return cls.attach(path, worker=worker, lane=lane)

    @classmethod
    def attach(cls, path: str | Path, *, worker: int = 0, lane: LaneType = LANE) -> LocalCounters:
        """Map a file `create` made (a worker attaching to the parent's), dropping what worker
        `worker` reserved in an earlier life."""
        path = Path(path)
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        counters = cls(memoryview(mm).cast("d"), worker=worker, path=path, fd=fd, mm=mm, lane=lane)
        assert counters._w is not None
        if int(counters._w[0]) != MAGIC:
            counters.close()
            raise ValueError(f"{path} is not a counters file")
        counters.clear_worker()
        return counters

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()
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
        limiter's way (Limiter.admit_now) when it has no lane for the name (`lane`), and for refusals."""
        got = self.lane(name).admit(now, rpm, tpm, tokens, budget, period, reserve)
        if isinstance(got, str):
            with self._locked:
                return _refused(self._slots[name], got, now, tokens, rpm, tpm)
        # An admitted request's own second is the newest in its windows: they empty when it leaves.
        tokens_reset = reset = _SECONDS - (now - int(now))
        if tpm is not None and not tokens:  # (the file's lock again only when the tokens' window is read)
            with self._locked:
                tokens_reset = window.reset_in(self._slots[name], _TPM, now)
        requests_left = got[0] if rpm is not None else None
        tokens_left = got[-1] if tpm is not None else None
        return Grant(None, 0.0, requests_left, reset, tokens_left, tokens_reset, int(now))

    def lane(self, name: str) -> Lane:
        """`name`'s own admission and settle, bound to its slot (and to the file's lock): the limiter's
        way for every request of a key, so it costs no more than the check and the charge (no name to
        look up, no Grant, only the counts its answer's headers need)."""
        lane = self._lanes.get(name)
        if lane is None:
            with self._locked:
                s = self._slot(name)
            lane = self._lanes[name] = self._lane_type(s, self._column, self._lock_fd, LAYOUT)
        return lane

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
        reservation released and its cost spent (the limiter settles its tickets on their lane)."""
        self.lane(name).settle(second, tokens, reserve, cost, period)

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
            # A lane in C takes doubles; Python's own lanes run faster on a list (of ints while they count).
            s = self._slots[name] = [0] * SLOT if self._lane_type is PyLane else memoryview(bytearray(SLOT * 8)).cast("d")
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
