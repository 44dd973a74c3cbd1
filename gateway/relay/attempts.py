"""One request's upstream attempts: channels in routing order, a key for each, and each key's verdict.

Both the HTTP relay and the realtime proxy walk an `Attempts` (`async for`: a channel with its own
rpm/tpm is charged before its attempt, which may ask Redis); it keeps the usage row's attempt count and
channel current and reports every outcome to the key health tracker exactly once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from config import Channel
from gateway.billing.limiter import channels_busy
from gateway.context import RequestContext
from gateway.errors import AttemptError, GatewayError, UpstreamFailure, sentence
from gateway.relay.health import failure_reason
from gateway.relay.routing import plan, request_tags
from providers import PROVIDERS, Provider


class Verdict(enum.Enum):
    """What an answered attempt says about the channel key, once the answer is over."""

    OK = "ok"
    FAULT = "fault"  # the upstream broke or went silent mid-stream
    NONE = "none"  # the client left, or the gateway is shutting down: says nothing about the key


@dataclass(slots=True)
class Attempt:
    channel: Channel
    provider: Provider
    api_key: str
    upstream_model: str


class Attempts:
    def __init__(self, request: web.Request, ctx: RequestContext, stop: Callable[[], bool] | None = None) -> None:
        assert ctx.model is not None
        self._ctx = ctx
        self._stop = stop  # checked before each attempt: no new attempt once it says so (shutdown)
        self._health = ctx.services.runtime.health
        self._metrics = ctx.services.metrics  # None when metrics are off
        tags = request_tags(request.headers.get("X-Gateway-Tag"))
        self._channels = plan(ctx.services.runtime.lookups(ctx.config), self._health, ctx.key, ctx.model, ctx.platform, tags)
        self.last: AttemptError | None = None  # the latest failure, for the final error
        self.busy_wait: float | None = None  # the shortest wait of the channels skipped at their own rpm/tpm
        self._next = 0  # index of the next channel in self._channels

    # An iterator class, not an async generator: one left early (the first attempt answered, as most do)
    # would be closed by a task the loop starts for it.
    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Attempt:
        ctx = self._ctx
        assert ctx.model is not None
        tries = ctx.config.routing.retries + 1
        limiter = ctx.services.limiter
        channels = self._channels
        while self._next < len(channels):
            channel = channels[self._next]
            self._next += 1
            if (self._stop is not None and self._stop()) or ctx.attempts >= tries:
                break
            if (channel.rpm is not None or channel.tpm is not None) and limiter is not None:
                wait = await limiter.channel_wait(channel, ctx.tokens_estimate())
                if wait:  # at its vendor account's quota: not a candidate now, and not an attempt
                    self.busy_wait = wait if self.busy_wait is None else min(wait, self.busy_wait)
                    continue
            upstream_model = channel.upstream_model(ctx.model)
            api_key = self._health.pick_key(channel)
            ctx.attempts += 1
            ctx.channel, ctx.channel_platform, ctx.upstream_model = channel.name, channel.platform, upstream_model
            return Attempt(channel, PROVIDERS[channel.provider], api_key, upstream_model)
        self._next = len(channels)
        raise StopAsyncIteration

    def failed(self, attempt: Attempt, err: AttemptError) -> None:
        """The attempt failed before anything reached the client."""
        self.last = err
        if err.channel_fault:
            reason = failure_reason(err.status, err.timeout, err.message)
            self._health.failure(
                attempt.channel, attempt.api_key, self._ctx.config.routing, cool_now=err.cool_now, reason=err.message, kind=reason
            )
            if self._metrics is not None:
                self._metrics.attempt(attempt.channel.name, "failed", reason)
        else:
            self._health.success(attempt.channel, attempt.api_key)  # the vendor answered; the request was at fault
            if self._metrics is not None:
                self._metrics.attempt(attempt.channel.name, "client_error")

    def skipped(self, attempt: Attempt, reason: str) -> None:
        """The attempt's channel cannot serve this request at all (its protocol has no such call):
        nothing was sent, and it says nothing about the key; the next channel may serve it."""
        self.last = AttemptError(reason, retryable=True, channel_fault=False)
        self._health.release(attempt.channel, attempt.api_key)
        if self._metrics is not None:
            self._metrics.attempt(attempt.channel.name, "skipped")

    def finished(self, attempt: Attempt, verdict: Verdict) -> None:
        """The attempt answered the client; `verdict` says how the answer ended."""
        metrics = self._metrics
        if verdict is Verdict.OK:
            self._health.success(attempt.channel, attempt.api_key)
            if metrics is not None:
                metrics.attempt(attempt.channel.name, "ok")
        elif verdict is Verdict.FAULT:
            reason = self._ctx.error or "stream broke"
            self._health.failure(attempt.channel, attempt.api_key, self._ctx.config.routing, cool_now=False, reason=reason, kind="stream")
            if metrics is not None:
                metrics.attempt(attempt.channel.name, "failed", "stream")
        else:
            self.abandoned(attempt)

    def abandoned(self, attempt: Attempt) -> None:
        """The attempt ended with no word on the key (client gone, shutdown): let another request probe it."""
        self._health.release(attempt.channel, attempt.api_key)
        if self._metrics is not None:
            self._metrics.attempt(attempt.channel.name, "abandoned")

    def exhausted(self) -> GatewayError:
        """The error once every attempt has failed: 502, or 504 when the last one timed out; 429 when
        every candidate channel was at its own rate limit."""
        last = self.last
        ctx = self._ctx
        if last is None and self.busy_wait is not None:
            assert ctx.model is not None
            if self._metrics is not None:
                self._metrics.limited("channel")
            return channels_busy(ctx.model, self.busy_wait)
        assert last is not None
        return UpstreamFailure(
            504 if last.timeout else 502,
            sentence(f"All {ctx.attempts} upstream attempt(s) failed; the last, on channel {ctx.channel!r}: {last.message}"),
            type="upstream_error",
            code="upstream_timeout" if last.timeout else "upstream_error",
        )
