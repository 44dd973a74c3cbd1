"""The 元境 (llmage) dialect: `POST /llmage/v1/video/generations`, `POST /llmage/v1/image/generations`,
`GET /llmage/v1/tasks?taskid=`.

Requests are JSON or multipart with the same names: `model`, `prompt`, `catelogid` (t2v | i2v | ref2v
for video, t2i | i2i for images; `r2v` reads ref2v; inferred from the files when missing), the model's
fields (`duration`, `ratio`, `resolution`, `size`, `negative_prompt`, `seed`, `n`; others such as
`off_peak`, `watermark` go to the vendor in `TaskRequest.extra`, form text typed: "true" is true),
`callback_url`, and the files (uploads, or in JSON URLs / data: URLs / base64):
- `image_file`, `image1_file`, `image_file1`: the first frame; `image2_file`, `image_file2`: the last;
  one image is i2v from a first frame, two are i2v from a first and a last frame;
- `image_files[]`: reference images (ref2v); `video_files[]`: reference videos (ref2v);
- `audio_files[]` (or `audio_file`): audio for the video (wan);
- with catelogid ref2v every image is a reference; on the image route every image is one (i2i).

Answers: create `{"taskid", "status": "CREATED"}`; the task `{taskid, status, model, catelogid, progress,
usage, video, image, error}` with the unified statuses CREATED | PENDING | RUNNING | SUCCEEDED | FAILED.
`video` is the gateway's URL of the video (a string: a task makes one; null until SUCCEEDED), `image` the
list of the gateway's image URLs (t2i may make several; null until SUCCEEDED, and for video tasks).
`usage` is what the vendor reported ({seconds, images, tokens, credits, resolution}) or null; `error`
the failure message or null, with `reason` (vendor_failed | cancelled | expired | timeout).
"""

from __future__ import annotations

from typing import Any

from gateway.tasks.dialects.common import (
    IMAGE_CATALOGS,
    VIDEO_CATALOGS,
    Body,
    Links,
    Params,
    Submission,
    failure_of,
    progress_of,
    read_callback,
    read_common,
    require_prompt,
    results_of,
)
from gateway.tasks.dialects.media import assign, catalog_of, collect
from gateway.tasks.model import Task
from providers.tasks.base import AUDIO, CREATED, FIRST_FRAME, LAST_FRAME, REFERENCE, VIDEO, TaskRequest

FIRST_FIELDS = ("image_file", "image1_file", "image_file1")
LAST_FIELDS = ("image2_file", "image_file2")
REFERENCE_FIELDS = ("image_files",)
VIDEO_FIELDS = ("video_files", "video_file")
AUDIO_FIELDS = ("audio_files", "audio_file")


def _parse(body: Body, kind: str) -> Submission:
    params = Params.of(body)
    model = params.text("model", required=True)
    assert model is not None
    callback = read_callback(params, "callback_url")
    catalog = catalog_of(params, "catelogid", allowed=VIDEO_CATALOGS if kind == "video" else IMAGE_CATALOGS)
    fields = read_common(params)
    prompt = params.text("prompt")
    catalog, media = assign(
        kind,
        catalog,
        first=collect(params, FIRST_FIELDS, FIRST_FRAME),
        last=collect(params, LAST_FIELDS, LAST_FRAME),
        references=collect(params, REFERENCE_FIELDS, REFERENCE),
        videos=collect(params, VIDEO_FIELDS, VIDEO, "video"),
        audios=collect(params, AUDIO_FIELDS, AUDIO, "audio"),
        catalog_param="catelogid",
    )
    prompt = require_prompt(prompt, catalog)
    request = TaskRequest(catalog=catalog, model=model, prompt=prompt, media=media, extra=params.rest(), **fields)
    return Submission(request=request, public_model=model, callback_url=callback)


def parse_llmage_video(body: Body) -> Submission:
    """`POST /llmage/v1/video/generations`."""
    return _parse(body, "video")


def parse_llmage_image(body: Body) -> Submission:
    """`POST /llmage/v1/image/generations`."""
    return _parse(body, "image")


def render_llmage_created(task: Task) -> dict[str, Any]:
    """The create answer: the task id, and CREATED whatever the row says by now (the 元境 convention)."""
    return {"taskid": task.id, "status": CREATED}


def render_llmage_task(task: Task, links: Links) -> dict[str, Any]:
    """`GET /llmage/v1/tasks?taskid=`."""
    results = results_of(task, links)
    failure = failure_of(task)
    return {
        "taskid": task.id,
        "status": task.status,
        "model": task.model,
        "catelogid": task.catalog,
        "progress": progress_of(task),
        "usage": task.usage or None,
        "video": results.videos[0] if results.videos else None,
        "image": results.images or None,
        "error": failure[1] if failure else None,
        "reason": failure[0] if failure else None,
    }
