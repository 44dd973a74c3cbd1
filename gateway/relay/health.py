"""Health of each channel key: consecutive failures, cooldown, and the single probe after it.

State is keyed by channel name and key, so it survives a SIGHUP reload for the keys that stay.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from config import Channel, Routing

log = structlog.get_logger("gateway.health")


@dataclass(slots=True)
class _KeyState:
    failures: int = 0
    cool_until: float = 0.0
    probing: bool = False  # a request is testing the key after its cooldown


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._state: dict[tuple[str, str], _KeyState] = {}
        self._turn: dict[str, int] = {}
        self._clock = clock

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

    def success(self, channel: Channel, key: str) -> None:
        st = self._get(channel.name, key)
        if st.cool_until or st.failures:
            if st.cool_until:
                log.info("channel_key_recovered", channel=channel.name, key_id=key_id(key))
            st.failures, st.cool_until, st.probing = 0, 0.0, False

    def failure(self, channel: Channel, key: str, routing: Routing, *, cool_now: bool, reason: str) -> None:
        st = self._get(channel.name, key)
        st.failures += 1
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

    def release(self, channel: Channel, key: str) -> None:
        """The attempt ended without a verdict (client left): let another request probe."""
        self._get(channel.name, key).probing = False


def key_id(key: str) -> str:
    """A short, non-reversible label for a vendor key, safe for logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:8] if key else "-"
