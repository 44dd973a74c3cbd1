"""Health of each channel key: consecutive failures, cooldown, and the single probe after it.

State is keyed by channel name and key, so it survives a SIGHUP reload for the keys that stay.

With several replicas (`state.redis`) a cooldown is also published (`on_cooldown`, set by
gateway.relay.shared_health), and the cooldowns other replicas published come back through
`cool_shared`, so one replica's dead key spares the others; the per-request path reads nothing remote.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from config import Channel, Routing

log = structlog.get_logger("gateway.health")

# Why an attempt failed, in a few words fit for a metric label (gateway.ops.metrics).
REASONS = ("timeout", "connect", "status_5xx", "status_429", "status_401_403", "status_4xx", "malformed", "stream", "other")


@dataclass(slots=True)
class _KeyState:
    failures: int = 0
    cool_until: float = 0.0
    probing: bool = False  # a request is testing the key after its cooldown
    failed: int = 0  # failures since start, for /admin/status (`failures` is the consecutive ones)
    last_reason: str = ""  # one of REASONS
    last_error: str = ""  # the failure's message (masked: it is what the client would be told)
    last_failure_at: float = 0.0  # clock time
    shared_mark: float = 0.0  # the latest cooldown taken from another replica (so each is taken once)


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """One channel key as /admin/status shows it: its id, never the key."""

    key_id: str
    usable: bool
    cooldown_s: float  # left; 0 when usable
    probing: bool
    failures: int  # consecutive
    failed: int  # since start
    last_reason: str
    last_error: str
    last_failure_s_ago: float | None


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._state: dict[tuple[str, str], _KeyState] = {}
        self._turn: dict[str, int] = {}
        self._clock = clock
        # Told of each cooldown this process starts: (channel, key, seconds). Set with `state.redis`.
        self.on_cooldown: Callable[[Channel, str, float], None] | None = None

    def _get(self, channel: str, key: str) -> _KeyState:
        st = self._state.get((channel, key))
        if st is None:
            st = self._state[(channel, key)] = _KeyState()
        return st

    def _usable(self, st: _KeyState, now: float) -> bool:
        return st.cool_until <= now and not st.probing

    def cooling(self, channel: Channel) -> bool:
        """True when every key of the channel is cooling down (or already being probed)."""
        now = self._clock()
        keys = channel.api_keys or ("",)
        return not any(self._usable(self._get(channel.name, k), now) for k in keys)

    def pick_key(self, channel: Channel) -> str:
        """The channel's next key in turn, skipping cooling keys; if all cool, the one cooling least long."""
        keys = channel.api_keys or ("",)
        start = self._turn.get(channel.name, 0)
        self._turn[channel.name] = start + 1
        now = self._clock()
        for i in range(len(keys)):
            key = keys[(start + i) % len(keys)]
            st = self._get(channel.name, key)
            if self._usable(st, now):
                if st.cool_until:  # cooldown over: this request is the probe
                    st.probing = True
                    log.info("channel_key_probe", channel=channel.name, key_id=key_id(key))
                return key
        return min(keys, key=lambda k: self._get(channel.name, k).cool_until)

    def status(self, channel: Channel) -> list[KeyStatus]:
        """Each of the channel's keys, for /admin/status and the cooldown gauges."""
        now = self._clock()
        out = []
        for key in channel.api_keys or ("",):
            st = self._state.get((channel.name, key)) or _KeyState()
            out.append(KeyStatus(
                key_id=key_id(key), usable=self._usable(st, now), cooldown_s=max(0.0, st.cool_until - now),
                probing=st.probing, failures=st.failures, failed=st.failed, last_reason=st.last_reason,
                last_error=st.last_error, last_failure_s_ago=now - st.last_failure_at if st.last_failure_at else None,
            ))  # fmt: skip
        return out

    def success(self, channel: Channel, key: str) -> None:
        st = self._get(channel.name, key)
        if st.cool_until or st.failures:
            if st.cool_until:
                log.info("channel_key_recovered", channel=channel.name, key_id=key_id(key))
            st.failures, st.cool_until, st.probing = 0, 0.0, False

    def failure(self, channel: Channel, key: str, routing: Routing, *, cool_now: bool, reason: str, kind: str = "other") -> None:
        st = self._get(channel.name, key)
        st.failures += 1
        st.failed += 1
        st.last_reason, st.last_error, st.last_failure_at = kind, reason[:300], self._clock()
        was_probe, st.probing = st.probing, False
        if cool_now or was_probe or st.failures >= routing.failure_threshold:
            st.cool_until = self._clock() + routing.cooldown_s
            log.warning(
                "channel_key_cooldown",
                channel=channel.name,
                key_id=key_id(key),
                failures=st.failures,
                cooldown_s=routing.cooldown_s,
                reason=reason,
            )
            if self.on_cooldown is not None and routing.cooldown_s > 0:
                self.on_cooldown(channel, key, routing.cooldown_s)

    def cool_shared(self, channel: Channel, key: str, seconds: float, mark: float) -> None:
        """Another replica put this key in cooldown for `seconds` more; `mark` tells that cooldown from
        the next, so one already taken (and maybe since ended here by a success) is not taken again."""
        st = self._get(channel.name, key)
        if mark <= st.shared_mark:
            return
        st.shared_mark = mark
        until = self._clock() + seconds
        if until > st.cool_until + 0.5:  # not the one this process started (and published) itself
            st.cool_until = until
            log.info("channel_key_cooldown_shared", channel=channel.name, key_id=key_id(key), cooldown_s=round(seconds, 3))

    def release(self, channel: Channel, key: str) -> None:
        """The attempt ended without a verdict (client left): let another request probe."""
        self._get(channel.name, key).probing = False


def key_id(key: str) -> str:
    """A short, non-reversible label for a vendor key, safe for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:8] if key else "-"


def failure_reason(status: int | None, timeout: bool, message: str) -> str:
    """One of REASONS for an attempt that failed before the client got anything."""
    if timeout or status == 408:
        return "timeout"
    if status is not None:
        if status == 429:
            return "status_429"
        if status in (401, 403):
            return "status_401_403"
        return "status_5xx" if status >= 500 else "status_4xx"
    if message.startswith("cannot connect"):
        return "connect"
    if "malformed" in message or "cannot read" in message:
        return "malformed"
    return "other"
