"""The neutral view of any task, whatever dialect created it: `GET /v1/tasks/{id}` and
`GET /v1/tasks?taskid=a,b`.

`{id, object: "task", status, reason, progress, model, catalog, dialect, request_id, created_at,
updated_at, finished_at, results: {videos, images, thumbnail}, expires_at, usage, cost, error}`:
the unified status (CREATED | PENDING | RUNNING | SUCCEEDED | FAILED) and reason as the row has them,
the gateway's result URLs, times in unix seconds, `error` `{code, message}` or null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.tasks.dialects.common import DialectError, Links, error_object, progress_of, results_of, ts
from gateway.tasks.model import Task
from providers.tasks.base import FAILED, SUCCEEDED


def render_task(task: Task, links: Links) -> dict[str, Any]:
    return {
        "id": task.id,
        "object": "task",
        "status": task.status,
        "reason": (task.reason or "vendor_failed") if task.status == FAILED else None,
        "progress": progress_of(task),
        "model": task.model,
        "catalog": task.catalog,
        "dialect": task.dialect,
        "request_id": task.request_id or None,
        "created_at": ts(task.created_at),
        "updated_at": ts(task.updated_at),
        "finished_at": ts(task.finished_at),
        "results": results_of(task, links).as_dict(),
        "expires_at": ts(task.results_expire_at) if task.status == SUCCEEDED else None,
        "usage": task.usage or None,
        "cost": task.cost,
        "error": error_object(task),
    }


def render_task_list(tasks: Sequence[Task], links: Links) -> dict[str, Any]:
    """`GET /v1/tasks?taskid=a,b`: the ones found, in the order asked (the caller drops unknown ids)."""
    return {"object": "list", "data": [render_task(t, links) for t in tasks]}


def parse_task_ids(value: str | None, most: int = 100) -> list[str]:
    """`?taskid=a,b` (also repeated by the caller and joined): the ids, deduplicated, in order."""
    ids = list(dict.fromkeys(i.strip() for i in (value or "").split(",") if i.strip()))
    if not ids:
        raise DialectError("Name the task: ?taskid=<id> (several: a,b).", "taskid", "missing_required_parameter")
    if len(ids) > most:
        raise DialectError(f"Too many task ids: {len(ids)}; ask for at most {most} at once.", "taskid")
    return ids
