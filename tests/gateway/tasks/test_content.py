"""Result files through the gateway: a real vendor file server and a real gateway app, both on local ports.

The vendor serves a few MB of deterministic bytes with Range support (aiohttp's FileResponse), and can
also stall mid-body, drop the connection, answer 403/404/500, or stream for ever.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.tasks.content import ContentError, ContentGone, relay_file, serve_stored, store_file
from tests.faultkit import eventually

SIZE = 3 * 1024 * 1024 + 123  # not a multiple of any chunk size
DATA = random.Random(20240601).randbytes(SIZE)
VENDOR_KEY = "vk-secret-key-123"
SIGNATURE = "Signature=SECRETSIG987"
IDLE_S = 0.5


@dataclass
class Vendor:
    file: Path
    requests: list[dict[str, str]] = field(default_factory=list)
    endless_ended: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None

    async def serve_file(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        if request.headers.get("Authorization") != f"Bearer {VENDOR_KEY}":
            return web.Response(status=401, text="bad key")
        return web.FileResponse(self.file)

    async def stall(self, request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        out.content_length = SIZE
        await out.prepare(request)
        await out.write(DATA[: 128 * 1024])
        await asyncio.sleep(30)
        return out

    async def drop(self, request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        out.content_length = SIZE
        await out.prepare(request)
        await out.write(DATA[: SIZE // 2])
        assert request.transport is not None
        request.transport.close()
        return out

    async def endless(self, request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await out.prepare(request)
        try:
            while True:
                await out.write(b"x" * 16384)
                await asyncio.sleep(0.01)
        finally:
            self.endless_ended.set()

    async def slow(self, request: web.Request) -> web.StreamResponse:
        """The whole file over 4 x IDLE_S, never idle for long: no timeout may cut it."""
        out = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        out.content_length = SIZE
        await out.prepare(request)
        step = SIZE // 20 + 1
        for start in range(0, SIZE, step):
            await out.write(DATA[start : start + step])
            await asyncio.sleep(IDLE_S / 5)
        return out

    async def status(self, request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        # What S3-like stores say: the body quotes the request, signature included.
        return web.Response(status=code, text=f"<Error><Code>AccessDenied</Code><URL>{request.path_qs}</URL></Error>")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/video.mp4", self.serve_file)
        app.router.add_get("/stall", self.stall)
        app.router.add_get("/drop", self.drop)
        app.router.add_get("/endless", self.endless)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/status/{code}", self.status)
        return app

    def url(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}{path}?{SIGNATURE}"


@pytest.fixture
async def vendor(tmp_path: Path) -> AsyncIterator[Vendor]:
    file = tmp_path / "vendor" / "video.mp4"
    file.parent.mkdir()
    file.write_bytes(DATA)
    v = Vendor(file)
    v.server = TestServer(v.app(), host="127.0.0.1")
    await v.server.start_server()
    yield v
    await v.server.close()


SESSION = web.AppKey("session", aiohttp.ClientSession)
ERRORS = web.AppKey("errors", list)


@dataclass
class Gateway:
    server: TestServer
    client: aiohttp.ClientSession
    errors: list[ContentError]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"


@pytest.fixture
async def gateway(vendor: Vendor, tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway side: /content/<vendor path> relays, /stored/<name> serves a local copy."""
    stored_dir = tmp_path / "stored"
    stored_dir.mkdir()
    (stored_dir / "copy.bin").write_bytes(DATA)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as s:
            app[SESSION] = s
            yield

    async def relay(request: web.Request) -> web.StreamResponse:
        url = vendor.url("/" + request.match_info["path"])
        try:
            return await relay_file(
                request,
                request.app[SESSION],
                url,
                headers={"Authorization": f"Bearer {VENDOR_KEY}"},
                chunk_idle_s=IDLE_S,
            )
        except ContentError as exc:
            request.app[ERRORS].append(exc)
            return exc.response("openai")

    async def stored(request: web.Request) -> web.StreamResponse:
        try:
            return serve_stored(request, stored_dir / request.match_info["name"], "video/mp4")
        except ContentError as exc:
            return exc.response("openai")

    app = web.Application()
    app[ERRORS] = []
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/content/{path:.+}", relay)
    app.router.add_get("/stored/{name}", stored)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as client:
        yield Gateway(server, client, app[ERRORS])
    await server.close()


# --- relay -------------------------------------------------------------------------------------------------


async def test_full_download_with_the_vendors_headers(gateway, vendor):
    client_headers = {"Authorization": "Bearer client-key", "Cookie": "a=b", "X-Custom": "1"}
    async with gateway.client.get(gateway.url("/content/video.mp4"), headers=client_headers) as r:
        body = await r.read()
        assert r.status == 200
        assert r.headers["Content-Type"] == "video/mp4"
        assert r.headers["Content-Length"] == str(SIZE)
        assert r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["ETag"] and r.headers["Last-Modified"]
    assert body == DATA
    [seen] = vendor.requests
    assert seen["Authorization"] == f"Bearer {VENDOR_KEY}"  # the vendor's key, not the client's
    assert "Cookie" not in seen and "X-Custom" not in seen
    assert seen["Accept-Encoding"] == "identity"


async def test_head_has_the_length_and_no_body(gateway):
    async with gateway.client.head(gateway.url("/content/video.mp4")) as r:
        assert (r.status, r.headers["Content-Length"]) == (200, str(SIZE))
        assert await r.read() == b""


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=100-199", 100, 200),
        ("bytes=-500", SIZE - 500, SIZE),
        (f"bytes={SIZE - 1000}-", SIZE - 1000, SIZE),
        ("bytes=1048576-2097151", 1048576, 2097152),
    ],
)
async def test_range_206_with_the_right_bytes(gateway, vendor, range_header, start, end):
    async with gateway.client.get(gateway.url("/content/video.mp4"), headers={"Range": range_header}) as r:
        body = await r.read()
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
        assert r.headers["Content-Length"] == str(end - start)
    assert body == DATA[start:end]
    assert vendor.requests[0]["Range"] == range_header


async def test_unsatisfiable_range_is_416(gateway):
    async with gateway.client.get(gateway.url("/content/video.mp4"), headers={"Range": f"bytes={SIZE + 10}-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{SIZE}"
        assert await r.read() == b""


async def test_if_range_is_passed_on(gateway, vendor):
    # The vendor here (aiohttp's FileResponse) honours a date If-Range, not an entity tag.
    async with gateway.client.get(gateway.url("/content/video.mp4")) as r:
        last_modified = r.headers["Last-Modified"]
        await r.read()
    fresh = {"Range": "bytes=0-9", "If-Range": last_modified}
    async with gateway.client.get(gateway.url("/content/video.mp4"), headers=fresh) as r:
        assert (r.status, await r.read()) == (206, DATA[:10])
    assert vendor.requests[-1]["If-Range"] == last_modified
    stale = {"Range": "bytes=0-9", "If-Range": "Thu, 01 Jan 1970 00:00:00 GMT"}
    async with gateway.client.get(gateway.url("/content/video.mp4"), headers=stale) as r:
        assert (r.status, len(await r.read())) == (200, SIZE)  # changed since: the whole file


async def test_a_slow_download_longer_than_the_idle_timeout_completes(gateway, vendor, tmp_path):
    started = time.monotonic()
    async with gateway.client.get(gateway.url("/content/slow")) as r:
        assert await r.read() == DATA
    assert time.monotonic() - started > 3 * IDLE_S
    async with aiohttp.ClientSession() as session:
        assert (
            await store_file(session, vendor.url("/slow"), {}, tmp_path / "out" / "slow.mp4", chunk_idle_s=IDLE_S)
            == SIZE
        )
    assert (tmp_path / "out" / "slow.mp4").read_bytes() == DATA


async def test_a_stall_cuts_the_stream_within_the_idle_timeout(gateway):
    started = time.monotonic()
    received = 0
    async with gateway.client.get(gateway.url("/content/stall")) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                received += len(chunk)
    assert received == 128 * 1024
    assert time.monotonic() - started < IDLE_S + 3


async def test_a_vendor_drop_mid_body_is_a_short_read(gateway):
    received = 0
    async with gateway.client.get(gateway.url("/content/drop")) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                received += len(chunk)
    assert received <= SIZE // 2


async def test_client_hang_up_stops_the_upstream_read(gateway, vendor):
    async with gateway.client.get(gateway.url("/content/endless")) as r:
        assert r.status == 200
        await r.content.readany()
        r.close()
    await eventually(vendor.endless_ended.is_set, timeout=3, what="the vendor to see its connection closed")


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (403, 410, ContentGone),
        (404, 410, ContentGone),
        (410, 410, ContentGone),
        (500, 502, ContentError),
        (401, 502, ContentError),
    ],
)
async def test_vendor_errors_become_clear_errors_without_the_url(gateway, code, status, kind):
    async with gateway.client.get(gateway.url(f"/content/status/{code}")) as r:
        text = await r.text()
        assert r.status == status
    [error] = gateway.errors
    assert type(error) is kind and error.vendor_status == code
    for secret in ("SECRETSIG", "Signature", VENDOR_KEY, "/status/", "127.0.0.1"):
        assert secret not in text and secret not in error.message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


async def test_expired_link_message(gateway):
    async with gateway.client.get(gateway.url("/content/status/403")) as r:
        payload = await r.json()
    assert payload["error"]["code"] == "content_gone"
    assert "no longer available from the vendor" in payload["error"]["message"]


async def test_vendor_unreachable_is_502(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ContentError) as caught:
            await store_file(session, f"http://127.0.0.1:{port}/x?{SIGNATURE}", {}, tmp_path / "x.mp4", chunk_idle_s=1)
    assert caught.value.status == 502 and "SECRETSIG" not in caught.value.message
    assert list(tmp_path.iterdir()) == []


# --- store -------------------------------------------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


AUTH = {"Authorization": f"Bearer {VENDOR_KEY}"}


async def test_store_file_writes_the_whole_file(vendor, session, tmp_path):
    dest = tmp_path / "data" / "results" / "task_1.mp4"
    written = await store_file(session, vendor.url("/video.mp4"), AUTH, dest, chunk_idle_s=IDLE_S)
    assert written == SIZE
    assert dest.read_bytes() == DATA
    assert [p.name for p in dest.parent.iterdir()] == ["task_1.mp4"]


@pytest.mark.parametrize(
    ("path", "kind", "status"),
    [("/drop", ContentError, 502), ("/stall", ContentError, 504), ("/status/403", ContentGone, 410)],
)
async def test_store_failure_leaves_no_partial_file(vendor, session, tmp_path, path, kind, status):
    out = tmp_path / "results"
    out.mkdir()
    dest = out / "task_1.mp4"
    dest.write_bytes(b"the previous copy")
    started = time.monotonic()
    with pytest.raises(kind) as caught:
        await store_file(session, vendor.url(path), AUTH, dest, chunk_idle_s=IDLE_S)
    assert caught.value.status == status
    assert time.monotonic() - started < IDLE_S + 3
    assert dest.read_bytes() == b"the previous copy"  # untouched: never half a file
    assert [p.name for p in out.iterdir()] == ["task_1.mp4"]


async def test_store_cancelled_leaves_no_partial_file(vendor, session, tmp_path):
    out = tmp_path / "results"
    dest = out / "task_1.mp4"
    task = asyncio.create_task(store_file(session, vendor.url("/endless"), AUTH, dest, chunk_idle_s=IDLE_S))
    await eventually(lambda: out.exists() and any(p.stat().st_size > 0 for p in out.iterdir()), what="bytes on disk")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(out.iterdir()) == []
    await eventually(vendor.endless_ended.is_set, timeout=3, what="the vendor to see its connection closed")


# --- stored copies -------------------------------------------------------------------------------------------


async def test_serve_stored_whole_and_ranges(gateway):
    async with gateway.client.get(gateway.url("/stored/copy.bin")) as r:
        assert (r.status, r.headers["Content-Type"], r.headers["Accept-Ranges"]) == (200, "video/mp4", "bytes")
        assert await r.read() == DATA
    for header, start, end in (
        ("bytes=10-19", 10, 20),
        ("bytes=-7", SIZE - 7, SIZE),
        ("bytes=3000000-", 3000000, SIZE),
    ):
        async with gateway.client.get(gateway.url("/stored/copy.bin"), headers={"Range": header}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
            assert await r.read() == DATA[start:end]
    async with gateway.client.get(gateway.url("/stored/copy.bin"), headers={"Range": f"bytes={SIZE}-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{SIZE}"
    stale = {"Range": "bytes=0-9", "If-Range": "Thu, 01 Jan 1970 00:00:00 GMT"}
    async with gateway.client.get(gateway.url("/stored/copy.bin"), headers=stale) as r:
        assert (r.status, len(await r.read())) == (200, SIZE)


async def test_serve_stored_missing_copy_is_gone(gateway):
    async with gateway.client.get(gateway.url("/stored/nothing.bin")) as r:
        assert r.status == 410
        assert (await r.json())["error"]["code"] == "content_gone"
