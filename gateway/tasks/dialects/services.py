"""The AI逢源 service dialect: `GET /api/service/list`, `POST /api/service/invoke`,
`GET /api/service/task/{id}`, `GET /api/task/list?page=&limit=&status=`.

AI逢源's published convention (aivip.link API docs): every answer is `{"success": true, "data": ...}`,
every error `{"success": false, "message", "code"}` with an upper-case code ("INVALID_PARAMS") and the
HTTP status saying the kind; the service list is `data.services[]` of `{service_code, name, category,
description, ...}`. Its task shapes are not published, so they are defined here, in the same style:

- invoke `{service_code, params: {...}, callback_url?}`: `params` are read as `/v1/video/generations`
  fields (gateway.tasks.dialects.generations), for the service's `model` (a `model` in params is ignored:
  the service decides). Image or video comes from the model's catalog (`models.<m>.catalog`), else the
  service's `category`.
- a task, in `data`: `{task_id, service_code, model, status, progress, result, error, reason, usage,
  cost, created_at, updated_at, finished_at}`; `status` pending | processing | completed | failed;
  `result` is `{videos: [...], images: [...], thumbnail}` (the gateway's URLs) once completed, else
  null; times are unix seconds.
- the list, in `data`: `{tasks: [...], total, page, limit}`, newest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.schema import Service
from gateway.tasks.dialects.common import (
    IMAGE_CATALOGS,
    VIDEO_CATALOGS,
    DialectError,
    JsonBody,
    Links,
    Params,
    Submission,
    failure_of,
    progress_of,
    read_callback,
    results_of,
    ts,
)
from gateway.tasks.dialects.generations import CALLBACK_FIELDS, generation_request, with_metadata
from gateway.tasks.model import Task
from providers.tasks.base import CREATED, FAILED, PENDING, RUNNING, STATES, SUCCEEDED

SERVICE_CODE = "service_code"  # Submission.meta / Task.request key

SERVICE_STATUS = {
    CREATED: "pending",
    PENDING: "pending",
    RUNNING: "processing",
    SUCCEEDED: "completed",
    FAILED: "failed",
}
# A status filter word as the unified states it stands for; the unified words (upper case) stand for themselves.
STATUS_FILTER = {
    "pending": (CREATED, PENDING),
    "processing": (RUNNING,),
    "completed": (SUCCEEDED,),
    "failed": (FAILED,),
}


def service_ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def render_service_list(services: Sequence[Service]) -> dict[str, Any]:
    """`GET /api/service/list`."""
    return service_ok(
        {
            "services": [
                {
                    "service_code": s.service_code,
                    "name": s.name,
                    "category": s.category,
                    "description": s.description,
                    "model": s.model,
                }
                for s in services
            ]
        }
    )


def parse_service_invoke(
    body: JsonBody, services: Sequence[Service], catalogs: Mapping[str, str | None] | None = None
) -> Submission:
    """`POST /api/service/invoke`. `catalogs`: public model -> its `models.<m>.catalog`, where known.
    An unknown service_code is a DialectError with code `service_not_found` (answer 404)."""
    outer = Params.of(body)
    code = outer.text(SERVICE_CODE, required=True)
    service = next((s for s in services if s.service_code == code), None)
    if service is None:
        raise DialectError(
            f"No service {code!r}; GET /api/service/list names those there are.", SERVICE_CODE, "service_not_found"
        )
    found = outer.raw("params")
    given = found[1] if found is not None else {}
    if not isinstance(given, Mapping):
        raise DialectError("The field 'params' must be an object.", "params")
    callback = read_callback(outer, *CALLBACK_FIELDS)
    params = with_metadata(Params.of(given))
    callback = read_callback(params, *CALLBACK_FIELDS) or callback
    params.present("model")
    catalog = (catalogs or {}).get(service.model)
    if catalog in IMAGE_CATALOGS or (catalog not in VIDEO_CATALOGS and (service.category or "").lower() == "image"):
        kind = "image"
    elif catalog in VIDEO_CATALOGS or (service.category or "").lower() == "video":
        kind = "video"
    else:
        raise DialectError(
            f"Service {code!r} runs model {service.model!r}, which is neither an image nor a video model here; "
            f"the operator sets models.{service.model}.catalog in gateway.yaml.",
            SERVICE_CODE,
        )
    request = generation_request(params, model=service.model, kind=kind, catalog=catalog)
    return Submission(
        request=request, public_model=service.model, callback_url=callback, meta={SERVICE_CODE: service.service_code}
    )


def render_service_task(task: Task, links: Links) -> dict[str, Any]:
    """The task itself (the `data` of `GET /api/service/task/{id}`; wrap it with `service_ok`)."""
    failure = failure_of(task)
    return {
        "task_id": task.id,
        "service_code": task.request.get(SERVICE_CODE),
        "model": task.model,
        "status": SERVICE_STATUS.get(task.status, "pending"),
        "progress": progress_of(task),
        "result": results_of(task, links).as_dict() if task.status == SUCCEEDED else None,
        "error": failure[1] if failure else None,
        "reason": failure[0] if failure else None,
        "usage": task.usage or None,
        "cost": task.cost,
        "created_at": ts(task.created_at),
        "updated_at": ts(task.updated_at),
        "finished_at": ts(task.finished_at),
    }


@dataclass(frozen=True, slots=True)
class TaskListQuery:
    page: int = 1
    limit: int = 20
    statuses: tuple[str, ...] = ()  # unified states; empty: all


def parse_task_list(query: Mapping[str, str]) -> TaskListQuery:
    """`GET /api/task/list?page=&limit=&status=`: status words comma-separated, the service's (any case)
    or the unified ones (upper case: PENDING alone, where pending also means CREATED)."""
    numbers = {}
    for name, default, most in (("page", 1, 1_000_000), ("limit", 20, 100)):
        text = (query.get(name) or str(default)).strip()
        if not text.isdigit() or not 1 <= int(text) <= most:
            raise DialectError(f"{name} must be a whole number from 1 to {most}; got {text!r}.", name)
        numbers[name] = int(text)
    statuses: list[str] = []
    for word in filter(None, (w.strip() for w in (query.get("status") or "").split(","))):
        states = (word,) if word in STATES else STATUS_FILTER.get(word.lower())
        if states is None:
            raise DialectError(f"Unknown status {word!r}; use pending, processing, completed or failed.", "status")
        statuses += [s for s in states if s not in statuses]
    return TaskListQuery(page=numbers["page"], limit=numbers["limit"], statuses=tuple(statuses))


def render_service_task_list(
    tasks: Sequence[Task], links: Links, *, total: int, query: TaskListQuery
) -> dict[str, Any]:
    """`GET /api/task/list`, envelope included."""
    return service_ok(
        {
            "tasks": [render_service_task(t, links) for t in tasks],
            "total": total,
            "page": query.page,
            "limit": query.limit,
        }
    )
