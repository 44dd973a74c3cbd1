"""Read usage off a copy of an SSE stream while its bytes go to the client untouched.

The tap splits the copy into events only to find the one that carries usage. When the gateway asked
the upstream for usage the client did not ask for, the tap also holds back that one event (or strips
the usage field from it), so the client sees the stream it would have seen from the vendor.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from providers import Provider, Usage

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_USAGE_RE = re.compile(rb'"usage"\s*:\s*\{')
# Generated text in chat, completions, responses and reasoning deltas; only used to estimate tokens.
_TEXT_RE = re.compile(rb'"(?:content|text|delta|reasoning_content|arguments)"\s*:\s*"((?:[^"\\]|\\.)*)"')


class SSETap:
    __slots__ = ("_buf", "endpoint", "events", "provider", "strip_usage", "text_bytes", "usage")

    def __init__(self, provider: Provider, endpoint: str, *, strip_usage: bool) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.strip_usage = strip_usage
        self.usage: Usage | None = None
        self.text_bytes = 0
        self.events = 0
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk from upstream; return the bytes to send the client now."""
        buf = self._buf + chunk if self._buf else chunk
        pos = 0
        out: list[bytes] | None = [] if self.strip_usage else None
        for m in _EVENT_END.finditer(buf):
            event = buf[pos : m.end()]
            pos = m.end()
            kept = self._event(event)
            if out is not None and kept:
                out.append(kept)
        self._buf = buf[pos:]
        if out is None:
            return chunk
        return b"".join(out)

    def flush(self) -> bytes:
        """End of stream: whatever partial event is left goes out as is."""
        rest, self._buf = self._buf, b""
        if rest:
            kept = self._event(rest)
            return kept if self.strip_usage else b""
        return b""

    def _event(self, event: bytes) -> bytes:
        self.events += 1
        for m in _TEXT_RE.finditer(event):
            self.text_bytes += len(m.group(1))
        if not _USAGE_RE.search(event):
            return event
        data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
        try:
            payload: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        usage = self.provider.usage(self.endpoint, payload)
        if usage is not None:
            if self.usage is None:
                self.usage = usage
            else:
                self.usage.merge(usage)
        if not self.strip_usage or not isinstance(payload, dict) or "usage" not in payload:
            return event
        if not payload.get("choices"):
            return b""  # the usage-only chunk the client did not ask for
        del payload["usage"]
        return b"data: " + orjson.dumps(payload) + b"\n\n"
