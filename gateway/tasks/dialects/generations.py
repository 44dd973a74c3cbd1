"""`POST /v1/video/generations` and `GET /v1/video/generations/{id}`: the simple video task API of
one-api / new-api style gateways, and the parameter mapping the service dialect reuses.

Request (JSON, or a form with the same names): `model`, `prompt`, `negative_prompt`, `duration` (or
`seconds`), `resolution` ("720p" reads "720P"), `size` ("1280x720" or "1280*720", or `width` + `height`),
`ratio` / `aspect_ratio`, `seed`, `n`, `callback_url` (or `webhook`, `callback`), `catalog` /
`catelogid` (optional: t2v | i2v | ref2v, `r2v` read as ref2v), and the files: `image` / `image_url` /
`first_frame` (first frame), `last_frame` / `image_tail` (last frame), `images` (one: first frame, two:
first and last, more: references), `reference_images`, `video` / `videos` (references), `audio`. Each is
a URL, a data: URL or base64, or an object with `url`. A `metadata` object (new-api's place for vendor
parameters) is read as if its fields were top-level ones; fields this module does not know go to the
vendor in `TaskRequest.extra` (`off_peak`, `watermark`, `prompt_extend`...).

Answer (the create answer and every GET): new-api's current task object, so its clients need no change:
`{id, task_id (= id), object: "video.generation", model, status, progress, created_at, completed_at,
seconds, size, url, video_url (= url), thumbnail_url, videos, error}`. `status` takes OpenAI's video words
(queued | in_progress | completed | failed), as new-api answers today; `url` is the gateway's URL of the
first video (all of them in `videos`), null until completed; `error` is `{code, message}` (code: the
failure reason: vendor_failed | cancelled | expired | timeout) or null.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.tasks.dialects.common import (
    IMAGE_CATALOGS,
    OPENAI_STATUS,
    VIDEO_CATALOGS,
    Body,
    DialectError,
    Links,
    Params,
    Submission,
    error_object,
    progress_of,
    read_callback,
    read_common,
    require_prompt,
    results_of,
    seconds_text,
    ts,
)
from gateway.tasks.dialects.media import assign, catalog_of, collect
from gateway.tasks.model import Task
from providers.tasks.base import AUDIO, FINAL, FIRST_FRAME, LAST_FRAME, REFERENCE, VIDEO, TaskRequest

FIRST_FIELDS = ("first_frame", "first_frame_url", "image", "image_url", "img_url")
LAST_FIELDS = ("last_frame", "last_frame_url", "image_tail", "tail_image", "last_image")
IMAGES_FIELDS = ("images", "image_urls")
REFERENCE_FIELDS = ("reference_images", "reference_image", "reference_image_urls")
VIDEO_FIELDS = ("video", "video_url", "videos", "reference_videos")
AUDIO_FIELDS = ("audio", "audio_url")
CALLBACK_FIELDS = ("callback_url", "webhook", "callback")
CATALOG_FIELDS = ("catalog", "catelogid")
# OpenAI request fields that mean nothing to a task vendor: never forwarded.
IGNORED = ("user", "stream", "async", "response_format")


def with_metadata(params: Params) -> Params:
    """new-api puts vendor parameters in `metadata`: read them as top-level fields the body lacks."""
    found = params.raw("metadata")
    if found is not None:
        if not isinstance(found[1], Mapping):
            raise DialectError("The field 'metadata' must be an object.", "metadata")
        params.merged(found[1])
    return params


def generation_request(params: Params, *, model: str, kind: str, catalog: str | None = None) -> TaskRequest:
    """A TaskRequest from the fields above; `kind` is "video" or "image". `catalog`, when the caller
    knows it (a service's model), is used when the request names none."""
    allowed = VIDEO_CATALOGS if kind == "video" else IMAGE_CATALOGS
    catalog = catalog_of(params, *CATALOG_FIELDS, allowed=allowed) or (catalog if catalog in allowed else None)
    fields = read_common(params)
    prompt = params.text("prompt")
    catalog, media = assign(
        kind,
        catalog,
        first=collect(params, FIRST_FIELDS, FIRST_FRAME),
        last=collect(params, LAST_FIELDS, LAST_FRAME),
        images=collect(params, IMAGES_FIELDS, FIRST_FRAME),
        references=collect(params, REFERENCE_FIELDS, REFERENCE),
        videos=collect(params, VIDEO_FIELDS, VIDEO, "video") if kind == "video" else [],
        audios=collect(params, AUDIO_FIELDS, AUDIO, "audio") if kind == "video" else [],
    )
    prompt = require_prompt(prompt, catalog)
    return TaskRequest(catalog=catalog, model=model, prompt=prompt, media=media, extra=params.rest(IGNORED), **fields)


def parse_video_generation(body: Body) -> Submission:
    """`POST /v1/video/generations`."""
    params = with_metadata(Params.of(body))
    model = params.text("model", required=True)
    assert model is not None
    callback = read_callback(params, *CALLBACK_FIELDS)
    request = generation_request(params, model=model, kind="video")
    return Submission(request=request, public_model=model, callback_url=callback)


def render_video_generation(task: Task, links: Links) -> dict[str, Any]:
    """The task as new-api's video generation object (module docstring)."""
    results = results_of(task, links)
    url = results.videos[0] if results.videos else None
    seconds = (task.usage or {}).get("seconds") or task.request.get("seconds")
    return {
        "id": task.id,
        "task_id": task.id,
        "object": "video.generation",
        "model": task.model,
        "status": OPENAI_STATUS.get(task.status, "queued"),
        "progress": progress_of(task),
        "created_at": ts(task.created_at),
        "completed_at": ts(task.finished_at) if task.status in FINAL else None,
        "seconds": seconds_text(seconds) if seconds else None,
        "size": task.request.get("size"),
        "url": url,
        "video_url": url,
        "thumbnail_url": results.thumbnail,
        "videos": results.videos,
        "error": error_object(task),
    }
