"""Volcengine Ark (Seedance) video generation tasks as a task vendor: channel provider `ark`.

The channel's base_url is the host (https://ark.cn-beijing.volces.com), like DashScope's, so paths start
at /api/v3. (The Ark SDK's base_url ends in /api/v3: a channel configured that way would ask for
/api/v3/api/v3/..., so the host is what the channel must name.)

Followed the content-generation API docs (create, query, cancel/delete):
- Body: `{model, content: [{type: text}, {type: image_url, image_url: {url}, role}], resolution, ratio,
  duration, seed, ...}`; roles first_frame / last_frame / reference_image, and on Seedance 2.0 video_url /
  audio_url with reference_video / reference_audio. Parameters are top-level fields (the older
  "--rs 720p --dur 5" text commands are not used); `extra` goes top-level too, never `callback_url`.
- A first/last frame and reference images are different modes: mixing them is refused here.
- Statuses queued | running | cancelled | succeeded | failed | expired; `DELETE .../tasks/{id}` cancels a
  queued task (and deletes a finished one's record). Usage: `usage.completion_tokens`; the answer also
  carries `duration` and `resolution` ("720p").
- Result URLs are TOS links signed with X-Tos-Date / X-Tos-Expires; without them, `updated_at` + 24 h.
  `content.last_frame_url` (return_last_frame) is reported as the thumbnail.
- Images (Seedream) are synchronous on Ark, not tasks: t2i is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

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
    TaskRequest,
    TaskUsage,
    VendorCall,
    VendorError,
    VendorState,
)
from providers.tasks.common import (
    DAY,
    clean_extra,
    error_text,
    integer,
    load_object,
    number,
    obj,
    resolution_label,
    size_wh,
    url_expiry,
    whole_seconds,
)

TASKS_PATH = "/api/v3/contents/generations/tasks"

_STATES = {
    "queued": PENDING,
    "running": RUNNING,
    "succeeded": SUCCEEDED,
    "failed": FAILED,
    "cancelled": FAILED,
    "canceled": FAILED,
    "expired": FAILED,
}
_REASONS = {"failed": VENDOR_FAILED, "cancelled": CANCELLED, "canceled": CANCELLED, "expired": EXPIRED}
# content[] entries by media role: (type, role)
_ROLES = {
    FIRST_FRAME: ("image_url", "first_frame"),
    LAST_FRAME: ("image_url", "last_frame"),
    REFERENCE: ("image_url", "reference_image"),
    VIDEO: ("video_url", "reference_video"),
    AUDIO: ("audio_url", "reference_audio"),
}
_RATIOS = {(16, 9): "16:9", (9, 16): "9:16", (4, 3): "4:3", (3, 4): "3:4", (1, 1): "1:1", (21, 9): "21:9"}


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


class Ark:
    name = "ark"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # only for the expiry estimate when a task says nothing of it

    def submit(self, request: TaskRequest, api_key: str) -> VendorCall:
        if request.catalog not in ("t2v", "i2v", "ref2v"):
            raise VendorError(f"Ark Seedance does not do {request.catalog} as a task (Seedream images are synchronous)")
        frames, refs = request.images(FIRST_FRAME, LAST_FRAME), request.images(REFERENCE, VIDEO, AUDIO)
        if frames and refs:
            raise VendorError("Seedance takes either first/last frames or references, not both")
        if request.images(LAST_FRAME) and not request.images(FIRST_FRAME):
            raise VendorError("a last frame needs a first frame")
        if request.catalog == "i2v" and not frames:
            raise VendorError("i2v needs a first frame")
        if request.catalog == "ref2v" and not refs:
            raise VendorError("ref2v needs reference images")
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}] if request.prompt else []
        order = (FIRST_FRAME, LAST_FRAME, REFERENCE, VIDEO, AUDIO)
        for media in sorted(request.media, key=lambda m: order.index(m.role) if m.role in order else len(order)):
            if media.role not in _ROLES:
                raise VendorError(f"Seedance takes no {media.role}")
            kind, role = _ROLES[media.role]
            content.append({"type": kind, kind: {"url": media.as_url()}, "role": role})
        if not content:
            raise VendorError("Seedance needs a prompt or an image")
        fields: dict[str, Any] = {}
        resolution, ratio = request.resolution, request.ratio
        if (wh := size_wh(request.size)) is not None:  # Ark has no size: a resolution tier and a ratio
            resolution = resolution or resolution_label(request.size)
            ratio = ratio or _RATIOS.get((wh[0] // math.gcd(*wh), wh[1] // math.gcd(*wh)))
        if resolution:
            fields["resolution"] = resolution.lower()
        if ratio:
            fields["ratio"] = ratio
        if (seconds := whole_seconds(request.seconds)) is not None:
            fields["duration"] = seconds
        if request.seed is not None:
            fields["seed"] = request.seed
        body = {**clean_extra(request.extra, reserved=("model", "content")), **fields}
        return VendorCall(
            "POST", TASKS_PATH, headers=_auth(api_key), json={"model": request.model, "content": content, **body}
        )

    def accepted(self, body: bytes) -> VendorState:
        data = load_object(body, "Ark task")
        task_id = data.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise VendorError("Ark answer: no id")
        if isinstance(data.get("status"), str):
            return self.read(body)
        return VendorState(PENDING, "queued", task_id)  # the answer is only {id}: a new task is queued

    def poll(self, vendor_task_id: str, api_key: str) -> VendorCall:
        return VendorCall("GET", f"{TASKS_PATH}/{vendor_task_id}", headers=_auth(api_key))

    def read(self, body: bytes) -> VendorState:
        data = load_object(body, "Ark task")
        status, task_id = data.get("status"), data.get("id")
        if not isinstance(status, str):
            raise VendorError("Ark task: no status")
        state = _STATES.get(status)
        res = VendorState(
            state or RUNNING, status, task_id if isinstance(task_id, str) else None, known=state is not None
        )
        if state == FAILED:
            error = obj(data.get("error"))
            res.reason = _REASONS[status]
            res.message = str(error.get("message") or error.get("code") or f"task {status}")
        if state != SUCCEEDED:
            return res
        content = obj(data.get("content"))
        video, last_frame = content.get("video_url"), content.get("last_frame_url")
        if not isinstance(video, str) or not video:
            res.state, res.reason, res.message = FAILED, VENDOR_FAILED, "succeeded without a video"
            return res
        res.videos = (video,)
        res.thumbnail = last_frame if isinstance(last_frame, str) and last_frame else None
        updated = number(data.get("updated_at"))
        res.expires_at = url_expiry(video) or (updated + DAY if updated else self.clock() + DAY)
        usage = obj(data.get("usage"))
        res.usage = TaskUsage(
            seconds=number(data.get("duration")),
            tokens=integer(usage.get("completion_tokens")),
            resolution=resolution_label(data.get("resolution")),
        )
        return res

    def error(self, status: int, body: bytes) -> str:
        try:
            error = obj(load_object(body, "error").get("error"))
        except VendorError:
            error = {}
        return error_text(status, body, error.get("message"), error.get("code"))

    def content(self, vendor_task_id: str, variant: str, url: str | None, api_key: str) -> VendorCall | None:
        return None  # signed TOS links: fetched as they are, without the key

    def cancel(self, vendor_task_id: str, api_key: str) -> VendorCall | None:
        return VendorCall("DELETE", f"{TASKS_PATH}/{vendor_task_id}", headers=_auth(api_key))

    def remix(self, vendor_task_id: str, prompt: str, api_key: str) -> VendorCall | None:
        return None
