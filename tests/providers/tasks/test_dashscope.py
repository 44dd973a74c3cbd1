"""DashScope Wan: the calls built for each catalog and model family, and every answer read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from providers.tasks import TASK_VENDORS
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
from providers.tasks.dashscope import DashScope

NOW = 1_800_000_000.0
ds = DashScope(clock=lambda: NOW)
FIRST = Media(FIRST_FRAME, url="https://img.example/first.png")
LAST = Media(LAST_FRAME, data=b"last", content_type="image/png")  # -> data:image/png;base64,bGFzdA==
REF = Media(REFERENCE, url="https://img.example/ref.png")
HEADERS = {"Authorization": "Bearer sk-ds", "X-DashScope-Async": "enable"}
VIDEO_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"


def body(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def test_registered_under_its_provider_name():
    assert isinstance(TASK_VENDORS["dashscope"], DashScope)


def test_t2v_turns_resolution_and_ratio_into_the_documented_size():
    request = TaskRequest(
        "t2v",
        "wan2.6-t2v",
        prompt="a cat",
        negative_prompt="blur",
        seconds=10,
        resolution="720P",
        ratio="9:16",
        seed=7,
        extra={"prompt_extend": False, "callback_url": "https://client.example/h"},
    )
    assert ds.submit(request, "sk-ds") == VendorCall(
        "POST",
        VIDEO_PATH,
        headers=HEADERS,
        json={
            "model": "wan2.6-t2v",
            "input": {"prompt": "a cat", "negative_prompt": "blur"},
            "parameters": {"prompt_extend": False, "duration": 10, "seed": 7, "size": "720*1280"},
        },
    )


def test_t2v_size_given_as_w_by_h():
    call = ds.submit(TaskRequest("t2v", "wan2.2-t2v-plus", prompt="x", size="1920x1080"), "k")
    assert call.json is not None and call.json["parameters"] == {"size": "1920*1080"}


def test_i2v_first_frame_is_img_url_with_a_resolution_tier():
    request = TaskRequest(
        "i2v",
        "wan2.6-i2v",
        prompt="move",
        media=(FIRST, Media(AUDIO, url="https://a.example/a.mp3")),
        resolution="1080p",
        seconds=5,
        extra={"audio": True, "shot_type": "multi"},
    )
    assert ds.submit(request, "sk-ds") == VendorCall(
        "POST",
        VIDEO_PATH,
        headers=HEADERS,
        json={
            "model": "wan2.6-i2v",
            "input": {
                "prompt": "move",
                "img_url": "https://img.example/first.png",
                "audio_url": "https://a.example/a.mp3",
            },
            "parameters": {"audio": True, "shot_type": "multi", "duration": 5, "resolution": "1080P"},
        },
    )


def test_first_and_last_frame_go_to_the_kf2v_endpoint():
    request = TaskRequest("i2v", "wan2.2-kf2v-flash", prompt="turn", media=(FIRST, LAST), resolution="480P")
    assert ds.submit(request, "sk-ds") == VendorCall(
        "POST",
        "/api/v1/services/aigc/image2video/video-synthesis",
        headers=HEADERS,
        json={
            "model": "wan2.2-kf2v-flash",
            "input": {
                "prompt": "turn",
                "first_frame_url": "https://img.example/first.png",
                "last_frame_url": "data:image/png;base64,bGFzdA==",
            },
            "parameters": {"resolution": "480P"},
        },
    )


def test_wan27_takes_a_media_array():
    request = TaskRequest("i2v", "wan2.7-i2v", prompt="turn", media=(FIRST, LAST), resolution="720P", ratio="16:9")
    call = ds.submit(request, "k")
    assert call.path == VIDEO_PATH and call.json == {
        "model": "wan2.7-i2v",
        "input": {
            "prompt": "turn",
            "media": [
                {"type": "first_frame", "url": "https://img.example/first.png"},
                {"type": "last_frame", "url": "data:image/png;base64,bGFzdA=="},
            ],
        },
        "parameters": {"resolution": "720P", "ratio": "16:9"},
    }
    ref = ds.submit(
        TaskRequest("ref2v", "wan2.7-r2v", prompt="p", media=(REF, Media(VIDEO, url="https://v/x.mp4"))), "k"
    )
    assert ref.json is not None and ref.json["input"]["media"] == [
        {"type": "reference_image", "url": "https://img.example/ref.png"},
        {"type": "reference_video", "url": "https://v/x.mp4"},
    ]


def test_ref2v_on_an_r2v_model_sends_reference_urls_and_a_size():
    request = TaskRequest("ref2v", "wan2.6-r2v", prompt="character1 waves", media=(REF,), size="1280x720", seconds=5)
    assert ds.submit(request, "k").json == {
        "model": "wan2.6-r2v",
        "input": {"prompt": "character1 waves", "reference_urls": ["https://img.example/ref.png"]},
        "parameters": {"duration": 5, "size": "1280*720"},
    }


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (TaskRequest("ref2v", "wan2.6-t2v", prompt="p", media=(REF,)), "takes no reference images"),
        (TaskRequest("i2v", "wan2.6-i2v", prompt="p", media=(FIRST, LAST)), "use a kf2v model"),
        (TaskRequest("i2v", "wan2.6-i2v", prompt="p"), "needs a first frame"),
        (TaskRequest("i2v", "wan2.2-kf2v-flash", prompt="p", media=(FIRST, REF)), "first and a last frame only"),
        (TaskRequest("t2i", "wan2.2-t2i-plus", prompt="p", media=(REF,)), "takes no images"),
        (TaskRequest("i2i", "wan2.5-i2i-preview", prompt="p"), "does not do i2i"),
        (TaskRequest("t2v", "wan2.6-t2v", prompt="p", resolution="720P", ratio="21:9"), "no size for 720P at 21:9"),
        (TaskRequest("t2v", "wan2.6-t2v", prompt="p", seconds=5.5), "whole positive number"),
    ],
)
def test_what_wan_cannot_take_is_refused(request_, words):
    with pytest.raises(VendorError, match=words):
        ds.submit(request_, "k")


def test_t2i_legacy_and_wan26_shapes():
    legacy = ds.submit(
        TaskRequest(
            "t2i",
            "wan2.2-t2i-plus",
            prompt="a cat",
            negative_prompt="dog",
            size="1024*1024",
            n=2,
            seed=3,
            extra={"watermark": False, "webhook": "https://x"},
        ),
        "k",
    )
    assert legacy.path == "/api/v1/services/aigc/text2image/image-synthesis" and legacy.json == {
        "model": "wan2.2-t2i-plus",
        "input": {"prompt": "a cat", "negative_prompt": "dog"},
        "parameters": {"watermark": False, "size": "1024*1024", "n": 2, "seed": 3},
    }
    new = ds.submit(TaskRequest("t2i", "wan2.6-t2i", prompt="a cat", negative_prompt="dog", n=1), "k")
    assert new.path == "/api/v1/services/aigc/image-generation/generation" and new.json == {
        "model": "wan2.6-t2i",
        "input": {"messages": [{"role": "user", "content": [{"text": "a cat"}]}]},
        "parameters": {"n": 1, "negative_prompt": "dog"},
    }


def test_no_callback_ever_reaches_the_body():
    extra = {
        "callback_url": "https://c",
        "CallbackURL": "https://c",
        "notify_url": "https://c",
        "nested": {"webhook_url": "x", "ok": 1},
    }
    call = ds.submit(TaskRequest("t2v", "wan2.6-t2v", prompt="x", extra=extra), "k")
    assert call.json is not None and call.json["parameters"] == {"nested": {"ok": 1}}
    assert b"https://c" not in orjson.dumps(call.json)


def test_poll_cancel_content_remix():
    assert ds.poll("t-1", "sk") == VendorCall("GET", "/api/v1/tasks/t-1", headers={"Authorization": "Bearer sk"})
    assert ds.cancel("t-1", "sk") == VendorCall(
        "POST", "/api/v1/tasks/t-1/cancel", headers={"Authorization": "Bearer sk"}
    )
    assert ds.content("t-1", "video", "https://oss/x.mp4", "sk") is None
    assert ds.remix("t-1", "again", "sk") is None


def test_accepted():
    state = ds.accepted(body({"request_id": "r", "output": {"task_id": "t-1", "task_status": "PENDING"}}))
    assert (state.state, state.vendor_status, state.vendor_task_id, state.known) == (PENDING, "PENDING", "t-1", True)
    with pytest.raises(VendorError):
        ds.accepted(body({"request_id": "r", "output": {"task_status": "PENDING"}}))
    with pytest.raises(VendorError):
        ds.accepted(b"<html>")


@pytest.mark.parametrize(
    ("status", "state", "reason", "known"),
    [
        ("PENDING", PENDING, None, True),
        ("SUSPENDED", PENDING, None, True),
        ("RUNNING", RUNNING, None, True),
        ("FAILED", FAILED, VENDOR_FAILED, True),
        ("CANCELED", FAILED, CANCELLED, True),
        ("UNKNOWN", FAILED, EXPIRED, True),
        ("THROTTLED", RUNNING, None, False),
    ],
)
def test_every_status(status, state, reason, known):
    read = ds.read(
        body({"output": {"task_id": "t", "task_status": status, "code": "InternalError", "message": "boom"}})
    )
    assert (read.state, read.vendor_status, read.reason, read.known) == (state, status, reason, known)
    assert read.message == ("boom" if state == FAILED else None)


def test_succeeded_video_with_string_numbers_and_signed_expiry():
    url = "https://dashscope-result.oss-cn-beijing.aliyuncs.com/x.mp4?Expires=1800086400&OSSAccessKeyId=a&Signature=s"
    read = ds.read(
        body(
            {
                "output": {
                    "task_id": "t",
                    "task_status": "SUCCEEDED",
                    "video_url": url,
                    "end_time": "2027-01-15 16:00:00.000",
                },
                "usage": {"duration": "10", "video_count": 1, "SR": "720"},
            }
        )
    )
    assert (read.state, read.videos, read.expires_at) == (SUCCEEDED, (url,), 1800086400.0)
    assert read.usage == TaskUsage(seconds=10.0, resolution="720P")


def test_usage_names_vary_by_model():
    def usage(u: dict[str, Any]) -> TaskUsage | None:
        out = {"task_id": "t", "task_status": "SUCCEEDED", "video_url": "https://oss/x.mp4"}
        return ds.read(body({"output": out, "usage": u})).usage

    assert usage({"video_duration": 5, "video_ratio": "1280*720"}) == TaskUsage(seconds=5.0, resolution="720P")
    assert usage({"output_video_duration": "6.0", "input_video_duration": 2}) == TaskUsage(seconds=6.0)
    assert usage({"duration": "not a number", "SR": 1080}) == TaskUsage(resolution="1080P")


def test_expiry_estimates_without_a_signed_url():
    out = {"task_id": "t", "task_status": "SUCCEEDED", "video_url": "https://oss/x.mp4"}
    assert (
        ds.read(body({"output": {**out, "end_time": "2027-01-15 16:00:00.000"}})).expires_at
        == 1800000000.0 + 86400  # 16:00 in Beijing is 08:00 UTC
    )
    assert ds.read(body({"output": out})).expires_at == NOW + 86400


def test_succeeded_images_both_shapes():
    legacy = ds.read(
        body(
            {
                "output": {
                    "task_id": "t",
                    "task_status": "SUCCEEDED",
                    "results": [{"url": "https://oss/1.png"}, {"code": "DataInspectionFailed", "message": "no"}],
                },
                "usage": {"image_count": "1"},
            }
        )
    )
    assert legacy.images == ("https://oss/1.png",) and legacy.usage == TaskUsage(images=1)
    new = ds.read(
        body(
            {
                "output": {
                    "task_id": "t",
                    "task_status": "SUCCEEDED",
                    "choices": [
                        {"message": {"role": "assistant", "content": [{"type": "image", "image": "https://oss/a.png"}]}}
                    ],
                },
                "usage": {"size": "1280*1280"},
            }
        )
    )
    assert new.images == ("https://oss/a.png",) and new.usage == TaskUsage(images=1)


def test_succeeded_with_nothing_made_is_a_failure():
    read = ds.read(
        body(
            {
                "output": {
                    "task_id": "t",
                    "task_status": "SUCCEEDED",
                    "results": [
                        {"code": "DataInspectionFailed", "message": "Output data may contain inappropriate content."}
                    ],
                }
            }
        )
    )
    assert (read.state, read.reason) == (FAILED, VENDOR_FAILED)
    assert read.message == "Output data may contain inappropriate content."


def test_read_refuses_what_is_not_a_task():
    with pytest.raises(VendorError):
        ds.read(body({"code": "x"}))
    with pytest.raises(VendorError):
        ds.read(b"[]")


def test_error_bodies():
    err = body({"request_id": "r", "code": "InvalidParameter", "message": "The size is not match"})
    assert ds.error(400, err) == "InvalidParameter: The size is not match"
    assert ds.error(401, body({"code": "InvalidApiKey", "message": "Invalid API-key provided: sk-abcdef123456."})) == (
        "InvalidApiKey: Invalid API-key provided: sk-***"
    )
    assert ds.error(502, b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert ds.error(503, b"") == "HTTP 503"
