"""A whole answer with a bytes body (a vendor's JSON, passed on), written by the writer chosen at start.

`public_answer` is aiohttp's `web.Response`; `LeanAnswer` (gateway.http.lean_answer) writes the same
bytes in one step, using aiohttp internals. Both take the headers over as the relay built them.

Headers the gateway made itself may come as header lines already serialized ("name: value" CRLF
each: the x-ratelimit-* of a limited key, gateway.billing.limiter.rate_lines). `add_lines` gives them
to an answer: the lean writer appends them to its head as they are, any other answer sets them one by
one. They must come from the gateway, never from a client or a vendor: nothing checks them for CR or LF.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from multidict import CIMultiDict

# (status, body, headers) -> the answer to return from a handler
AnswerFactory = Callable[[int, bytes, CIMultiDict[str]], web.Response]


def public_answer(status: int, body: bytes, headers: CIMultiDict[str]) -> web.Response:
    return web.Response(status=status, body=body, headers=headers)


class TakesLines:
    """An answer that writes header lines it is given as they are (`lines`), after its own."""

    lines = b""


def add_lines(response: web.StreamResponse, lines: bytes) -> None:
    """Give `lines` (trusted header lines) to an answer that has not been sent yet."""
    if isinstance(response, TakesLines):
        response.lines += lines
    else:
        response.headers.update(lines_dict(lines))


def lines_dict(lines: bytes) -> dict[str, str]:
    """Header lines as a dict."""
    return dict(line.split(": ", 1) for line in lines.decode().splitlines())
