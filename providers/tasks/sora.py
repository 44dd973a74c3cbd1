"""OpenAI's Videos API (Sora) as a task vendor: channel provider `openai`, base_url as the OpenAI SDK's
(ending in /v1), so paths start at /videos.

Followed the API reference and the openai SDK's types (openai 3.x `types/video*.py`):
- Create: POST /videos. With an uploaded image, multipart with `input_reference` as a file (what the SDK
  sends); with only a link, JSON with `input_reference: {image_url}` (the JSON body the API also takes).
- The video object has no result URL: files come from GET /videos/{id}/content?variant=video|thumbnail|
  spritesheet with the key, so `VendorState.videos` stays empty and `content()` names that call.
- `expires_at` is on the object; `seconds` is a string ("8"); statuses queued | in_progress | completed |
  failed. There is no usage object: usage is the clip's seconds and size.
- Cancel is DELETE /videos/{id}; remix is POST /videos/{id}/remix {prompt}.
"""

from __future__ import annotations

from typing import Any

from providers.tasks.base import (
    AUDIO,
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
    error_text,
    integer,
    load_object,
    number,
    obj,
    resolution_label,
    whole_seconds,
)

_STATES = {"queued": PENDING, "in_progress": RUNNING, "completed": SUCCEEDED, "failed": FAILED}
_VARIANTS = ("video", "thumbnail", "spritesheet")
# Sizes by (resolution, ratio), for clients that name a resolution and a ratio instead of a size.
_SIZES = {
    ("720P", "16:9"): "1280x720",
    ("720P", "9:16"): "720x1280",
    ("1024P", "16:9"): "1792x1024",
    ("1024P", "9:16"): "1024x1792",
    ("1080P", "16:9"): "1792x1024",
    ("1080P", "9:16"): "1024x1792",
}


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


class Sora:
    name = "openai"

    def submit(self, request: TaskRequest, api_key: str) -> VendorCall:
        if request.catalog not in ("t2v", "i2v"):
            raise VendorError(
                f"Sora does not do {request.catalog}: it makes videos from a prompt and at most one image"
            )
        if request.images(LAST_FRAME, VIDEO, AUDIO):
            raise VendorError("Sora takes one image (the first frame) and no last frame, video or audio")
        images = request.images(FIRST_FRAME, REFERENCE)
        if len(images) > 1:
            raise VendorError("Sora takes at most one image (input_reference)")
        if request.catalog == "i2v" and not images:
            raise VendorError("i2v needs an image")
        # The Videos API rejects fields it does not know, so `extra` has no place here.
        fields: dict[str, str] = {"model": request.model, "prompt": request.prompt}
        if (seconds := whole_seconds(request.seconds)) is not None:
            fields["seconds"] = str(seconds)
        if (size := self._size(request)) is not None:
            fields["size"] = size
        image = images[0] if images else None
        if image is not None and image.data is not None:
            form: list[tuple[str, str | bytes, str | None, str | None]] = [
                (k, v, None, None) for k, v in fields.items()
            ]
            form.append(("input_reference", image.data, image.filename or "input_reference", image.content_type))
            return VendorCall("POST", "/videos", headers=_auth(api_key), form=form)
        body: dict[str, Any] = dict(fields)
        if image is not None:
            body["input_reference"] = {"image_url": image.as_url()}
        return VendorCall("POST", "/videos", headers=_auth(api_key), json=body)

    @staticmethod
    def _size(request: TaskRequest) -> str | None:
        if request.size:
            return request.size.replace("*", "x")
        if request.ratio is None:
            return None
        size = _SIZES.get(((request.resolution or "720P").upper(), request.ratio))
        if size is None:
            raise VendorError(f"Sora has no size for {request.resolution or '720P'} at {request.ratio}; give size")
        return size

    def accepted(self, body: bytes) -> VendorState:
        return self.read(body)

    def poll(self, vendor_task_id: str, api_key: str) -> VendorCall:
        return VendorCall("GET", f"/videos/{vendor_task_id}", headers=_auth(api_key))

    def read(self, body: bytes) -> VendorState:
        data = load_object(body, "Sora video")
        video_id, status = data.get("id"), data.get("status")
        if not isinstance(video_id, str) or not isinstance(status, str):
            raise VendorError("Sora video: no id or status")
        state = _STATES.get(status)
        out = VendorState(
            state=state or RUNNING,
            vendor_status=status,
            vendor_task_id=video_id,
            progress=integer(data.get("progress")),
            expires_at=number(data.get("expires_at")),
            known=state is not None,
        )
        if state == FAILED:
            error = obj(data.get("error"))
            out.reason = VENDOR_FAILED
            out.message = str(error.get("message") or error.get("code") or "video generation failed")
        if state == SUCCEEDED:
            out.usage = TaskUsage(seconds=number(data.get("seconds")), resolution=resolution_label(data.get("size")))
        return out

    def error(self, status: int, body: bytes) -> str:
        try:
            error = obj(load_object(body, "error").get("error"))
        except VendorError:
            error = {}
        return error_text(status, body, error.get("message"), error.get("code"))

    def content(self, vendor_task_id: str, variant: str, url: str | None, api_key: str) -> VendorCall | None:
        if variant not in _VARIANTS:
            return None  # no such file (an "image" of a video task): with no URL either, there is nothing to fetch
        return VendorCall(
            "GET", f"/videos/{vendor_task_id}/content", headers=_auth(api_key), query={"variant": variant}
        )

    def cancel(self, vendor_task_id: str, api_key: str) -> VendorCall | None:
        return VendorCall("DELETE", f"/videos/{vendor_task_id}", headers=_auth(api_key))

    def remix(self, vendor_task_id: str, prompt: str, api_key: str) -> VendorCall | None:
        return VendorCall("POST", f"/videos/{vendor_task_id}/remix", headers=_auth(api_key), json={"prompt": prompt})
