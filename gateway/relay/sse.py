"""The SSE filter of the stream pump: read usage off the vendor's events, and hide the usage the gateway
asked for and the client did not.

`UsageTap` splits the stream into events only to find the ones that carry usage; what an event with
usage looks like is the vendor protocol's business (`Provider.events`, `Provider.hide_usage`). By
default it passes each chunk on as it came. With `hide_usage` it passes on whole events only, and
drops or rewrites the one carrying the usage the gateway asked for, so the client sees the stream it
would have seen from the vendor. Hiding is part of the tap, not a filter after it: it needs the same
events at the same moment, and a second filter call per chunk cost ~100k instructions a 40-chunk
stream (measured; the tap finds usage events in one pass over a chunk anyway).
"""

from __future__ import annotations

from typing import Any

import orjson

from providers import Provider, Usage
from providers.sse import EVENT_END, complete_end, event_data, split_events

_ERROR_KEY = b'"error"'  # in every protocol's error event, as a key or as its type

# Event bytes a tap holds before it counts their text: counting is only needed when no usage comes, and
# one pass over many events costs a fraction of one pass per event.
_SCAN_AT = 16 * 1024


class UsageTap:
    """Reads usage and counts generated text off an SSE stream in the vendor's protocol.

    `hide_usage`: pass on whole events only, holding back the start of one until it ends, without the
    usage the gateway asked for (see the module docstring); otherwise every chunk goes on as it came.
    `max_event`: an event that grows past this many bytes without ending is not held: the tap lets
    go of it, stops reading the stream and passes the rest on as it comes (the row is then estimated,
    unless usage came before).
    """

    __slots__ = (
        "_buf", "_events", "_text_bytes", "_unscanned", "endpoint", "error", "hide_usage", "max_event", "provider",
        "stopped", "usage",
    )  # fmt: skip

    def __init__(self, provider: Provider, endpoint: str, *, hide_usage: bool = False, max_event: int = 1 << 62) -> None:
        self.provider = provider
        self.endpoint = endpoint
        self.hide_usage = hide_usage
        self.max_event = max_event
        self.stopped = False
        self.usage: Usage | None = None
        self.error: str | None = None  # the message of an error event the vendor ended its stream with
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
            end = complete_end(self._buf, start)
            if end == 0:
                if len(self._buf) > self.max_event:
                    return self._stop(chunk)
                return b"" if self.hide_usage else chunk
            buf = bytes(self._buf)
        else:
            buf = chunk
            end = complete_end(buf)
            if end == 0:  # no whole event yet
                self._buf = bytearray(buf)
                if len(buf) > self.max_event:
                    return self._stop(chunk)
                return b"" if self.hide_usage else chunk
        if end == len(buf):
            whole = buf
            if self._buf:
                self._buf = bytearray()
        else:
            whole = buf[:end]
            self._buf = bytearray(buf[end:])
        if _ERROR_KEY in whole:
            self._errors(whole)
        events = self.provider.events
        # Events without a usage object are only counted, all in one pass; the events from the first
        # one with usage on are read one by one.
        m = events.usage_at.search(whole) if events.usage_key in whole else None
        if m is None:
            self._count(whole)
            return whole if self.hide_usage else chunk
        cut = complete_end(whole[: m.start()])
        if cut:
            self._count(whole[:cut])
        out = [whole[:cut]]
        pos = cut
        for m in EVENT_END.finditer(whole, cut):
            out.append(self._event(whole[pos : m.end()]))
            pos = m.end()
        return b"".join(out) if self.hide_usage else chunk

    def _errors(self, whole: bytes) -> None:
        """Note an error event among whole events (any protocol's shape): the stream's row and the
        channel's health must say the vendor failed, although the client got the event as it came."""
        for event in split_events(whole):
            if _ERROR_KEY in event and (message := stream_error(event_data(event))):
                self.error = message[:300]

    def _stop(self, chunk: bytes) -> bytes:
        """Let go of an event past `max_event`: pass on what was held of it, and from now on everything."""
        held, self._buf = bytes(self._buf), bytearray()
        self.stopped = True
        self._scan()
        return held if self.hide_usage else chunk

    def flush(self) -> bytes:
        """End of stream: a last event left without its blank line is read, and passed on if held."""
        rest, self._buf = bytes(self._buf), bytearray()
        if not rest:
            return b""
        kept = self._event(rest)
        return kept if self.hide_usage else b""

    @property
    def at_boundary(self) -> bool:
        """True when what has been passed on ends with a whole event, so a comment or event may follow."""
        return self.hide_usage or not self._buf

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

    def _event(self, event: bytes) -> bytes:
        """Read one event; return it as the client gets it (without hidden usage, when hiding)."""
        self._events += 1
        self._text(event)
        if not self.provider.events.usage_at.search(event):
            return event
        payload = event_data(event)
        usage = self.provider.usage(self.endpoint, payload)
        if usage is not None:
            if self.usage is None:
                self.usage = usage
            else:
                self.usage.merge(usage)
        if not self.hide_usage or payload is None:
            return event
        kept = self.provider.hide_usage(payload)
        if kept is None:
            return b""
        return event if kept is payload else b"data: " + orjson.dumps(kept) + b"\n\n"


def stream_error(payload: Any) -> str | None:
    """The message of a stream event that reports an error, in any of the protocols: OpenAI and
    Gemini `{"error": {...}}`, Anthropic `{"type": "error", "error": {...}}`, Responses `error` and
    `response.failed`. None for any other event."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    kind = payload.get("type")
    if error is None and kind == "response.failed" and isinstance(payload.get("response"), dict):
        error = payload["response"].get("error")
    elif error is None and kind == "error":
        error = payload  # Responses: the event itself carries code and message
    if not error:
        return None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message or "error")
