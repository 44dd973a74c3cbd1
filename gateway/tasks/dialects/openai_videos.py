"""OpenAI's video API, `/v1/videos`: create (JSON or multipart), remix, list, delete, and the `video`
object the openai SDKs parse (openai.types.Video, VideoDeleteResponse; the list is a cursor page).

Create: `model` (default sora-2, as OpenAI's), `prompt` (required), `seconds` ("4", "8", "12"; any
positive number is taken, for other vendors' models), `size` ("1280x720"), `input_reference` (a file,
or in JSON `{"image_url": ...}`: the first frame, so an i2v task). The gateway also reads, as extra_body
fields, `negative_prompt`, `resolution`, `ratio` / `aspect_ratio`, `seed` and `callback_url`; others go to
the vendor in `TaskRequest.extra`.

The object: `seconds` is what the vendor reported it made, else what was asked, else OpenAI's default
"4"; `size` is the one asked, else one made from `resolution` and `ratio` (nominal: 720P 16:9 is
1280x720), else OpenAI's default 720x1280. There is no URL in it: clients fetch
`/v1/videos/{id}/content`. `error.code` is the failure reason (vendor_failed | cancelled | expired | timeout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    read_common,
    seconds_text,
    ts,
)
from gateway.tasks.dialects.media import collect, count
from gateway.tasks.model import Task
from providers.tasks.base import FINAL, FIRST_FRAME, SUCCEEDED, TaskRequest

DEFAULT_MODEL = "sora-2"
DEFAULT_SECONDS = "4"
DEFAULT_SIZE = "720x1280"
REMIXED_FROM = "remixed_from"  # Submission.meta / Task.request key: the id of the video a remix came from


def parse_openai_video(body: Body) -> Submission:
    """`POST /v1/videos`."""
    params = Params.of(body)
    model = params.text("model") or DEFAULT_MODEL
    prompt = params.text("prompt", required=True)
    assert prompt is not None
    callback = read_callback(params, "callback_url")
    fields = read_common(params)
    frames = collect(params, ("input_reference",), FIRST_FRAME)
    if len(frames) > 1:
        raise DialectError("Send one input_reference.", "input_reference")
    count(frames)
    request = TaskRequest(
        catalog="i2v" if frames else "t2v",
        model=model,
        prompt=prompt,
        media=tuple(frames),
        extra=params.rest(("user",)),
        **fields,
    )
    return Submission(request=request, public_model=model, callback_url=callback)


def parse_openai_video_remix(body: Body, source: Task) -> Submission:
    """`POST /v1/videos/{id}/remix {prompt}`: a new task on the same model from a completed one."""
    params = Params.of(body)
    prompt = params.text("prompt", required=True)
    assert prompt is not None
    if source.status != SUCCEEDED:
        raise DialectError(f"Video {source.id!r} is not completed; only a completed video can be remixed.", "video_id")
    asked = source.request
    request = TaskRequest(
        catalog=source.catalog,
        model=source.model,
        prompt=prompt,
        seconds=asked.get("seconds"),
        size=asked.get("size"),
        resolution=asked.get("resolution"),
        ratio=asked.get("ratio"),
    )
    callback = read_callback(params, "callback_url")
    return Submission(request=request, public_model=source.model, callback_url=callback, meta={REMIXED_FROM: source.id})


@dataclass(frozen=True, slots=True)
class VideoListQuery:
    after: str | None = None
    limit: int = 20
    order: str = "desc"  # by created_at


def parse_openai_video_list(query: Mapping[str, str]) -> VideoListQuery:
    """`GET /v1/videos?after=&limit=&order=`."""
    limit_text = query.get("limit") or "20"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise DialectError(f"limit must be a whole number from 1 to 100; got {limit_text!r}.", "limit")
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise DialectError(f"order must be asc or desc; got {order!r}.", "order")
    return VideoListQuery(after=query.get("after") or None, limit=int(limit_text), order=order)


def video_size(asked: Mapping[str, Any]) -> str:
    """The size asked, else a nominal one from resolution and ratio, else OpenAI's default."""
    if asked.get("size"):
        return str(asked["size"])
    match = re.fullmatch(r"(\d{3,4})P", str(asked.get("resolution") or ""))
    if match is None:
        return DEFAULT_SIZE
    short = int(match[1])
    ratio = re.fullmatch(r"(\d+):(\d+)", str(asked.get("ratio") or "16:9")) or re.fullmatch(r"(\d+):(\d+)", "16:9")
    assert ratio is not None
    w, h = int(ratio[1]), int(ratio[2])
    if w >= h:
        return f"{round(short * w / h / 2) * 2}x{short}"
    return f"{short}x{round(short * h / w / 2) * 2}"


def render_openai_video(task: Task, links: Links) -> dict[str, Any]:
    """The task as OpenAI's `video` object. `links` is unused: the object carries no URL."""
    seconds = (task.usage or {}).get("seconds") or task.request.get("seconds")
    return {
        "id": task.id,
        "object": "video",
        "created_at": ts(task.created_at),
        "status": OPENAI_STATUS.get(task.status, "queued"),
        "progress": progress_of(task),
        "model": task.model,
        "prompt": task.request.get("prompt"),
        "seconds": seconds_text(seconds) if seconds else DEFAULT_SECONDS,
        "size": video_size(task.request),
        "completed_at": ts(task.finished_at) if task.status in FINAL else None,
        "expires_at": ts(task.results_expire_at) if task.status == SUCCEEDED else None,
        "error": error_object(task),
        "remixed_from_video_id": task.request.get(REMIXED_FROM),
    }


def render_openai_video_list(tasks: Sequence[Task], links: Links, has_more: bool) -> dict[str, Any]:
    """`GET /v1/videos`: a cursor page of video objects, in the order given."""
    return {
        "object": "list",
        "data": [render_openai_video(t, links) for t in tasks],
        "first_id": tasks[0].id if tasks else None,
        "last_id": tasks[-1].id if tasks else None,
        "has_more": has_more,
    }


def render_openai_video_deleted(task_id: str) -> dict[str, Any]:
    """`DELETE /v1/videos/{id}`."""
    return {"id": task_id, "object": "video.deleted", "deleted": True}
