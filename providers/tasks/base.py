"""The neutral shapes of async generation (video, images), shared by every task vendor's adaptor.

A client's request, in whatever dialect it came (gateway.tasks.dialects), becomes a `TaskRequest`. A
vendor's adaptor turns it into the `VendorCall` its API wants, and turns each answer back into a
`VendorState`. Adaptors are pure: they build requests and read answers; the task engine
(gateway.tasks) makes the HTTP calls, so HTTP stays in one place.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol

# The one state machine: CREATED -> PENDING -> RUNNING -> SUCCEEDED | FAILED.
CREATED = "CREATED"  # the gateway's own: the row exists, the vendor has not acknowledged it yet
PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
STATES = (CREATED, PENDING, RUNNING, SUCCEEDED, FAILED)
FINAL = frozenset({SUCCEEDED, FAILED})

# Why a task FAILED.
VENDOR_FAILED = "vendor_failed"
CANCELLED = "cancelled"
EXPIRED = "expired"  # the vendor no longer knows the task (404/410, or its own "expired"/"unknown")
TIMEOUT = "timeout"  # tasks.timeout_s passed

# Media roles.
FIRST_FRAME = "first_frame"
LAST_FRAME = "last_frame"
REFERENCE = "reference"  # a reference image (ref2v), or an image to edit (i2i)
VIDEO = "video"
AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class Media:
    """One uploaded or linked file: `url` (http(s) or data:) or `data` (bytes as uploaded)."""

    role: str
    url: str | None = None
    data: bytes | None = field(default=None, repr=False)
    content_type: str = "application/octet-stream"
    filename: str | None = None

    def as_url(self) -> str:
        """An http(s) URL as given, else the bytes as a base64 data URL (what most vendors accept)."""
        if self.url is not None:
            return self.url
        assert self.data is not None
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"

    def describe(self) -> dict[str, Any]:
        """What the task row keeps of it: never the bytes, and no data URL."""
        out: dict[str, Any] = {"role": self.role, "content_type": self.content_type}
        if self.url is not None and not self.url.startswith("data:"):
            out["url"] = self.url
        else:
            out["bytes"] = len(self.data) if self.data is not None else len(self.url or "")
        if self.filename:
            out["filename"] = self.filename
        return out


@dataclass(slots=True)
class TaskRequest:
    """What a client asked for, whatever its dialect. `model` is the vendor's model name."""

    catalog: str  # t2v | i2v | ref2v | t2i | i2i
    model: str
    prompt: str = ""
    negative_prompt: str | None = None
    media: tuple[Media, ...] = ()
    seconds: float | None = None  # video duration
    resolution: str | None = None  # "480P" | "720P" | "1080P"
    size: str | None = None  # "1280x720" (width x height)
    ratio: str | None = None  # "16:9"
    n: int | None = None  # images
    seed: int | None = None
    # Other fields of the model's own (off_peak, watermark, prompt_extend, movement_amplitude...), passed
    # to the vendor as they came, where the vendor's body has a place for them.
    extra: dict[str, Any] = field(default_factory=dict)

    def images(self, *roles: str) -> list[Media]:
        return [m for m in self.media if m.role in roles]

    def describe(self) -> dict[str, Any]:
        """The request as the task row keeps it: no bytes, no secrets."""
        out: dict[str, Any] = {"catalog": self.catalog, "model": self.model, "prompt": self.prompt}
        for name in ("negative_prompt", "seconds", "resolution", "size", "ratio", "n", "seed"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.media:
            out["media"] = [m.describe() for m in self.media]
        if self.extra:
            out["extra"] = self.extra
        return out


@dataclass(slots=True)
class VendorCall:
    """One HTTP request to a vendor. `path` is appended to the channel's base_url; or `url` is absolute
    (a result file). `form`: multipart fields as (name, value, filename, content type)."""

    method: str
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: list[tuple[str, str | bytes, str | None, str | None]] | None = None
    query: dict[str, str] | None = None
    url: str | None = None


@dataclass(slots=True)
class TaskUsage:
    """What a finished task used, as far as the vendor said (else from the request)."""

    seconds: float | None = None
    images: int | None = None
    tokens: int | None = None
    credits: float | None = None
    resolution: str | None = None  # "720P", for prices by resolution

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k in ("seconds", "images", "tokens", "credits", "resolution") if (v := getattr(self, k)) is not None}


@dataclass(slots=True)
class VendorState:
    """One reading of a vendor's task: what it answered to a submission or a poll."""

    state: str  # PENDING | RUNNING | SUCCEEDED | FAILED
    vendor_status: str  # the vendor's own word, as it came
    vendor_task_id: str | None = None
    progress: int | None = None  # 0-100
    reason: str | None = None  # when FAILED: vendor_failed | cancelled | expired
    message: str | None = None  # the vendor's error text, when FAILED
    videos: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    thumbnail: str | None = None
    expires_at: float | None = None  # when the result URLs stop working, unix seconds
    usage: TaskUsage | None = None
    known: bool = True  # False: a status the adaptor does not know (kept RUNNING until timeout_s)


class VendorError(Exception):
    """A vendor's answer that cannot be read as what was asked (malformed, or an error body)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TaskVendor(Protocol):
    """One async generation vendor's protocol (providers.tasks.*)."""

    name: str  # the channel `provider` that selects it

    def submit(self, request: TaskRequest, api_key: str) -> VendorCall:
        """The call that creates the task. Raises `VendorError` when the vendor cannot do what was
        asked (a catalog or an input it does not take), with a message for the client."""
        ...

    def accepted(self, body: bytes) -> VendorState:
        """Read a 2xx answer to `submit`: the vendor's task id and first state. Raises VendorError."""
        ...

    def poll(self, vendor_task_id: str, api_key: str) -> VendorCall:
        ...

    def read(self, body: bytes) -> VendorState:
        """Read a 2xx answer to `poll`. Raises VendorError when it is not a task."""
        ...

    def error(self, status: int, body: bytes) -> str:
        """The vendor's error message in a non-2xx answer, for logs and the client (never a key)."""
        ...

    def content(self, vendor_task_id: str, variant: str, url: str | None, api_key: str) -> VendorCall | None:
        """How to fetch a result file (`variant`: video | thumbnail | image, `url`: the result URL the
        vendor gave, if any). None: fetch `url` as it is, without credentials."""
        ...

    def cancel(self, vendor_task_id: str, api_key: str) -> VendorCall | None:
        """The call that cancels or deletes the vendor's task, where the vendor has one."""
        ...

    def remix(self, vendor_task_id: str, prompt: str, api_key: str) -> VendorCall | None:
        """A new task from a finished one (Sora); None where the vendor has no such thing."""
        ...
