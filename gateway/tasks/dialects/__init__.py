"""The client dialects of async generation: each parses its creation requests into a `Submission` (a
neutral `TaskRequest`, the callback URL, the public model) and renders a task row in its own shape, with
the gateway's own result URLs (`Links`), never a vendor's. Pure functions: the handlers read the body
and call them.

    common         Upload, FormBody, Submission, DialectError, Links, the readers every dialect shares
    media          files: uploads, URLs, data: URLs, base64; their kinds and roles (frames, references)
    openai_videos  /v1/videos                         OpenAI's video object, list, delete
    generations    /v1/video/generations              new-api's video task object
    images         /v1/images/...?async=true          new-api's async image object (OpenAI images when done)
    llmage         /llmage/v1/...                     元境: taskid, CREATED..FAILED, video / image URLs
    services       /api/service/..., /api/task/list   AI逢源: {success, data} envelopes
    neutral        /v1/tasks                          the unified view of any task

`render(task, links)` answers in the dialect the task was created in (`Task.dialect`), for callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.tasks.dialects.common import (
    LLMAGE,
    NEUTRAL,
    OPENAI_IMAGE,
    OPENAI_VIDEO,
    SERVICE,
    VIDEO_GENERATION,
    Body,
    ContentLinks,
    DialectError,
    FormBody,
    Links,
    Submission,
    Upload,
)
from gateway.tasks.dialects.generations import parse_video_generation, render_video_generation
from gateway.tasks.dialects.images import parse_image_edit, parse_image_generation, render_image_task
from gateway.tasks.dialects.llmage import (
    parse_llmage_image,
    parse_llmage_video,
    render_llmage_created,
    render_llmage_task,
)
from gateway.tasks.dialects.neutral import parse_task_ids, render_task, render_task_list
from gateway.tasks.dialects.openai_videos import (
    VideoListQuery,
    parse_openai_video,
    parse_openai_video_list,
    parse_openai_video_remix,
    render_openai_video,
    render_openai_video_deleted,
    render_openai_video_list,
)
from gateway.tasks.dialects.services import (
    TaskListQuery,
    parse_service_invoke,
    parse_task_list,
    render_service_list,
    render_service_task,
    render_service_task_list,
    service_ok,
)
from gateway.tasks.model import Task

RENDERERS: dict[str, Callable[[Task, Links], dict[str, Any]]] = {
    OPENAI_VIDEO: render_openai_video,
    VIDEO_GENERATION: render_video_generation,
    OPENAI_IMAGE: render_image_task,
    LLMAGE: render_llmage_task,
    SERVICE: render_service_task,
    NEUTRAL: render_task,
}


def render(task: Task, links: Links) -> dict[str, Any]:
    """The task in the shape of the dialect it was created in; the neutral one for any other."""
    return RENDERERS.get(task.dialect, render_task)(task, links)


__all__ = [
    "LLMAGE",
    "NEUTRAL",
    "OPENAI_IMAGE",
    "OPENAI_VIDEO",
    "RENDERERS",
    "SERVICE",
    "VIDEO_GENERATION",
    "Body",
    "ContentLinks",
    "DialectError",
    "FormBody",
    "Links",
    "Submission",
    "TaskListQuery",
    "Upload",
    "VideoListQuery",
    "parse_image_edit",
    "parse_image_generation",
    "parse_llmage_image",
    "parse_llmage_video",
    "parse_openai_video",
    "parse_openai_video_list",
    "parse_openai_video_remix",
    "parse_service_invoke",
    "parse_task_ids",
    "parse_task_list",
    "parse_video_generation",
    "render",
    "render_image_task",
    "render_llmage_created",
    "render_llmage_task",
    "render_openai_video",
    "render_openai_video_deleted",
    "render_openai_video_list",
    "render_service_list",
    "render_service_task",
    "render_service_task_list",
    "render_task",
    "render_task_list",
    "render_video_generation",
    "service_ok",
]
