"""Find the fields of a multipart/form-data upload without copying its files, and forward it.

The upload sits in one buffer (read once, within `limits.max_body_mb`). Parsing records only offsets
into it; forwarding sends views of that same buffer with the client's boundary, splicing in a new
value for the one or two text fields the gateway rewrites (the model name). So a large file is held
in memory once, however many channels the request is tried on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

MAX_FIELD_BYTES = 64 * 1024  # a text field the gateway reads (model, stream) is never larger
MAX_HEADER_BYTES = 16 * 1024
WRITE_CHUNK = 256 * 1024  # bounded writes, so the socket layer never buffers a copy of the whole file

_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data; the message says where."""


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    start: int  # offset of the first content byte in the buffer
    end: int  # offset one past the last content byte


class Form:
    """A parsed upload: its parts as offsets into the buffer it was read into."""

    __slots__ = ("boundary", "buffer", "first", "parts")

    def __init__(self, buffer: bytearray | bytes, boundary: bytes, parts: tuple[Part, ...], first: int) -> None:
        self.buffer = buffer
        self.boundary = boundary
        self.parts = parts
        self.first = first  # offset of the first delimiter: where new fields are inserted

    def field(self, name: str) -> Part | None:
        """The first text (non-file) part called `name`."""
        return next((p for p in self.parts if p.name == name and p.filename is None), None)

    def value(self, name: str) -> str | None:
        """The text of field `name`, which the gateway checks and may rewrite. It must come once and as
        text: a vendor that reads another `name` part than the one checked would bypass the check."""
        named = [p for p in self.parts if p.name == name]
        if not named:
            return None
        if len(named) > 1:
            raise MultipartError(f"field {name!r} appears {len(named)} times; send it once")
        part = named[0]
        if part.filename is not None:
            raise MultipartError(f"field {name!r} must be a text field, not a file")
        if part.end - part.start > MAX_FIELD_BYTES:
            raise MultipartError(f"field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
        try:
            return bytes(self.buffer[part.start : part.end]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MultipartError(f"field {name!r} is not UTF-8 text") from exc

    def payload(self, content_type: str, fields: Mapping[str, str] | None = None) -> SegmentsPayload:
        """The upload as sent, with each text field in `fields` set to the given value (added if missing)."""
        edits: list[tuple[int, int, bytes]] = []
        for name, value in (fields or {}).items():
            part = self.field(name)
            if part is not None:
                edits.append((part.start, part.end, value.encode()))
            else:
                quoted = name.replace("\\", "\\\\").replace('"', '\\"')
                new = b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (
                    self.boundary,
                    quoted.encode(),
                    value.encode(),
                )
                edits.append((self.first, self.first, new))
        edits.sort(key=lambda e: e[0])
        view = memoryview(self.buffer)
        segments: list[bytes | memoryview] = []
        pos = 0
        for start, end, data in edits:
            segments += [view[pos:start], data]
            pos = end
        segments.append(view[pos:])
        return SegmentsPayload(segments, content_type)


class SegmentsPayload(Payload):
    """A request body made of byte segments sent in turn, with a known length and no joining copy."""

    _autoclose = True

    def __init__(self, segments: Sequence[bytes | memoryview], content_type: str) -> None:
        super().__init__(None, content_type=content_type)
        self._segments = [memoryview(s).cast("B") for s in segments if len(s)]
        self._total = sum(s.nbytes for s in self._segments)
        self._size = self._total

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._segments).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        remaining = self._total if content_length is None else min(content_length, self._total)
        for segment in self._segments:
            for i in range(0, segment.nbytes, WRITE_CHUNK):
                if remaining <= 0:
                    return
                piece = segment[i : i + min(WRITE_CHUNK, remaining)]
                remaining -= piece.nbytes
                await writer.write(piece)


def boundary_of(content_type: str) -> bytes | None:
    """The boundary parameter of a multipart/form-data Content-Type header, or None."""
    kind, _, _ = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    value = _params(content_type).get("boundary")
    if not value or len(value) > 200:
        return None
    return value.encode("latin-1", "replace")


def parse_form(buffer: bytearray | bytes, content_type: str) -> Form:
    boundary = boundary_of(content_type)
    if boundary is None:
        raise MultipartError("the Content-Type header has no multipart/form-data boundary")
    delim = b"--" + boundary
    if buffer.startswith(delim):
        pos = 0
    else:
        found = buffer.find(b"\r\n" + delim)
        if found < 0:
            raise MultipartError("the boundary from Content-Type never appears in the body")
        pos = found + 2
    first = pos
    parts: list[Part] = []
    while True:
        pos += len(delim)
        if buffer[pos : pos + 2] == b"--":
            break  # the close delimiter
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0 or buffer[pos:line_end].strip(b" \t"):
            raise MultipartError(f"malformed boundary line at byte {pos}")
        headers_end = buffer.find(b"\r\n\r\n", line_end)
        if headers_end < 0 or headers_end - line_end > MAX_HEADER_BYTES:
            raise MultipartError(f"part {len(parts) + 1} has no end of headers")
        start = headers_end + 4
        end = _next_delimiter(buffer, delim, start)
        name, filename = _disposition(bytes(buffer[line_end + 2 : headers_end]), len(parts) + 1)
        parts.append(Part(name, filename, start, end))
        pos = end + 2
    return Form(buffer, boundary, tuple(parts), first)


def _next_delimiter(buffer: bytearray | bytes, delim: bytes, start: int) -> int:
    """Offset of the CRLF that opens the next delimiter line after `start`.

    A delimiter is CRLF, --boundary, then `--` or optional blanks and CRLF; the same bytes followed by
    anything else are content (RFC 2046 section 5.1.1).
    """
    marker = b"\r\n" + delim
    pos = start
    while (found := buffer.find(marker, pos)) >= 0:
        after = found + len(marker)
        if buffer[after : after + 2] == b"--":
            return found
        line_end = buffer.find(b"\r\n", after, after + 256)
        if line_end >= 0 and not buffer[after:line_end].strip(b" \t"):
            return found
        pos = found + 1
    raise MultipartError("the body ends before the closing boundary")


def _disposition(headers: bytes, index: int) -> tuple[str, str | None]:
    """(name, filename) from a part's Content-Disposition header."""
    text = headers.decode("utf-8", "replace")
    for line in text.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "content-disposition":
            params = _params(value)
            name = params.get("name")
            if name is None:
                break
            filename = params.get("filename")
            if "filename*" in params:
                _, _, encoded = params["filename*"].partition("''")
                filename = unquote(encoded)
            return name, filename
    raise MultipartError(f"part {index} has no Content-Disposition name")


def _params(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in _PARAM_RE.finditer(header):
        value = m.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.setdefault(m.group(1).lower(), value)
    return out
