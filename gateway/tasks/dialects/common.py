"""What every client dialect of async generation shares: the input forms (JSON or a multipart form),
the `Submission` a parser returns, `DialectError`, the `Links` that name the gateway's own result URLs,
and the readers of a task row that every renderer uses (progress, error, results).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from gateway.errors import mask_credentials
from gateway.tasks.model import Task
from providers.tasks.base import (
    CANCELLED,
    CREATED,
    EXPIRED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TIMEOUT,
    VENDOR_FAILED,
    TaskRequest,
)

# The dialect a task was created in (Task.dialect): its answers and callbacks keep that shape.
OPENAI_VIDEO = "openai_video"  # /v1/videos
VIDEO_GENERATION = "video_generation"  # /v1/video/generations
OPENAI_IMAGE = "openai_image"  # /v1/images/generations|edits?async=true
LLMAGE = "llmage"  # /llmage/v1/...
SERVICE = "service"  # /api/service/...
NEUTRAL = "task"  # /v1/tasks (read only: no task is created in it)

VIDEO_CATALOGS = ("t2v", "i2v", "ref2v")
IMAGE_CATALOGS = ("t2i", "i2i")

JsonBody = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Upload:
    """One file part of a multipart form, as the handler read it."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes = dataclasses.field(repr=False)  # `field` is the form field's name here


@dataclass(frozen=True, slots=True)
class FormBody:
    """A multipart (or urlencoded) request: its text fields, each name with every value it came with,
    and its files."""

    fields: Mapping[str, Sequence[str]]
    files: Sequence[Upload] = ()


Body = JsonBody | FormBody


class DialectError(Exception):
    """A request the dialect cannot take; `message` tells the client what to send instead. Always the
    client's fault (400). `code` is the OpenAI-style error code; `param` the field at fault."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(slots=True)
class Submission:
    """A parsed creation request. `request.model` is the PUBLIC model name (the caller maps it to the
    vendor's); `meta` is what the row keeps for the dialect's own answers but the vendor never sees
    (`remixed_from`, `service_code`): store `row_request()` as `Task.request`."""

    request: TaskRequest
    public_model: str
    callback_url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def row_request(self) -> dict[str, Any]:
        return {**self.request.describe(), **self.meta}


class Links(Protocol):
    """The gateway's own URL of one result file of a task (`variant`: video | thumbnail | image, `index`
    into that variant's list). Clients never see a vendor's URL: it is signed, and it expires."""

    def __call__(self, task: Task, variant: str, index: int) -> str: ...


@dataclass(frozen=True, slots=True)
class ContentLinks:
    """`Links` to the content route: `{base_url}/v1/videos/{id}/content?variant=video`, `&index=n` past the
    first file. `base_url` is the gateway's public origin (scheme and host), or "" for paths."""

    base_url: str = ""
    path: str = "/v1/videos/{id}/content"

    def __call__(self, task: Task, variant: str, index: int) -> str:
        url = f"{self.base_url.rstrip('/')}{self.path.format(id=quote(task.id, safe=''))}?variant={variant}"
        return f"{url}&index={index}" if index else url


# ---- reading a task row, for every renderer

# OpenAI's video words, which new-api style gateways also use for /v1/video/generations and async images.
OPENAI_STATUS = {CREATED: "queued", PENDING: "queued", RUNNING: "in_progress", SUCCEEDED: "completed", FAILED: "failed"}


_FAILURE_TEXT = {
    VENDOR_FAILED: "The vendor could not generate this task.",
    CANCELLED: "The task was cancelled at the vendor.",
    EXPIRED: "The vendor no longer knows this task (it expired or was deleted there).",
    TIMEOUT: "The task did not finish in time (tasks.timeout_s); it was not billed.",
}


def ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def progress_of(task: Task) -> int:
    return 100 if task.status == SUCCEEDED else max(0, min(100, int(task.progress or 0)))


def failure_of(task: Task) -> tuple[str, str] | None:
    """(code, message) of a FAILED task: the code is its reason, the message the vendor's (masked)."""
    if task.status != FAILED:
        return None
    reason = task.reason or VENDOR_FAILED
    message = mask_credentials(task.error) if task.error else _FAILURE_TEXT.get(reason, _FAILURE_TEXT[VENDOR_FAILED])
    return reason, message


def error_object(task: Task) -> dict[str, str] | None:
    failure = failure_of(task)
    return None if failure is None else {"code": failure[0], "message": failure[1]}


@dataclass(frozen=True, slots=True)
class Results:
    """A finished task's files as gateway URLs."""

    videos: list[str]
    images: list[str]
    thumbnail: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"videos": self.videos, "images": self.images, "thumbnail": self.thumbnail}


def results_of(task: Task, links: Links) -> Results:
    """The gateway's URLs of the files a vendor made; none until the task SUCCEEDED."""
    if task.status != SUCCEEDED:
        return Results([], [], None)
    videos = [links(task, "video", i) for i, _ in enumerate(task.results.get("videos") or ())]
    images = [links(task, "image", i) for i, _ in enumerate(task.results.get("images") or ())]
    thumbnail = links(task, "thumbnail", 0) if task.results.get("thumbnail") else None
    return Results(videos, images, thumbnail)


def seconds_text(value: float | str) -> str:
    """8.0 reads "8": OpenAI's `seconds` is a string of whole seconds."""
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


# ---- reading a request, JSON or form


class Params:
    """A request's fields read one way whether they came as JSON or as a form. Form values are text;
    a form field repeated (`image_files[]`) is a list. Every read marks the name used, so `rest()` is
    what the dialect does not know: the model's own fields, passed in `TaskRequest.extra`."""

    def __init__(self, values: Mapping[str, Any], files: Mapping[str, list[Upload]], form: bool) -> None:
        self.values = dict(values)
        self.uploads = dict(files)
        self.form = form
        self.used: set[str] = set()

    @classmethod
    def of(cls, body: Body) -> Params:
        if isinstance(body, FormBody):
            values: dict[str, Any] = {}
            for name, given in body.fields.items():
                key = name.removesuffix("[]")
                listed = [given] if isinstance(given, str) else list(given)
                values[key] = [*values.get(key, []), *listed]
            files: dict[str, list[Upload]] = {}
            for upload in body.files:
                files.setdefault(upload.field.removesuffix("[]"), []).append(upload)
            return cls({k: v[0] if len(v) == 1 else v for k, v in values.items()}, files, form=True)
        if not isinstance(body, Mapping):
            raise DialectError("The request body must be a JSON object.", code="invalid_json")
        return cls(body, {}, form=False)

    def merged(self, lower: Mapping[str, Any]) -> None:
        """Take fields from `lower` (a nested `metadata` object) where the body has none."""
        for name, value in lower.items():
            self.values.setdefault(name, value)

    def present(self, *names: str) -> str | None:
        """The first of `names` the request carries a non-empty value for, marking all of them used."""
        self.used.update(names)
        return next((n for n in names if self.values.get(n) not in (None, "", [])), None)

    def raw(self, *names: str) -> tuple[str, Any] | None:
        name = self.present(*names)
        return None if name is None else (name, self.values[name])

    def one(self, *names: str) -> tuple[str, Any] | None:
        found = self.raw(*names)
        if found is not None and self.form and isinstance(found[1], list):
            raise DialectError(f"Send the field {found[0]!r} once.", found[0])
        return found

    def text(self, *names: str, required: bool = False) -> str | None:
        found = self.one(*names)
        if found is None:
            if required:
                raise DialectError(f"The field {names[0]!r} is required.", names[0], "missing_required_parameter")
            return None
        name, value = found
        if not isinstance(value, str):
            raise DialectError(f"The field {name!r} must be a string.", name)
        value = value.strip()
        if not value and required:
            raise DialectError(f"The field {names[0]!r} is required.", names[0], "missing_required_parameter")
        return value or None

    def number(self, *names: str) -> float | None:
        found = self.one(*names)
        if found is None:
            return None
        name, value = found
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise DialectError(f"The field {name!r} must be a number, like 5; got {value!r}.", name) from None
        if not number > 0 or number == float("inf"):
            raise DialectError(f"The field {name!r} must be a positive number; got {value!r}.", name)
        return number

    def integer(self, *names: str, minimum: int | None = None) -> int | None:
        found = self.one(*names)
        if found is None:
            return None
        name, value = found
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value.strip() if isinstance(value, str) else value)
            if not number.is_integer():
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise DialectError(f"The field {name!r} must be a whole number; got {value!r}.", name) from None
        if minimum is not None and number < minimum:
            raise DialectError(f"The field {name!r} must be at least {minimum}; got {value!r}.", name)
        return int(number)

    def files(self, *names: str) -> list[tuple[str, Upload]]:
        self.used.update(names)
        return [(n, u) for n in names for u in self.uploads.get(n, ())]

    def values_of(self, *names: str) -> list[tuple[str, Any]]:
        """Every value given under `names`, lists flattened (JSON or repeated form fields)."""
        out: list[tuple[str, Any]] = []
        for name in names:
            self.used.add(name)
            value = self.values.get(name)
            if value in (None, "", []):
                continue
            out += [(name, v) for v in value] if isinstance(value, list) else [(name, value)]
        return out

    def rest(self, drop: Iterable[str] = ()) -> dict[str, Any]:
        """The fields nobody read, for `TaskRequest.extra`; form text becomes bool or number where it
        reads as one (`off_peak=true`), since the vendors' JSON bodies want those types."""
        skip = self.used | set(drop)
        unknown_files = sorted(n for n in self.uploads if n not in skip)
        if unknown_files:
            raise DialectError(f"The file field {unknown_files[0]!r} is not one this endpoint takes.", unknown_files[0])
        out = {k: v for k, v in self.values.items() if k not in skip}
        return {k: _typed(v) for k, v in out.items()} if self.form else out


def _typed(value: Any) -> Any:
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if re.fullmatch(r"-?(0|[1-9]\d{0,17})", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d+", value):
        return float(value)
    return value


_SIZE_RE = re.compile(r"^\s*(\d{2,5})\s*[x*X\u00d7]\s*(\d{2,5})\s*$")
_RESOLUTION_RE = re.compile(r"^\s*(\d{3,4})\s*[pP]\s*$")


def read_size(params: Params, *names: str) -> str | None:
    """`size` as "WxH" (also given as "W*H"), or from `width` + `height`."""
    found = params.one(*names)
    if found is not None:
        name, value = found
        if isinstance(value, str) and value.strip().lower() == "auto":
            return None  # OpenAI's word for the model's default
        match = _SIZE_RE.match(value) if isinstance(value, str) else None
        if match is None:
            raise DialectError(f'The field {name!r} must be width x height, like "1280x720"; got {value!r}.', name)
        return f"{int(match[1])}x{int(match[2])}"
    width, height = params.integer("width", minimum=1), params.integer("height", minimum=1)
    if (width is None) != (height is None):
        raise DialectError("Send both width and height, or size.", "width" if width is None else "height")
    return None if width is None else f"{width}x{height}"


def read_resolution(params: Params, *names: str) -> str | None:
    """Read "720p" and "720P" as "720P"; other words ("2K") pass as they came."""
    value = params.text(*names)
    if value is None:
        return None
    match = _RESOLUTION_RE.match(value)
    return f"{match[1]}P" if match else value


def read_callback(params: Params, *names: str) -> str | None:
    """The client's callback URL: the gateway calls it once the task is final (never the vendor)."""
    url = params.text(*names)
    if url is not None and not re.match(r"^https?://[^\s/]+", url, re.IGNORECASE):
        name = params.present(*names) or names[0]
        raise DialectError(f"The field {name!r} must be an http(s) URL; got {url!r}.", name)
    return url


def require_prompt(prompt: str | None, catalog: str) -> str:
    """A prompt is optional only where input files say what to make (i2v, ref2v, i2i)."""
    if not prompt and catalog in ("t2v", "t2i"):
        raise DialectError(f"The field 'prompt' is required for {catalog}.", "prompt", "missing_required_parameter")
    return prompt or ""


def read_common(params: Params) -> dict[str, Any]:
    """The TaskRequest fields every generation dialect names the same way."""
    ratio = params.text("ratio", "aspect_ratio")
    if ratio is not None:
        ratio = ratio.replace("\uff1a", ":")  # a full-width colon, as typed in Chinese
    return {
        "negative_prompt": params.text("negative_prompt"),
        "seconds": params.number("duration", "seconds"),
        "resolution": read_resolution(params, "resolution"),
        "size": read_size(params, "size"),
        "ratio": ratio,
        "seed": params.integer("seed"),
        "n": params.integer("n", minimum=1),
    }
