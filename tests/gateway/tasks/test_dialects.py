"""The client dialects of async generation: every parser (JSON and form, each file field, each catalog,
the errors) and every renderer (each state, each failure reason), golden; the OpenAI shapes also
validated by the openai SDK's own types, and read by its client."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import openai
import pytest
from aiohttp import web
from openai.pagination import SyncConversationCursorPage
from openai.types import ImagesResponse, Video, VideoDeleteResponse

from config.schema import Service
from gateway.errors import SERVICE as SERVICE_PROTOCOL
from gateway.errors import GatewayError
from gateway.tasks.dialects import (
    LLMAGE,
    NEUTRAL,
    OPENAI_IMAGE,
    OPENAI_VIDEO,
    SERVICE,
    VIDEO_GENERATION,
    ContentLinks,
    DialectError,
    FormBody,
    Upload,
    parse_image_edit,
    parse_image_generation,
    parse_llmage_image,
    parse_llmage_video,
    parse_openai_video,
    parse_openai_video_list,
    parse_openai_video_remix,
    parse_service_invoke,
    parse_task_ids,
    parse_task_list,
    parse_video_generation,
    render,
    render_image_task,
    render_llmage_created,
    render_llmage_task,
    render_openai_video,
    render_openai_video_deleted,
    render_openai_video_list,
    render_service_list,
    render_service_task,
    render_service_task_list,
    render_task,
    render_task_list,
    render_video_generation,
)
from gateway.tasks.dialects.generations import (
    AUDIO_FIELDS,
    FIRST_FIELDS,
    IMAGES_FIELDS,
    LAST_FIELDS,
    REFERENCE_FIELDS,
    VIDEO_FIELDS,
)
from gateway.tasks.dialects.media import MAX_IMAGES, sniff
from gateway.tasks.dialects.openai_videos import video_size
from gateway.tasks.model import Task
from providers.tasks.base import (
    AUDIO,
    CANCELLED,
    CREATED,
    EXPIRED,
    FAILED,
    FIRST_FRAME,
    LAST_FRAME,
    PENDING,
    REFERENCE,
    RUNNING,
    SUCCEEDED,
    TIMEOUT,
    VENDOR_FAILED,
    VIDEO,
    Media,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 24
MP4 = b"\0\0\0\x18ftypisom" + b"\0" * 20
MP3 = b"ID3\x04" + b"\0" * 24
PDF = b"%PDF-1.7\n" + b"\0" * 24
PNG_B64 = base64.b64encode(PNG).decode()
PNG_DATA_URL = "data:image/png;base64," + PNG_B64

LINKS = ContentLinks("https://gw.example")
T0 = 1_700_000_000.7


def form(files: list[Upload] | None = None, **fields: str | list[str]) -> FormBody:
    return FormBody({k: [v] if isinstance(v, str) else v for k, v in fields.items()}, files or [])


def png(field: str, name: str = "a.png", content_type: str | None = "image/png", data: bytes = PNG) -> Upload:
    return Upload(field, name, content_type, data)


def roles(media: tuple[Media, ...]) -> list[str]:
    return [m.role for m in media]


def error(fn: Any, *args: Any) -> DialectError:
    with pytest.raises(DialectError) as caught:
        fn(*args)
    return caught.value


# ---- the task rows every renderer is checked against

VENDOR_VIDEO = "https://vendor.example/out.mp4?Signature=secret"
VENDOR_IMAGES = ["https://vendor.example/1.png?sig=a", "https://vendor.example/2.png?sig=b"]

STATES: dict[str, dict[str, Any]] = {
    "created": {"status": CREATED},
    "pending": {"status": PENDING, "vendor_task_id": "v1"},
    "running": {"status": RUNNING, "progress": 42},
    "succeeded": {"status": SUCCEEDED, "progress": 90, "finished_at": T0 + 200, "cost": 0.4},
    "failed_vendor": {
        "status": FAILED,
        "reason": VENDOR_FAILED,
        "error": "blocked by moderation",
        "finished_at": T0 + 200,
    },
    "failed_cancelled": {"status": FAILED, "reason": CANCELLED, "finished_at": T0 + 200},
    "failed_expired": {"status": FAILED, "reason": EXPIRED, "finished_at": T0 + 200},
    "failed_timeout": {"status": FAILED, "reason": TIMEOUT, "finished_at": T0 + 200},
}
FAILURES = {
    "failed_vendor": (VENDOR_FAILED, "blocked by moderation"),
    "failed_cancelled": (CANCELLED, "The task was cancelled at the vendor."),
    "failed_expired": (EXPIRED, "The vendor no longer knows this task (it expired or was deleted there)."),
    "failed_timeout": (TIMEOUT, "The task did not finish in time (tasks.timeout_s); it was not billed."),
}


def task(state: str = "created", *, image: bool = False, dialect: str = OPENAI_VIDEO, **kw: Any) -> Task:
    row = Task(
        id="task_abc",
        key_name="app1",
        catalog="t2i" if image else "t2v",
        model="wan2.2-t2i-plus" if image else "sora-2",
        upstream_model="up",
        channel="c1",
        vendor="dashscope",
        dialect=dialect,
        request={"catalog": "t2v", "model": "up", "prompt": "a cat", "seconds": 8.0, "size": "1280x720"},
        created_at=T0,
        updated_at=T0 + 100,
    )
    if image:
        row.request = {"catalog": "t2i", "model": "up", "prompt": "a cat", "n": 2}
    for name, value in STATES[state].items():
        setattr(row, name, value)
    if state == "succeeded":
        row.results = (
            {"images": list(VENDOR_IMAGES)} if image else {"videos": [VENDOR_VIDEO], "thumbnail": VENDOR_VIDEO + "&t"}
        )
        row.usage = {"images": 2} if image else {"seconds": 8.0, "resolution": "720P"}
        row.results_expire_at = T0 + 86_400
    for name, value in kw.items():
        setattr(row, name, value)
    return row


def no_vendor_url(answer: dict[str, Any]) -> None:
    assert "vendor.example" not in json.dumps(answer), answer


VIDEO_URL = "https://gw.example/v1/videos/task_abc/content?variant=video"
THUMB_URL = "https://gw.example/v1/videos/task_abc/content?variant=thumbnail"
IMAGE_URLS = [
    "https://gw.example/v1/videos/task_abc/content?variant=image",
    "https://gw.example/v1/videos/task_abc/content?variant=image&index=1",
]


# ---- OpenAI videos: parse


def test_openai_video_json_t2v() -> None:
    sub = parse_openai_video({"model": "sora-2-pro", "prompt": " a cat ", "seconds": "8", "size": "1280x720"})
    assert sub.public_model == "sora-2-pro"
    assert sub.callback_url is None
    assert sub.request.describe() == {
        "catalog": "t2v",
        "model": "sora-2-pro",
        "prompt": "a cat",
        "seconds": 8.0,
        "size": "1280x720",
    }


def test_openai_video_defaults_to_sora_2_and_takes_seconds_as_a_number() -> None:
    sub = parse_openai_video({"prompt": "a cat", "seconds": 12})
    assert (sub.public_model, sub.request.model, sub.request.seconds) == ("sora-2", "sora-2", 12.0)


def test_openai_video_multipart_input_reference_is_the_first_frame() -> None:
    body = form(
        [png("input_reference", content_type="application/octet-stream")], model="sora-2", prompt="go", seconds="4"
    )
    request = parse_openai_video(body).request
    assert request.catalog == "i2v"
    assert request.media == (Media(role=FIRST_FRAME, data=PNG, content_type="image/png", filename="a.png"),)


@pytest.mark.parametrize(
    ("reference", "url"),
    [
        ({"image_url": "https://x.example/a.jpg"}, "https://x.example/a.jpg"),
        ({"image_url": PNG_DATA_URL}, PNG_DATA_URL),
        ("https://x.example/a.png", "https://x.example/a.png"),
    ],
)
def test_openai_video_json_input_reference(reference: Any, url: str) -> None:
    request = parse_openai_video({"prompt": "go", "input_reference": reference}).request
    assert request.catalog == "i2v"
    assert [(m.role, m.url) for m in request.media] == [(FIRST_FRAME, url)]


def test_openai_video_extra_body_fields() -> None:
    sub = parse_openai_video(
        {
            "model": "wan2.6-t2v",
            "prompt": "p",
            "resolution": "1080p",
            "aspect_ratio": "16:9",
            "negative_prompt": "blur",
            "seed": "7",
            "callback_url": "https://me.example/hook",
            "prompt_extend": False,
            "user": "u1",
        }
    )
    assert sub.callback_url == "https://me.example/hook"
    r = sub.request
    assert (r.resolution, r.ratio, r.negative_prompt, r.seed) == ("1080P", "16:9", "blur", 7)
    assert r.extra == {"prompt_extend": False}  # callback_url and user never reach the vendor


@pytest.mark.parametrize(
    ("body", "param", "text"),
    [
        ({"model": "sora-2"}, "prompt", "The field 'prompt' is required."),
        ({"prompt": "   "}, "prompt", "The field 'prompt' is required."),
        ({"prompt": 5}, "prompt", "The field 'prompt' must be a string."),
        ({"prompt": "p", "seconds": "eight"}, "seconds", "The field 'seconds' must be a number, like 5; got 'eight'."),
        ({"prompt": "p", "seconds": "0"}, "seconds", "The field 'seconds' must be a positive number; got '0'."),
        ({"prompt": "p", "seconds": True}, "seconds", "The field 'seconds' must be a number, like 5; got True."),
        (
            {"prompt": "p", "size": "big"},
            "size",
            "The field 'size' must be width x height, like \"1280x720\"; got 'big'.",
        ),
        ({"prompt": "p", "seed": "1.5"}, "seed", "The field 'seed' must be a whole number; got '1.5'."),
        ({"prompt": "p", "input_reference": {"file_id": "file-1"}}, "input_reference", "File ids are not served here"),
        (
            {"prompt": "p", "input_reference": "ftp://x/a.png"},
            "input_reference",
            "must be an http(s) URL; got a ftp: URL.",
        ),
        (
            {"prompt": "p", "input_reference": "not base64!"},
            "input_reference",
            "must be an http(s) URL, a data: URL or base64",
        ),
        (
            {"prompt": "p", "input_reference": "data:application/pdf;base64,JVBE"},
            "input_reference",
            "must be an image; it is application/pdf.",
        ),
        ({"prompt": "p", "callback_url": "ftp://x"}, "callback_url", "must be an http(s) URL"),
    ],
)
def test_openai_video_errors(body: dict[str, Any], param: str, text: str) -> None:
    err = error(parse_openai_video, body)
    assert err.param == param
    assert text in err.message


def test_openai_video_not_a_json_object() -> None:
    err = error(parse_openai_video, ["prompt"])
    assert (err.code, err.message) == ("invalid_json", "The request body must be a JSON object.")


@pytest.mark.parametrize(
    ("upload", "text"),
    [
        (
            Upload("input_reference", "doc.pdf", "application/pdf", PDF),
            "The file 'doc.pdf' in 'input_reference' must be an image; it is application/pdf.",
        ),
        (Upload("input_reference", "a.png", "image/png", b""), "The file 'a.png' in 'input_reference' is empty."),
        (
            Upload("input_reference", "clip.mp4", "image/png", MP4),
            "must be an image; it is video/mp4.",
        ),  # the bytes win
        (Upload("input_reference", None, None, b"hello world"), "is not a file type the gateway can tell"),
        (Upload("input_reference[]", "a.png", None, PNG), None),
    ],
)
def test_openai_video_upload_kinds(upload: Upload, text: str | None) -> None:
    body = form([upload], prompt="p")
    if text is None:
        assert parse_openai_video(body).request.catalog == "i2v"
        return
    err = error(parse_openai_video, body)
    assert (err.param, err.code) == (upload.field, "invalid_file")
    assert text in err.message


def test_openai_video_form_errors() -> None:
    assert (
        error(parse_openai_video, form([png("input_reference"), png("input_reference")], prompt="p")).message
        == "Send one input_reference."
    )
    assert error(parse_openai_video, form(prompt=["a", "b"])).message == "Send the field 'prompt' once."
    err = error(parse_openai_video, form([png("mystery")], prompt="p"))
    assert (err.param, err.message) == ("mystery", "The file field 'mystery' is not one this endpoint takes.")


def test_openai_video_form_extra_is_typed() -> None:
    body = form(prompt="p", watermark="false", steps="30", cfg="7.5", style="anime")
    assert parse_openai_video(body).request.extra == {"watermark": False, "steps": 30, "cfg": 7.5, "style": "anime"}


def test_remix() -> None:
    source = task("succeeded")
    sub = parse_openai_video_remix({"prompt": "now at night"}, source)
    assert sub.meta == {"remixed_from": "task_abc"}
    assert sub.public_model == "sora-2"
    assert sub.row_request() == {
        "catalog": "t2v",
        "model": "sora-2",
        "prompt": "now at night",
        "seconds": 8.0,
        "size": "1280x720",
        "remixed_from": "task_abc",
    }
    err = error(parse_openai_video_remix, {"prompt": "x"}, task("running"))
    assert err.message == "Video 'task_abc' is not completed; only a completed video can be remixed."
    assert error(parse_openai_video_remix, {}, source).param == "prompt"


def test_video_list_query() -> None:
    q = parse_openai_video_list({})
    assert (q.after, q.limit, q.order) == (None, 20, "desc")
    q = parse_openai_video_list({"after": "task_1", "limit": "100", "order": "asc"})
    assert (q.after, q.limit, q.order) == ("task_1", 100, "asc")
    assert error(parse_openai_video_list, {"limit": "0"}).param == "limit"
    assert error(parse_openai_video_list, {"limit": "x"}).param == "limit"
    assert error(parse_openai_video_list, {"order": "up"}).param == "order"


# ---- OpenAI videos: render

VIDEO_BASE: dict[str, Any] = {
    "id": "task_abc",
    "object": "video",
    "created_at": 1_700_000_000,
    "status": "queued",
    "progress": 0,
    "model": "sora-2",
    "prompt": "a cat",
    "seconds": "8",
    "size": "1280x720",
    "completed_at": None,
    "expires_at": None,
    "error": None,
    "remixed_from_video_id": None,
}
VIDEO_STATES: dict[str, Any] = {
    "created": {},
    "pending": {},
    "running": {"status": "in_progress", "progress": 42},
    "succeeded": {"status": "completed", "progress": 100, "completed_at": 1_700_000_200, "expires_at": 1_700_086_400},
    **{
        state: {"status": "failed", "completed_at": 1_700_000_200, "error": {"code": code, "message": message}}
        for state, (code, message) in FAILURES.items()
    },
}


@pytest.mark.parametrize("state", list(STATES))
def test_render_openai_video(state: str) -> None:
    answer = render_openai_video(task(state), LINKS)
    assert answer == {**VIDEO_BASE, **VIDEO_STATES[state]}
    assert Video.model_validate(answer).model_dump(exclude_unset=True) == answer
    no_vendor_url(answer)


def test_render_openai_video_defaults_and_remix() -> None:
    row = task("created", request={"prompt": "p", "resolution": "720P", "ratio": "9:16", "remixed_from": "task_old"})
    answer = render_openai_video(row, LINKS)
    assert (answer["seconds"], answer["size"], answer["remixed_from_video_id"]) == ("4", "720x1280", "task_old")
    assert Video.model_validate(answer).remixed_from_video_id == "task_old"
    assert render_openai_video(task("succeeded", usage={"seconds": 5.0}), LINKS)["seconds"] == "5"  # what was made


@pytest.mark.parametrize(
    ("asked", "size"),
    [
        ({}, "720x1280"),
        ({"size": "1792x1024"}, "1792x1024"),
        ({"resolution": "720P"}, "1280x720"),
        ({"resolution": "1080P", "ratio": "9:16"}, "1080x1920"),
        ({"resolution": "480P", "ratio": "1:1"}, "480x480"),
        ({"resolution": "2K"}, "720x1280"),
    ],
)
def test_video_size(asked: dict[str, Any], size: str) -> None:
    assert video_size(asked) == size


def test_render_failed_masks_secrets_in_vendor_text() -> None:
    answer = render_openai_video(task("failed_vendor", error="bad key sk-abcdefghijklmnop"), LINKS)
    assert answer["error"] == {"code": VENDOR_FAILED, "message": "bad key sk-***"}


def test_render_openai_video_list_and_delete() -> None:
    rows = [task("succeeded"), replace(task("running"), id="task_def")]
    page = render_openai_video_list(rows, LINKS, has_more=True)
    assert page["object"] == "list"
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("task_abc", "task_def", True)
    assert [v["id"] for v in page["data"]] == ["task_abc", "task_def"]
    parsed = SyncConversationCursorPage[Video].model_validate(page)
    assert [v.status for v in parsed.data] == ["completed", "in_progress"]
    assert render_openai_video_list([], LINKS, has_more=False) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    deleted = render_openai_video_deleted("task_abc")
    assert deleted == {"id": "task_abc", "object": "video.deleted", "deleted": True}
    assert VideoDeleteResponse.model_validate(deleted).deleted is True


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")  # the SDK's notice on every videos call
async def test_the_openai_client_reads_the_video_shapes(aiohttp_server: Any) -> None:
    rows = {"task_abc": task("succeeded"), "task_def": replace(task("failed_timeout"), id="task_def")}

    async def get(request: web.Request) -> web.Response:
        return web.json_response(render_openai_video(rows[request.match_info["id"]], LINKS))

    async def listing(request: web.Request) -> web.Response:
        after = request.query.get("after")
        page = [rows["task_def"]] if after == "task_abc" else [rows["task_abc"]]
        return web.json_response(render_openai_video_list(page, LINKS, has_more=after is None))

    async def delete(request: web.Request) -> web.Response:
        return web.json_response(render_openai_video_deleted(request.match_info["id"]))

    app = web.Application()
    app.router.add_get("/v1/videos/{id}", get)
    app.router.add_get("/v1/videos", listing)
    app.router.add_delete("/v1/videos/{id}", delete)
    server = await aiohttp_server(app)
    async with openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k", max_retries=0) as client:
        video = await client.videos.retrieve("task_abc")
        assert (video.status, video.progress, video.seconds, video.expires_at) == ("completed", 100, "8", 1_700_086_400)
        ids = [v.id async for v in client.videos.list()]
        assert ids == ["task_abc", "task_def"]  # the cursor followed last_id
        failed = await client.videos.retrieve("task_def")
        assert failed.error is not None and failed.error.code == TIMEOUT
        assert (await client.videos.delete("task_abc")).deleted is True


# ---- /v1/video/generations


@pytest.mark.parametrize(
    ("files", "catalog", "expected"),
    [
        ({}, "t2v", []),
        ({"image": "https://x/a.png"}, "i2v", [FIRST_FRAME]),
        ({"image_url": {"url": "https://x/a.png"}}, "i2v", [FIRST_FRAME]),
        ({"first_frame": PNG_DATA_URL}, "i2v", [FIRST_FRAME]),
        ({"img_url": PNG_B64}, "i2v", [FIRST_FRAME]),
        ({"first_frame": "https://x/a.png", "last_frame": "https://x/b.png"}, "i2v", [FIRST_FRAME, LAST_FRAME]),
        ({"image": "https://x/a.png", "image_tail": "https://x/b.png"}, "i2v", [FIRST_FRAME, LAST_FRAME]),
        ({"images": ["https://x/a.png"]}, "i2v", [FIRST_FRAME]),
        ({"images": ["https://x/a.png", "https://x/b.png"]}, "i2v", [FIRST_FRAME, LAST_FRAME]),
        ({"image": ["https://x/a.png", "https://x/b.png"]}, "i2v", [FIRST_FRAME, LAST_FRAME]),
        ({"images": ["https://x/a.png"] * 3}, "ref2v", [REFERENCE] * 3),
        ({"reference_images": ["https://x/a.png", "https://x/b.png"]}, "ref2v", [REFERENCE] * 2),
        ({"images": ["https://x/a.png"], "catalog": "ref2v"}, "ref2v", [REFERENCE]),
        ({"images": ["https://x/a.png"], "catelogid": "r2v"}, "ref2v", [REFERENCE]),
        ({"video": "https://x/a.mp4"}, "ref2v", [VIDEO]),
        ({"image": "https://x/a.png", "audio": "https://x/a.mp3"}, "i2v", [FIRST_FRAME, AUDIO]),
        ({"audio_url": "https://x/a.mp3"}, "t2v", [AUDIO]),
    ],
)
def test_video_generation_media(files: dict[str, Any], catalog: str, expected: list[str]) -> None:
    request = parse_video_generation({"model": "m", "prompt": "p", **files}).request
    assert (request.catalog, roles(request.media)) == (catalog, expected)


@pytest.mark.parametrize("name", FIRST_FIELDS)
def test_video_generation_first_frame_fields(name: str) -> None:
    request = parse_video_generation({"model": "m", name: "https://x/a.png"}).request
    assert (request.catalog, roles(request.media), request.prompt) == ("i2v", [FIRST_FRAME], "")


@pytest.mark.parametrize("name", LAST_FIELDS)
def test_video_generation_last_frame_fields(name: str) -> None:
    request = parse_video_generation({"model": "m", "image": "https://x/a.png", name: "https://x/b.png"}).request
    assert [(m.role, m.url) for m in request.media] == [
        (FIRST_FRAME, "https://x/a.png"),
        (LAST_FRAME, "https://x/b.png"),
    ]


@pytest.mark.parametrize(
    ("name", "value", "catalog", "expected"),
    [
        *((n, ["https://x/a.png", "https://x/b.png"], "i2v", [FIRST_FRAME, LAST_FRAME]) for n in IMAGES_FIELDS),
        *((n, ["https://x/a.png"], "ref2v", [REFERENCE]) for n in REFERENCE_FIELDS),
        *((n, "https://x/v.mp4", "ref2v", [VIDEO]) for n in VIDEO_FIELDS),
        *((n, "https://x/a.mp3", "t2v", [AUDIO]) for n in AUDIO_FIELDS),
    ],
)
def test_video_generation_file_fields(name: str, value: Any, catalog: str, expected: list[str]) -> None:
    request = parse_video_generation({"model": "m", "prompt": "p", name: value}).request
    assert (request.catalog, roles(request.media)) == (catalog, expected)


def test_base64_may_be_wrapped_and_size_may_be_auto() -> None:
    wrapped = "\n".join(PNG_B64[i : i + 8] for i in range(0, len(PNG_B64), 8))
    request = parse_video_generation({"model": "m", "image": wrapped, "size": "auto"}).request
    assert (request.media[0].data, request.size) == (PNG, None)


def test_video_generation_fields() -> None:
    sub = parse_video_generation(
        {
            "model": "kling-v2",
            "prompt": "p",
            "duration": 5,
            "resolution": "720p",
            "size": "1920*1080",
            "ratio": "16\uff1a9",
            "seed": 11,
            "n": 1,
            "negative_prompt": "blur",
            "webhook": "https://me.example/cb",
            "image": "https://x/a.png",
            "metadata": {"mode": "pro", "seed": 99, "image_tail": "https://x/b.png"},
            "response_format": "url",
            "camera_fixed": True,
        }
    )
    assert sub.callback_url == "https://me.example/cb"
    assert sub.public_model == "kling-v2"
    r = sub.request
    assert (r.seconds, r.resolution, r.size, r.ratio, r.seed, r.n, r.negative_prompt) == (
        5.0,
        "720P",
        "1920x1080",
        "16:9",
        11,
        1,
        "blur",
    )
    assert r.extra == {"camera_fixed": True, "mode": "pro"}  # metadata read; top-level seed wins
    assert (r.catalog, roles(r.media)) == ("i2v", [FIRST_FRAME, LAST_FRAME])


def test_video_generation_width_height() -> None:
    assert parse_video_generation({"model": "m", "prompt": "p", "width": 512, "height": 768}).request.size == "512x768"
    assert error(parse_video_generation, {"model": "m", "prompt": "p", "width": 512}).param == "height"


def test_video_generation_form_upload() -> None:
    body = form([png("image"), Upload("last_frame", "b.jpg", "image/jpeg", JPEG)], model="m", prompt="p")
    request = parse_video_generation(body).request
    assert [(m.role, m.content_type) for m in request.media] == [(FIRST_FRAME, "image/png"), (LAST_FRAME, "image/jpeg")]


@pytest.mark.parametrize(
    ("body", "param", "text"),
    [
        ({"prompt": "p"}, "model", "The field 'model' is required."),
        ({"model": "m"}, "prompt", "The field 'prompt' is required for t2v."),
        (
            {"model": "m", "prompt": "p", "catalog": "t2i"},
            "catalog",
            "Unknown catalog 't2i' here; use one of: t2v, i2v, ref2v.",
        ),
        ({"model": "m", "prompt": "p", "catalog": "t2v", "image": "https://x/a.png"}, "catalog", "t2v takes no images"),
        ({"model": "m", "prompt": "p", "catalog": "i2v"}, "image", "i2v needs a first frame image."),
        ({"model": "m", "prompt": "p", "catalog": "ref2v"}, "image_files", "ref2v needs at least one reference"),
        (
            {"model": "m", "prompt": "p", "catalog": "i2v", "images": ["https://x/a"] * 3},
            "image",
            "i2v takes two images at most",
        ),
        (
            {"model": "m", "prompt": "p", "last_frame": "https://x/b.png"},
            "last_frame",
            "A last frame needs a first frame too.",
        ),
        (
            {"model": "m", "prompt": "p", "catalog": "i2v", "image": "https://x/a", "video": "https://x/v.mp4"},
            "catalog",
            "i2v takes no videos",
        ),
        (
            {
                "model": "m",
                "prompt": "p",
                "catalog": "i2v",
                "image": "https://x/a",
                "reference_images": ["https://x/r"],
            },
            "catalog",
            "Reference images make a ref2v task",
        ),
        (
            {"model": "m", "prompt": "p", "video": "data:image/png;base64,AAAA"},
            "video",
            "must be a video; it is image/png.",
        ),
        (
            {"model": "m", "prompt": "p", "reference_images": ["https://x/a"] * (MAX_IMAGES + 1)},
            None,
            f"Too many images: 11; send at most {MAX_IMAGES}.",
        ),
        ({"model": "m", "prompt": "p", "metadata": "x"}, "metadata", "The field 'metadata' must be an object."),
        ({"model": "m", "prompt": "p", "n": 0}, "n", "The field 'n' must be at least 1; got 0."),
    ],
)
def test_video_generation_errors(body: dict[str, Any], param: str | None, text: str) -> None:
    err = error(parse_video_generation, body)
    assert err.param == param
    assert text in err.message


def test_video_generation_prompt_optional_with_a_frame() -> None:
    assert parse_video_generation({"model": "m", "image": "https://x/a.png"}).request.prompt == ""


GENERATION_BASE: dict[str, Any] = {
    "id": "task_abc",
    "task_id": "task_abc",
    "object": "video.generation",
    "model": "sora-2",
    "status": "queued",
    "progress": 0,
    "created_at": 1_700_000_000,
    "completed_at": None,
    "seconds": "8",
    "size": "1280x720",
    "url": None,
    "video_url": None,
    "thumbnail_url": None,
    "videos": [],
    "error": None,
}
GENERATION_STATES: dict[str, Any] = {
    "created": {},
    "pending": {},
    "running": {"status": "in_progress", "progress": 42},
    "succeeded": {
        "status": "completed",
        "progress": 100,
        "completed_at": 1_700_000_200,
        "url": VIDEO_URL,
        "video_url": VIDEO_URL,
        "thumbnail_url": THUMB_URL,
        "videos": [VIDEO_URL],
    },
    **{
        state: {"status": "failed", "completed_at": 1_700_000_200, "error": {"code": code, "message": message}}
        for state, (code, message) in FAILURES.items()
    },
}


@pytest.mark.parametrize("state", list(STATES))
def test_render_video_generation(state: str) -> None:
    answer = render_video_generation(task(state, dialect=VIDEO_GENERATION), LINKS)
    assert answer == {**GENERATION_BASE, **GENERATION_STATES[state]}
    no_vendor_url(answer)


# ---- async images


def test_image_generation_json() -> None:
    sub = parse_image_generation(
        {
            "model": "wan2.2-t2i-plus",
            "prompt": "a cat",
            "n": 2,
            "size": "1024*1024",
            "quality": "hd",
            "response_format": "url",
        }
    )
    assert sub.request.describe() == {
        "catalog": "t2i",
        "model": "wan2.2-t2i-plus",
        "prompt": "a cat",
        "size": "1024x1024",
        "n": 2,
        "extra": {"quality": "hd"},
    }


def test_image_generation_with_an_image_is_i2i() -> None:
    request = parse_image_generation(
        {"model": "seedream", "prompt": "p", "image": ["https://x/a.png", "https://x/b.png"]}
    ).request
    assert (request.catalog, roles(request.media)) == ("i2i", [REFERENCE, REFERENCE])


@pytest.mark.parametrize("field", ["image", "image[]"])
def test_image_edit_multipart(field: str) -> None:
    body = form([png(field), Upload(field, "b.jpg", None, JPEG)], model="qwen-image-edit", prompt="make it blue", n="1")
    request = parse_image_edit(body).request
    assert (request.catalog, request.n) == ("i2i", 1)
    assert [(m.role, m.content_type, m.filename) for m in request.media] == [
        (REFERENCE, "image/png", "a.png"),
        (REFERENCE, "image/jpeg", "b.jpg"),
    ]


def test_image_edit_json_images() -> None:
    body = {
        "model": "m",
        "prompt": "p",
        "images": [{"image_url": "https://x/a.png"}, {"image_url": {"url": PNG_DATA_URL}}],
    }
    assert [m.url for m in parse_image_edit(body).request.media] == ["https://x/a.png", PNG_DATA_URL]


@pytest.mark.parametrize(
    ("parse", "body", "param", "text"),
    [
        (parse_image_generation, {"prompt": "p"}, "model", "The field 'model' is required."),
        (parse_image_generation, {"model": "m"}, "prompt", "The field 'prompt' is required for t2i."),
        (
            parse_image_generation,
            {"model": "m", "prompt": "p", "response_format": "b64_json"},
            "response_format",
            "answer with URLs",
        ),
        (parse_image_generation, {"model": "m", "prompt": "p", "catalog": "t2v"}, "catalog", "use one of: t2i, i2i."),
        (
            parse_image_generation,
            {"model": "m", "prompt": "p", "catalog": "t2i", "image": "https://x/a"},
            "catalog",
            "t2i takes no images",
        ),
        (parse_image_edit, {"model": "m", "prompt": "p"}, "image", "i2i needs at least one image."),
        (
            parse_image_edit,
            form([png("image"), png("mask")], model="m", prompt="p"),
            "mask",
            "Async edits take no mask",
        ),
        (
            parse_image_edit,
            form([Upload("image", "x.mp4", None, MP4)], model="m", prompt="p"),
            "image",
            "must be an image; it is video/mp4.",
        ),
    ],
)
def test_image_errors(parse: Any, body: Any, param: str, text: str) -> None:
    err = error(parse, body)
    assert err.param == param
    assert text in err.message


IMAGE_BASE: dict[str, Any] = {
    "id": "task_abc",
    "task_id": "task_abc",
    "object": "image.generation.task",
    "model": "wan2.2-t2i-plus",
    "status": "queued",
    "progress": 0,
    "created_at": 1_700_000_000,
    "completed_at": None,
    "created": 1_700_000_000,
    "data": [],
    "error": None,
}
IMAGE_STATES: dict[str, Any] = {
    "created": {},
    "pending": {},
    "running": {"status": "in_progress", "progress": 42},
    "succeeded": {
        "status": "completed",
        "progress": 100,
        "completed_at": 1_700_000_200,
        "created": 1_700_000_200,
        "data": [{"url": u} for u in IMAGE_URLS],
    },
    **{
        state: {"status": "failed", "completed_at": 1_700_000_200, "error": {"code": code, "message": message}}
        for state, (code, message) in FAILURES.items()
    },
}


@pytest.mark.parametrize("state", list(STATES))
def test_render_image_task(state: str) -> None:
    answer = render_image_task(task(state, image=True, dialect=OPENAI_IMAGE), LINKS)
    assert answer == {**IMAGE_BASE, **IMAGE_STATES[state]}
    no_vendor_url(answer)
    if state == "succeeded":
        images = ImagesResponse.model_validate(answer)
        assert [i.url for i in images.data or []] == IMAGE_URLS


# ---- 元境 (llmage)


@pytest.mark.parametrize(
    ("uploads", "catalog", "expected"),
    [
        ([], "t2v", []),
        ([png("image_file")], "i2v", [FIRST_FRAME]),
        ([png("image1_file")], "i2v", [FIRST_FRAME]),
        ([png("image_file1")], "i2v", [FIRST_FRAME]),
        ([png("image1_file"), png("image2_file")], "i2v", [FIRST_FRAME, LAST_FRAME]),
        ([png("image_file1"), png("image_file2")], "i2v", [FIRST_FRAME, LAST_FRAME]),
        ([png("image_files[]"), png("image_files[]")], "ref2v", [REFERENCE, REFERENCE]),
        ([png("image_files")], "ref2v", [REFERENCE]),
        ([Upload("video_files[]", "v.mp4", "video/mp4", MP4)], "ref2v", [VIDEO]),
        ([png("image_files[]"), Upload("video_files[]", "v.mp4", None, MP4)], "ref2v", [REFERENCE, VIDEO]),
        ([Upload("audio_files[]", "a.mp3", None, MP3)], "t2v", [AUDIO]),
        ([Upload("audio_file", "a.wav", None, b"RIFF\0\0\0\0WAVEfmt ")], "t2v", [AUDIO]),
        ([Upload("video_file", "v.mov", None, b"\0\0\0\x14ftypqt  ")], "ref2v", [VIDEO]),
        ([png("image_file"), Upload("audio_files[]", "a.mp3", "audio/mpeg", MP3)], "i2v", [FIRST_FRAME, AUDIO]),
    ],
)
def test_llmage_video_files_infer_the_catalog(uploads: list[Upload], catalog: str, expected: list[str]) -> None:
    request = parse_llmage_video(form(uploads, model="viduq3-pro", prompt="p")).request
    assert (request.catalog, roles(request.media)) == (catalog, expected)


@pytest.mark.parametrize(
    ("catelogid", "uploads", "catalog", "expected"),
    [
        ("t2v", [], "t2v", []),
        ("i2v", [png("image_file")], "i2v", [FIRST_FRAME]),
        ("I2V", [png("image1_file"), png("image2_file")], "i2v", [FIRST_FRAME, LAST_FRAME]),
        ("ref2v", [png("image_files[]")], "ref2v", [REFERENCE]),
        ("r2v", [png("image_files[]"), png("image_files[]")], "ref2v", [REFERENCE, REFERENCE]),
        ("ref2v", [png("image_file")], "ref2v", [REFERENCE]),  # with ref2v every image is a reference
    ],
)
def test_llmage_video_catelogid(catelogid: str, uploads: list[Upload], catalog: str, expected: list[str]) -> None:
    request = parse_llmage_video(form(uploads, model="m", prompt="p", catelogid=catelogid)).request
    assert (request.catalog, roles(request.media)) == (catalog, expected)


def test_llmage_video_model_fields_and_extra() -> None:
    body = form(
        model="viduq3-pro",
        prompt="p",
        duration="5",
        ratio="9:16",
        resolution="1080p",
        off_peak="true",
        movement_amplitude="auto",
        seed="3",
        negative_prompt="blur",
        callback_url="https://me.example/cb",
    )
    sub = parse_llmage_video(body)
    assert sub.callback_url == "https://me.example/cb"
    assert sub.request.describe() == {
        "catalog": "t2v",
        "model": "viduq3-pro",
        "prompt": "p",
        "negative_prompt": "blur",
        "seconds": 5.0,
        "resolution": "1080P",
        "ratio": "9:16",
        "seed": 3,
        "extra": {"off_peak": True, "movement_amplitude": "auto"},
    }


def test_llmage_json_with_urls() -> None:
    body = {
        "model": "m",
        "prompt": "p",
        "catelogid": "i2v",
        "image1_file": "https://x/a.png",
        "image2_file": PNG_B64,
        "off_peak": True,
    }
    request = parse_llmage_video(body).request
    assert [(m.role, m.url, m.data) for m in request.media] == [
        (FIRST_FRAME, "https://x/a.png", None),
        (LAST_FRAME, None, PNG),
    ]
    assert request.extra == {"off_peak": True}
    refs = parse_llmage_video(
        {"model": "m", "prompt": "p", "image_files": ["https://x/a.png", "https://x/b.png"]}
    ).request
    assert (refs.catalog, roles(refs.media)) == ("ref2v", [REFERENCE, REFERENCE])


@pytest.mark.parametrize(
    ("catelogid", "uploads", "catalog", "expected"),
    [
        (None, [], "t2i", []),
        ("t2i", [], "t2i", []),
        (None, [png("image_file")], "i2i", [REFERENCE]),
        ("i2i", [png("image_files[]"), png("image_files[]")], "i2i", [REFERENCE, REFERENCE]),
    ],
)
def test_llmage_image(catelogid: str | None, uploads: list[Upload], catalog: str, expected: list[str]) -> None:
    fields: dict[str, str] = {"model": "wan2.2-t2i-plus", "prompt": "p", "size": "1024*1024", "n": "2"}
    if catelogid:
        fields["catelogid"] = catelogid
    request = parse_llmage_image(form(uploads, **fields)).request
    assert (request.catalog, roles(request.media), request.size, request.n) == (catalog, expected, "1024x1024", 2)


@pytest.mark.parametrize(
    ("parse", "uploads", "fields", "param", "text"),
    [
        (
            parse_llmage_video,
            [],
            {"catelogid": "t2x"},
            "catelogid",
            "Unknown catelogid 't2x' here; use one of: t2v, i2v, ref2v.",
        ),
        (parse_llmage_video, [], {"catelogid": "t2i"}, "catelogid", "use one of: t2v, i2v, ref2v."),
        (parse_llmage_image, [], {"catelogid": "t2v"}, "catelogid", "use one of: t2i, i2i."),
        (parse_llmage_video, [png("image_file")], {"catelogid": "t2v"}, "catelogid", "t2v takes no images"),
        (parse_llmage_video, [], {"catelogid": "i2v"}, "image", "i2v needs a first frame image."),
        (parse_llmage_video, [], {"catelogid": "ref2v"}, "image_files", "ref2v needs at least one reference"),
        (parse_llmage_video, [png("image2_file")], {}, "last_frame", "A last frame needs a first frame too."),
        (
            parse_llmage_video,
            [png("image_file"), png("image_files[]")],
            {"catelogid": "i2v"},
            "catelogid",
            "Reference images make a ref2v task",
        ),
        (
            parse_llmage_video,
            [png("image_file"), png("image1_file"), png("image2_file")],
            {},
            "image",
            "i2v takes two images at most",
        ),
        (
            parse_llmage_video,
            [Upload("image_file", "a.pdf", "application/pdf", PDF)],
            {},
            "image_file",
            "must be an image; it is application/pdf.",
        ),
        (
            parse_llmage_video,
            [Upload("video_files[]", "a.png", "video/mp4", PNG)],
            {},
            "video_files[]",
            "must be a video; it is image/png.",
        ),
        (
            parse_llmage_video,
            [Upload("audio_files[]", "a.mp4", None, MP4)],
            {},
            "audio_files[]",
            "must be an audio; it is video/mp4.",
        ),
        (
            parse_llmage_video,
            [png("image_files[]")] * (MAX_IMAGES + 1),
            {},
            None,
            "Too many images: 11; send at most 10.",
        ),
        (
            parse_llmage_video,
            [Upload("video_files[]", "v.mp4", None, MP4)] * 6,
            {},
            None,
            "Too many videos: 6; send at most 5.",
        ),
        (
            parse_llmage_video,
            [png("cover_file")],
            {},
            "cover_file",
            "The file field 'cover_file' is not one this endpoint takes.",
        ),
        (parse_llmage_image, [png("video_files[]")], {}, "video_files[]", "must be a video"),
        (
            parse_llmage_image,
            [Upload("video_files[]", "v.mp4", None, MP4)],
            {},
            "video",
            "Image generation takes only images.",
        ),
        (parse_llmage_image, [png("image_file")], {"catelogid": "t2i"}, "catelogid", "t2i takes no images"),
        (parse_llmage_video, [], {"prompt": ""}, "prompt", "The field 'prompt' is required for t2v."),
        (parse_llmage_video, [], {"model": ""}, "model", "The field 'model' is required."),
        (parse_llmage_video, [], {"duration": "five"}, "duration", "The field 'duration' must be a number"),
    ],
)
def test_llmage_errors(parse: Any, uploads: list[Upload], fields: dict[str, str], param: str | None, text: str) -> None:
    body = form(uploads, **{"model": "m", "prompt": "p", **fields})
    err = error(parse, body)
    assert err.param == param
    assert text in err.message
    assert err.code in ("invalid_value", "invalid_file", "too_many_files", "missing_required_parameter")


def test_llmage_i2v_without_prompt() -> None:
    assert parse_llmage_video(form([png("image_file")], model="m")).request.prompt == ""


LLMAGE_BASE: dict[str, Any] = {
    "taskid": "task_abc",
    "model": "sora-2",
    "catelogid": "t2v",
    "progress": 0,
    "usage": None,
    "video": None,
    "image": None,
    "error": None,
    "reason": None,
}
LLMAGE_STATES: dict[str, Any] = {
    "created": {"status": CREATED},
    "pending": {"status": PENDING},
    "running": {"status": RUNNING, "progress": 42},
    "succeeded": {
        "status": SUCCEEDED,
        "progress": 100,
        "usage": {"seconds": 8.0, "resolution": "720P"},
        "video": VIDEO_URL,
    },
    **{state: {"status": FAILED, "error": message, "reason": code} for state, (code, message) in FAILURES.items()},
}


@pytest.mark.parametrize("state", list(STATES))
def test_render_llmage_task(state: str) -> None:
    answer = render_llmage_task(task(state, dialect=LLMAGE), LINKS)
    assert answer == {**LLMAGE_BASE, **LLMAGE_STATES[state]}
    no_vendor_url(answer)


def test_render_llmage_image_task_and_created() -> None:
    answer = render_llmage_task(task("succeeded", image=True, dialect=LLMAGE), LINKS)
    assert (answer["catelogid"], answer["image"], answer["video"], answer["usage"]) == (
        "t2i",
        IMAGE_URLS,
        None,
        {"images": 2},
    )
    assert render_llmage_created(task("pending")) == {"taskid": "task_abc", "status": "CREATED"}


# ---- AI逢源 services

SERVICES = (
    Service(
        service_code="image_generation",
        name="通用图像生成",
        model="wan2.2-t2i-plus",
        category="image",
        description="Images",
    ),
    Service(service_code="video_generation", name="视频生成", model="wan2.6-t2v", category="video"),
    Service(service_code="mystery", name="?", model="odd-model"),
)


def test_service_list() -> None:
    assert render_service_list(SERVICES[:2]) == {
        "success": True,
        "data": {
            "services": [
                {
                    "service_code": "image_generation",
                    "name": "通用图像生成",
                    "category": "image",
                    "description": "Images",
                    "model": "wan2.2-t2i-plus",
                },
                {
                    "service_code": "video_generation",
                    "name": "视频生成",
                    "category": "video",
                    "description": None,
                    "model": "wan2.6-t2v",
                },
            ]
        },
    }


def test_service_invoke_image() -> None:
    sub = parse_service_invoke(
        {
            "service_code": "image_generation",
            "params": {"prompt": "a cat", "n": 2, "model": "ignored", "size": "1024x1024"},
        },
        SERVICES,
    )
    assert sub.public_model == "wan2.2-t2i-plus"
    assert sub.meta == {"service_code": "image_generation"}
    assert sub.row_request() == {
        "catalog": "t2i",
        "model": "wan2.2-t2i-plus",
        "prompt": "a cat",
        "size": "1024x1024",
        "n": 2,
        "service_code": "image_generation",
    }


def test_service_invoke_video_params_as_video_generations() -> None:
    body = {
        "service_code": "video_generation",
        "callback_url": "https://me.example/outer",
        "params": {"prompt": "p", "image": "https://x/a.png", "duration": 5, "resolution": "720P", "watermark": False},
    }
    sub = parse_service_invoke(body, SERVICES)
    assert sub.callback_url == "https://me.example/outer"
    assert (sub.request.catalog, roles(sub.request.media), sub.request.seconds) == ("i2v", [FIRST_FRAME], 5.0)
    assert sub.request.extra == {"watermark": False}
    inner = {**body, "params": {"prompt": "p", "callback_url": "https://me.example/inner"}}
    assert parse_service_invoke(inner, SERVICES).callback_url == "https://me.example/inner"


def test_service_invoke_catalog_from_config_beats_category() -> None:
    sub = parse_service_invoke({"service_code": "mystery", "params": {"prompt": "p"}}, SERVICES, {"odd-model": "t2i"})
    assert sub.request.catalog == "t2i"
    sub = parse_service_invoke(
        {"service_code": "image_generation", "params": {"image": "https://x/a"}}, SERVICES, {"wan2.2-t2i-plus": "i2i"}
    )
    assert sub.request.catalog == "i2i"


@pytest.mark.parametrize(
    ("body", "param", "code", "text"),
    [
        ({}, "service_code", "missing_required_parameter", "The field 'service_code' is required."),
        ({"service_code": "nope"}, "service_code", "service_not_found", "No service 'nope'; GET /api/service/list"),
        (
            {"service_code": "image_generation", "params": ["prompt"]},
            "params",
            "invalid_value",
            "The field 'params' must be an object.",
        ),
        (
            {"service_code": "image_generation", "params": {}},
            "prompt",
            "missing_required_parameter",
            "required for t2i",
        ),
        (
            {"service_code": "mystery", "params": {"prompt": "p"}},
            "service_code",
            "invalid_value",
            "sets models.odd-model.catalog in gateway.yaml",
        ),
        (
            {"service_code": "video_generation", "params": {"prompt": "p", "seed": "x"}},
            "seed",
            "invalid_value",
            "whole number",
        ),
    ],
)
def test_service_invoke_errors(body: dict[str, Any], param: str, code: str, text: str) -> None:
    err = error(parse_service_invoke, body, SERVICES)
    assert (err.param, err.code) == (param, code)
    assert text in err.message


def test_service_errors_and_list_query() -> None:
    assert GatewayError(400, "Bad seed").body(SERVICE_PROTOCOL) == {"success": False, "message": "Bad seed", "code": "INVALID_PARAMS"}
    assert GatewayError(404, "No task", code="task_not_found").body(SERVICE_PROTOCOL) == {
        "success": False,
        "message": "No task",
        "code": "TASK_NOT_FOUND",
    }
    assert GatewayError(500, "boom").body(SERVICE_PROTOCOL)["code"] == "SERVER_ERROR"
    q = parse_task_list({})
    assert (q.page, q.limit, q.statuses) == (1, 20, ())
    q = parse_task_list({"page": "3", "limit": "50", "status": "pending,failed"})
    assert (q.page, q.limit, q.statuses) == (3, 50, (CREATED, PENDING, FAILED))
    assert parse_task_list({"status": "SUCCEEDED,PENDING"}).statuses == (SUCCEEDED, PENDING)
    assert parse_task_list({"status": "Completed"}).statuses == (SUCCEEDED,)
    assert error(parse_task_list, {"status": "done"}).param == "status"
    assert error(parse_task_list, {"limit": "101"}).param == "limit"
    assert error(parse_task_list, {"page": "0"}).param == "page"


SERVICE_BASE: dict[str, Any] = {
    "task_id": "task_abc",
    "service_code": "video_generation",
    "model": "sora-2",
    "status": "pending",
    "progress": 0,
    "result": None,
    "error": None,
    "reason": None,
    "usage": None,
    "cost": None,
    "created_at": 1_700_000_000,
    "updated_at": 1_700_000_100,
    "finished_at": None,
}
SERVICE_STATES: dict[str, Any] = {
    "created": {},
    "pending": {},
    "running": {"status": "processing", "progress": 42},
    "succeeded": {
        "status": "completed",
        "progress": 100,
        "result": {"videos": [VIDEO_URL], "images": [], "thumbnail": THUMB_URL},
        "usage": {"seconds": 8.0, "resolution": "720P"},
        "cost": 0.4,
        "finished_at": 1_700_000_200,
    },
    **{
        state: {"status": "failed", "error": message, "reason": code, "finished_at": 1_700_000_200}
        for state, (code, message) in FAILURES.items()
    },
}


@pytest.mark.parametrize("state", list(STATES))
def test_render_service_task(state: str) -> None:
    row = task(state, dialect=SERVICE)
    row.request = {**row.request, "service_code": "video_generation"}
    answer = render_service_task(row, LINKS)
    assert answer == {**SERVICE_BASE, **SERVICE_STATES[state]}
    no_vendor_url(answer)


def test_render_service_task_list() -> None:
    query = parse_task_list({"page": "2", "limit": "1"})
    answer = render_service_task_list([task("running", dialect=SERVICE)], LINKS, total=5, query=query)
    assert answer["success"] is True
    assert {k: v for k, v in answer["data"].items() if k != "tasks"} == {"total": 5, "page": 2, "limit": 1}
    assert [t["status"] for t in answer["data"]["tasks"]] == ["processing"]


# ---- neutral /v1/tasks

NEUTRAL_BASE: dict[str, Any] = {
    "id": "task_abc",
    "object": "task",
    "reason": None,
    "progress": 0,
    "model": "sora-2",
    "catalog": "t2v",
    "dialect": NEUTRAL,
    "request_id": None,
    "created_at": 1_700_000_000,
    "updated_at": 1_700_000_100,
    "finished_at": None,
    "results": {"videos": [], "images": [], "thumbnail": None},
    "expires_at": None,
    "usage": None,
    "cost": None,
    "error": None,
}
NEUTRAL_STATES: dict[str, Any] = {
    "created": {"status": CREATED},
    "pending": {"status": PENDING},
    "running": {"status": RUNNING, "progress": 42},
    "succeeded": {
        "status": SUCCEEDED,
        "progress": 100,
        "finished_at": 1_700_000_200,
        "results": {"videos": [VIDEO_URL], "images": [], "thumbnail": THUMB_URL},
        "expires_at": 1_700_086_400,
        "usage": {"seconds": 8.0, "resolution": "720P"},
        "cost": 0.4,
    },
    **{
        state: {
            "status": FAILED,
            "reason": code,
            "finished_at": 1_700_000_200,
            "error": {"code": code, "message": message},
        }
        for state, (code, message) in FAILURES.items()
    },
}


@pytest.mark.parametrize("state", list(STATES))
def test_render_task(state: str) -> None:
    answer = render_task(task(state, dialect=NEUTRAL), LINKS)
    assert answer == {**NEUTRAL_BASE, **NEUTRAL_STATES[state]}
    no_vendor_url(answer)


def test_render_task_images_and_list() -> None:
    answer = render_task(task("succeeded", image=True), LINKS)
    assert answer["results"] == {"videos": [], "images": IMAGE_URLS, "thumbnail": None}
    assert render_task_list([task("running")], LINKS)["object"] == "list"
    assert parse_task_ids("a, b,a") == ["a", "b"]
    assert error(parse_task_ids, "").param == "taskid"
    assert error(parse_task_ids, ",".join(map(str, range(101)))).message.startswith("Too many task ids: 101")


# ---- shared


@pytest.mark.parametrize(
    ("dialect", "key"),
    [
        (OPENAI_VIDEO, "object"),
        (VIDEO_GENERATION, "video_url"),
        (OPENAI_IMAGE, "data"),
        (LLMAGE, "taskid"),
        (SERVICE, "service_code"),
        (NEUTRAL, "results"),
        ("unknown", "results"),
    ],
)
def test_render_answers_in_the_dialect_of_the_task(dialect: str, key: str) -> None:
    assert key in render(task("succeeded", dialect=dialect), LINKS)


def test_content_links() -> None:
    row = task(id="task/x y")
    assert ContentLinks()(row, "video", 0) == "/v1/videos/task%2Fx%20y/content?variant=video"
    assert (
        ContentLinks("https://gw/", "/v1/tasks/{id}/content")(row, "image", 2)
        == "https://gw/v1/tasks/task%2Fx%20y/content?variant=image&index=2"
    )


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (b"GIF89a" + b"\0" * 10, "image/gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
        (b"RIFF\0\0\0\0WAVEfmt ", "audio/wav"),
        (MP4, "video/mp4"),
        (b"\0\0\0\x14ftypqt  ", "video/quicktime"),
        (b"\0\0\0\x14ftypM4A ", "audio/mp4"),
        (b"\0\0\0\x14ftypheic", "image/heic"),
        (b"\x1a\x45\xdf\xa3\0", "video/webm"),
        (MP3, "audio/mpeg"),
        (b"\xff\xfb\x90\x00", "audio/mpeg"),
        (b"OggS\0", "audio/ogg"),
        (b"fLaC\0", "audio/flac"),
        (PDF, None),
    ],
)
def test_sniff(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


def test_submission_keeps_no_bytes_and_no_callback_in_the_row() -> None:
    body = form([png("image_file")], model="m", prompt="p", callback_url="https://me.example/cb", watermark="false")
    sub = parse_llmage_video(body)
    row = sub.row_request()
    assert "callback_url" not in json.dumps(row)
    assert row["media"] == [{"role": FIRST_FRAME, "content_type": "image/png", "bytes": len(PNG), "filename": "a.png"}]
    assert row["extra"] == {"watermark": False}  # unknown fields go to the vendor, typed
