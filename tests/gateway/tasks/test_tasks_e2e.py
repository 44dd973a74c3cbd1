"""Async tasks end to end: each client dialect on each vendor, failures, flaky polls, a restart, key
isolation, content with Range, callbacks; every finished task with exactly one usage row."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.state import SERVICES
from gateway.tasks import webhooks
from tests.faketasks import CANCELLED, FAILED, GONE, PENDING, RUNNING, SUCCEEDED, FakeTasks

VENDOR_KEY = "vendor-key"
MODELS = {"openai": "sora-2", "dashscope": "wan2.6-t2v", "ark": "seedance-pro", "vidu": "viduq2"}
PRICE = {"per_second": {"720P": 0.5, "1080P": 1.0}}


def task_config(fake: FakeTasks, **tasks: Any) -> dict[str, Any]:
    return {
        "keys": [{"name": "app1", "key": "key-one", "webhook_secret": "hook-secret"}, {"name": "app2", "key": "key-two"}],
        "channels": [
            {"name": vendor, "provider": vendor, "base_url": fake.base_url(vendor), "api_keys": [VENDOR_KEY], "models": [model]}
            for vendor, model in MODELS.items()
        ]
        + [{"name": "wan-img", "provider": "dashscope", "base_url": fake.url, "api_keys": [VENDOR_KEY], "models": ["wan2.2-t2i-plus"]},
           {"name": "kf", "provider": "dashscope", "base_url": fake.url, "api_keys": [VENDOR_KEY], "models": ["wan2.2-kf2v-flash"]}],
        "models": {m: {"catalog": "t2v", "price": PRICE} for m in MODELS.values()}
        | {"wan2.2-t2i-plus": {"catalog": "t2i", "price": {"per_image": 0.2}}},
        "tasks": {"poll_interval_s": 0.05, "allow_private_callbacks": True, **tasks},
    }  # fmt: skip


@pytest.fixture
async def fake() -> AsyncIterator[FakeTasks]:
    async with FakeTasks(api_key=VENDOR_KEY, file_size=256 * 1024) as fake:
        yield fake


async def call(gw: Any, method: str, path: str, key: str = "key-one", **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}"}, **kw) as r:
        body = await r.read()
        try:
            return r.status, await r.json(content_type=None)
        except ValueError:
            return r.status, body


async def wait_final(gw: Any, task_id: str, key: str = "key-one", timeout: float = 10.0) -> dict[str, Any]:
    for _ in range(int(timeout / 0.05)):
        status, task = await call(gw, "GET", f"/v1/tasks/{task_id}", key)
        assert status == 200, task
        if task["status"] in ("SUCCEEDED", "FAILED"):
            return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def task_rows(gw: Any) -> list[dict[str, Any]]:
    db = sqlite3.connect(gw.db_path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM usage WHERE task_id IS NOT NULL ORDER BY id")]
    finally:
        db.close()


@pytest.mark.parametrize("vendor", list(MODELS))
async def test_video_generations_on_every_vendor_bill_once(gateway_factory, fake, vendor):
    gw = await gateway_factory(task_config(fake))
    status, created = await call(gw, "POST", "/v1/video/generations", json={
        "model": MODELS[vendor], "prompt": "a cat on a skateboard", "duration": 4, "resolution": "720P",
        "callback_url": "http://127.0.0.1:9/never-sent-to-the-vendor",
    })  # fmt: skip
    assert status == 200, created
    task = await wait_final(gw, created["id"])
    assert task["status"] == "SUCCEEDED" and task["results"]["videos"], task
    assert "127.0.0.1:9" not in str([(r.json, r.form) for r in fake.seen("submit")])  # the callback is the gateway's to make
    rows = task_rows(gw)
    assert len(rows) == 1 and rows[0]["task_id"] == created["id"] and rows[0]["status"] == 200
    seconds = rows[0]["audio_seconds"]
    assert seconds > 0 and rows[0]["cost"] == pytest.approx(seconds * (0.5 if rows[0]["resolution"] in (None, "720P") else 1.0))


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")  # the SDK's notice that Sora's API retires
async def test_openai_sdk_creates_polls_and_downloads_a_video(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake))
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="key-one", max_retries=0)
    gw.clients.append(client)
    video = await client.videos.create(model="sora-2", prompt="a wave", seconds="4", size="1280x720")
    assert video.object == "video" and video.id.startswith("task_")
    done = await client.videos.poll(video.id, poll_interval_ms=50) if hasattr(client.videos, "poll") else None
    final = done or await client.videos.retrieve(video.id)
    for _ in range(200):
        if final.status in ("completed", "failed"):
            break
        await asyncio.sleep(0.05)
        final = await client.videos.retrieve(video.id)
    assert final.status == "completed"
    content = await client.videos.download_content(video.id)
    data = await content.aread()
    assert len(data) == fake.file_size
    listed = await client.videos.list()
    assert [v.id for v in listed.data] == [video.id]
    # The vendor saw its own key, never the client's; the client never sees the vendor's id.
    submit = fake.seen("submit", "openai")[0]
    assert submit.headers["Authorization"] == f"Bearer {VENDOR_KEY}"
    assert fake.tasks and all(vid not in str(final.model_dump()) for vid in fake.tasks)
    deleted = await client.videos.delete(video.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.videos.retrieve(video.id)


async def test_llmage_uploads_reach_vendors_as_frames_and_references(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake))
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64

    def form(**fields: Any) -> aiohttp.FormData:
        data = aiohttp.FormData()
        for name, value in fields.items():
            if isinstance(value, bytes):
                data.add_field(name, value, filename=f"{name}.png", content_type="image/png")
            else:
                data.add_field(name, str(value))
        return data

    # first frame, to Ark
    status, created = await call(gw, "POST", "/llmage/v1/video/generations",
                                 data=form(model="seedance-pro", prompt="go", image_file=png, duration=5))  # fmt: skip
    assert status == 200 and created["status"] == "CREATED", created
    roles = [c.get("role") for c in fake.seen("submit", "ark")[-1].json["content"] if c["type"] == "image_url"]
    assert roles == ["first_frame"]
    # first and last frame, to Wan's keyframe model
    status, created2 = await call(gw, "POST", "/llmage/v1/video/generations",
                                  data=form(model="wan2.2-kf2v-flash", prompt="go", image1_file=png, image2_file=png))  # fmt: skip
    assert status == 200, created2
    body = fake.seen("submit", "dashscope")[-1].json
    assert body["input"]["first_frame_url"].startswith("data:image/png;base64,") and body["input"]["last_frame_url"]
    # references, to Vidu
    data = form(model="viduq2", prompt="go", catelogid="r2v")
    for _ in range(3):
        data.add_field("image_files[]", png, filename="r.png", content_type="image/png")
    status, created3 = await call(gw, "POST", "/llmage/v1/video/generations", data=data)
    assert status == 200, created3
    received = fake.seen("submit", "vidu")[-1]
    assert received.path.endswith("/reference2video") and len(received.json["images"]) == 3
    for created_ in (created, created2, created3):
        await wait_final(gw, created_["taskid"])
    status, shown = await call(gw, "GET", f"/llmage/v1/tasks?taskid={created['taskid']}")
    assert status == 200 and shown["status"] == "SUCCEEDED" and shown["taskid"] == created["taskid"]
    assert shown["video"].startswith("http") and "/content" in shown["video"]
    assert len(task_rows(gw)) == 3


@pytest.mark.parametrize(("word", "reason"), [(FAILED, "vendor_failed"), (CANCELLED, "cancelled"), (GONE, "expired")])
async def test_failed_cancelled_and_vanished_tasks_are_refunded(gateway_factory, fake, word, reason):
    raw = task_config(fake)
    raw["keys"][0]["budget"] = 100
    gw = await gateway_factory(raw)
    fake.script_next(PENDING, RUNNING, word)
    status, created = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "x", "duration": 8})
    assert status == 200, created
    limiter = gw.server.app[SERVICES].limiter
    key = gw.runtime.config.keys[0]
    assert (await limiter.balance(key)).reserved == pytest.approx(8 * 1.0)  # unknown resolution: the highest price held
    task = await wait_final(gw, created["id"])
    assert task["status"] == "FAILED" and task["reason"] == reason
    (row,) = task_rows(gw)
    assert row["cost"] == 0 and row["error"].startswith(f"task {reason}")
    balance = await limiter.balance(key)
    assert balance.reserved == 0 and balance.spent == 0


async def test_a_limited_keys_submission_is_counted_and_answered_with_its_limits(gateway_factory, fake):
    """A submission is a request to a vendor: it counts against the key's rpm, and its answer carries the
    key's x-ratelimit-* headers like any other answer to a limited key; past the rpm it is a 429."""
    raw = task_config(fake)
    raw["keys"][0]["rpm"] = 2
    gw = await gateway_factory(raw)
    headers = {"Authorization": "Bearer key-one"}
    body = {"model": "wan2.6-t2v", "prompt": "x"}
    async with aiohttp.ClientSession() as s:
        for left in ("1", "0"):
            fake.script_next(PENDING, SUCCEEDED)
            async with s.post(gw.url + "/v1/video/generations", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["x-ratelimit-limit-requests"] == "2" and r.headers["x-ratelimit-remaining-requests"] == left
                assert r.headers["x-ratelimit-reset-requests"] == "1m1s" and "x-ratelimit-limit-tokens" not in r.headers
        async with s.post(gw.url + "/v1/video/generations", json=body, headers=headers) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
            assert r.headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_vendor_throttling_polls_does_not_fail_the_task(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake))
    fake.fail_next(3, status=429, retry_after=0.05, on="poll")
    fake.fail_next(3, status=500, on="poll")
    status, created = await call(gw, "POST", "/v1/video/generations", json={"model": "wan2.6-t2v", "prompt": "x"})
    assert status == 200
    task = await wait_final(gw, created["id"], timeout=30)
    assert task["status"] == "SUCCEEDED"
    assert len(fake.seen("poll")) >= 8


async def test_a_task_outlives_a_gateway_restart(gateway_factory, fake, tmp_path):
    raw = task_config(fake)
    gw = await gateway_factory(raw)
    fake.script_next(PENDING, RUNNING, RUNNING, RUNNING, RUNNING, RUNNING, SUCCEEDED)
    status, created = await call(gw, "POST", "/v1/video/generations", json={"model": "ark" and "seedance-pro", "prompt": "x"})
    assert status == 200
    await gw.server.close()  # the gateway stops mid-task
    gw2 = await gateway_factory(raw)  # same database
    task = await wait_final(gw2, created["id"])
    assert task["status"] == "SUCCEEDED"
    assert len(task_rows(gw2)) == 1


async def test_keys_never_see_each_others_tasks(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake))
    status, created = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "secret plan"})
    assert status == 200
    tid = created["id"]
    await wait_final(gw, tid)
    for path in (f"/v1/tasks/{tid}", f"/v1/videos/{tid}", f"/v1/video/generations/{tid}", f"/v1/images/{tid}",
                 f"/llmage/v1/tasks?taskid={tid}", f"/v1/tasks?taskid={tid}", f"/v1/tasks/{tid}/content",
                 f"/api/service/task/{tid}"):  # fmt: skip
        status, body = await call(gw, "GET", path, key="key-two")
        assert status == 404, (path, body)
        assert "secret plan" not in str(body)
    status, body = await call(gw, "DELETE", f"/v1/videos/{tid}", key="key-two")
    assert status == 404
    status, listed = await call(gw, "GET", "/v1/videos", key="key-two")
    assert status == 200 and listed["data"] == []
    status, listed = await call(gw, "GET", "/api/task/list", key="key-two")
    assert status == 200 and listed["data"]["total"] == 0


async def test_content_is_streamed_with_range(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake))
    _, created = await call(gw, "POST", "/v1/video/generations", json={"model": "wan2.6-t2v", "prompt": "x"})
    await wait_final(gw, created["id"])
    headers = {"Authorization": "Bearer key-one", "Range": "bytes=1000-1999"}
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/v1/tasks/{created['id']}/content", headers=headers) as r:
        assert r.status == 206
        part = await r.read()
        assert r.headers["Content-Range"].startswith("bytes 1000-1999/")
        assert "Signature" not in str(r.headers) and VENDOR_KEY not in str(r.headers)
    (vendor_id,) = fake.tasks
    assert part == fake.file_bytes(f"{vendor_id}/video.mp4")[1000:2000]
    assert len(fake.seen("download")) == 1  # the gateway fetched the range, not the whole file


async def test_store_results_keeps_a_copy(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake, store_results=True))
    _, created = await call(gw, "POST", "/v1/video/generations", json={"model": "wan2.6-t2v", "prompt": "x"})
    await wait_final(gw, created["id"])
    store = gw.server.app[SERVICES].tasks.store
    for _ in range(200):  # the copy is in place once the row names it
        if (await store.get_any(created["id"])).stored:
            break
        await asyncio.sleep(0.05)
    (copy,) = (await store.get_any(created["id"])).stored.values()
    assert Path(copy).parent == Path(gw.db_path).parent / "tasks" / created["id"]
    await fake.stop()  # the vendor's URL is gone: the copy still serves
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/v1/tasks/{created['id']}/content",
                                                   headers={"Authorization": "Bearer key-one"}) as r:  # fmt: skip
        assert r.status == 200 and len(await r.read()) == fake.file_size


async def test_a_callback_receiver_that_fails_twice_gets_one_signed_delivery(gateway_factory, fake, monkeypatch):
    monkeypatch.setattr(webhooks, "next_attempt_delay", lambda attempt, retry_after=None: 0.05 if attempt < 8 else None)
    got: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((await request.read(), request.headers.get("X-Gateway-Signature", "")))
        return web.Response(status=500 if len(got) <= 2 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = TestServer(app, host="127.0.0.1")
    await receiver.start_server()
    try:
        gw = await gateway_factory(task_config(fake))
        url = str(receiver.make_url("/hook"))
        status, created = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "x", "callback_url": url})
        assert status == 200
        await wait_final(gw, created["id"])
        for _ in range(200):
            if len(got) >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert len(got) == 3
        body, signature = got[-1]
        assert webhooks.verify("hook-secret", body, signature)
        assert created["id"].encode() in body
    finally:
        await receiver.close()


async def test_callbacks_to_private_addresses_are_refused_by_default(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake, allow_private_callbacks=False))
    status, created = await call(gw, "POST", "/v1/video/generations",
                                 json={"model": "viduq2", "prompt": "x", "callback_url": "http://127.0.0.1:1/hook"})  # fmt: skip
    assert status == 200
    await wait_final(gw, created["id"])
    store = gw.server.app[SERVICES].tasks.store
    for _ in range(100):
        task = await store.get_any(created["id"])
        if task.callback_state != "pending":
            break
        await asyncio.sleep(0.05)
    assert task.callback_state == "refused"


async def test_service_dialect_and_async_images(gateway_factory, fake):
    raw = task_config(fake)
    raw["services"] = [{"service_code": "image_generation", "name": "图像", "category": "image", "model": "wan2.2-t2i-plus"}]
    gw = await gateway_factory(raw)
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/api/service/list") as r:  # no auth
        listed = await r.json()
    assert listed["success"] and listed["data"]["services"][0]["service_code"] == "image_generation"
    status, invoked = await call(gw, "POST", "/api/service/invoke", json={"service_code": "image_generation", "params": {"prompt": "a fox", "n": 2}})
    assert status == 200 and invoked["success"], invoked
    tid = invoked["data"]["task_id"]
    await wait_final(gw, tid)
    status, shown = await call(gw, "GET", f"/api/service/task/{tid}")
    assert shown["data"]["status"] == "completed"
    status, err = await call(gw, "GET", "/api/service/task/nope")
    assert status == 404 and err["success"] is False and err["code"]
    status, err = await call(gw, "POST", "/api/service/invoke", key="bad-key", json={})
    assert status == 401 and err["success"] is False
    # OpenAI images, asynchronously
    status, img = await call(gw, "POST", "/v1/images/generations?async=true", json={"model": "wan2.2-t2i-plus", "prompt": "a fox"})
    assert status == 200, img
    await wait_final(gw, img["id"])
    status, done = await call(gw, "GET", f"/v1/images/{img['id']}")
    assert status == 200 and done["data"][0]["url"]
    rows = task_rows(gw)
    assert len(rows) == 2 and rows[0]["cost"] == pytest.approx(0.2 * rows[0]["images"])


async def test_a_task_past_its_timeout_fails_and_is_refunded(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake, timeout_s={"t2v": 0.3}))
    fake.script_next(PENDING, RUNNING)  # runs forever
    _, created = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "x"})
    task = await wait_final(gw, created["id"])
    assert task["status"] == "FAILED" and task["reason"] == "timeout"
    assert task_rows(gw)[0]["cost"] == 0


async def test_a_refused_submission_is_a_400_and_costs_nothing(gateway_factory, fake):
    raw = task_config(fake)
    raw["keys"][0]["budget"] = 100
    gw = await gateway_factory(raw)
    fake.fail_next(1, status=400, on="submit")
    status, err = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "x"})
    assert status == 400 and "refused" in err["error"]["message"]
    assert task_rows(gw) == []
    fake.fail_next(1, status=503, on="submit")  # not taken: tried again on... the only channel, so 502
    status, err = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "x"})
    assert status == 502
    balance = await gw.server.app[SERVICES].limiter.balance(gw.runtime.config.keys[0])
    assert balance.reserved == 0 and balance.spent == 0  # the holds of both refused tasks went back


async def test_a_gateway_killed_mid_task_finishes_it_after_a_restart(tmp_path, fake):
    from tests.procs import GatewayProcess

    gw = GatewayProcess(tmp_path, task_config(fake))
    await gw.start()
    try:
        fake.script_next(PENDING, *[RUNNING] * 40, SUCCEEDED)
        status, created = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "x", "duration": 4})
        assert status == 200, created
        await asyncio.sleep(0.3)  # a few polls
        gw.kill()  # SIGKILL: no drain, no flush
        await gw.start()
        task = await wait_final(gw, created["id"], timeout=20)
        assert task["status"] == "SUCCEEDED"
        rows = task_rows(type("G", (), {"db_path": tmp_path / "usage.db"})())
        assert len(rows) == 1 and rows[0]["cost"] == pytest.approx(4 * 1.0)  # no resolution: the highest price
    finally:
        gw.kill()


async def test_a_submission_cut_off_by_a_crash_is_failed_and_refunded(gateway_factory, fake):
    from gateway.tasks.model import Task

    gw = await gateway_factory(task_config(fake))
    store = gw.server.app[SERVICES].tasks.store
    # What a crash between writing the row and the vendor's answer leaves: CREATED, no vendor id.
    await store.create(Task(id="task_cutoff", key_name="app1", catalog="t2v", model="viduq2", upstream_model="viduq2",
                            channel="vidu", vendor="vidu", dialect="task", created_at=1.0e9 + 1, updated_at=1.0e9))  # fmt: skip
    task = await wait_final(gw, "task_cutoff")
    assert task["status"] == "FAILED" and task["reason"] in ("vendor_failed", "timeout")
    assert task_rows(gw)[0]["cost"] == 0


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
async def test_a_remix_goes_to_the_channel_that_made_the_video(gateway_factory, fake):
    raw = task_config(fake)
    raw["channels"].append({"name": "ark-too", "provider": "openai", "base_url": fake.base_url("openai"),
                            "api_keys": [VENDOR_KEY], "models": ["sora-2"], "priority": 5})  # fmt: skip
    gw = await gateway_factory(raw)
    status, video = await call(gw, "POST", "/v1/videos", json={"model": "sora-2", "prompt": "a wave", "seconds": "4"})
    assert status == 200, video
    await wait_final(gw, video["id"])
    made_by = (await gw.server.app[SERVICES].tasks.store.get_any(video["id"])).channel
    status, remix = await call(gw, "POST", f"/v1/videos/{video['id']}/remix", json={"prompt": "at night"})
    assert status == 200, remix
    assert remix["remixed_from_video_id"] == video["id"]
    assert (await gw.server.app[SERVICES].tasks.store.get_any(remix["id"])).channel == made_by
    assert fake.seen("remix") and fake.seen("remix")[0].json == {"prompt": "at night"}
    status, _ = await call(gw, "POST", f"/v1/videos/{video['id']}/remix", key="key-two", json={"prompt": "x"})
    assert status == 404


async def test_an_async_image_edit_takes_its_upload(gateway_factory, fake):
    gw = await gateway_factory(task_config(fake))
    data = aiohttp.FormData()
    data.add_field("model", "viduq2")
    data.add_field("prompt", "make it blue")
    data.add_field("image", b"\x89PNG\r\n\x1a\n" + b"\0" * 32, filename="in.png", content_type="image/png")
    status, created = await call(gw, "POST", "/v1/images/edits?async=true", data=data)
    assert status == 200, created
    task = await wait_final(gw, created["id"])
    assert task["status"] == "SUCCEEDED" and task["catalog"] == "i2i"
    received = fake.seen("submit", "vidu")[-1]
    assert received.path.endswith("/reference2image") and received.json["images"][0].startswith("data:image/png;base64,")


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
async def test_openai_sdk_uploads_an_input_reference_to_wan(gateway_factory, fake):
    raw = task_config(fake)
    raw["channels"].append({"name": "wan-i2v", "provider": "dashscope", "base_url": fake.url, "api_keys": [VENDOR_KEY],
                            "models": ["wan2.6-i2v"]})  # fmt: skip
    gw = await gateway_factory(raw)
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="key-one", max_retries=0)
    gw.clients.append(client)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    video = await client.videos.create(model="wan2.6-i2v", prompt="wake up", input_reference=("frame.png", png, "image/png"))
    assert video.object == "video"
    body = fake.seen("submit", "dashscope")[-1].json
    assert body["model"] == "wan2.6-i2v"
    image = body["input"].get("img_url") or body["input"]["media"][0]["url"]
    assert image.startswith("data:image/png;base64,")
    task = await wait_final(gw, video.id)
    assert task["catalog"] == "i2v" and task["status"] == "SUCCEEDED"


async def test_a_submission_gets_its_access_line_but_no_row_of_its_own(gateway_factory, fake, capsys):
    gw = await gateway_factory(task_config(fake))
    status, created = await call(gw, "POST", "/v1/video/generations", json={"model": "viduq2", "prompt": "x"})
    assert status == 200
    out = capsys.readouterr().out
    assert "path=/v1/video/generations" in out or '"path":"/v1/video/generations"' in out
    rows = await gw.rows()
    assert [r for r in rows if r["endpoint"] == "video/generations"] == []  # the task's row comes when it ends
    await wait_final(gw, created["id"])
    assert [r["task_id"] for r in await gw.rows() if r["task_id"]] == [created["id"]]
