"""Result files (videos, images): streamed from the vendor to the client, copied under data/, served from there.

    ContentError (GatewayError)   the file could not be fetched: 502 (the vendor failed), 504 (no answer)
     └── ContentGone              410: the vendor no longer serves it (403 on an expired signed URL,
                                  404, 410), or the stored copy is missing

The vendor's URL is signed (whoever holds it can fetch the file until it expires) and some vendors want
the API key to fetch: neither ever appears in an error, a log line or a header the client gets, and the
errors are raised `from None` because aiohttp's own messages quote the URL.

Timeouts: `connect_s` to connect, then `chunk_idle_s` for every wait on the vendor (the head, then each
chunk of the body; aiohttp's `sock_read`, which pauses while the client is slow to take bytes). A
download takes as long as it takes while bytes keep coming, so an hour of video over a slow link is
not cut, and a vendor that stalls is. A client that takes no byte for `chunk_idle_s` is cut too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Final, NoReturn

import aiohttp
import structlog
from aiohttp import web

from gateway.errors import GatewayError

log = structlog.get_logger("gateway.tasks")

# The client's headers that reach the vendor: only those that pick the bytes to send.
FORWARDED_REQUEST: Final = ("Range", "If-Range")
# The vendor's headers that reach the client. Content-Encoding too: the body is passed on as it came.
FORWARDED_RESPONSE: Final = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
    "Content-Encoding",
)
PASSED_STATUSES: Final = frozenset({200, 206, 416})
GONE_STATUSES: Final = frozenset({403, 404, 410})
WRITE_CHUNK: Final = 256 * 1024  # FileResponse's chunk for stored copies


class ContentError(GatewayError):
    """The result file could not be fetched. `vendor_status`: what the vendor answered, if it did."""

    def __init__(
        self, status: int, message: str, *, vendor_status: int | None = None, code: str = "content_unavailable"
    ) -> None:
        super().__init__(status, message, type="upstream_error", code=code)
        self.vendor_status = vendor_status


class ContentGone(ContentError):
    def __init__(self, message: str, *, vendor_status: int | None = None) -> None:
        super().__init__(410, message, vendor_status=vendor_status, code="content_gone")


async def relay_file(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    chunk_idle_s: float = 60,
    connect_s: float = 10,
) -> web.StreamResponse:
    """Stream the vendor's file at `url` to the client, chunk by chunk, as the vendor answers it.

    `headers`: what the vendor needs (its key, for Sora); of the client's headers only Range and
    If-Range are passed on. A HEAD is sent to the vendor as a GET (a signed URL is signed for GET) and
    answered with the head alone. The vendor's 200, 206 or 416 reaches the client with its Content-Type,
    Content-Length, Content-Range, Accept-Ranges, ETag and Last-Modified (a 416 without its body).
    Before the head is sent, failures raise ContentError / ContentGone for the caller to render. After
    it, a vendor that breaks off or stalls cuts the client's connection (a short body, never a clean
    end) and the response is returned; a client that hangs up closes the vendor connection at once.
    """
    sent = dict(headers)
    for name in FORWARDED_REQUEST:
        value = request.headers.get(name)
        if value is not None:
            sent[name] = value
    upstream = await _open(session, url, sent, chunk_idle_s=chunk_idle_s, connect_s=connect_s)
    complete = False
    try:
        if upstream.status not in PASSED_STATUSES:
            _status_error(upstream.status)
        out = web.StreamResponse(status=upstream.status)
        for name in FORWARDED_RESPONSE:
            value = upstream.headers.get(name)
            if value is not None and not (upstream.status == 416 and name in ("Content-Type", "Content-Length")):
                out.headers[name] = value
        if upstream.status == 416:
            out.content_length = 0  # the vendor's error body is not passed on
        await out.prepare(request)
        if upstream.status == 416 or request.method == "HEAD":
            await out.write_eof()
        elif await _pump(request, upstream, out, chunk_idle_s):
            complete = True
            await out.write_eof()
    finally:
        # A body not read to its end (a cut, a hang-up, a cancellation) closes the vendor connection.
        if complete:
            upstream.release()
        else:
            upstream.close()
    return out


async def store_file(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    dest: Path,
    *,
    chunk_idle_s: float = 60,
    connect_s: float = 10,
) -> int:
    """Download the vendor's file to `dest`; the number of bytes written.

    The bytes go to a hidden temporary file beside `dest`, synced, then renamed over it: `dest` keeps
    what it had (nothing, or an earlier copy) until the whole new file takes its place. Any failure
    (ContentError, ContentGone, a cancellation, a full disk) removes the temporary file and raises.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    part = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            written = await _download(session, url, headers, file, chunk_idle_s=chunk_idle_s, connect_s=connect_s)
            file.flush()
            await asyncio.to_thread(os.fsync, file.fileno())
        os.replace(part, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
    return written


def serve_stored(request: web.Request, path: Path, content_type: str) -> web.StreamResponse:
    """The stored copy at `path` with Range support (206, 416), ETag and Last-Modified: aiohttp's
    FileResponse, which reads `request`'s Range when it is returned. ContentGone when the copy is missing.

    FileResponse honours an If-Range date but not an entity tag (it serves the range regardless); a
    stored copy is written once per result, so a resumed download still gets the bytes it expects.
    """
    if not path.is_file():
        raise ContentGone("The stored copy of this result file is missing.")
    return web.FileResponse(path, chunk_size=WRITE_CHUNK, headers={"Content-Type": content_type})


async def _open(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], *, chunk_idle_s: float, connect_s: float
) -> aiohttp.ClientResponse:
    # No total: only the connection and each read are bounded. The body is passed on as it comes
    # (no decompression), so Content-Length and Content-Range stay true.
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_s, sock_read=chunk_idle_s)
    headers.setdefault("Accept-Encoding", "identity")
    try:
        return await session.get(url, headers=headers, timeout=timeout, auto_decompress=False)
    except aiohttp.ConnectionTimeoutError:
        raise ContentError(504, f"The vendor's file server could not be reached within {connect_s:g}s.") from None
    except TimeoutError:
        raise ContentError(504, f"The vendor did not answer for the result file within {chunk_idle_s:g}s.") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ContentError(502, f"The vendor's file server could not be reached ({type(exc).__name__}).") from None


def _status_error(status: int) -> NoReturn:
    if status in GONE_STATUSES:
        raise ContentGone(
            f"The result file is no longer available from the vendor (it answered {status}); its link may have expired.",
            vendor_status=status,
        )
    raise ContentError(502, f"The vendor answered {status} for the result file.", vendor_status=status)


async def _pump(request: web.Request, upstream: aiohttp.ClientResponse, out: web.StreamResponse, idle_s: float) -> bool:
    """Pass the body on; False when it was cut short (the client's connection is then closed)."""
    content = upstream.content
    while True:
        try:
            chunk = await content.readany()
        except TimeoutError:
            return _cut(request, f"the vendor sent nothing for {idle_s:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return _cut(request, f"the vendor's connection broke ({type(exc).__name__})")
        if not chunk:
            return True
        try:
            async with asyncio.timeout(idle_s):
                await out.write(chunk)
        except TimeoutError:
            return _cut(request, f"the client took nothing for {idle_s:g}s")
        except ConnectionError:
            log.info("content_client_gone")
            return False


def _cut(request: web.Request, why: str) -> bool:
    log.warning("content_cut", reason=why)
    # The head promised more (or a chunked body's end): closing the connection is the only way to say
    # the body is short, rather than ending it cleanly.
    if request.transport is not None:
        request.transport.close()
    return False


async def _download(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    file: BinaryIO,
    *,
    chunk_idle_s: float,
    connect_s: float,
) -> int:
    upstream = await _open(session, url, dict(headers), chunk_idle_s=chunk_idle_s, connect_s=connect_s)
    complete = False
    written = 0
    try:
        if upstream.status != 200:
            _status_error(upstream.status)
        while True:
            try:
                chunk = await upstream.content.readany()
            except TimeoutError:
                raise ContentError(504, f"The vendor sent nothing of the result file for {chunk_idle_s:g}s.") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise ContentError(502, f"The download of the result file broke off ({type(exc).__name__}).") from None
            if not chunk:
                break
            file.write(chunk)  # to the page cache: short enough for the loop; the sync runs in a thread
            written += len(chunk)
        expected = upstream.content_length
        if expected is not None and written != expected:
            raise ContentError(502, f"The vendor sent {written} of {expected} bytes of the result file.")
        complete = True
    finally:
        if complete:
            upstream.release()
        else:
            upstream.close()
    return written
