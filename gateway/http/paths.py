"""Which upstream client and answer writer this process uses: aiohttp's public API, or the lean twins
that use its internals for a measured gain (gateway.http.lean_client, gateway.http.lean_answer).

Chosen once, when the app starts, by `GATEWAY_HTTP_PATH` (or `create_app(http_path=...)`):
- `auto` (the default): each lean twin where its capability probe passes, else the public API;
  the lean writer also steps aside when a handler is connected to the app's `on_response_prepare`
  signal, which it would skip;
- `lean`: both lean twins; the app refuses to start when a probe fails or the signal has handlers;
- `public`: aiohttp's public API only.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiohttp import web

from gateway.http.answer import AnswerFactory, public_answer
from gateway.http.upstream import SessionUpstream, Upstream

log = structlog.get_logger("gateway.http")

ENV = "GATEWAY_HTTP_PATH"
MODES = ("auto", "lean", "public")


class HttpPathError(RuntimeError):
    """The lean path was asked for and cannot be taken."""


@dataclass(slots=True)
class HttpPaths:
    upstream: Upstream
    answer: AnswerFactory
    lean_client: bool
    lean_answer: bool


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise HttpPathError(f"{ENV}={mode!r}: expected one of {', '.join(MODES)}")
    return mode


async def open_paths(mode: str, app: web.Application) -> HttpPaths:
    """Run the probes and open the upstream client of the chosen path."""
    check_mode(mode)
    client_why = answer_why = "the public API was asked for" if mode == "public" else None
    if client_why is None:
        try:
            from gateway.http import lean_client
        except ImportError as exc:  # an aiohttp that moved the modules it imports
            client_why = f"{type(exc).__name__}: {exc}"
        else:
            client_why = await lean_client.unavailable()
    if answer_why is None:
        try:
            from gateway.http import lean_answer
        except ImportError as exc:
            answer_why = f"{type(exc).__name__}: {exc}"
        else:
            answer_why = lean_answer.unavailable()
        if answer_why is None and len(app.on_response_prepare):
            answer_why = "the app's on_response_prepare signal has handlers, which the lean writer would skip"
    if mode == "lean" and (client_why or answer_why):
        raise HttpPathError(f"{ENV}=lean, but the lean path cannot be used: {client_why or answer_why}")
    for part, why in (("upstream_client", client_why), ("answer_writer", answer_why)):
        if why is not None and mode == "auto":
            log.warning("http_public_path", part=part, reason=why)
    upstream: Upstream
    if client_why is None:
        upstream = lean_client.LeanUpstream()
    else:
        upstream = SessionUpstream()
    answer: AnswerFactory = lean_answer.LeanAnswer if answer_why is None else public_answer
    return HttpPaths(upstream, answer, client_why is None, answer_why is None)
