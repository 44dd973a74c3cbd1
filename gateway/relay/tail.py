"""Usage from the end of a JSON answer too big to hold (past `limits.max_response_mb`).

Such an answer streams through to the client as it comes; `JsonTail` keeps only its last bytes and,
once it has ended, reads the usage object there, where OpenAI-style vendors put it. When none is
found the row is estimated.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers import Provider, Usage

KEEP = 64 * 1024  # a usage object, and whatever follows it, is far smaller


def _object_end(data: bytes, start: int) -> int:
    """Where the JSON object opening at `start` ends (one past its `}`), or -1 if it does not end here."""
    depth = 0
    in_string = escaped = False
    for i in range(start, len(data)):
        c = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c == 0x7B:  # {
            depth += 1
        elif c == 0x7D:  # }
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def usage_in_tail(provider: Provider, endpoint: str, tail: bytes) -> Usage | None:
    """The usage of the last usage object in `tail`, or None."""
    matches = list(provider.events.usage_at.finditer(tail))
    for m in reversed(matches):
        end = _object_end(tail, m.end() - 1)
        if end < 0:
            continue
        try:
            obj: Any = orjson.loads(tail[m.end() - 1 : end])
        except orjson.JSONDecodeError:
            continue
        return provider.usage(endpoint, {"usage": obj})
    return None


class JsonTail:
    """A pump filter: passes the bytes on untouched, keeps the last `KEEP` of them, reads usage at the end."""

    __slots__ = ("_tail", "endpoint", "provider", "usage")

    at_boundary = True  # not an event stream: nothing is ever inserted into it

    def __init__(self, provider: Provider, endpoint: str) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.usage: Usage | None = None
        self._tail = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._tail += data
        if len(self._tail) > 2 * KEEP:  # trimmed now and then, not on every chunk
            del self._tail[:-KEEP]
        return data

    def flush(self) -> bytes:
        self.usage = usage_in_tail(self.provider, self.endpoint, bytes(self._tail[-KEEP:]))
        self._tail = bytearray()
        return b""
