"""Server-sent events as bytes: where events end, and what one event says. Shared by the usage tap
(gateway.relay.sse) and the stream translators (providers.translate)."""

from __future__ import annotations

import re
from typing import Any

import orjson

# An event ends with a blank line; SSE lines end with LF, CRLF or a bare CR.
EVENT_END = re.compile(rb"\r?\n\r?\n|\r\r")
_ENDINGS = (b"\n\n", b"\n\r\n", b"\r\r")  # what every event ending ends with


def complete_end(buf: bytes | bytearray, start: int = 0) -> int:
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


def split_events(data: bytes) -> list[bytes]:
    """Whole events (as `complete_end` found them) one by one, without their blank lines."""
    if b"\r" in data:
        return EVENT_END.split(data)
    return data.split(b"\n\n")  # the usual line ends: a C split, not a regex one


def event_parts(event: bytes) -> tuple[str | None, bytes]:
    """An event's `event:` name (None when unnamed) and its data, the `data:` lines joined."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return None, event[6:]  # the usual unnamed one-line event
    name: str | None = None
    data: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            data.append(line[5:].strip())
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, b"\n".join(data)
