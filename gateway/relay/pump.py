"""The stream pump: copy an answer's body to the client as it arrives, through a chain of filters.

From the moment the client's answer starts, nothing is retried: a vendor that breaks or goes silent
ends the stream with an error event in the client's protocol (a binary body is cut short instead), and
the usage row says why. While an SSE stream is silent the client gets a keepalive comment, but never
inside a half-sent event. What the bytes mean (usage, hidden usage, later a protocol conversion) is
the filters' business: each takes what the one before passed on.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from config import Timeouts
from gateway.context import RequestContext
from gateway.errors import GatewayError, ShuttingDown, mask, mask_known, upstream_errors
from gateway.http.timer import Slot
from gateway.http.upstream import Response
from gateway.relay.attempts import Verdict
from gateway.relay.sse import UsageTap

# Silence on a started stream after which the client gets an SSE comment, so idle proxies keep it open.
# Read at call time: tests lower it rather than wait 15 s.
KEEPALIVE_S = 15.0
KEEPALIVE = b": keepalive\n\n"


class Filter(Protocol):
    def feed(self, data: bytes) -> bytes:
        """Take the next bytes; return what to pass on now (maybe nothing)."""

    def flush(self) -> bytes:
        """The stream ended: whatever is left to pass on."""

    @property
    def at_boundary(self) -> bool:
        """What this filter has passed on so far ends with a whole event."""


class Chain:
    """A body's filters, in order, each taking what the one before passed on.

    `sse`: the body is an event stream, into which the pump may put keepalive comments and a final
    error event between events. An SSE chain starts with the usage tap, which reads the vendor's
    events as they came.
    """

    __slots__ = ("_feeds", "filters", "sse", "tap")

    def __init__(self, *filters: Filter, sse: bool = True) -> None:
        self.filters = filters
        self.sse = sse
        self.tap = filters[0] if isinstance(filters[0], UsageTap) else None
        self._feeds = tuple(f.feed for f in filters)

    def feeder(self) -> Callable[[bytes], bytes]:
        """What the pump calls for every chunk: the one filter itself when there is one, else the chain.
        (Not kept on the chain: a bound method of its own would make a reference cycle, and every
        stream's chain and buffers would wait for the cyclic garbage collector.)"""
        return self._feeds[0] if len(self._feeds) == 1 else self.feed

    def feed(self, data: bytes) -> bytes:
        for feed in self._feeds:
            data = feed(data)
            if not data:
                break
        return data

    def flush(self) -> bytes:
        data = b""
        for f in self.filters:
            data = (f.feed(data) if data else b"") + f.flush()
        return data

    @property
    def at_boundary(self) -> bool:
        return self.filters[-1].at_boundary


async def pump(
    request: web.Request,
    ctx: RequestContext,
    upstream: Response,
    timeouts: Timeouts,
    chain: Chain | None,
    slot: Slot,
    first_byte_at: float,
    headers: CIMultiDict[str],
    secrets: tuple[bytes, ...] = (),
    first: bytes | None = None,
) -> tuple[web.StreamResponse, Verdict]:
    """`_pump`, counted in `services.streams` while it runs (/metrics, /admin/status)."""
    services = ctx.services
    services.streams += 1
    try:
        return await _pump(request, ctx, upstream, timeouts, chain, slot, first_byte_at, headers, secrets, first)
    finally:
        services.streams -= 1


async def _pump(
    request: web.Request,
    ctx: RequestContext,
    upstream: Response,
    timeouts: Timeouts,
    chain: Chain | None,
    slot: Slot,
    first_byte_at: float,
    headers: CIMultiDict[str],
    secrets: tuple[bytes, ...],
    first: bytes | None,
) -> tuple[web.StreamResponse, Verdict]:
    """Copy upstream bytes to the client as they arrive, through `chain` (as they are when it is None),
    under `headers`. `first`: the start of the body, when the caller has read it already. From
    `prepare()` on, nothing is retried.

    `secrets` (the channel's keys) are masked in what a chain passes on, chunk by chunk: a key a vendor
    echoes is caught whole in an SSE stream whose usage is hidden (whole events), and when it does not
    straddle two reads otherwise. A binary body (no chain) is not searched."""
    content = upstream.content
    if first is None:
        # Nothing goes to the client before the first chunk is in hand, so a vendor that answers with
        # headers and then stalls or hangs up can still be failed over.
        with upstream_errors("waiting for the first byte"):
            with slot.timeout_at(first_byte_at):
                first = await content.readany()
    chunk = first
    sse = chain is not None and chain.sse
    if chain is not None and chain.tap is not None:
        ctx.tap = chain.tap
    out = web.StreamResponse(status=upstream.status, headers=headers)
    if sse:
        out.headers["Cache-Control"] = "no-cache"
        out.headers["X-Accel-Buffering"] = "no"  # tell nginx-style proxies not to buffer the stream
    if ctx.ticket is not None:  # sent before the pipeline sees the answer: a limited key's headers now
        out.headers.update(ctx.ticket.headers)
    if ctx.services.drain.deadline is not None:
        out.force_close()  # shutting down: no further request on this connection (see gateway.api.pipeline)
    try:
        await out.prepare(request)
    except ConnectionError:
        _client_gone(ctx)
        return out, Verdict.NONE
    loop = asyncio.get_running_loop()
    idle_s = timeouts.idle_s
    keepalive_s = KEEPALIVE_S if sse else math.inf  # comments exist only in SSE
    feed = chain.feeder() if chain is not None else None
    keys = secrets if chain is not None else ()
    last_data = last_sent = loop.time()
    verdict = Verdict.OK
    failure: GatewayError | None = None
    pending: bytes | None = chunk
    while True:
        if pending is not None:
            if not pending:  # the upstream finished
                if chain is not None and (rest := mask_known(chain.flush(), keys)) and not await _write(out, ctx, rest):
                    verdict = Verdict.NONE
                break
            last_data = loop.time()
            data = feed(pending) if feed is not None else pending
            for key in keys:
                if key in data:
                    data = data.replace(key, b"***")
            if data:
                # `_write`, inlined: this runs for every chunk of every stream.
                if ctx.ttft_ms is None:
                    ctx.mark_first_byte()
                try:
                    await out.write(data)
                except ConnectionError:
                    _client_gone(ctx)
                    verdict = Verdict.NONE
                    break
                last_sent = last_data
        idle_at = last_data + idle_s
        keepalive_at = last_sent + keepalive_s
        try:
            # Bytes already here need no timer (one per chunk showed in profiles); only a real wait does.
            pending = content.read_nowait()
            if not pending and not content.at_eof():
                with slot.timeout_at(min(idle_at, keepalive_at)):
                    pending = await content.readany()
        except TimeoutError:
            pending = None
            if slot.cut():
                failure, verdict = ShuttingDown(), Verdict.NONE
                break
            if idle_at <= keepalive_at:
                failure, verdict = _interrupted(504, f"upstream sent nothing for {idle_s:g}s"), Verdict.FAULT
                break
            if chain is not None and not chain.at_boundary:  # (only an SSE chain gets here)
                last_sent = loop.time()  # a comment now would land inside the client's half-sent event
                continue
            if not await _write(out, ctx, KEEPALIVE):
                verdict = Verdict.NONE
                break
            last_sent = loop.time()
        except (aiohttp.ClientError, ConnectionError) as exc:
            message = f"upstream connection broke mid-stream ({type(exc).__name__})"
            failure, verdict = _interrupted(502, message), Verdict.FAULT
            break
    tap = chain.tap if chain is not None else None
    if failure is None and tap is not None and tap.error is not None and verdict is Verdict.OK:
        # The vendor ended the stream with an error event, which the client got: the row and the
        # channel's health say so too.
        ctx.status, verdict = 502, Verdict.FAULT
        ctx.error = mask(f"upstream stream ended with an error: {tap.error}", (k.decode() for k in secrets))[:500]
    if failure is not None:
        ctx.status, ctx.error = failure.status, failure.message[:500]
        if chain is None or not sse:
            # Only an event stream can carry an error: cut the connection so the client sees a short
            # read, not a clean end.
            if request.transport is not None:
                request.transport.close()
            return out, verdict
        # End a half-sent event first, so the error event stands on its own. The row keeps its status.
        await _write(out, ctx, (b"" if chain.at_boundary else b"\n\n") + failure.sse_event(ctx.protocol))
    if ctx.status != 499:
        try:
            await out.write_eof()
        except ConnectionError:
            _client_gone(ctx)
            verdict = Verdict.NONE
    return out, verdict


def _interrupted(status: int, message: str) -> GatewayError:
    return GatewayError(
        status, f"The upstream stream ended early: {message}.", type="upstream_error", code="stream_interrupted"
    )


async def _write(out: web.StreamResponse, ctx: RequestContext, data: bytes) -> bool:
    """Send bytes to the client; False (and status 499) when the client has gone."""
    ctx.mark_first_byte()
    try:
        await out.write(data)
    except ConnectionError:
        _client_gone(ctx)
        return False
    return True


def _client_gone(ctx: RequestContext) -> None:
    ctx.status = 499
    ctx.error = "client closed the connection"
