"""The background work of async tasks, in one process of the gateway (worker 0 with `workers: N`).

- Polls due tasks in parallel: each due task is polled at once, at most `PER_CHANNEL` at a time and
  `POLLS_PER_S` a second per channel (vendors limit task queries), `MAX_IN_FLIGHT` in all; a round
  never waits for a slow vendor. What is due comes from the store (`next_poll_at`), so a restart picks
  up where it left off. Old tasks are polled less often (gateway.tasks.engine.poll_interval). A round
  reads the `BATCH` most overdue tasks: a channel with more overdue than that delays other channels'.
- Copies finished files under `data/tasks/` when `tasks.store_results` is on.
- Delivers callbacks of settled tasks (gateway.tasks.webhooks), retried with backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import structlog

from gateway import background
from gateway.tasks import webhooks
from gateway.tasks.content import store_file
from gateway.tasks.dialects import ContentLinks, render
from gateway.tasks.engine import TaskEngine
from gateway.tasks.model import CALLBACK_DELIVERED, CALLBACK_FAILED, CALLBACK_PENDING, CALLBACK_REFUSED, Task
from providers.tasks.base import SUCCEEDED

log = structlog.get_logger("gateway.tasks")

PER_CHANNEL = 8  # polls in flight per channel
POLLS_PER_S = 20.0  # polls started per channel and second (DashScope allows about 20 queries a second)
MAX_IN_FLIGHT = 256
BATCH = 500  # due tasks read per round
IDLE_S = 0.5  # how often the store is asked what is due


def links_for(task: Task) -> ContentLinks:
    """Absolute links to the gateway's content route, as the client reached the gateway."""
    path = "/v1/videos/{id}/content" if task.dialect == "openai_video" else "/v1/tasks/{id}/content"
    return ContentLinks(base_url=task.origin or "", path=path)


def result_dir(data_dir: str, task_id: str) -> Path:
    """Where a task's stored files go: data/tasks/<id>/ (`Config.data_dir`, never derived from a database URL)."""
    return Path(data_dir) / "tasks" / task_id


class Poller:
    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine
        self._in_flight: set[str] = set()
        self._per_channel: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(PER_CHANNEL))
        self._all = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (poll tokens, when counted)
        self._jobs: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._hooks: aiohttp.ClientSession | None = None
        self.wake = asyncio.Event()  # set by a submission, so its first poll is not a round late

    def start(self) -> None:
        self._hooks = webhooks.new_session()
        self._loops = [asyncio.create_task(self._poll_loop(), name="task-poller"),
                       asyncio.create_task(self._callback_loop(), name="task-callbacks")]  # fmt: skip

    async def stop(self) -> None:
        await background.stop(*self._loops)  # a round's timeout may take the cancel for its own
        await asyncio.gather(*self._jobs, return_exceptions=True)  # the polls under way finish
        if self._hooks is not None:
            await self._hooks.close()

    # -- polling ---------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task_poller_failed")
            try:
                await asyncio.wait_for(self.wake.wait(), min(IDLE_S, self.engine.services.runtime.config.tasks.poll_interval_s))
            except TimeoutError:
                pass
            self.wake.clear()

    async def round(self) -> int:
        """Start a poll of every due task not being polled already, within each channel's poll rate;
        how many were started. A task left out stays due: the next round takes it."""
        if not await self.engine.store.lead():
            return 0  # another replica polls (gateway.tasks.pg_store: one holds the lock)
        now = time.time()
        due = await self.engine.store.due(now, BATCH)
        started = 0
        for task in due:
            if task.id not in self._in_flight and self._may_poll(task.channel, now):
                self._spawn(task, self._poll_one(task), "task_poll_crashed")
                started += 1
        return started

    def _spawn(self, task: Task, work: Coroutine[Any, Any, Any], crashed: str) -> None:
        """Run `work` on `task` in the background, one job per task at a time; a crash is logged."""
        self._in_flight.add(task.id)

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(crashed, task_id=task.id)
            finally:
                self._in_flight.discard(task.id)

        job = asyncio.create_task(run())
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    def _may_poll(self, channel: str, now: float) -> bool:
        """A token bucket per channel: POLLS_PER_S, with a second's burst."""
        tokens, last = self._buckets.get(channel, (POLLS_PER_S, now))
        tokens = min(POLLS_PER_S, tokens + (now - last) * POLLS_PER_S)
        if tokens < 1:
            self._buckets[channel] = (tokens, now)
            return False
        self._buckets[channel] = (tokens - 1, now)
        return True

    async def _poll_one(self, task: Task) -> None:
        async with self._all, self._per_channel[task.channel]:
            config = self.engine.services.runtime.config
            done = await self.engine.poll(task, config)
            if done is not None and done.status == SUCCEEDED and config.tasks.store_results and not done.stored:
                await self.keep_results(done)

    async def keep_results(self, task: Task) -> Task | None:
        """Copy the task's files under data/tasks/<id>/ so they outlive the vendor's URLs."""
        engine = self.engine
        config = engine.services.runtime.config
        channel = next((c for c in config.channels if c.name == task.channel), None)
        stored: dict[str, str] = {}
        files = [("video", i) for i in range(len(task.results.get("videos") or ()))]
        files += [("image", i) for i in range(len(task.results.get("images") or ()))]
        files += [("thumbnail", 0)] if task.results.get("thumbnail") else []
        for variant, index in files:
            source = engine.content_source(task, channel, variant, index)
            if source is None:
                continue
            dest = result_dir(config.data_dir, task.id) / f"{variant}-{index}"
            try:
                await store_file(engine.session, source[0], source[1], dest)
            except Exception as exc:
                log.warning("task_result_not_stored", task_id=task.id, variant=variant, error=type(exc).__name__)
                continue
            stored[f"{variant}-{index}"] = str(dest)
        if not stored:
            return None
        return await engine.store.update(task, stored=stored)

    # -- callbacks -------------------------------------------------------------------------------

    async def _callback_loop(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task_callbacks_failed")
            await asyncio.sleep(IDLE_S)

    async def deliver_due(self) -> None:
        store = self.engine.store
        if not await store.lead():
            return  # the replica that polls delivers
        for task in await store.callbacks_due(time.time(), 100):
            if task.id not in self._in_flight:
                self._spawn(task, self.deliver(task), "task_callback_crashed")

    async def deliver(self, task: Task) -> Task | None:
        """One delivery attempt of a settled task's callback."""
        assert task.callback_url is not None and self._hooks is not None
        config = self.engine.services.runtime.config
        key = next((k for k in config.keys if k.name == task.key_name), None)
        body = orjson.dumps(render(task, links_for(task)))
        event = "task.completed" if task.status == SUCCEEDED else "task.failed"
        result = await webhooks.deliver(
            self._hooks, task.callback_url, body, secret=key.webhook_secret if key else None, event=event,
            delivery_id=f"{task.id}-{task.callback_attempts + 1}", allow_private=config.tasks.allow_private_callbacks,
        )  # fmt: skip
        attempts = task.callback_attempts + 1
        if result.delivered:
            state, next_at = CALLBACK_DELIVERED, None
        elif result.permanent:
            state, next_at = CALLBACK_REFUSED, None
        else:
            delay = webhooks.next_attempt_delay(attempts, retry_after=result.retry_after)
            state, next_at = (CALLBACK_PENDING, time.time() + delay) if delay is not None else (CALLBACK_FAILED, None)
        if state != CALLBACK_PENDING or attempts in (1, 3):
            log.info("task_callback", task_id=task.id, state=state, attempts=attempts, status=result.status, error=result.error)
        return await self.engine.store.update(task, callback_state=state, callback_attempts=attempts, callback_next_at=next_at)
