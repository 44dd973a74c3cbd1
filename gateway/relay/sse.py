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
# (The string body is the unrolled `[^"\\]*(?:\\.[^"\\]*)*`: twice as fast as an alternation per character.)
_TEXT_RE = re.compile(rb'"(?:content|text|delta|reasoning_content|arguments)"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"')


_ENDINGS = (b"\n\n", b"\n\r\n")  # what every event ending ends with
# Event bytes a tap holds before it counts their text: counting is only needed when no usage comes, and
# one pass over many events costs a fraction of one pass per event.
_SCAN_AT = 16 * 1024


def _complete_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Where the last whole event in `buf` ends, looking from `start` on (0 when none has ended)."""
    if buf.endswith(_ENDINGS):  # the usual chunk: whole events
        return len(buf)
    lf = buf.rfind(b"\n\n", start)  # also ends \r\n\n
    crlf = buf.rfind(b"\n\r\n", start)  # also ends \r\n\r\n
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


class SSETap:
    __slots__ = ("_buf", "_events", "_text_bytes", "_unscanned", "endpoint", "provider", "strip_usage", "usage")

    def __init__(self, provider: Provider, endpoint: str, *, strip_usage: bool) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.strip_usage = strip_usage
        self.usage: Usage | None = None
        self._text_bytes = 0
        self._events = 0
        # Whole events not yet counted (see _SCAN_AT), copied: holding on to the chunks themselves kept
        # thousands of small objects alive across a burst of streams, and Python's allocator then could
        # not give their memory back.
        self._unscanned = bytearray()
        self._buf = bytearray()  # the start of an event not yet ended

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk from upstream; return the bytes to send the client now."""
        if self._buf:
            # Search only what is new (and the two bytes an ending may straddle), and append in place:
            # an event of megabytes arriving in many chunks costs linear time, not quadratic.
            start = max(len(self._buf) - 2, 0)
            self._buf += chunk
            end = _complete_end(self._buf, start)
            if end == 0:
                return b"" if self.strip_usage else chunk
            buf = bytes(self._buf)
        else:
            buf = chunk
            end = _complete_end(buf)
            if end == 0:  # no whole event yet
                self._buf = bytearray(buf)
                return b"" if self.strip_usage else chunk
        if end == len(buf):
            whole = buf
            if self._buf:
                self._buf = bytearray()
        else:
            whole = buf[:end]
            self._buf = bytearray(buf[end:])
        # Events without a usage object (at most "usage":null) are only counted, all in one pass; the
        # events from the first one with usage on are taken one by one.
        m = _USAGE_RE.search(whole) if b'"usage"' in whole else None
        if m is None:
            self._count(whole)
            return whole if self.strip_usage else chunk
        cut = _complete_end(whole[: m.start()])
        out: list[bytes] = []
        if cut:
            self._count(whole[:cut])
            out.append(whole[:cut])
        pos = cut
        for m in _EVENT_END.finditer(whole, cut):
            kept = self._event(whole[pos : m.end()])
            pos = m.end()
            if kept:
                out.append(kept)
        return b"".join(out) if self.strip_usage else chunk

    def _count(self, events: bytes) -> None:
        self._unscanned += events
        if len(self._unscanned) >= _SCAN_AT:
            self._scan()

    def _scan(self) -> None:
        if data := self._unscanned:
            self._unscanned = bytearray()
            self._events += data.count(b"\n\n") + data.count(b"\n\r\n")
            self._text(data)

    def _text(self, data: bytes | bytearray) -> None:
        for m in _TEXT_RE.finditer(data):
            self._text_bytes += len(m.group(1))

    @property
    def text_bytes(self) -> int:
        """Bytes of generated text so far (for an estimate when the vendor reports no usage)."""
        self._scan()
        return self._text_bytes

    @property
    def events(self) -> int:
        self._scan()
        return self._events

    @property
    def client_at_boundary(self) -> bool:
        """True when the client has been sent whole events only, so a comment or event may follow."""
        return self.strip_usage or not self._buf

    def flush(self) -> bytes:
        """End of stream: whatever partial event is left goes out as is."""
        rest, self._buf = bytes(self._buf), bytearray()
        if rest:
            kept = self._event(rest)
            return kept if self.strip_usage else b""
        return b""

    def _event(self, event: bytes) -> bytes:
        self._events += 1
        self._text(event)
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
