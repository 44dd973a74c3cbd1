"""Vidu ent/v2: the endpoint and body for each catalog, and every answer read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from providers.tasks import TASK_VENDORS
from providers.tasks.base import (
    AUDIO,
    CANCELLED,
    FAILED,
    FIRST_FRAME,
    LAST_FRAME,
    PENDING,
    REFERENCE,
    RUNNING,
    SUCCEEDED,
    VENDOR_FAILED,
    VIDEO,
    Media,
    TaskRequest,
    TaskUsage,
    VendorCall,
    VendorError,
)
from providers.tasks.vidu import Vidu

NOW = 1_800_000_000.0
vidu = Vidu(clock=lambda: NOW)
AUTH = {"Authorization": "Token vidu-key"}
FIRST = Media(FIRST_FRAME, url="https://img/first.png")
LAST = Media(LAST_FRAME, data=b"last", content_type="image/png")  # -> data:image/png;base64,bGFzdA==


def refs(n: int) -> tuple[Media, ...]:
    return tuple(Media(REFERENCE, url=f"https://r/{i}.png") for i in range(n))


def creations(**fields: Any) -> bytes:
    return orjson.dumps({"id": "870", "state": "processing", "err_code": "", "credits": 0, "payload": "", **fields})


def test_registered_as_vidu():
    assert isinstance(TASK_VENDORS["vidu"], Vidu)


def test_t2v_with_top_level_extra():
    request = TaskRequest(
        "t2v",
        "viduq2",
        prompt="a cat",
        seconds=5,
        ratio="16:9",
        resolution="1080P",
        seed=9,
        extra={"off_peak": True, "bgm": True, "movement_amplitude": "large", "callback_url": "https://client/hook"},
    )
    assert vidu.submit(request, "vidu-key") == VendorCall(
        "POST",
        "/ent/v2/text2video",
        headers=AUTH,
        json={
            "off_peak": True,
            "bgm": True,
            "movement_amplitude": "large",
            "model": "viduq2",
            "prompt": "a cat",
            "duration": 5,
            "seed": 9,
            "aspect_ratio": "16:9",
            "resolution": "1080p",
        },
    )


def test_i2v_one_image_and_start_end():
    assert vidu.submit(TaskRequest("i2v", "viduq2-turbo", media=(FIRST,)), "vidu-key") == VendorCall(
        "POST", "/ent/v2/img2video", headers=AUTH, json={"model": "viduq2-turbo", "images": ["https://img/first.png"]}
    )
    both = vidu.submit(TaskRequest("i2v", "viduq2-pro", prompt="turn", media=(LAST, FIRST)), "vidu-key")
    assert both == VendorCall(
        "POST",
        "/ent/v2/start-end2video",
        headers=AUTH,
        json={
            "model": "viduq2-pro",
            "prompt": "turn",
            "images": ["https://img/first.png", "data:image/png;base64,bGFzdA=="],
        },
    )


def test_ref2v_up_to_seven_images_and_videos():
    call = vidu.submit(
        TaskRequest("ref2v", "viduq2-pro", prompt="p", media=(*refs(7), Media(VIDEO, url="https://v/1.mp4"))), "k"
    )
    assert call.path == "/ent/v2/reference2video" and call.json == {
        "model": "viduq2-pro",
        "prompt": "p",
        "images": [f"https://r/{i}.png" for i in range(7)],
        "videos": ["https://v/1.mp4"],
    }


def test_t2i_is_reference2image():
    assert vidu.submit(TaskRequest("t2i", "viduq2", prompt="a cat", ratio="1:1", resolution="2K"), "k").json == {
        "model": "viduq2",
        "prompt": "a cat",
        "aspect_ratio": "1:1",
        "resolution": "2k",
    }
    assert vidu.submit(TaskRequest("t2i", "viduq2", prompt="a cat"), "k").path == "/ent/v2/reference2image"


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (TaskRequest("ref2v", "viduq2", prompt="p", media=refs(8)), "at most 7 reference images, got 8"),
        (TaskRequest("ref2v", "viduq2", prompt="p"), "needs reference images"),
        (TaskRequest("i2v", "viduq2", media=(LAST,)), "one first frame"),
        (TaskRequest("i2v", "viduq2", media=(FIRST, *refs(1))), "one first frame"),
        (TaskRequest("t2v", "viduq2", media=(FIRST,)), "takes no images"),
        (TaskRequest("ref2v", "viduq2", media=(FIRST,)), "not frames"),
        (TaskRequest("i2v", "viduq2", media=(FIRST, Media(AUDIO, url="a"))), "no audio"),
        (TaskRequest("t2i", "viduq2", prompt="x", n=4), "one image per task"),
        (TaskRequest("i2i", "viduq2", prompt="x"), "i2i needs the image to edit"),
    ],
)
def test_what_vidu_cannot_take_is_refused(request_, words):
    with pytest.raises(VendorError, match=words):
        vidu.submit(request_, "k")


def test_poll_cancel_content_remix():
    assert vidu.poll("870", "k") == VendorCall(
        "GET", "/ent/v2/tasks/870/creations", headers={"Authorization": "Token k"}
    )
    assert vidu.cancel("870", "k") == VendorCall(
        "POST", "/ent/v2/tasks/870/cancel", headers={"Authorization": "Token k"}, json={"id": "870"}
    )
    assert vidu.content("870", "video", "https://v/x.mp4", "k") is None
    assert vidu.remix("870", "x", "k") is None


def test_accepted():
    state = vidu.accepted(orjson.dumps({"task_id": "870", "state": "created", "model": "viduq2", "credits": 0}))
    assert (state.state, state.vendor_status, state.vendor_task_id) == (PENDING, "created", "870")
    with pytest.raises(VendorError):
        vidu.accepted(orjson.dumps({"state": "created"}))


@pytest.mark.parametrize(
    ("status", "state", "known"),
    [
        ("created", PENDING, True),
        ("queueing", PENDING, True),
        ("queuing", PENDING, True),
        ("scheduled", PENDING, True),
        ("processing", RUNNING, True),
        ("failed", FAILED, True),
        ("cancelled", RUNNING, False),
        ("paused", RUNNING, False),
    ],
)
def test_every_status(status, state, known):
    read = vidu.read(creations(state=status, err_code="ModelError" if status == "failed" else ""))
    assert (read.state, read.vendor_status, read.known, read.vendor_task_id) == (state, status, known, "870")


def test_failures_and_cancellation():
    failed = vidu.read(creations(state="failed", err_code="AuditSubmitIllegal"))
    assert (failed.state, failed.reason, failed.message) == (FAILED, VENDOR_FAILED, "AuditSubmitIllegal")
    cancelled = vidu.read(creations(state="failed", err_code="TaskCanceled"))
    assert (cancelled.state, cancelled.reason) == (FAILED, CANCELLED)


def test_success_with_credits_as_a_string():
    url = "https://vidu.s3.example/x.mp4?X-Amz-Date=20270115T080000Z&X-Amz-Expires=3600&X-Amz-Signature=s"
    read = vidu.read(
        creations(
            state="success", credits="20", creations=[{"id": "c1", "url": url, "cover_url": "https://vidu/c.jpg"}]
        )
    )
    assert (read.state, read.videos, read.images, read.thumbnail) == (SUCCEEDED, (url,), (), "https://vidu/c.jpg")
    assert read.expires_at == NOW + 3600 and read.usage == TaskUsage(credits=20.0)
    image = vidu.read(creations(state="success", credits=4, creations=[{"id": "c", "url": "https://vidu/i.PNG?x=1"}]))
    assert (image.images, image.videos, image.expires_at) == (("https://vidu/i.PNG?x=1",), (), NOW + 86400)
    assert image.usage == TaskUsage(credits=4.0, images=1)


def test_success_without_creations_is_a_failure():
    read = vidu.read(creations(state="success", creations=[]))
    assert (read.state, read.reason) == (FAILED, VENDOR_FAILED)


def test_error_bodies():
    err = {
        "code": 400,
        "reason": "BadRequest",
        "message": "task state is scheduled, can not cancel",
        "metadata": {"trace_id": "04e5"},
    }
    assert vidu.error(400, orjson.dumps(err)) == "BadRequest: task state is scheduled, can not cancel"
    assert vidu.error(500, b"oops") == "oops"
