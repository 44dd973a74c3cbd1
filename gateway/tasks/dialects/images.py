"""Async images: `POST /v1/images/generations?async=true`, `POST /v1/images/edits?async=true` and
`GET /v1/images/{task_id}`.

Requests are OpenAI's image requests: `model` (required: there is no default task model), `prompt`, `n`,
`size` ("1024x1024" or "1024*1024"), plus `negative_prompt`, `seed`, `callback_url`; other fields
(`quality`, `style`, `watermark`...) go to the vendor in `TaskRequest.extra`. Edits are multipart with
`image` / `image[]` files (or JSON `images: [{"image_url": ...}]`), each a reference image of an i2i
task; `mask` is refused (no task vendor takes one). `response_format=b64_json` is refused: a task
answers with URLs.

Answer (create and GET alike): `{id, task_id (= id), object: "image.generation.task", model, status,
progress, created_at, completed_at, created, data, error}`, new-api's async image object. `status` is
queued | in_progress | completed | failed; once completed, `created` (when it finished) and
`data: [{url}]` (the gateway's URLs) make it a valid OpenAI images response too.
"""

from __future__ import annotations

from typing import Any

from gateway.tasks.dialects.common import (
    OPENAI_STATUS,
    Body,
    DialectError,
    Links,
    Params,
    Submission,
    error_object,
    progress_of,
    read_callback,
    results_of,
    ts,
)
from gateway.tasks.dialects.generations import CALLBACK_FIELDS, generation_request
from gateway.tasks.model import Task
from providers.tasks.base import FINAL, SUCCEEDED


def _parse(body: Body, catalog: str | None) -> Submission:
    params = Params.of(body)
    model = params.text("model", required=True)
    assert model is not None
    if params.text("response_format") not in (None, "url"):
        raise DialectError(
            "Async image tasks answer with URLs: leave out response_format or set it to url.", "response_format"
        )
    if params.files("mask") or params.present("mask"):
        raise DialectError("Async edits take no mask; send the image and describe the edit in the prompt.", "mask")
    callback = read_callback(params, *CALLBACK_FIELDS)
    request = generation_request(params, model=model, kind="image", catalog=catalog)
    return Submission(request=request, public_model=model, callback_url=callback)


def parse_image_generation(body: Body) -> Submission:
    """`POST /v1/images/generations?async=true`: t2i, or i2i when the model is given an `image`."""
    return _parse(body, None)


def parse_image_edit(body: Body) -> Submission:
    """`POST /v1/images/edits?async=true`: i2i, at least one image."""
    return _parse(body, "i2i")


def render_image_task(task: Task, links: Links) -> dict[str, Any]:
    done = task.status == SUCCEEDED
    return {
        "id": task.id,
        "task_id": task.id,
        "object": "image.generation.task",
        "model": task.model,
        "status": OPENAI_STATUS.get(task.status, "queued"),
        "progress": progress_of(task),
        "created_at": ts(task.created_at),
        "completed_at": ts(task.finished_at) if task.status in FINAL else None,
        "created": ts(task.finished_at if done and task.finished_at else task.created_at),
        "data": [{"url": url} for url in results_of(task, links).images],
        "error": error_object(task),
    }
