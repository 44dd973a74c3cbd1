"""Alibaba DashScope (Bailian / Model Studio) Wan video and image synthesis as a task vendor: channel
provider `dashscope`, base_url the host (https://dashscope.aliyuncs.com), so paths start at /api/v1.

Where the current Wan docs and the dashscope SDK (`aigc/video_synthesis.py`, `client/base_api.py`) say
more than tasks.md, this follows them:
- The Wan model families speak three shapes on the video side. wan2.7 and later (and wan3, happyhorse)
  take `input.media: [{type, url}]` (first_frame, last_frame, driving_audio, first_clip, reference_image,
  reference_video). The first-and-last-frame family (`*-kf2v-*`) has its own endpoint,
  `image2video/video-synthesis`, with `first_frame_url` + `last_frame_url` (the SDK switches on "kf2v").
  The rest (wan2.6 and earlier) take `img_url` (first frame only), `reference_urls` (the `*-r2v*` models)
  and `audio_url`; a last frame or references on those models is refused here with a hint.
- Legacy text-to-video takes `parameters.size` ("1280*720"), not a resolution: a resolution and ratio
  are turned into the documented size; image-to-video and kf2v take `parameters.resolution`.
- wan2.6 text-to-image moved to `image-generation/generation` with `input.messages`; wan2.5 and earlier
  stay on `text2image/image-synthesis` with `input.prompt`. Results: `output.results[].url` or
  `output.choices[].message.content[].image`.
- Statuses also include SUSPENDED (queued); UNKNOWN means the task id expired (24 h) or never existed.
  Cancel is POST /api/v1/tasks/{id}/cancel, for PENDING tasks only.
- Result URLs are OSS links signed with `Expires=`; without one, `end_time` (Beijing time) + 24 h.
"""

from __future__ import annotations

import calendar
import re
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
    first_number,
    integer,
    load_object,
    obj,
    resolution_label,
    size_wh,
    url_expiry,
    whole_seconds,
)

VIDEO_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
KF2V_PATH = "/api/v1/services/aigc/image2video/video-synthesis"
T2I_PATH = "/api/v1/services/aigc/text2image/image-synthesis"
IMAGE_GEN_PATH = "/api/v1/services/aigc/image-generation/generation"

_STATES = {
    "PENDING": PENDING,
    "SUSPENDED": PENDING,
    "RUNNING": RUNNING,
    "SUCCEEDED": SUCCEEDED,
    "FAILED": FAILED,
    "CANCELED": FAILED,
    "UNKNOWN": FAILED,
}
_REASONS = {"FAILED": VENDOR_FAILED, "CANCELED": CANCELLED, "UNKNOWN": EXPIRED}
# The sizes the legacy text-to-video reference lists, by resolution and ratio.
_LEGACY_SIZES = {
    "480P": {"16:9": "832*480", "9:16": "480*832", "1:1": "624*624"},
    "720P": {"16:9": "1280*720", "9:16": "720*1280", "1:1": "960*960", "4:3": "1088*832", "3:4": "832*1088"},
    "1080P": {"16:9": "1920*1080", "9:16": "1080*1920", "1:1": "1440*1440", "4:3": "1632*1248", "3:4": "1248*1632"},
}
_BEIJING = 8 * 3600  # task times come in Beijing time; read as such, an estimate errs early, never late


def _version(model: str) -> tuple[int, int]:
    match = re.search(r"wanx?(\d+)\.(\d+)", model)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _media_family(model: str) -> bool:
    return _version(model) >= (2, 7) or model.startswith("happyhorse")


class DashScope:
    name = "dashscope"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock  # only for the expiry estimate when a task says nothing of it

    def submit(self, request: TaskRequest, api_key: str) -> VendorCall:
        if request.catalog == "t2i":
            path, body = self._image(request)
        elif request.catalog in ("t2v", "i2v", "ref2v"):
            path, body = self._video(request)
        else:
            raise VendorError(f"DashScope Wan does not do {request.catalog} here")
        headers = {"Authorization": f"Bearer {api_key}", "X-DashScope-Async": "enable"}
        return VendorCall("POST", path, headers=headers, json=body)

    def _video(self, request: TaskRequest) -> tuple[str, dict[str, Any]]:
        model = request.model
        first, last = request.images(FIRST_FRAME), request.images(LAST_FRAME)
        refs, videos, audio = request.images(REFERENCE), request.images(VIDEO), request.images(AUDIO)
        if len(first) > 1 or len(last) > 1 or len(audio) > 1:
            raise VendorError("Wan takes one first frame, one last frame and one audio at most")
        if request.catalog == "i2v" and not first:
            raise VendorError("i2v needs a first frame")
        inp: dict[str, Any] = {"prompt": request.prompt} if request.prompt else {}
        if request.negative_prompt:
            inp["negative_prompt"] = request.negative_prompt
        path, size_param = VIDEO_PATH, False
        if _media_family(model):
            if request.media:
                inp["media"] = self._media(request)
        elif "kf2v" in model:
            if refs or videos or audio:
                raise VendorError(f"{model} takes a first and a last frame only")
            if not first:
                raise VendorError(f"{model} needs a first frame")
            path, inp["first_frame_url"] = KF2V_PATH, first[0].as_url()
            if last:
                inp["last_frame_url"] = last[0].as_url()
        elif request.catalog == "ref2v" or refs:
            if "r2v" not in model:
                raise VendorError(f"{model} takes no reference images: use a Wan r2v model or wan2.7-r2v")
            if first or last:
                raise VendorError(f"{model} takes references, not first or last frames")
            inp["reference_urls"], size_param = [m.as_url() for m in refs + videos], True
        else:
            if last:
                raise VendorError(f"{model} takes a first frame only: use a kf2v model or wan2.7-i2v for first+last")
            if videos:
                raise VendorError(f"{model} takes no video")
            if first:
                inp["img_url"] = first[0].as_url()
            size_param = not first
        if audio and not _media_family(model):
            inp["audio_url"] = audio[0].as_url()
        params: dict[str, Any] = {}
        if (seconds := whole_seconds(request.seconds)) is not None:
            params["duration"] = seconds
        if request.seed is not None:
            params["seed"] = request.seed
        params.update(self._geometry(request, size_param))
        body = {"model": model, "input": inp, "parameters": {**clean_extra(request.extra), **params}}
        return path, body

    @staticmethod
    def _media(request: TaskRequest) -> list[dict[str, str]]:
        """wan2.7+ `input.media`: types by role, references for ref2v, frames and clips otherwise."""
        if request.catalog == "ref2v":
            roles = {REFERENCE: "reference_image", VIDEO: "reference_video", AUDIO: "reference_audio"}
        else:
            roles = {FIRST_FRAME: "first_frame", LAST_FRAME: "last_frame", VIDEO: "first_clip", AUDIO: "driving_audio"}
        media = []
        for m in request.media:
            if m.role not in roles:
                raise VendorError(f"{request.model} takes no {m.role} in {request.catalog}")
            media.append({"type": roles[m.role], "url": m.as_url()})
        return media

    @staticmethod
    def _geometry(request: TaskRequest, size_param: bool) -> dict[str, str]:
        """Legacy t2v and r2v take a size and no resolution tier; legacy i2v and kf2v a tier (the image
        sets the ratio); wan2.7+ any of size, resolution and ratio."""
        resolution = request.resolution.upper() if request.resolution else None
        wh, media = size_wh(request.size), _media_family(request.model)
        if size_param:
            if wh is not None:
                return {"size": f"{wh[0]}*{wh[1]}"}
            if resolution is None:
                return {}
            size = _LEGACY_SIZES.get(resolution, {}).get(request.ratio or "16:9")
            if size is None:
                raise VendorError(f"{request.model} has no size for {resolution} at {request.ratio}; give size")
            return {"size": size}
        out: dict[str, str] = {}
        if wh is not None and media:
            out["size"] = f"{wh[0]}*{wh[1]}"
        if resolution or (wh is not None and not media):
            out["resolution"] = resolution or resolution_label(request.size) or ""
        if request.ratio and media:
            out["ratio"] = request.ratio
        return out

    @staticmethod
    def _image(request: TaskRequest) -> tuple[str, dict[str, Any]]:
        if request.media:
            raise VendorError("Wan text-to-image takes no images")
        params: dict[str, Any] = {}
        if (wh := size_wh(request.size)) is not None:
            params["size"] = f"{wh[0]}*{wh[1]}"
        if request.n is not None:
            params["n"] = request.n
        if request.seed is not None:
            params["seed"] = request.seed
        if _version(request.model) >= (2, 6):
            inp: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": request.prompt}]}]}
            if request.negative_prompt:
                params["negative_prompt"] = request.negative_prompt
            path = IMAGE_GEN_PATH
        else:
            inp = {"prompt": request.prompt}
            if request.negative_prompt:
                inp["negative_prompt"] = request.negative_prompt
            path = T2I_PATH
        return path, {"model": request.model, "input": inp, "parameters": {**clean_extra(request.extra), **params}}

    def accepted(self, body: bytes) -> VendorState:
        state = self.read(body)
        if not state.vendor_task_id:
            raise VendorError("DashScope answer: no output.task_id")
        return state

    def poll(self, vendor_task_id: str, api_key: str) -> VendorCall:
        return VendorCall("GET", f"/api/v1/tasks/{vendor_task_id}", headers={"Authorization": f"Bearer {api_key}"})

    def read(self, body: bytes) -> VendorState:
        data = load_object(body, "DashScope task")
        out = obj(data.get("output"))
        status, task_id = out.get("task_status"), out.get("task_id")
        if not isinstance(status, str):
            raise VendorError("DashScope task: no output.task_status")
        state = _STATES.get(status)
        res = VendorState(
            state or RUNNING, status, task_id if isinstance(task_id, str) else None, known=state is not None
        )
        if state == FAILED:
            res.reason = _REASONS[status]
            res.message = str(out.get("message") or out.get("code") or f"task {status.lower()}")
        if state != SUCCEEDED:
            return res
        video = out.get("video_url")
        res.videos = (video,) if isinstance(video, str) and video else ()
        res.images = tuple(self._image_urls(out))
        if not res.videos and not res.images:
            # Billed per image or second made: a "success" with nothing made is a failure to the client.
            failures = [str(r.get("message") or r.get("code")) for r in out.get("results") or [] if isinstance(r, dict)]
            res.state, res.reason = FAILED, VENDOR_FAILED
            res.message = "; ".join(f for f in failures if f != "None") or "succeeded without a result"
            return res
        res.expires_at = url_expiry((res.videos + res.images)[0]) or self._estimate(out.get("end_time"))
        res.usage = self._usage(obj(data.get("usage")), len(res.images))
        return res

    @staticmethod
    def _image_urls(out: dict[str, Any]) -> list[str]:
        urls = [r["url"] for r in out.get("results") or [] if isinstance(r, dict) and isinstance(r.get("url"), str)]
        for choice in out.get("choices") or []:
            for part in obj(obj(choice).get("message")).get("content") or []:
                if isinstance(part, dict) and isinstance(part.get("image"), str):
                    urls.append(part["image"])
        return urls

    @staticmethod
    def _usage(usage: dict[str, Any], images: int) -> TaskUsage:
        # Names vary by model: duration (input + output video, what wan2.7 bills), video_duration,
        # output_video_duration; SR (720) or video_ratio ("1280*720"); image_count.
        return TaskUsage(
            seconds=first_number(usage, "duration", "video_duration", "output_video_duration"),
            images=integer(usage.get("image_count")) if usage.get("image_count") is not None else (images or None),
            resolution=resolution_label(usage.get("SR")) or resolution_label(usage.get("video_ratio")),
        )

    def _estimate(self, end_time: Any) -> float:
        if isinstance(end_time, str):
            try:
                return calendar.timegm(time.strptime(end_time[:19], "%Y-%m-%d %H:%M:%S")) - _BEIJING + DAY
            except ValueError:
                pass
        return self.clock() + DAY

    def error(self, status: int, body: bytes) -> str:
        try:
            data = load_object(body, "error")
        except VendorError:
            data = {}
        return error_text(status, body, data.get("message"), data.get("code"))

    def content(self, vendor_task_id: str, variant: str, url: str | None, api_key: str) -> VendorCall | None:
        return None  # signed OSS links: fetched as they are, without the key

    def cancel(self, vendor_task_id: str, api_key: str) -> VendorCall | None:
        return VendorCall(
            "POST", f"/api/v1/tasks/{vendor_task_id}/cancel", headers={"Authorization": f"Bearer {api_key}"}
        )

    def remix(self, vendor_task_id: str, prompt: str, api_key: str) -> VendorCall | None:
        return None
