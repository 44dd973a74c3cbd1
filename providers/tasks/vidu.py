"""Vidu's enterprise API (ent/v2) as a task vendor: channel provider `vidu`, base_url the host
(https://api.vidu.com), so paths start at /ent/v2. Auth is `Authorization: Token {key}`.

Followed platform.vidu.com's docs (start generating, get generation, cancel generation):
- One endpoint per mode: text2video, img2video (one image), start-end2video (two: first, last),
  reference2video (1-7 images; `videos` 1-2 on viduq2-pro), and reference2image for t2i and i2i (viduq2 draws
  from the prompt alone when no images come). Images are URLs or base64 data URLs.
- Other fields are top-level (off_peak, movement_amplitude, bgm, style, payload, watermark...): `extra`
  goes there, never `callback_url`.
- States created | queueing | processing | success | failed; the docs also spell it "queuing", and the
  cancel error names a "scheduled" state: both read as queued. A failure carries `err_code`; a cancelled
  task fails with an err_code naming the cancel. Cancel is POST /ent/v2/tasks/{id}/cancel (queued only).
- Results `creations[].url` / `cover_url`, valid 24 h (older pages said one hour; a signed URL's own
  expiry wins). The answer does not say video or image, so a result is an image when its path ends like
  one. Billing: `credits`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

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
    load_object,
    number,
    obj,
    url_expiry,
    whole_seconds,
)

MAX_REFERENCES = 7
_STATES = {
    "created": PENDING,
    "queueing": PENDING,
    "queuing": PENDING,
    "scheduled": PENDING,
    "processing": RUNNING,
    "success": SUCCEEDED,
    "failed": FAILED,
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Token {api_key}"}


class Vidu:
    name = "vidu"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # the poll answer has no times: expiry is estimated from when it was read

    def submit(self, request: TaskRequest, api_key: str) -> VendorCall:
        path, media = self._route(request)
        body: dict[str, Any] = {"model": request.model}
        if request.prompt:
            body["prompt"] = request.prompt
        body.update(media)
        if (seconds := whole_seconds(request.seconds)) is not None:
            body["duration"] = seconds
        if request.seed is not None:
            body["seed"] = request.seed
        if request.ratio:
            body["aspect_ratio"] = request.ratio
        if request.resolution:
            body["resolution"] = request.resolution.lower()
        extra = clean_extra(request.extra, reserved=("model", "prompt", "images", "videos"))
        return VendorCall("POST", path, headers=_auth(api_key), json={**extra, **body})

    @staticmethod
    def _route(request: TaskRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint for what was asked, and the media fields it takes."""
        if request.images(AUDIO):
            raise VendorError("Vidu takes no audio here")
        first, last, refs = request.images(FIRST_FRAME), request.images(LAST_FRAME), request.images(REFERENCE)
        videos = request.images(VIDEO)
        if request.catalog == "t2v":
            if request.media:
                raise VendorError("t2v takes no images: ask for i2v or ref2v")
            return "/ent/v2/text2video", {}
        if request.catalog == "i2v":
            if len(first) != 1 or len(last) > 1 or refs or videos:
                raise VendorError("Vidu i2v takes one first frame, and optionally one last frame")
            if last:
                return "/ent/v2/start-end2video", {"images": [first[0].as_url(), last[0].as_url()]}
            return "/ent/v2/img2video", {"images": [first[0].as_url()]}
        if request.catalog in ("ref2v", "t2i", "i2i"):
            if first or last:
                raise VendorError(f"Vidu {request.catalog} takes reference images, not frames")
            if len(refs) > MAX_REFERENCES:
                raise VendorError(f"Vidu takes at most {MAX_REFERENCES} reference images, got {len(refs)}")
            media: dict[str, Any] = {"images": [m.as_url() for m in refs]} if refs else {}
            if request.catalog in ("t2i", "i2i"):  # i2i: an edit, the uploads its references
                if videos:
                    raise VendorError(f"Vidu {request.catalog} takes no video")
                if request.catalog == "i2i" and not refs:
                    raise VendorError("i2i needs the image to edit")
                if request.n not in (None, 1):
                    raise VendorError("Vidu makes one image per task")
                return "/ent/v2/reference2image", media
            if len(videos) > 2:
                raise VendorError("Vidu takes at most 2 reference videos")
            if videos:
                media["videos"] = [m.as_url() for m in videos]
            if not media:
                raise VendorError("ref2v needs reference images")
            return "/ent/v2/reference2video", media
        raise VendorError(f"Vidu does not do {request.catalog}")

    def accepted(self, body: bytes) -> VendorState:
        state = self.read(body)
        if not state.vendor_task_id:
            raise VendorError("Vidu answer: no task_id")
        return state

    def poll(self, vendor_task_id: str, api_key: str) -> VendorCall:
        return VendorCall("GET", f"/ent/v2/tasks/{vendor_task_id}/creations", headers=_auth(api_key))

    def read(self, body: bytes) -> VendorState:
        data = load_object(body, "Vidu task")
        status, task_id = data.get("state"), data.get("task_id") or data.get("id")
        if not isinstance(status, str):
            raise VendorError("Vidu task: no state")
        state = _STATES.get(status)
        res = VendorState(state or RUNNING, status, str(task_id) if task_id else None, known=state is not None)
        if state == FAILED:
            code = str(data.get("err_code") or "")
            res.reason = CANCELLED if "cancel" in code.lower() else VENDOR_FAILED
            res.message = code or "task failed"
        if state != SUCCEEDED:
            return res
        creations = [obj(c) for c in data.get("creations") or []]
        urls = [c["url"] for c in creations if isinstance(c.get("url"), str) and c["url"]]
        if not urls:
            res.state, res.reason, res.message = FAILED, VENDOR_FAILED, "succeeded without a result"
            return res
        res.images = tuple(u for u in urls if urlsplit(u).path.lower().endswith(_IMAGE_SUFFIXES))
        res.videos = tuple(u for u in urls if u not in res.images)
        covers = [c["cover_url"] for c in creations if isinstance(c.get("cover_url"), str) and c["cover_url"]]
        res.thumbnail = covers[0] if covers else None
        res.expires_at = url_expiry(urls[0]) or self.clock() + DAY
        res.usage = TaskUsage(credits=number(data.get("credits")), images=len(res.images) or None)
        return res

    def error(self, status: int, body: bytes) -> str:
        try:
            data = load_object(body, "error")
        except VendorError:
            data = {}
        return error_text(status, body, data.get("message"), data.get("reason"))

    def content(self, vendor_task_id: str, variant: str, url: str | None, api_key: str) -> VendorCall | None:
        return None  # result links are fetched as they are, without the key

    def cancel(self, vendor_task_id: str, api_key: str) -> VendorCall | None:
        return VendorCall(
            "POST", f"/ent/v2/tasks/{vendor_task_id}/cancel", headers=_auth(api_key), json={"id": vendor_task_id}
        )

    def remix(self, vendor_task_id: str, prompt: str, api_key: str) -> VendorCall | None:
        return None
