"""OpenAI Sora (/videos): the calls built, and every answer read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from providers.tasks import TASK_VENDORS
from providers.tasks.base import (
    FAILED,
    FIRST_FRAME,
    LAST_FRAME,
    PENDING,
    REFERENCE,
    RUNNING,
    SUCCEEDED,
    VENDOR_FAILED,
    Media,
    TaskRequest,
    TaskUsage,
    VendorCall,
    VendorError,
)
from providers.tasks.sora import Sora

sora = Sora()
AUTH = {"Authorization": "Bearer sk-openai"}


def video(**fields: Any) -> bytes:
    base = {
        "id": "video_1",
        "object": "video",
        "model": "sora-2",
        "status": "queued",
        "progress": 0,
        "created_at": 1760000000,
        "seconds": "8",
        "size": "1280x720",
        "error": None,
        "expires_at": None,
    }
    return orjson.dumps({**base, **fields})


def test_registered_as_openai():
    assert isinstance(TASK_VENDORS["openai"], Sora)


def test_t2v_is_json_and_drops_extra():
    request = TaskRequest(
        "t2v",
        "sora-2-pro",
        prompt="a cat",
        seconds=8,
        size="1792x1024",
        extra={"callback_url": "https://c", "watermark": False},
    )
    assert sora.submit(request, "sk-openai") == VendorCall(
        "POST",
        "/videos",
        headers=AUTH,
        json={"model": "sora-2-pro", "prompt": "a cat", "seconds": "8", "size": "1792x1024"},
    )


def test_size_from_resolution_and_ratio():
    call = sora.submit(TaskRequest("t2v", "sora-2", prompt="x", ratio="9:16"), "k")
    assert call.json is not None and call.json["size"] == "720x1280"
    with pytest.raises(VendorError, match="no size"):
        sora.submit(TaskRequest("t2v", "sora-2", prompt="x", ratio="1:1"), "k")


def test_i2v_with_uploaded_bytes_is_multipart_with_the_file():
    image = Media(FIRST_FRAME, data=b"png-bytes", content_type="image/png", filename="cat.png")
    request = TaskRequest("i2v", "sora-2", prompt="a cat", media=(image,), seconds=4, size="720x1280")
    assert sora.submit(request, "sk-openai") == VendorCall(
        "POST",
        "/videos",
        headers=AUTH,
        form=[
            ("model", "sora-2", None, None),
            ("prompt", "a cat", None, None),
            ("seconds", "4", None, None),
            ("size", "720x1280", None, None),
            ("input_reference", b"png-bytes", "cat.png", "image/png"),
        ],
    )


def test_i2v_with_a_link_is_json_image_url():
    request = TaskRequest("i2v", "sora-2", prompt="a cat", media=(Media(FIRST_FRAME, url="https://img/x.png"),))
    assert sora.submit(request, "k").json == {
        "model": "sora-2",
        "prompt": "a cat",
        "input_reference": {"image_url": "https://img/x.png"},
    }


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (
            TaskRequest("i2v", "sora-2", media=(Media(FIRST_FRAME, url="a"), Media(LAST_FRAME, url="b"))),
            "no last frame",
        ),
        (TaskRequest("ref2v", "sora-2", media=(Media(REFERENCE, url="a"),)), "does not do ref2v"),
        (TaskRequest("t2i", "sora-2"), "does not do t2i"),
        (TaskRequest("i2v", "sora-2", media=(Media(FIRST_FRAME, url="a"), Media(REFERENCE, url="b"))), "at most one"),
        (TaskRequest("i2v", "sora-2"), "needs an image"),
    ],
)
def test_what_sora_cannot_take_is_refused(request_, words):
    with pytest.raises(VendorError, match=words):
        sora.submit(request_, "k")


def test_poll_content_cancel_remix():
    assert sora.poll("video_1", "k") == VendorCall("GET", "/videos/video_1", headers={"Authorization": "Bearer k"})
    assert sora.content("video_1", "thumbnail", None, "k") == VendorCall(
        "GET", "/videos/video_1/content", headers={"Authorization": "Bearer k"}, query={"variant": "thumbnail"}
    )
    assert sora.content("video_1", "image", None, "k") is None
    assert sora.cancel("video_1", "k") == VendorCall("DELETE", "/videos/video_1", headers={"Authorization": "Bearer k"})
    assert sora.remix("video_1", "now at night", "k") == VendorCall(
        "POST", "/videos/video_1/remix", headers={"Authorization": "Bearer k"}, json={"prompt": "now at night"}
    )


@pytest.mark.parametrize(
    ("status", "state", "known"),
    [
        ("queued", PENDING, True),
        ("in_progress", RUNNING, True),
        ("completed", SUCCEEDED, True),
        ("failed", FAILED, True),
        ("cancelled", RUNNING, False),
        ("expired", RUNNING, False),
    ],
)
def test_every_status(status, state, known):
    read = sora.read(video(status=status, progress="40"))
    assert (read.state, read.vendor_status, read.known, read.progress, read.vendor_task_id) == (
        state,
        status,
        known,
        40,
        "video_1",
    )


def test_accepted_is_the_video_object():
    state = sora.accepted(video())
    assert (state.state, state.vendor_task_id) == (PENDING, "video_1")


def test_completed_has_expiry_and_usage_but_no_url():
    read = sora.read(video(status="completed", progress=100, expires_at=1760003600, seconds="12", size="1024x1792"))
    assert (read.state, read.expires_at, read.videos) == (SUCCEEDED, 1760003600.0, ())
    assert read.usage == TaskUsage(seconds=12.0, resolution="1024P")


def test_failed_carries_the_vendor_message():
    read = sora.read(
        video(status="failed", error={"code": "moderation_blocked", "message": "Your request was blocked."})
    )
    assert (read.state, read.reason, read.message) == (FAILED, VENDOR_FAILED, "Your request was blocked.")


def test_read_refuses_what_is_not_a_video():
    with pytest.raises(VendorError):
        sora.read(orjson.dumps({"object": "list"}))


def test_error_bodies():
    err = {
        "error": {
            "message": "Incorrect API key provided: sk-proj-abcdefgh1234.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    assert sora.error(401, orjson.dumps(err)) == "invalid_api_key: Incorrect API key provided: sk-***"
    assert sora.error(400, orjson.dumps({"error": {"message": "Invalid size", "code": None}})) == "Invalid size"
    assert sora.error(500, b"upstream connect error") == "upstream connect error"
