"""The SSE filters of the stream pump: read usage off a copy of the events, and hide the usage the
gateway asked for and the client did not.

`UsageTap` splits the stream into events only to find the ones that carry usage; what an event with
usage looks like is the vendor protocol's business (`Provider.events`). By default it passes each
chunk on as it came. `HideUsage` comes after it when the gateway asked the vendor for usage the client
did not ask for: it takes whole events and drops or rewrites the one carrying that usage, so the
client sees the stream it would have seen from the vendor.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from providers import Provider, Usage

# An event ends with a blank line; SSE lines end with LF, CRLF or a bare CR.
_EVENT_END = re.compile(rb"\r?\n\r?\n|\r\r")
_ENDINGS = (b"\n\n", b"\n\r\n", b"\r\r")  # what every event ending ends with
# Event bytes a tap holds before it counts their text: counting is only needed when no usage comes, and
# one pass over many events costs a fraction of one pass per event.
_SCAN_AT = 16 * 1024


def _complete_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Where the last whole event in `buf` ends, looking from `start` on (0 when none has ended)."""
    if buf.endswith(_ENDINGS):  # the usual chunk: whole events
        return len(buf)
    lf = buf.rfind(b"\n\n", start)  # also ends \r\n\n
    crlf = buf.rfind(b"\n\r\n", start)  # also ends \r\n\r\n
    cr = buf.rfind(b"\r\r", start)  # bare CR line ends
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0, cr + 2 if cr >= 0 else 0)


def event_data(event: bytes) -> Any:
    """The JSON in an event's `data:` lines, or None when there is none."""
    data = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


class UsageTap:
    """Reads usage and counts generated text off an SSE stream in the vendor's protocol.

    `whole_events`: pass on whole events only, holding back the start of one until it ends (for a
    filter after it that reads events); otherwise every chunk goes on as it came, at once.
    `max_event`: an event that grows past this many bytes without ending is not held: the tap lets
    go of it, stops reading the stream and passes the rest on as it comes (the row is then estimated,
    unless usage came before).
    """

    __slots__ = (
        "_buf", "_events", "_text_bytes", "_unscanned", "endpoint", "max_event", "provider", "stopped", "usage",
        "whole_events",
    )  # fmt: skip

    def __init__(self, provider: Provider, endpoint: str, *, whole_events: bool = False, max_event: int = 1 << 62) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.whole_events = whole_events
        self.max_event = max_event
        self.stopped = False
        self.usage: Usage | None = None
        self._text_bytes = 0
        self._events = 0
        # Whole events not yet counted (see _SCAN_AT), copied: holding on to the chunks themselves kept
        # thousands of small objects alive across a burst of streams, and Python's allocator then could
        # not give their memory back.
        self._unscanned = bytearray()
        self._buf = bytearray()  # the start of an event not yet ended

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk from upstream; return the bytes to pass on now."""
        if self.stopped:
            return chunk
        if self._buf:
            # Search only what is new (and the two bytes an ending may straddle), and append in place:
            # an event of megabytes arriving in many chunks costs linear time, not quadratic.
            start = max(len(self._buf) - 2, 0)
            self._buf += chunk
            end = _complete_end(self._buf, start)
            if end == 0:
                if len(self._buf) > self.max_event:
                    return self._stop(chunk)
                return b"" if self.whole_events else chunk
            buf = bytes(self._buf)
        else:
            buf = chunk
            end = _complete_end(buf)
            if end == 0:  # no whole event yet
                self._buf = bytearray(buf)
                if len(buf) > self.max_event:
                    return self._stop(chunk)
                return b"" if self.whole_events else chunk
        if end == len(buf):
            whole = buf
            if self._buf:
                self._buf = bytearray()
        else:
            whole = buf[:end]
            self._buf = bytearray(buf[end:])
        events = self.provider.events
        # Events without a usage object are only counted, all in one pass; the events from the first
        # one with usage on are read one by one.
        m = events.usage_at.search(whole) if events.usage_key in whole else None
        if m is None:
            self._count(whole)
        else:
            cut = _complete_end(whole[: m.start()])
            if cut:
                self._count(whole[:cut])
            pos = cut
            for m in _EVENT_END.finditer(whole, cut):
                self._event(whole[pos : m.end()])
                pos = m.end()
        return whole if self.whole_events else chunk

    def _stop(self, chunk: bytes) -> bytes:
        """Let go of an event past `max_event`: pass on what was held of it, and from now on everything."""
        held, self._buf = bytes(self._buf), bytearray()
        self.stopped = True
        self._scan()
        return held if self.whole_events else chunk

    def flush(self) -> bytes:
        """End of stream: a last event left without its blank line is read, and passed on if held."""
        rest, self._buf = bytes(self._buf), bytearray()
        if rest:
            self._event(rest)
        return rest if self.whole_events else b""

    @property
    def at_boundary(self) -> bool:
        """True when what has been passed on ends with a whole event, so a comment or event may follow."""
        return self.whole_events or not self._buf

    @property
    def text_bytes(self) -> int:
        """Bytes of generated text so far (for an estimate when the vendor reports no usage)."""
        self._scan()
        return self._text_bytes

    @property
    def events(self) -> int:
        self._scan()
        return self._events

    def _count(self, events: bytes) -> None:
        self._unscanned += events
        if len(self._unscanned) >= _SCAN_AT:
            self._scan()

    def _scan(self) -> None:
        if data := self._unscanned:
            self._unscanned = bytearray()
            self._events += data.count(b"\n\n") + data.count(b"\n\r\n") + data.count(b"\r\r")
            self._text(data)

    def _text(self, data: bytes | bytearray) -> None:
        for m in self.provider.events.text.finditer(data):
            self._text_bytes += len(m.group(1))

    def _event(self, event: bytes) -> None:
        self._events += 1
        self._text(event)
        if not self.provider.events.usage_at.search(event):
            return
        usage = self.provider.usage(self.endpoint, event_data(event))
        if usage is not None:
            if self.usage is None:
                self.usage = usage
            else:
                self.usage.merge(usage)


class HideUsage:
    """Drops or rewrites the events carrying usage the client did not ask for. Takes whole events."""

    __slots__ = ("_usage_key", "provider")

    at_boundary = True  # it passes on whole events only

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._usage_key = provider.events.usage_key

    def feed(self, data: bytes) -> bytes:
        if self._usage_key not in data:  # nearly every chunk: one test, no attribute chain
            return data
        m = self.provider.events.usage_at.search(data)
        if m is None:
            return data
        # The events before the first one with usage go on as they are, in one piece.
        pos = _complete_end(data[: m.start()])
        out: list[bytes] = [data[:pos]]
        for m in _EVENT_END.finditer(data, pos):
            out.append(self._event(data[pos : m.end()]))
            pos = m.end()
        if pos < len(data):  # the stream's last event, without its blank line
            out.append(self._event(data[pos:]))
        return b"".join(out)

    def flush(self) -> bytes:
        return b""

    def _event(self, event: bytes) -> bytes:
        if not self.provider.events.usage_at.search(event):
            return event
        payload = event_data(event)
        if payload is None:
            return event
        kept = self.provider.hide_usage(payload)
        if kept is None:
            return b""
        return event if kept is payload else b"data: " + orjson.dumps(kept) + b"\n\n"
