"""A fake of the four async-generation vendors, a real aiohttp server on a local port that speaks each
one's protocol at its real paths with its auth style, and misbehaves on cue.

    async with FakeTasks() as fake:            # 127.0.0.1, port 0; or `await FakeTasks().start()` / `.stop()`
        fake.url                               # "http://127.0.0.1:PORT": the DashScope, Ark and Vidu base_url
        fake.base_url("openai")                # Sora's is fake.url + "/v1", as the OpenAI SDK's

Vendors (`FakeTask.vendor`: openai | dashscope | ark | vidu) and their paths:
    openai     POST /v1/videos (JSON or multipart), GET|DELETE /v1/videos/{id}, GET /v1/videos/{id}/content
               (Bearer key required, ?variant=), POST /v1/videos/{id}/remix
    dashscope  POST /api/v1/services/aigc/{video-generation,image2video}/video-synthesis,
               .../text2image/image-synthesis, .../image-generation/generation (X-DashScope-Async: enable,
               else 403), GET /api/v1/tasks/{id}, POST /api/v1/tasks/{id}/cancel (PENDING only)
    ark        POST /api/v3/contents/generations/tasks, GET|DELETE .../tasks/{id}
    vidu       POST /ent/v2/{text2video,img2video,start-end2video,reference2video,reference2image},
               GET /ent/v2/tasks/{id}/creations, POST /ent/v2/tasks/{id}/cancel (queued only)
Every call needs `api_key` (Bearer; Vidu: Token): another key gets 401 in the vendor's error shape.

Tasks move one step along their script on each poll: the submission answers script[0], poll k answers
script[min(k, last)]. The default script is PENDING, RUNNING, SUCCEEDED. Script words: PENDING, RUNNING,
SUCCEEDED, FAILED, CANCELLED, EXPIRED (each in the vendor's own word; where a vendor has none the task is
gone: 404), GONE (404); any other word is sent as the vendor's status as it is (an unknown status).
Finished tasks hand out result URLs under /files/{vendor}/{id}/{name} with signed-looking query strings
(OSS, TOS, S3 style) that serve `file_bytes(name)` (`file_size` bytes, 1 MiB by default) with
Content-Length and single-range Range support (206, 416); Sora's files come from its content endpoint.

Controls:
    script_next(*words)                 the next submitted task follows these (queued: one per task)
    fail(id, message=...)               the task fails from its next poll on
    cancel(id) / expire(id) / vanish(id)  cancelled / expired / 404 from the next poll on
    fail_next(n=1, status=429, retry_after=None, on="poll")  the next n requests of a kind (submit | poll |
                                        cancel | content | download | remix | any) answer `status`
    hang_next(on="poll")                the next such request never answers (until the fake stops)
    requests: list[Received]            every request, parsed (JSON, or multipart fields and files)
    seen(kind=None, vendor=None)        those of one kind and vendor; tasks: dict[id, FakeTask]
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

Json = dict[str, Any]
PENDING, RUNNING, SUCCEEDED, FAILED = "PENDING", "RUNNING", "SUCCEEDED", "FAILED"
CANCELLED, EXPIRED, GONE = "CANCELLED", "EXPIRED", "GONE"
DEFAULT_SCRIPT = (PENDING, RUNNING, SUCCEEDED)
# The vendor's word for each script word, in the order of _COLUMNS ("-": it has none, the task is gone: 404).
_COLUMNS = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED)
WORDS: dict[str, dict[str, str | None]] = {
    vendor: dict(zip(_COLUMNS, (None if w == "-" else w for w in words.split()), strict=True))
    for vendor, words in {
        "openai": "queued in_progress completed failed - -",
        "dashscope": "PENDING RUNNING SUCCEEDED FAILED CANCELED UNKNOWN",
        "ark": "queued running succeeded failed cancelled expired",
        "vidu": "queueing processing success failed failed -",
    }.items()
}
_DASHSCOPE = "video-generation/video-synthesis|image2video/video-synthesis|text2image/image-synthesis|image-generation/generation"
_ROUTES = [  # vendor, kind, method, path
    (vendor, kind, method, re.compile(path.replace("{id}", "(?P<id>[^/]+)").replace("{dashscope}", _DASHSCOPE)))
    for vendor, kind, method, path in (
        line.split()
        for line in """
        openai     submit    POST    /v1/videos
        openai     poll      GET     /v1/videos/{id}
        openai     cancel    DELETE  /v1/videos/{id}
        openai     content   GET     /v1/videos/{id}/content
        openai     remix     POST    /v1/videos/{id}/remix
        dashscope  submit    POST    /api/v1/services/aigc/(?P<svc>{dashscope})
        dashscope  poll      GET     /api/v1/tasks/{id}
        dashscope  cancel    POST    /api/v1/tasks/{id}/cancel
        ark        submit    POST    /api/v3/contents/generations/tasks
        ark        poll      GET     /api/v3/contents/generations/tasks/{id}
        ark        cancel    DELETE  /api/v3/contents/generations/tasks/{id}
        vidu       submit    POST    /ent/v2/(?P<svc>text2video|img2video|start-end2video|reference2video|reference2image)
        vidu       poll      GET     /ent/v2/tasks/{id}/creations
        vidu       cancel    POST    /ent/v2/tasks/{id}/cancel
        files      download  GET     /files/(?P<vendor>[^/]+)/{id}/(?P<name>[^/]+)
    """.strip().splitlines()
    )
]
_PREFIXES = {"/v1/": "openai", "/api/v1/": "dashscope", "/api/v3/": "ark", "/ent/v2/": "vidu", "/files/": "files"}


@dataclass
class Received:
    vendor: str  # openai | dashscope | ark | vidu | files | unknown
    kind: str  # submit | poll | cancel | content | remix | download | unknown
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)  # fields as str, files as (filename, content type, bytes)


@dataclass
class Fault:
    status: int  # 0: hang
    retry_after: float | None = None
    on: str = "poll"


@dataclass
class FakeTask:
    vendor: str
    id: str
    kind: str  # video | image
    model: str
    script: list[str]
    shape: str = ""  # the endpoint it came in by (DashScope's image shapes differ)
    seconds: int = 5
    n: int = 1
    message: str = "the model could not generate this"
    polls: int = 0
    forced: str | None = None  # set by fail / cancel / expire / vanish
    created_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def word(self) -> str:
        return self.forced or self.script[min(self.polls, len(self.script) - 1)]


class FakeTasks:
    def __init__(self, api_key: str = "vendor-key", file_size: int = 1 << 20) -> None:
        self.api_key, self.file_size = api_key, file_size
        self.tasks: dict[str, FakeTask] = {}
        self.requests: list[Received] = []
        self.scripts: deque[list[str]] = deque()
        self.faults: deque[Fault] = deque()
        self.received = asyncio.Event()  # set on every request
        self._released = asyncio.Event()  # hangs end when the fake stops
        self.server: TestServer | None = None
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the fake first"
        return str(self.server.make_url("")).rstrip("/")

    def base_url(self, vendor: str) -> str:
        return self.url + "/v1" if vendor == "openai" else self.url

    async def start(self) -> Self:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()
        return self

    async def stop(self) -> None:
        self._released.set()
        if self.server is not None:
            await self.server.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # controls
    def script_next(self, *words: str) -> None:
        self.scripts.append(list(words))

    def fail(self, task_id: str, message: str = "the model could not generate this") -> None:
        self.tasks[task_id].forced, self.tasks[task_id].message = FAILED, message

    def cancel(self, task_id: str) -> None:
        self.tasks[task_id].forced = CANCELLED

    def expire(self, task_id: str) -> None:
        self.tasks[task_id].forced = EXPIRED

    def vanish(self, task_id: str) -> None:
        self.tasks[task_id].forced = GONE

    def fail_next(self, n: int = 1, status: int = 429, retry_after: float | None = None, on: str = "poll") -> None:
        self.faults.extend(Fault(status, retry_after, on) for _ in range(n))

    def hang_next(self, on: str = "poll") -> None:
        self.faults.append(Fault(0, on=on))

    def seen(self, kind: str | None = None, vendor: str | None = None) -> list[Received]:
        return [r for r in self.requests if kind in (None, r.kind) and vendor in (None, r.vendor)]

    def file_bytes(self, name: str) -> bytes:
        """The deterministic content of a result file: sha256(name) repeated to `file_size` bytes."""
        digest = hashlib.sha256(name.encode()).digest()
        return (digest * (self.file_size // len(digest) + 1))[: self.file_size]

    def file_url(self, task: FakeTask, name: str) -> str:
        now = time.gmtime()
        stamp, sig = time.strftime("%Y%m%dT%H%M%SZ", now), hashlib.sha256(name.encode()).hexdigest()[:32]
        query = {
            "dashscope": f"Expires={int(time.time()) + 86400}&OSSAccessKeyId=LTAIfake&Signature={sig}",
            "ark": f"X-Tos-Algorithm=TOS4-HMAC-SHA256&X-Tos-Date={stamp}&X-Tos-Expires=86400&X-Tos-Signature={sig}",
        }.get(
            task.vendor,
            f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={stamp}&X-Amz-Expires=86400&X-Amz-Signature={sig}",
        )
        return f"{self.url}/files/{task.vendor}/{task.id}/{name}?{query}"

    # the server
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        vendor, kind, match = self._route(request)
        received = await self._record(request, vendor, kind)
        fault = next((f for f in self.faults if f.on in (kind, "any")), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.status == 0:
                await self._released.wait()
                raise web.HTTPServiceUnavailable()
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            return self._error(
                vendor,
                fault.status,
                "Throttling" if fault.status == 429 else "InternalError",
                f"fake {fault.status}",
                headers,
            )
        if match is None:
            return self._error(vendor, 404, "NotFound", f"no route for {request.method} {request.path}")
        if kind == "download":
            return self._download(request, match)
        expected = f"Token {self.api_key}" if vendor == "vidu" else f"Bearer {self.api_key}"
        if request.headers.get("Authorization") != expected:
            return self._error(vendor, 401, "InvalidApiKey", "Invalid API key provided")
        if kind == "submit":
            return self._submit(vendor, match, received)
        task = self.tasks.get(match.group("id"))
        if task is None or task.vendor != vendor or task.word == GONE:
            return self._error(vendor, 404, "NotFound", "task not found")
        if kind == "poll":
            task.polls += 1
            return self._answer(task)
        if kind == "cancel":
            return self._cancel(task)
        if kind == "remix":
            return self._submit(vendor, match, received, remix_of=task)
        return self._content(request, task)

    def _route(self, request: web.Request) -> tuple[str, str, re.Match[str] | None]:
        method = "GET" if request.method == "HEAD" else request.method
        for vendor, kind, verb, pattern in _ROUTES:
            if verb == method and (match := pattern.fullmatch(request.path)) is not None:
                return vendor, kind, match
        vendor = next((v for p, v in _PREFIXES.items() if request.path.startswith(p)), "unknown")
        return vendor, "unknown", None

    async def _record(self, request: web.Request, vendor: str, kind: str) -> Received:
        seen = Received(vendor, kind, request.method, request.path, dict(request.query), dict(request.headers))
        if request.content_type == "multipart/form-data":
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    seen.form[name] = (value.filename, value.content_type, value.file.read())
                else:
                    seen.form[name] = value if isinstance(value, str) else bytes(value).decode()
        elif body := await request.read():
            try:
                seen.json = orjson.loads(body)
            except orjson.JSONDecodeError:
                seen.json = body.decode("utf-8", "replace")
        self.requests.append(seen)
        self.received.set()
        return seen

    def _error(
        self, vendor: str, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body: Json
        if vendor == "dashscope":
            body = {"request_id": f"req-{next(self._ids)}", "code": code, "message": message}
        elif vendor == "vidu":
            body = {
                "code": status,
                "reason": code,
                "message": message,
                "metadata": {"trace_id": f"{next(self._ids):032x}"},
            }
        else:
            body = {"error": {"code": code, "message": message, "type": "invalid_request_error", "param": None}}
        return web.json_response(body, status=status, headers=headers)

    def _submit(
        self, vendor: str, match: re.Match[str], seen: Received, remix_of: FakeTask | None = None
    ) -> web.Response:
        body: Json = seen.json if isinstance(seen.json, dict) else dict(seen.form)
        if vendor == "dashscope" and seen.headers.get("X-DashScope-Async") != "enable":
            return self._error(vendor, 403, "AccessDenied", "current user api does not support synchronous calls")
        model = remix_of.model if remix_of is not None else body.get("model")
        if not isinstance(model, str) or not model:
            return self._error(vendor, 400, "InvalidParameter", "model is required")
        shape = match.groupdict().get("svc") or ""
        image = shape in ("text2image/image-synthesis", "image-generation/generation", "reference2image")
        params: Json = body["parameters"] if isinstance(body.get("parameters"), dict) else body
        seconds = params.get("duration") or params.get("seconds") or (remix_of.seconds if remix_of else 5)
        script = self.scripts.popleft() if self.scripts else list(DEFAULT_SCRIPT)
        kind, n = "image" if image else "video", int(params.get("n") or 1)
        task = FakeTask(vendor, self._new_id(vendor), kind, model, script, shape, seconds=int(seconds), n=n)
        self.tasks[task.id] = task
        if vendor == "dashscope":
            output = {"task_id": task.id, "task_status": self._word(task)}
            return web.json_response({"request_id": f"req-{next(self._ids)}", "output": output})
        if vendor == "ark":
            return web.json_response({"id": task.id})
        if vendor == "vidu":
            state = "created" if task.word == PENDING else self._word(task)
            answer = {"task_id": task.id, "state": state, "model": model, "prompt": body.get("prompt")}
            answer |= {"images": body.get("images", []), "duration": task.seconds, "credits": 0}
            return web.json_response({**answer, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return self._answer(task)

    def _new_id(self, vendor: str) -> str:
        n = next(self._ids)
        return {"openai": f"video_{n:024x}", "ark": f"cgt-2026{n:012d}"}.get(vendor, f"{n:08x}-fake-task-{n:06d}")

    @staticmethod
    def _word(task: FakeTask) -> str | None:
        return WORDS[task.vendor].get(task.word, task.word)

    def _answer(self, task: FakeTask) -> web.Response:
        word, state = self._word(task), task.word
        if word is None:
            return self._error(task.vendor, 404, "NotFound", "task not found")
        done, failed = state == SUCCEEDED, state in (FAILED, CANCELLED, EXPIRED)
        answer = getattr(self, f"_{task.vendor}")(task, word, done, failed)
        return web.json_response(answer)

    def _openai(self, task: FakeTask, word: str, done: bool, failed: bool) -> Json:
        progress = {PENDING: 0, RUNNING: 50, SUCCEEDED: 100}.get(task.word, 0)
        out: Json = {"id": task.id, "object": "video", "model": task.model, "status": word, "progress": progress}
        out |= {"created_at": task.created_at, "seconds": str(task.seconds), "size": "1280x720", "error": None}
        out |= {"completed_at": None, "expires_at": None}
        if done:
            out.update(completed_at=int(time.time()), expires_at=int(time.time()) + 3600)
        if failed:
            out["error"] = {"code": "video_generation_failed", "message": task.message}
        return out

    def _dashscope(self, task: FakeTask, word: str, done: bool, failed: bool) -> Json:
        output: Json = {"task_id": task.id, "task_status": word, "submit_time": "2026-01-01 12:00:00.000"}
        answer: Json = {"request_id": f"req-{next(self._ids)}", "output": output}
        if failed:
            output.update(code="InternalError.Algo", message=task.message)
        if done:
            output.update(end_time=time.strftime("%Y-%m-%d %H:%M:%S.000", time.gmtime(time.time() + 8 * 3600)))
            urls = [self.file_url(task, f"{i}.png") for i in range(task.n)] if task.kind == "image" else []
            if task.kind == "video":
                output["video_url"] = self.file_url(task, "video.mp4")
                answer["usage"] = {"duration": str(task.seconds), "video_count": 1, "SR": "720"}  # strings, as some are
            elif task.shape == "image-generation/generation":
                parts = [{"type": "image", "image": url} for url in urls]
                output["choices"] = [{"finish_reason": "stop", "message": {"role": "assistant", "content": parts}}]
                answer["usage"] = {"image_count": str(task.n), "size": "1280*1280"}
            else:
                output["results"] = [{"url": url} for url in urls]
                answer["usage"] = {"image_count": task.n}
        return answer

    def _ark(self, task: FakeTask, word: str, done: bool, failed: bool) -> Json:
        out: Json = {"id": task.id, "model": task.model, "status": word, "error": None, "seed": 42}
        out |= {"created_at": task.created_at, "updated_at": int(time.time())}
        out |= {"duration": task.seconds, "resolution": "720p", "ratio": "16:9"}
        if done:
            out["content"] = {"video_url": self.file_url(task, "video.mp4")}
            out["usage"] = {"completion_tokens": 108900, "total_tokens": 108900}
        if failed:
            out["error"] = {"code": "OutputVideoSensitiveContentDetected", "message": task.message}
        return out

    def _vidu(self, task: FakeTask, word: str, done: bool, failed: bool) -> Json:
        code = {CANCELLED: "TaskCanceled", FAILED: task.message}.get(task.word, "") if failed else ""
        out: Json = {"id": task.id, "state": word, "err_code": code, "credits": 4 * task.seconds if done else 0}
        out |= {"payload": "", "bgm": False, "off_peak": False, "creations": []}
        if done:
            url = self.file_url(task, "image.png" if task.kind == "image" else "video.mp4")
            cover = self.file_url(task, "cover.jpg")
            out["creations"] = [{"id": f"creation-{task.id}", "url": url, "cover_url": cover}]
        return out

    def _cancel(self, task: FakeTask) -> web.Response:
        state, vendor = task.word, task.vendor
        if vendor == "openai":
            task.forced = GONE
            return web.json_response({"id": task.id, "object": "video.deleted", "deleted": True})
        if vendor == "ark" and state in (SUCCEEDED, FAILED, CANCELLED, EXPIRED):
            task.forced = GONE  # deleting a finished task's record
            return web.json_response({})
        if state != PENDING:
            return self._error(vendor, 400, "UnsupportedOperation", f"task state is {self._word(task)}, can not cancel")
        task.forced = CANCELLED
        return web.json_response({"request_id": f"req-{next(self._ids)}"} if vendor == "dashscope" else {})

    def _content(self, request: web.Request, task: FakeTask) -> web.Response:
        if task.word != SUCCEEDED:
            return self._error("openai", 404, "NotFound", "video is not ready")
        variant = request.query.get("variant", "video")
        if variant not in ("video", "thumbnail", "spritesheet"):
            return self._error("openai", 400, "InvalidParameter", f"unknown variant {variant}")
        kind = "video/mp4" if variant == "video" else "image/webp"
        return self._serve(request, self.file_bytes(f"{task.id}/{variant}"), kind)

    def _download(self, request: web.Request, match: re.Match[str]) -> web.Response:
        if not any(k.lower().endswith("signature") for k in request.query):
            return web.Response(status=403, text="AccessDenied: request is not signed")
        task = self.tasks.get(match.group("id"))
        if task is None or task.word == GONE:
            return web.Response(status=404, text="NoSuchKey")
        name = match.group("name")
        kind = "video/mp4" if name.endswith(".mp4") else "image/png"
        return self._serve(request, self.file_bytes(f"{task.id}/{name}"), kind)

    @staticmethod
    def _serve(request: web.Request, data: bytes, content_type: str) -> web.Response:
        """The file, or the one byte range asked for (206), or 416 when the range is past the end."""
        size, headers = len(data), {"Accept-Ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("Range", "").strip())
        if match is None or not (match.group(1) or match.group(2)):
            return web.Response(body=data, content_type=content_type, headers=headers)
        if match.group(1):
            start, end = int(match.group(1)), min(int(match.group(2) or size - 1), size - 1)
        else:
            start, end = max(0, size - int(match.group(2))), size - 1
        if start >= size or start > end:
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return web.Response(status=206, body=data[start : end + 1], content_type=content_type, headers=headers)
