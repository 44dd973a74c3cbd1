"""Volcengine Ark Seedance: the calls built for each catalog, and every answer read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from providers.tasks import TASK_VENDORS
from providers.tasks.ark import Ark
from providers.tasks.base import (
    AUDIO,
    CANCELLED,
    EXPIRED,
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

NOW = 1_800_000_000.0
ark = Ark(clock=lambda: NOW)
PATH = "/api/v3/contents/generations/tasks"
AUTH = {"Authorization": "Bearer ark-key"}
FIRST = Media(FIRST_FRAME, url="https://img/first.png")
LAST = Media(LAST_FRAME, data=b"last", content_type="image/jpeg")  # -> data:image/jpeg;base64,bGFzdA==


def task(**fields: Any) -> bytes:
    base = {
        "id": "cgt-1",
        "model": "doubao-seedance-1-0-pro-250528",
        "status": "queued",
        "created_at": 1799990000,
        "updated_at": 1799999000,
        "error": None,
    }
    return orjson.dumps({**base, **fields})


def test_registered_as_ark():
    assert isinstance(TASK_VENDORS["ark"], Ark)


def test_t2v_puts_parameters_and_extra_top_level():
    request = TaskRequest(
        "t2v",
        "doubao-seedance-1-0-pro-250528",
        prompt="a cat",
        seconds=5,
        resolution="1080P",
        ratio="16:9",
        seed=11,
        negative_prompt="ignored: Ark has none",
        extra={"camera_fixed": True, "callback_url": "https://client/hook", "return_last_frame": True},
    )
    assert ark.submit(request, "ark-key") == VendorCall(
        "POST",
        PATH,
        headers=AUTH,
        json={
            "model": "doubao-seedance-1-0-pro-250528",
            "content": [{"type": "text", "text": "a cat"}],
            "camera_fixed": True,
            "return_last_frame": True,
            "resolution": "1080p",
            "ratio": "16:9",
            "duration": 5,
            "seed": 11,
        },
    )


def test_i2v_first_frame_and_first_last_frame_roles():
    one = ark.submit(TaskRequest("i2v", "m", prompt="go", media=(FIRST,)), "ark-key")
    assert one.json == {
        "model": "m",
        "content": [
            {"type": "text", "text": "go"},
            {"type": "image_url", "image_url": {"url": "https://img/first.png"}, "role": "first_frame"},
        ],
    }
    both = ark.submit(TaskRequest("i2v", "m", prompt="go", media=(LAST, FIRST)), "ark-key")
    assert both.json is not None and both.json["content"][1:] == [
        {"type": "image_url", "image_url": {"url": "https://img/first.png"}, "role": "first_frame"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,bGFzdA=="}, "role": "last_frame"},
    ]


def test_ref2v_reference_images_videos_audio():
    media = (
        Media(REFERENCE, url="https://r/1.png"),
        Media(REFERENCE, url="https://r/2.png"),
        Media(VIDEO, url="https://r/v.mp4"),
        Media(AUDIO, url="https://r/a.mp3"),
    )
    call = ark.submit(TaskRequest("ref2v", "doubao-seedance-2-0", prompt="[Image 1] waves", media=media), "k")
    assert call.json is not None and call.json["content"] == [
        {"type": "text", "text": "[Image 1] waves"},
        {"type": "image_url", "image_url": {"url": "https://r/1.png"}, "role": "reference_image"},
        {"type": "image_url", "image_url": {"url": "https://r/2.png"}, "role": "reference_image"},
        {"type": "video_url", "video_url": {"url": "https://r/v.mp4"}, "role": "reference_video"},
        {"type": "audio_url", "audio_url": {"url": "https://r/a.mp3"}, "role": "reference_audio"},
    ]


def test_size_becomes_resolution_and_ratio():
    call = ark.submit(TaskRequest("t2v", "m", prompt="x", size="1280x720"), "k")
    assert call.json is not None and (call.json["resolution"], call.json["ratio"]) == ("720p", "16:9")


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (TaskRequest("t2i", "doubao-seedream-4-0", prompt="x"), "synchronous"),
        (TaskRequest("i2v", "m", media=(FIRST, Media(REFERENCE, url="r"))), "not both"),
        (TaskRequest("i2v", "m", media=(LAST,)), "needs a first frame"),
        (TaskRequest("i2v", "m", prompt="x"), "needs a first frame"),
        (TaskRequest("ref2v", "m", prompt="x"), "needs reference images"),
        (TaskRequest("t2v", "m"), "needs a prompt"),
    ],
)
def test_what_seedance_cannot_take_is_refused(request_, words):
    with pytest.raises(VendorError, match=words):
        ark.submit(request_, "k")


def test_poll_cancel_content_remix():
    assert ark.poll("cgt-1", "k") == VendorCall("GET", f"{PATH}/cgt-1", headers={"Authorization": "Bearer k"})
    assert ark.cancel("cgt-1", "k") == VendorCall("DELETE", f"{PATH}/cgt-1", headers={"Authorization": "Bearer k"})
    assert ark.content("cgt-1", "video", "https://tos/x.mp4", "k") is None
    assert ark.remix("cgt-1", "x", "k") is None


def test_accepted_is_only_an_id():
    state = ark.accepted(orjson.dumps({"id": "cgt-1"}))
    assert (state.state, state.vendor_status, state.vendor_task_id) == (PENDING, "queued", "cgt-1")
    with pytest.raises(VendorError):
        ark.accepted(orjson.dumps({"error": {"code": "x"}}))


@pytest.mark.parametrize(
    ("status", "state", "reason", "known"),
    [
        ("queued", PENDING, None, True),
        ("running", RUNNING, None, True),
        ("failed", FAILED, VENDOR_FAILED, True),
        ("cancelled", FAILED, CANCELLED, True),
        ("expired", FAILED, EXPIRED, True),
        ("paused", RUNNING, None, False),
    ],
)
def test_every_status(status, state, reason, known):
    error = {"code": "OutputVideoSensitiveContentDetected", "message": "sensitive"} if state == FAILED else None
    read = ark.read(task(status=status, error=error))
    assert (read.state, read.reason, read.known, read.vendor_status) == (state, reason, known, status)
    assert read.message == ("sensitive" if state == FAILED else None)


def test_succeeded_usage_string_numbers_thumbnail_and_expiry():
    url = "https://ark-content.tos-cn-beijing.volces.com/x.mp4?X-Tos-Date=20270115T080000Z&X-Tos-Expires=86400&X-Tos-Signature=s"
    read = ark.read(
        task(
            status="succeeded",
            content={"video_url": url, "last_frame_url": "https://tos/last.png"},
            usage={"completion_tokens": "108900", "total_tokens": 108900},
            duration="5",
            resolution="720p",
        )
    )
    assert (read.state, read.videos, read.thumbnail) == (SUCCEEDED, (url,), "https://tos/last.png")
    assert read.expires_at == NOW + 86400
    assert read.usage == TaskUsage(seconds=5.0, tokens=108900, resolution="720P")
    unsigned = ark.read(task(status="succeeded", content={"video_url": "https://tos/x.mp4"}))
    assert unsigned.expires_at == 1799999000 + 86400


def test_succeeded_without_a_video_is_a_failure():
    read = ark.read(task(status="succeeded", content={}))
    assert (read.state, read.reason) == (FAILED, VENDOR_FAILED)


def test_error_bodies():
    err = {
        "error": {
            "code": "InvalidParameter",
            "message": "the parameter `ratio` is invalid",
            "param": "ratio",
            "type": "BadRequest",
        }
    }
    assert ark.error(400, orjson.dumps(err)) == "InvalidParameter: the parameter `ratio` is invalid"
    assert ark.error(429, b"") == "HTTP 429"
