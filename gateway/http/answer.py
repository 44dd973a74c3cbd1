"""A whole answer with a bytes body (a vendor's JSON, passed on), written by the writer chosen at start.

`public_answer` is aiohttp's `web.Response`; `LeanAnswer` (gateway.http.lean_answer) writes the same
bytes in one step, using aiohttp internals. Both take the headers over as the relay built them.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from multidict import CIMultiDict

# (status, body, headers) -> the answer to return from a handler
AnswerFactory = Callable[[int, bytes, CIMultiDict[str]], web.Response]


def public_answer(status: int, body: bytes, headers: CIMultiDict[str]) -> web.Response:
    return web.Response(status=status, body=body, headers=headers)
