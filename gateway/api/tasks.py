"""The async generation routes (docs/tasks.md): every client dialect over one task store and engine.

Each creation route reads its dialect's body (JSON or multipart) into a `Submission`
(gateway.tasks.dialects), picks the channels whose vendor runs async tasks for the model, checks the
key's limits and budget, and hands the task to the engine; the answer is the task in the route's
dialect. Reads look a task up by its public id *and* the caller's key: another key's id is a 404,
never its data. Result files are streamed through the gateway (`.../content`), never linked.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from config import Channel
from gateway.api.bodies import read_json, read_upload
from gateway.api.multipart import MultipartError, parse_form
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.relay.routing import plan, request_tags
from gateway.tasks import dialects as d
from gateway.tasks.content import ContentError, relay_file, serve_stored
from gateway.tasks.engine import TaskEngine, new_task, task_cost, vendor_key, vendor_of
from gateway.tasks.model import Task
from gateway.tasks.poller import links_for
from gateway.tasks.webhooks import CallbackRefused, validate_callback_url
from providers.tasks.base import CANCELLED, SUCCEEDED

log = structlog.get_logger("gateway.tasks")

MAX_LIST = 100
SERVICE_NOT_FOUND = "service_not_found"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _engine(ctx: RequestContext) -> TaskEngine:
    engine = ctx.services.tasks
    if engine is None:
        raise GatewayError(503, "Async tasks are not available in this process right now.", code="tasks_unavailable")
    return engine


def _dialect_error(exc: d.DialectError) -> GatewayError:
    status = 404 if exc.code == SERVICE_NOT_FOUND else 400
    return GatewayError(status, exc.message, code=exc.code, param=exc.param)


async def read_body(request: web.Request, ctx: RequestContext) -> d.Body:
    """The creation request as JSON or as a multipart form (text fields and files)."""
    if request.content_type == "multipart/form-data":
        buffer = await read_upload(request, ctx)
        try:
            form = parse_form(buffer, request.headers.get("Content-Type", ""))
        except MultipartError as exc:
            raise GatewayError(400, f"The form cannot be read: {exc}.", code="invalid_form") from None
        fields: dict[str, list[str]] = defaultdict(list)
        files: list[d.Upload] = []
        for part in form.parts:
            data = bytes(form.buffer[part.start : part.end])
            if part.filename is None:
                fields[part.name].append(data.decode("utf-8", errors="replace"))
            else:
                files.append(d.Upload(part.name, part.filename, None, data))
        return d.FormBody(dict(fields), files)
    body, _ = await read_json(request, ctx)
    return body


async def create(
    request: web.Request, ctx: RequestContext, parse: Any, dialect: str, endpoint: str, *, remix_of: Task | None = None
) -> Task:
    """Parse, admit and submit one task; returns it acknowledged by its vendor."""
    engine = _engine(ctx)
    ctx.endpoint = endpoint
    ctx.estimate_tokens = False
    body = await read_body(request, ctx)
    try:
        sub: d.Submission = parse(body)
    except d.DialectError as exc:
        raise _dialect_error(exc) from None
    if sub.callback_url is not None:
        try:
            validate_callback_url(sub.callback_url)
        except CallbackRefused as exc:
            raise GatewayError(400, f"callback_url: {exc.message}", code="invalid_callback_url", param="callback_url") from None
    ctx.model = sub.public_model
    key = ctx.key
    assert key is not None
    channels = _task_channels(request, ctx, sub.public_model, remix_of)
    price = ctx.price()
    task = new_task(
        key, sub.request.catalog, sub.public_model, dialect, request_id=ctx.request_id, platform=ctx.platform,
        request=sub.row_request(), price=price.as_dict() if price else None, callback_url=sub.callback_url,
        origin=f"{request.scheme}://{request.host}",
    )  # fmt: skip
    task.reserved = task_cost(task, None) or 0.0 if key.budget is not None else 0.0
    limiter = ctx.services.limiter
    if key.limited and limiter is not None:
        ctx.ticket = await limiter.admit(key, tokens=0, reserve=task.reserved)
    task = await engine.submit(ctx.config, key, channels, sub.request, task=task, remix_of=remix_of)
    ctx.task_id, ctx.channel, ctx.upstream_model, ctx.attempts = task.id, task.channel, task.upstream_model, 1
    poller = ctx.services.poller
    if poller is not None:
        poller.wake.set()
    return task


def _task_channels(request: web.Request, ctx: RequestContext, model: str, remix_of: Task | None) -> list[Channel]:
    if remix_of is not None:
        found = [c for c in ctx.config.channels if c.name == remix_of.channel and c.enabled]
        if not found:
            raise GatewayError(503, f"Channel {remix_of.channel!r}, which made the video, is not enabled now.", code="no_channel")
        return found
    health = ctx.services.runtime.health
    tags = request_tags(request.headers.get("X-Gateway-Tag"))
    return plan(ctx.services.runtime.lookups(ctx.config), health, ctx.key, model, ctx.platform, tags, tasks=True)


async def _own(ctx: RequestContext, task_id: str) -> Task:
    """The caller's task, or 404 (another key's task is indistinguishable from a missing one)."""
    assert ctx.key is not None
    task = await _engine(ctx).store.get(task_id, ctx.key.name)
    if task is None:
        raise GatewayError(404, f"No task {task_id[:100]!r} for this key.", code="task_not_found", param="id")
    ctx.model = task.model
    return task


# -- OpenAI videos ---------------------------------------------------------------------------------


async def create_video(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    task = await create(request, ctx, d.parse_openai_video, d.OPENAI_VIDEO, "videos")
    return _json(d.render_openai_video(task, links_for(task)))


async def get_video(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "videos"
    task = await _own(ctx, request.match_info["id"])
    return _json(d.render_openai_video(task, links_for(task)))


async def list_videos(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "videos"
    assert ctx.key is not None
    try:
        query = d.parse_openai_video_list(request.query)
    except d.DialectError as exc:
        raise _dialect_error(exc) from None
    tasks, _ = await _engine(ctx).store.list(ctx.key.name, page=1, limit=1000, kind="video")
    if query.order == "asc":
        tasks.reverse()
    if query.after is not None:
        ids = [t.id for t in tasks]
        tasks = tasks[ids.index(query.after) + 1 :] if query.after in ids else []
    page = tasks[: query.limit]
    return _json(d.render_openai_video_list(page, links_for(page[0]) if page else d.ContentLinks(), len(tasks) > len(page)))


async def delete_video(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "videos"
    task = await _own(ctx, request.match_info["id"])
    await cancel(ctx, task)
    latest = await _engine(ctx).store.get_any(task.id)
    if latest is not None:
        await _engine(ctx).store.update(latest, deleted_at=time.time())
    return _json(d.render_openai_video_deleted(task.id))


async def cancel(ctx: RequestContext, task: Task) -> Task | None:
    """Stop an unfinished task: cancelled at its vendor where it has a call for that, FAILED and refunded here."""
    if task.final:
        return task
    engine = _engine(ctx)
    channel = next((c for c in ctx.config.channels if c.name == task.channel), None)
    vendor = vendor_of(channel) if channel is not None else None
    if channel is not None and vendor is not None and task.vendor_task_id is not None:
        api_key = vendor_key(channel, task.vendor_key_id)
        call = vendor.cancel(task.vendor_task_id, api_key) if api_key else None
        if call is not None:
            try:
                answer = await engine.send(channel, call)
                if answer.status >= 300:
                    log.warning("task_cancel_refused", task_id=task.id, channel=channel.name, status=answer.status)
            except Exception as exc:  # best effort: the task is refunded here whatever the vendor does
                log.warning("task_cancel_failed", task_id=task.id, channel=channel.name, error=type(exc).__name__)
    return await engine.fail(task, CANCELLED, "cancelled by the client")


async def remix_video(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    source = await _own(ctx, request.match_info["id"])

    def parse(body: d.Body) -> d.Submission:
        return d.parse_openai_video_remix(body, source)

    task = await create(request, ctx, parse, d.OPENAI_VIDEO, "videos/remix", remix_of=source)
    return _json(d.render_openai_video(task, links_for(task)))


async def content(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    """A result file, streamed from the vendor (or from the gateway's own copy) with Range support."""
    ctx.endpoint = "content"
    ctx.estimate_tokens = False
    task = await _own(ctx, request.match_info["id"])
    variant = request.query.get("variant") or ("image" if task.catalog in ("t2i", "i2i") else "video")
    if variant not in ("video", "thumbnail", "image", "spritesheet"):
        raise GatewayError(400, f"Unknown variant {variant[:50]!r}; use video, thumbnail or image.", code="invalid_value", param="variant")
    try:
        index = int(request.query.get("index", "0"))
    except ValueError:
        raise GatewayError(400, "index must be a whole number.", code="invalid_value", param="index") from None
    if task.status != SUCCEEDED:
        raise GatewayError(409, f"Task {task.id} is {task.status}: its content is ready once it has SUCCEEDED.", code="task_not_ready")
    stored = task.stored.get(f"{variant}-{index}")
    if stored is not None:
        try:
            return serve_stored(request, Path(stored), _content_type(variant))
        except ContentError:
            pass
    channel = next((c for c in ctx.config.channels if c.name == task.channel), None)
    engine = _engine(ctx)
    source = engine.content_source(task, channel, variant, index)
    if source is None:
        raise GatewayError(404, f"Task {task.id} has no {variant} #{index}.", code="content_not_found")
    if task.results_expire_at is not None and task.results_expire_at < time.time():
        raise GatewayError(410, f"Task {task.id}'s files have expired at the vendor and no copy was kept "
                                "(tasks.store_results).", code="content_expired")  # fmt: skip
    url, headers = source
    ctx.channel = task.channel
    return await relay_file(request, engine.session, url, headers=headers)


def _content_type(variant: str) -> str:
    return "image/png" if variant in ("image", "thumbnail") else "video/mp4"


# -- /v1/video/generations, async images, the neutral view ----------------------------------------------


async def create_video_generation(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    task = await create(request, ctx, d.parse_video_generation, d.VIDEO_GENERATION, "video/generations")
    return _json(d.render_video_generation(task, links_for(task)))


async def get_video_generation(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "video/generations"
    task = await _own(ctx, request.match_info["id"])
    return _json(d.render_video_generation(task, links_for(task)))


def is_async(request: web.Request) -> bool:
    """`?async=true` on the image routes asks for a task instead of a synchronous generation."""
    return request.query.get("async", "").lower() in ("true", "1", "yes")


async def create_image_task(request: web.Request, ctx: RequestContext, *, edit: bool) -> web.StreamResponse:
    parse = d.parse_image_edit if edit else d.parse_image_generation
    task = await create(request, ctx, parse, d.OPENAI_IMAGE, "images/edits" if edit else "images/generations")
    return _json(d.render_image_task(task, links_for(task)))


async def get_image_task(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "images"
    task = await _own(ctx, request.match_info["task_id"])
    return _json(d.render_image_task(task, links_for(task)))


async def get_task(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "tasks"
    task = await _own(ctx, request.match_info["id"])
    return _json(d.render_task(task, links_for(task)))


async def find_tasks(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    """GET /v1/tasks?taskid=a,b: the caller's tasks of those ids (others' ids are simply not found)."""
    ctx.endpoint = "tasks"
    tasks = await _own_many(ctx, request.query.get("taskid") or request.query.get("task_id") or "")
    return _json(d.render_task_list(tasks, links_for(tasks[0]) if tasks else d.ContentLinks()))


async def _own_many(ctx: RequestContext, ids_text: str) -> list[Task]:
    try:
        ids = d.parse_task_ids(ids_text)
    except d.DialectError as exc:
        raise _dialect_error(exc) from None
    assert ctx.key is not None
    store = _engine(ctx).store
    found = [t for t in [await store.get(i, ctx.key.name) for i in ids[:MAX_LIST]] if t is not None]
    if not found:
        raise GatewayError(404, "No task of those ids for this key.", code="task_not_found", param="taskid")
    return found


# -- 元境 (llmage) -------------------------------------------------------------------------------------


async def llmage_video(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    task = await create(request, ctx, d.parse_llmage_video, d.LLMAGE, "llmage/video/generations")
    return _json(d.render_llmage_created(task))


async def llmage_image(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    task = await create(request, ctx, d.parse_llmage_image, d.LLMAGE, "llmage/image/generations")
    return _json(d.render_llmage_created(task))


async def llmage_tasks(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "llmage/tasks"
    tasks = await _own_many(ctx, request.query.get("taskid") or "")
    links = links_for(tasks[0])
    return _json(d.render_llmage_task(tasks[0], links) if len(tasks) == 1 else [d.render_llmage_task(t, links) for t in tasks])


# -- AI逢源 services ------------------------------------------------------------------------------------


async def service_list(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "service/list"
    return _json(d.render_service_list(ctx.config.services))


async def service_invoke(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    catalogs = {name: info.catalog for name, info in ctx.config.models.items() if info.catalog}

    def parse(body: d.Body) -> d.Submission:
        if isinstance(body, d.FormBody):
            raise d.DialectError("Send the invocation as JSON: {\"service_code\": ..., \"params\": {...}}.", code="invalid_json")
        return d.parse_service_invoke(body, ctx.config.services, catalogs)

    task = await create(request, ctx, parse, d.SERVICE, "service/invoke")
    return _json(d.service_ok(d.render_service_task(task, links_for(task))))


async def service_task(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "service/task"
    task = await _own(ctx, request.match_info["id"])
    return _json(d.service_ok(d.render_service_task(task, links_for(task))))


async def task_list(request: web.Request, ctx: RequestContext) -> web.StreamResponse:
    ctx.endpoint = "task/list"
    assert ctx.key is not None
    try:
        query = d.parse_task_list(request.query)
    except d.DialectError as exc:
        raise _dialect_error(exc) from None
    store = _engine(ctx).store
    statuses = query.statuses or [None]
    tasks: list[Task] = []
    total = 0
    for status in statuses:  # a filter names one or two unified states
        page, count = await store.list(ctx.key.name, page=1, limit=query.page * query.limit, status=status)
        tasks.extend(page)
        total += count
    tasks.sort(key=lambda t: (t.created_at, t.id), reverse=True)
    shown = tasks[(query.page - 1) * query.limit : query.page * query.limit]
    links = links_for(shown[0]) if shown else d.ContentLinks()
    return _json(d.render_service_task_list(shown, links, total=total, query=query))
