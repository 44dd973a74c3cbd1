"""The state that is not an event (config in force, key cooldowns, requests and streams in flight, the
usage writer's queue and spool), read when asked: as gauges before a scrape, as JSON for /admin/status."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import Counter

from gateway.ops.metrics import Metrics
from gateway.state import Services


def refresh(services: Services, metrics: Metrics) -> None:
    """Bring the counters and gauges up to date."""
    metrics.flush()
    runtime = services.runtime
    sha = runtime.config_sha256 or ""
    old = metrics.config_sha256
    if old != sha:
        if old is not None:
            metrics.config_info.labels(old).set(0)  # remove() would not reach another worker's files
        metrics.config_info.labels(sha).set(1)
        metrics.config_sha256 = sha
    metrics.config_loaded.set(runtime.loaded_at)
    _sync(metrics, metrics.reloads.labels("ok"), "reloads_ok", runtime.reloads["ok"])
    _sync(metrics, metrics.reloads.labels("failed"), "reloads_failed", runtime.reloads["failed"])
    if metrics.multiprocess is None:
        # Keys and channels a reload removed go; other workers' files are theirs until they exit.
        metrics.key_up.clear()
        metrics.key_cooldown.clear()
    health = runtime.health
    for channel in runtime.config.channels:
        for key in health.status(channel):
            metrics.key_up.labels(channel.name, key.key_id).set(1 if key.usable else 0)
            metrics.key_cooldown.labels(channel.name, key.key_id).set(round(key.cooldown_s, 3))
    metrics.in_flight.set(services.drain.in_flight)
    metrics.streams.set(services.streams)
    usage = services.usage
    metrics.rows_queued.set(usage.queued)
    metrics.rows_held.set(usage.held)
    metrics.spool_bytes.set(_size(usage.spool_path))
    _sync(metrics, metrics.rows_written, "written", usage.written)
    _sync(metrics, metrics.rows_spooled, "spooled", usage.spooled)
    _sync(metrics, metrics.rows_dropped, "dropped", usage.dropped)


def _sync(metrics: Metrics, counter: Counter, name: str, value: int) -> None:
    """Move `counter` by what `value` (a count kept elsewhere) grew since the last refresh."""
    seen = metrics.synced.get(name, 0)
    if value > seen:
        counter.inc(value - seen)
    metrics.synced[name] = value


def _size(path: os.PathLike[str]) -> int:
    with contextlib.suppress(OSError):
        return os.stat(path).st_size
    return 0


def status(services: Services) -> dict[str, Any]:
    """/admin/status: this process's view (with `workers: N`, `workers` holds every worker's)."""
    runtime = services.runtime
    config = runtime.config
    health = runtime.health
    channels = []
    for channel in config.channels:
        keys = []
        for key in health.status(channel):
            state = "probing" if key.probing else "healthy" if key.usable and not key.failures else "failing" if key.usable else "cooling"
            keys.append({
                "key_id": key.key_id,
                "state": state,
                "cooldown_s_left": round(key.cooldown_s, 3),
                "failures": {"consecutive": key.failures, "total": key.failed, "last_reason": key.last_reason or None,
                             "last_error": key.last_error or None,
                             "last_s_ago": round(key.last_failure_s_ago, 3) if key.last_failure_s_ago is not None else None},
            })  # fmt: skip
        channels.append({"name": channel.name, "platform": channel.platform, "enabled": channel.enabled, "keys": keys})
    usage = services.usage
    return {
        "pid": os.getpid(),
        "config": {
            "path": runtime.path,
            "sha256": runtime.config_sha256,
            "loaded_at": runtime.loaded_at,
            "generation": runtime.generation,
            "last_reload_error": runtime.last_reload_error,
            "reloads": dict(runtime.reloads),
        },
        "in_flight": {"requests": services.drain.in_flight, "streams": services.streams},
        "usage": {
            "queued": usage.queued,
            "held": usage.held,
            "written": usage.written,
            "spooled": usage.spooled,
            "dropped": usage.dropped,
            "spool_bytes": _size(usage.spool_path),
        },
        "channels": channels,
    }


def publish(services: Services, directory: str) -> None:
    """With `workers: N`: this worker's status, in the shared directory for /admin/status on any worker
    (written whole, then renamed, so a reader never sees half of it)."""
    path = Path(directory) / f"status-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(OSError):
        tmp.write_bytes(orjson.dumps(status(services)))
        tmp.replace(path)


def worker_statuses(directory: str, own: dict[str, Any]) -> list[dict[str, Any]]:
    """Every live worker's last published status (at most a second old), this worker's as of now."""
    found = {own["pid"]: own}
    for path in Path(directory).glob("status-*.json"):
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            other = orjson.loads(path.read_bytes())
            found.setdefault(other["pid"], other)
    return [found[pid] for pid in sorted(found)]
