"""The fake task vendors speak the protocols the adaptors speak: each adaptor's calls, sent over real HTTP
with aiohttp, submit a task, poll it to the end and fetch its file with a Range header."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from providers.tasks import TASK_VENDORS
from providers.tasks.base import (
    CANCELLED,
    EXPIRED,
    FAILED,
    FIRST_FRAME,
    PENDING,
    RUNNING,
    SUCCEEDED,
    VENDOR_FAILED,
    Media,
    TaskRequest,
    TaskVendor,
    VendorCall,
    VendorState,
)
from tests.faketasks import FakeTasks

KEY = "vendor-key"
MODELS = {"openai": "sora-2", "dashscope": "wan2.6-t2v", "ark": "doubao-seedance-1-0-pro-250528", "vidu": "viduq2"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeTasks]:
    async with FakeTasks(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def send(
    session: aiohttp.ClientSession, base: str, call: VendorCall, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    """One VendorCall over HTTP, as the task engine makes it."""
    data = None
    if call.form is not None:
        data = aiohttp.FormData()
        for name, value, filename, content_type in call.form:
            data.add_field(name, value, filename=filename, content_type=content_type)
    url = call.url or base + call.path
    all_headers = {**call.headers, **(headers or {})}
    async with session.request(
        call.method, url, headers=all_headers, json=call.json, data=data, params=call.query
    ) as resp:
        return resp.status, resp.headers, await resp.read()


async def run(
    session: aiohttp.ClientSession, fake: FakeTasks, vendor: TaskVendor, request: TaskRequest
) -> list[VendorState]:
    """Submit, then poll until final: every state read."""
    base = fake.base_url(vendor.name)
    status, _, body = await send(session, base, vendor.submit(request, KEY))
    assert status == 200, vendor.error(status, body)
    states = [vendor.accepted(body)]
    while states[-1].state not in (SUCCEEDED, FAILED):
        assert len(states) < 10
        status, _, body = await send(session, base, vendor.poll(states[0].vendor_task_id or "", KEY))
        assert status == 200, vendor.error(status, body)
        states.append(vendor.read(body))
    return states


@pytest.mark.parametrize("name", ["openai", "dashscope", "ark", "vidu"])
async def test_submit_poll_and_download_a_range(fake, session, name):
    vendor = TASK_VENDORS[name]
    states = await run(session, fake, vendor, TaskRequest("t2v", MODELS[name], prompt="a cat", seconds=5))
    assert [s.state for s in states] == [PENDING, RUNNING, SUCCEEDED]
    final = states[-1]
    assert final.state == SUCCEEDED and final.usage is not None
    task_id = final.vendor_task_id or states[0].vendor_task_id or ""
    call = vendor.content(task_id, "video", final.videos[0] if final.videos else None, KEY)
    if call is None:  # a signed link, fetched without the key
        call, name_of_file = VendorCall("GET", url=final.videos[0]), f"{task_id}/video.mp4"
    else:
        name_of_file = f"{task_id}/video"
    status, headers, body = await send(session, fake.base_url(name), call, {"Range": "bytes=100-199"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 100-199/{fake.file_size}" and headers["Content-Length"] == "100"
    assert body == fake.file_bytes(name_of_file)[100:200]
    status, headers, body = await send(session, fake.base_url(name), call)
    assert status == 200 and len(body) == fake.file_size == int(headers["Content-Length"])
    assert not any("callback" in str(r.json) for r in fake.seen("submit"))


async def test_sora_uploads_its_image_as_multipart_and_guards_content_with_the_key(fake, session):
    sora = TASK_VENDORS["openai"]
    image = Media(FIRST_FRAME, data=b"\x89PNG-bytes", content_type="image/png", filename="cat.png")
    request = TaskRequest("i2v", "sora-2", prompt="a cat", media=(image,), size="1280x720", seconds=8)
    final = (await run(session, fake, sora, request))[-1]
    form = fake.seen("submit", "openai")[0].form
    assert form["input_reference"] == ("cat.png", "image/png", b"\x89PNG-bytes")
    assert form["seconds"] == "8" and form["size"] == "1280x720" and form["model"] == "sora-2"
    call = sora.content(final.vendor_task_id or "", "thumbnail", None, "wrong-key")
    assert call is not None
    status, _, body = await send(session, fake.base_url("openai"), call)
    assert status == 401 and "Invalid API key" in sora.error(status, body)


async def test_dashscope_wants_the_async_header_and_the_key(fake, session):
    dashscope = TASK_VENDORS["dashscope"]
    call = dashscope.submit(TaskRequest("t2v", "wan2.6-t2v", prompt="a cat"), KEY)
    del call.headers["X-DashScope-Async"]
    status, _, body = await send(session, fake.url, call)
    assert status == 403 and dashscope.error(status, body).startswith("AccessDenied:")
    status, _, body = await send(session, fake.url, dashscope.submit(TaskRequest("t2v", "wan2.6-t2v"), "wrong"))
    assert status == 401 and dashscope.error(status, body) == "InvalidApiKey: Invalid API key provided"


@pytest.mark.parametrize(
    ("name", "word", "reason"),
    [
        ("dashscope", "FAILED", VENDOR_FAILED),
        ("dashscope", "CANCELLED", CANCELLED),
        ("dashscope", "EXPIRED", EXPIRED),
        ("ark", "CANCELLED", CANCELLED),
        ("ark", "EXPIRED", EXPIRED),
        ("vidu", "CANCELLED", CANCELLED),
        ("openai", "FAILED", VENDOR_FAILED),
    ],
)
async def test_scripted_endings(fake, session, name, word, reason):
    fake.script_next(PENDING, word)
    final = (await run(session, fake, TASK_VENDORS[name], TaskRequest("t2v", MODELS[name], prompt="x")))[-1]
    assert (final.state, final.reason) == (FAILED, reason) and final.message


async def test_unknown_status_reads_as_running_not_known(fake, session):
    fake.script_next(PENDING, "warming_up", SUCCEEDED)
    states = await run(session, fake, TASK_VENDORS["ark"], TaskRequest("t2v", "seedance", prompt="x"))
    assert [(s.vendor_status, s.known) for s in states] == [
        ("queued", True),
        ("warming_up", False),
        ("succeeded", True),
    ]


async def test_throttle_then_normal_and_vanish(fake, session):
    vidu = TASK_VENDORS["vidu"]
    status, _, body = await send(session, fake.url, vidu.submit(TaskRequest("t2v", "viduq2", prompt="x"), KEY))
    task_id = vidu.accepted(body).vendor_task_id or ""
    fake.fail_next(2, status=429, retry_after=3)
    for _ in range(2):
        status, headers, body = await send(session, fake.url, vidu.poll(task_id, KEY))
        assert (status, headers["Retry-After"]) == (429, "3") and vidu.error(status, body) == "Throttling: fake 429"
    status, _, body = await send(session, fake.url, vidu.poll(task_id, KEY))
    assert status == 200 and vidu.read(body).vendor_status == "processing"
    fake.vanish(task_id)
    status, _, _ = await send(session, fake.url, vidu.poll(task_id, KEY))
    assert status == 404
    assert [r.kind for r in fake.seen(vendor="vidu")] == ["submit", "poll", "poll", "poll", "poll"]


async def test_a_hung_poll_times_out_and_the_next_answers(fake, session):
    ark = TASK_VENDORS["ark"]
    status, _, body = await send(session, fake.url, ark.submit(TaskRequest("t2v", "seedance", prompt="x"), KEY))
    task_id = ark.accepted(body).vendor_task_id or ""
    fake.hang_next("poll")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await send(session, fake.url, ark.poll(task_id, KEY))
    status, _, body = await send(session, fake.url, ark.poll(task_id, KEY))
    assert status == 200 and ark.read(body).vendor_status == "running"


@pytest.mark.parametrize("name", ["dashscope", "ark", "vidu", "openai"])
async def test_cancel_a_queued_task(fake, session, name):
    vendor = TASK_VENDORS[name]
    base = fake.base_url(name)
    status, _, body = await send(session, base, vendor.submit(TaskRequest("t2v", MODELS[name], prompt="x"), KEY))
    task_id = vendor.accepted(body).vendor_task_id or ""
    call = vendor.cancel(task_id, KEY)
    assert call is not None
    status, _, _ = await send(session, base, call)
    assert status == 200
    status, _, body = await send(session, base, vendor.poll(task_id, KEY))
    if name == "openai":  # DELETE removes the video
        assert status == 404
    else:
        state = vendor.read(body)
        assert (state.state, state.reason) == (FAILED, CANCELLED)


async def test_a_running_task_cannot_be_cancelled_on_dashscope(fake, session):
    dashscope = TASK_VENDORS["dashscope"]
    fake.script_next("RUNNING")
    status, _, body = await send(session, fake.url, dashscope.submit(TaskRequest("t2v", "wan2.6-t2v"), KEY))
    call = dashscope.cancel(dashscope.accepted(body).vendor_task_id or "", KEY)
    assert call is not None
    status, _, body = await send(session, fake.url, call)
    assert status == 400 and "can not cancel" in dashscope.error(status, body)


async def test_image_tasks_and_range_past_the_end(fake, session):
    dashscope = TASK_VENDORS["dashscope"]
    request = TaskRequest("t2i", "wan2.2-t2i-plus", prompt="a cat", size="1024x1024", n=2)
    final = (await run(session, fake, dashscope, request))[-1]
    assert len(final.images) == 2 and final.usage is not None and final.usage.images == 2
    assert fake.seen("submit", "dashscope")[0].json["parameters"] == {"size": "1024*1024", "n": 2}
    status, headers, _ = await send(session, "", VendorCall("GET", url=final.images[0]), {"Range": "bytes=2000000-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{fake.file_size}"
    unsigned = final.images[0].split("?")[0]
    status, _, _ = await send(session, "", VendorCall("GET", url=unsigned))
    assert status == 403
