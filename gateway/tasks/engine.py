"""The task engine: submit a task to a vendor, read its state, settle it exactly once.

Submission. The row is written (CREATED) before the vendor is called, so a task the vendor may have
accepted always has a row; the client gets its id only once the vendor has acknowledged it. A channel
is tried after another only while the vendor surely did not accept the task (the connection failed, or
it answered 401/403/408/429/5xx); once the request may have reached it (a timeout, a dropped answer),
the task fails, refunded, and is not sent again.

Polling (gateway.tasks.poller calls `poll`). Every change is a compare-and-swap on the row's version,
so two pollers (or a poller and a DELETE) cannot both move a task on. A poll that fails (network,
429, 5xx, an unreadable answer) is retried later with backoff; a task fails only on the vendor's word,
on 404/410, or after `tasks.timeout_s`.

Billing. At submission the task's price (from the price snapshot kept on the row) is held against the
key's budget. The final status and the task's one usage row commit in one transaction
(`TaskStore.settle`): billed with the cost from the vendor's usage, or refunded at no cost. The hold is
released after; a crash in between is mended at the next start, which rebuilds holds from the rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import structlog
from multidict import CIMultiDictProxy

from config import Channel, ClientKey, Config, sha256_hex
from gateway.billing.pricing import Quantities, cost, normalize_resolution, price_from_dict
from gateway.errors import GatewayError, mask_credentials
from gateway.ledger.sink import UsageRow
from gateway.relay.health import Health
from gateway.state import Services
from gateway.tasks.model import BILLED, CALLBACK_PENDING, REFUNDED, RESERVED, Task, new_task_id
from gateway.tasks.store import TaskStore
from providers.tasks import TASK_VENDORS, TaskVendor
from providers.tasks.base import (
    CREATED,
    EXPIRED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TIMEOUT,
    VENDOR_FAILED,
    TaskRequest,
    TaskUsage,
    VendorCall,
    VendorError,
    VendorState,
)

log = structlog.get_logger("gateway.tasks")

MAX_ANSWER = 4 * 1024 * 1024  # a vendor's JSON answer about a task; files are streamed, never read whole
MAX_BACKOFF_S = 300.0
MAX_POLL_INTERVAL_S = 60.0
SUBMIT_GRACE_S = 120.0  # a CREATED task without a vendor id this old was cut off mid-submission (a crash)
DEFAULT_VIDEO_SECONDS = 5.0  # what a video is priced at up front when the request names no duration
_RETRY_SUBMIT = frozenset({401, 403, 408, 429})  # and 5xx: the vendor did not take the task


class SubmitFailed(GatewayError):
    """No vendor took the task; the row is FAILED and refunded."""


@dataclasses.dataclass(slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Uncertain(Exception):
    """The request may have reached the vendor, but no answer came back (timeout, connection dropped)."""


def key_id(api_key: str) -> str:
    """A vendor key's id on the row: a fingerprint, never the key."""
    return sha256_hex(api_key)[:16]


def vendor_of(channel: Channel) -> TaskVendor | None:
    return TASK_VENDORS.get(channel.provider)


def poll_interval(config: Config, task: Task, now: float) -> float:
    """How long until the next poll: `tasks.poll_interval_s` while the task is young, then a twentieth of
    its age, up to a minute: a video that has run ten minutes is not done a second sooner for a poll
    every 5 s, and 10,000 of them would cost the vendor 2,000 polls a second."""
    return min(max(config.tasks.poll_interval_s, (now - task.created_at) / 20), max(MAX_POLL_INTERVAL_S, config.tasks.poll_interval_s))


def task_quantities(task: Task, usage: TaskUsage | None) -> Quantities:
    """What a task is billed for: the vendor's usage where it said, else what was asked."""
    asked = task.request
    resolution = (usage.resolution if usage else None) or asked.get("resolution") or asked.get("size")
    q = Quantities(resolution=normalize_resolution(resolution))
    if task.catalog in ("t2i", "i2i"):
        q.images = int((usage.images if usage and usage.images else None) or asked.get("n") or 1)
    else:
        q.audio_seconds = float((usage.seconds if usage and usage.seconds else None) or asked.get("seconds") or DEFAULT_VIDEO_SECONDS)
    if usage is not None and usage.tokens:
        q.completion_tokens = usage.tokens  # Ark bills video by tokens: priced as output
    return q


def task_cost(task: Task, usage: TaskUsage | None) -> float | None:
    return cost(task_quantities(task, usage), price_from_dict(task.price))


class TaskEngine:
    """Submits, polls and settles tasks for one process, over its store and the services' upstream session."""

    def __init__(self, store: TaskStore, services: Services) -> None:
        self.store = store
        self.services = services

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.services.upstream.session

    @property
    def health(self) -> Health:
        return self.services.runtime.health

    # -- submission ------------------------------------------------------------------------------

    async def submit(
        self,
        config: Config,
        key: ClientKey,
        channels: list[Channel],
        request: TaskRequest,
        *,
        task: Task,
        remix_of: Task | None = None,
    ) -> Task:
        """Send `task` (not yet stored; its channel fields are filled here) to the first of `channels`
        that takes it. Returns the stored task, acknowledged by its vendor; raises a GatewayError (the
        row, if one was written, FAILED and refunded) when none does."""
        last: str | None = None
        last_status = 502
        stored = False
        tries = config.routing.retries + 1
        for channel in channels[:tries]:
            vendor = vendor_of(channel)
            if vendor is None:
                continue
            upstream_model = channel.upstream_model(task.model)
            api_key = self.health.pick_key(channel)
            try:
                if remix_of is not None:
                    assert remix_of.vendor_task_id is not None
                    call = vendor.remix(remix_of.vendor_task_id, request.prompt, api_key)
                    if call is None:
                        raise VendorError(f"channel {channel.name!r} ({vendor.name}) cannot remix a video")
                else:
                    call = vendor.submit(dataclasses.replace(request, model=upstream_model), api_key)
            except VendorError as exc:
                self.health.release(channel, api_key)
                last, last_status = exc.message, 400
                continue
            fields: dict[str, Any] = {"channel": channel.name, "vendor": vendor.name, "upstream_model": upstream_model,
                      "vendor_key_id": key_id(api_key)}  # fmt: skip
            if not stored:
                task = dataclasses.replace(task, **fields)
                await self.store.create(task)  # before the vendor sees it: a task it may take always has a row
                self._hold(task)
                stored = True
            else:
                task = await self._update(task, **fields)
            try:
                # Shielded: a client that hangs up now does not leave a task the vendor took without its id.
                answer = await asyncio.shield(self.send(channel, call))
            except Uncertain as exc:
                self.health.release(channel, api_key)
                await self._abandon(task, f"the submission to channel {channel.name!r} got no answer ({exc}); "
                                          "it is not sent again, since the vendor may have taken it")  # fmt: skip
                raise SubmitFailed(504, f"Channel {channel.name!r} did not answer the task submission ({exc}); "
                                        "the task was not created. Send it again.", code="upstream_timeout") from None  # fmt: skip
            except aiohttp.ClientError as exc:  # never connected: nothing reached the vendor
                self.health.release(channel, api_key)
                last, last_status = f"channel {channel.name!r}: {type(exc).__name__}", 502
                continue
            if answer.status < 300:
                self.health.success(channel, api_key)
                try:
                    state = vendor.accepted(answer.body)
                except VendorError as exc:
                    await self._abandon(task, f"channel {channel.name!r} took the task but its answer is unreadable: {exc.message}")
                    raise SubmitFailed(502, f"Channel {channel.name!r} answered the task submission unreadably "
                                            f"({exc.message}).", code="upstream_error") from None  # fmt: skip
                return await self._accepted(task, state, config)
            message = mask_credentials(vendor.error(answer.status, answer.body))[:500]
            if answer.status in _RETRY_SUBMIT or answer.status >= 500:
                self.health.failure(channel, api_key, config.routing, cool_now=answer.status in (401, 403),
                                    reason=message, kind=str(answer.status))  # fmt: skip
                last, last_status = f"channel {channel.name!r} answered {answer.status}: {message}", 502
                continue
            self.health.success(channel, api_key)  # the vendor answered: the request was at fault
            await self._abandon(task, f"refused by the vendor ({answer.status}): {message}")
            status = answer.status if answer.status in (400, 404, 409, 413, 422) else 400
            raise SubmitFailed(status, f"The vendor refused the task: {message}", code="vendor_refused")
        if stored:
            await self._abandon(task, last or "no channel took the task")
        if last is None:
            raise SubmitFailed(503, f"No enabled channel can run async {task.catalog} for model {task.model!r}.", code="no_channel")
        raise SubmitFailed(last_status, f"No channel took the task; the last: {last}.",
                           code="vendor_refused" if last_status == 400 else "upstream_error")  # fmt: skip

    async def _accepted(self, task: Task, state: VendorState, config: Config) -> Task:
        now = time.time()
        changes: dict[str, Any] = {
            "vendor_task_id": state.vendor_task_id,
            "status": state.state if state.state in (PENDING, RUNNING) else PENDING,
            "vendor_status": state.vendor_status,
            "progress": state.progress or 0,
            "next_poll_at": now + config.tasks.poll_interval_s,
        }
        if state.state in (SUCCEEDED, FAILED):  # a vendor that finished at once: the next poll settles it
            changes["next_poll_at"] = now
        return await self._update(task, **changes)

    async def _abandon(self, task: Task, why: str) -> None:
        """A task no vendor holds: FAILED and refunded, with no usage row (the submitting request's
        own row records the failure)."""
        await self._update(task, status=FAILED, reason=VENDOR_FAILED, error=why[:500], billing=REFUNDED,
                           finished_at=time.time(), callback_state=None)  # fmt: skip
        self._release(task, None)

    async def _update(self, task: Task, **changes: Any) -> Task:
        new = await self.store.update(task, **changes)
        if new is None:  # only this request knows a task still being submitted
            raise RuntimeError(f"task {task.id} changed under its submission")
        return new

    # -- polling ---------------------------------------------------------------------------------

    async def poll(self, task: Task, config: Config) -> Task | None:
        """Read the vendor's state of `task` once and move the row on. Returns the task as it ends up,
        or None when another writer moved it first. A final task is settled (billed or refunded)."""
        now = time.time()
        channel = next((c for c in config.channels if c.name == task.channel), None)
        vendor = TASK_VENDORS.get(task.vendor)
        if now - task.created_at > config.tasks.timeout_for(task.catalog):
            return await self.fail(task, TIMEOUT, f"not finished after {config.tasks.timeout_for(task.catalog):g} s")
        if task.vendor_task_id is None:  # due only once SUBMIT_GRACE_S passed: the gateway stopped mid-submission
            return await self.fail(task, VENDOR_FAILED, "the submission was cut off before the vendor acknowledged it")
        api_key = vendor_key(channel, task.vendor_key_id)
        if channel is None or vendor is None or api_key is None:
            what = f"channel {task.channel!r}" if channel is None else "the vendor key that created it"
            return await self.retry(task, config, f"{what} is no longer in the config", None)
        try:
            answer = await self.send(channel, vendor.poll(task.vendor_task_id, api_key))
        except (aiohttp.ClientError, Uncertain) as exc:
            return await self.retry(task, config, f"{type(exc).__name__}: {exc}", None)
        if answer.status in (404, 410):
            return await self.fail(task, EXPIRED, f"the vendor no longer knows the task ({answer.status})")
        if answer.status >= 300:
            message = mask_credentials(vendor.error(answer.status, answer.body))[:300]
            return await self.retry(task, config, f"{answer.status}: {message}", answer.headers.get("Retry-After"))
        try:
            state = vendor.read(answer.body)
        except VendorError as exc:
            return await self.retry(task, config, f"unreadable answer: {exc.message}", None)
        return await self.apply(task, state, config)

    async def apply(self, task: Task, state: VendorState, config: Config) -> Task | None:
        """Move `task` to what the vendor said."""
        now = time.time()
        if state.state == SUCCEEDED:
            videos: list[str | None] = list(state.videos)
            if not videos and not state.images and task.catalog not in ("t2i", "i2i"):
                videos = [None]  # a file the vendor serves only by its own content call (Sora): no URL
            results = {"videos": videos, "images": list(state.images), "thumbnail": state.thumbnail}
            return await self.settle(task, SUCCEEDED, state, results=results, expires_at=state.expires_at)
        if state.state == FAILED:
            return await self.settle(task, FAILED, state, reason=state.reason or VENDOR_FAILED, error=state.message)
        if not state.known and state.vendor_status != task.vendor_status:
            log.warning("task_status_unknown", task_id=task.id, channel=task.channel, vendor_status=state.vendor_status)
        changes: dict[str, Any] = {"vendor_status": state.vendor_status, "poll_failures": 0,
                                   "next_poll_at": now + poll_interval(config, task, now)}  # fmt: skip
        if state.state in (PENDING, RUNNING) and task.status in (CREATED, PENDING, RUNNING):
            changes["status"] = RUNNING if state.state == RUNNING or task.status == RUNNING else PENDING
        if state.progress is not None:
            changes["progress"] = max(task.progress, min(state.progress, 99))
        return await self.store.update(task, **changes)

    async def retry(self, task: Task, config: Config, why: str, retry_after: str | None) -> Task | None:
        """A poll that told nothing: try again later, backing off."""
        failures = task.poll_failures + 1
        delay = min(config.tasks.poll_interval_s * 2 ** min(failures, 10), MAX_BACKOFF_S)
        wait = _seconds(retry_after)
        if wait is not None:
            delay = max(delay, min(wait, 3600.0))
        if failures in (1, 5) or failures % 20 == 0:
            log.warning("task_poll_failed", task_id=task.id, channel=task.channel, failures=failures, error=why, retry_in_s=round(delay, 1))
        return await self.store.update(task, poll_failures=failures, next_poll_at=time.time() + delay)

    async def fail(self, task: Task, reason: str, message: str) -> Task | None:
        state = VendorState(state=FAILED, vendor_status=task.vendor_status or "", reason=reason, message=message)
        return await self.settle(task, FAILED, state, reason=reason, error=message)

    async def settle(
        self,
        task: Task,
        status: str,
        state: VendorState,
        *,
        results: dict[str, Any] | None = None,
        expires_at: float | None = None,
        reason: str | None = None,
        error: str | None = None,
    ) -> Task | None:
        """The final status and the task's one usage row, in one transaction."""
        now = time.time()
        ok = status == SUCCEEDED
        usage = state.usage
        q = task_quantities(task, usage)
        amount = task_cost(task, usage) if ok else None
        changes: dict[str, Any] = {
            "status": status,
            "vendor_status": state.vendor_status or task.vendor_status,
            "progress": 100 if ok else task.progress,
            "reason": None if ok else reason,
            "error": None if ok else (mask_credentials(error)[:500] if error else None),
            "usage": (usage.as_dict() if usage else None) or None,
            "cost": amount if ok else 0.0,
            "billing": BILLED if ok else REFUNDED,
            "finished_at": now,
            "callback_next_at": now if task.callback_url else None,
        }
        if results is not None:
            changes["results"] = results
            changes["results_expire_at"] = expires_at
        row = UsageRow(
            request_id=task.request_id or task.id,
            ts=task.created_at,
            key_name=task.key_name,
            platform=task.platform,
            endpoint=f"tasks/{task.catalog}",
            model=task.model,
            upstream_model=task.upstream_model,
            channel=task.channel,
            status=200 if ok else 424,
            images=q.images if ok else 0,
            audio_seconds=q.audio_seconds if ok else 0.0,
            completion_tokens=q.completion_tokens if ok else 0,
            total_tokens=q.completion_tokens if ok else 0,
            resolution=q.resolution,
            latency_ms=round((now - task.created_at) * 1000, 3),
            attempts=1,
            cost=amount if ok else 0.0,
            error=None if ok else f"task {reason}: {error or ''}"[:500],
            task_id=task.id,
        )
        settled = await self.store.settle(task, changes, row)
        if settled is not None:
            self._release(task, amount if ok else None)
            log.info("task_settled", task_id=task.id, key_name=task.key_name, model=task.model, channel=task.channel,
                     status=status, reason=settled.reason, cost=settled.cost, seconds=round(now - task.created_at, 1))  # fmt: skip
        return settled

    def _hold(self, task: Task) -> None:
        """The task's price held against its key's budget from the moment its row exists."""
        limiter, key = self.services.limiter, self._key(task)
        if limiter is not None and key is not None and key.budget is not None:
            limiter.hold(key, task.reserved)

    def _release(self, task: Task, spent: float | None) -> None:
        """The settled task's hold leaves the key's budget, and its cost is spent."""
        limiter, key = self.services.limiter, self._key(task)
        if limiter is not None and key is not None and key.budget is not None:
            limiter.release(key, task.reserved, spent)

    def _key(self, task: Task) -> ClientKey | None:
        return next((k for k in self.services.runtime.config.keys if k.name == task.key_name), None)

    # -- vendor calls ----------------------------------------------------------------------------

    async def send(self, channel: Channel, call: VendorCall, *, max_answer: int = MAX_ANSWER) -> Answer:
        """One call to a vendor. Raises aiohttp.ClientError when it never connected (nothing was sent),
        `Uncertain` when the request may have gone out but no answer came back."""
        headers = {**channel.headers, **call.headers}
        data: Any = None
        if call.json is not None:
            data = orjson.dumps(call.json)
            headers["Content-Type"] = "application/json"
        elif call.form is not None:
            form = aiohttp.FormData()
            for name, value, filename, content_type in call.form:
                form.add_field(name, value, filename=filename, content_type=content_type)
            data = form
        url = call.url or channel.base_url + call.path
        t = channel.timeouts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, sock_read=t.first_byte_s)
        try:
            async with self.session.request(
                call.method, url, data=data, headers=headers, params=call.query, timeout=timeout, allow_redirects=False
            ) as r:
                body = await r.content.read(max_answer)
                return Answer(r.status, r.headers, body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Uncertain(type(exc).__name__) from None

    def content_source(self, task: Task, channel: Channel | None, variant: str, index: int) -> tuple[str, dict[str, str]] | None:
        """Where one result file comes from: the URL and the headers to send (a vendor's key where its
        files need one, as Sora's do; none for a signed URL); None when the task has no such file."""
        vendor = TASK_VENDORS.get(task.vendor)
        urls = task.results.get("images" if variant == "image" else "videos") or []
        url = task.results.get("thumbnail") if variant == "thumbnail" else (urls[index] if index < len(urls) else None)
        api_key = vendor_key(channel, task.vendor_key_id)
        if channel is not None and vendor is not None and api_key is not None and task.vendor_task_id is not None:
            call = vendor.content(task.vendor_task_id, variant, url, api_key)
            if call is not None:
                target = call.url or channel.base_url + call.path
                if call.query:
                    target += "?" + urlencode(call.query)
                return target, {**channel.headers, **call.headers}
        return (url, {}) if url else None


def vendor_key(channel: Channel | None, fingerprint: str | None) -> str | None:
    """The channel's key the task was created with (polls and downloads use the same account)."""
    if channel is None:
        return None
    for key in channel.api_keys:
        if key_id(key) == fingerprint:
            return key
    return None


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def new_task(
    key: ClientKey, catalog: str, model: str, dialect: str, *, request_id: str, platform: str | None,
    request: Mapping[str, Any], price: dict[str, Any] | None, callback_url: str | None, origin: str | None,
) -> Task:
    """A task about to be submitted; the engine fills in the channel."""
    return Task(
        id=new_task_id(), key_name=key.name, catalog=catalog, model=model, upstream_model=model, channel="",
        vendor="", dialect=dialect, request_id=request_id, platform=platform, request=dict(request), price=price,
        callback_url=callback_url, callback_state=CALLBACK_PENDING if callback_url else None, origin=origin,
        billing=RESERVED, next_poll_at=time.time() + SUBMIT_GRACE_S,  # the poller keeps off while it is submitted
    )  # fmt: skip
