"""structlog set-up: JSON lines (or console) on stderr, one access line per request."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

# structlog's live configuration. Its public get_config() builds a dict of five entries a call (~3k
# instructions, on every request here); tests/gateway/test_logs.py fails if a release moves this.
from structlog._config import _CONFIG

from config import LogConfig


def setup_logging(cfg: LogConfig, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr unless given) as `cfg` says."""
    out = stream or sys.stderr
    level = getattr(logging, cfg.level.upper())
    renderer: structlog.types.Processor
    if cfg.format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory: structlog.types.WrappedLogger = structlog.PrintLoggerFactory(out)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(out.buffer)
    processors: list[structlog.types.Processor] = [
        structlog.processors.add_log_level, timestamp, structlog.processors.format_exc_info, renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _json_lines[:] = [renderer, level, out.buffer] if cfg.format != "console" else []
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, format="%(levelname)s %(name)s: %(message)s")


_second: list[Any] = [-1, ""]  # the last whole second seen, and its formatted prefix


def timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """ISO 8601 UTC with microseconds, as structlog's TimeStamper(fmt="iso", utc=True) writes it,
    at a fifth of its cost: the date and time of day are formatted once a second, and the
    microseconds come from integer nanoseconds (no float arithmetic, ~0.4 us less a line)."""
    sec, micro = divmod(time.time_ns() // 1000, 1_000_000)
    second = _second
    if sec != second[0]:
        second[0], second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
    event_dict["timestamp"] = f"{second[1]}{micro:06d}Z"
    return event_dict


# While the JSON set-up above is in force: its renderer, level, and stream (see AccessLog).
_json_lines: list[Any] = []


class AccessLog:
    """The one line per request, at info.

    Under the JSON set-up it writes exactly what structlog would (same keys, same order) without
    structlog's per-call machinery: a bound logger, four processors and a lock cost about 10 us a
    request. Lines finished in the same event-loop turn go out in one write (a write and flush per
    line cost about 25 us under load); the write happens on the next turn, so nothing waits on a
    timer. Under any other configuration (console format, a test's `capture_logs()`) it goes
    through structlog.
    """

    __slots__ = ("_fallback", "_lines", "_scheduled", "_stream")

    def __init__(self, name: str) -> None:
        self._fallback = CachedLogger(name)
        self._lines: list[bytes] = []
        self._stream: Any = None
        self._scheduled = False

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """Log `fields` (taken over, not copied) as structlog's `log.info(event, **fields)` would."""
        fast = _json_lines
        processors: Any = _CONFIG.default_processors  # a list, typed as any iterable
        # structlog.testing.capture_logs() refills the same processors list, so its last entry (the
        # renderer) is what tells that the set-up still holds.
        if fast and processors and processors[-1] is fast[0]:
            if fast[1] > logging.INFO:
                return
            fields["event"] = event
            fields["level"] = "info"
            timestamp(None, "", fields)
            self._stream = fast[2]
            self._lines.append(orjson.dumps(fields) + b"\n")
            if not self._scheduled:
                try:
                    asyncio.get_running_loop().call_soon(self.flush)
                except RuntimeError:  # no loop: write now
                    self.flush()
                    return
                self._scheduled = True
            return
        self._fallback.get().info(event, **fields)

    def flush(self) -> None:
        self._scheduled = False
        lines, self._lines = self._lines, []
        if not lines:
            return
        stream = self._stream
        stream.flush()  # whatever structlog wrote before these lines goes first
        data = b"".join(lines)
        raw = getattr(stream, "raw", None)
        if raw is None:  # not a buffered file (a test's capture): one write
            stream.write(data)
            stream.flush()
            return
        # Whole lines, at most PIPE_BUF bytes a write: workers sharing one pipe never split a line.
        # A Python step per write, not per line: where each run of lines ends is found by bisection.
        view = memoryview(data)
        ends = list(itertools.accumulate(map(len, lines)))
        start = i = 0
        while i < len(ends):
            i = max(bisect.bisect_right(ends, start + _PIPE_BUF, i), i + 1)  # a longer line goes alone
            _write_all(raw, view[start : ends[i - 1]])
            start = ends[i - 1]


def _write_all(raw: Any, view: memoryview) -> None:
    while view:
        view = view[raw.write(view) :]


_PIPE_BUF = 4096


class CachedLogger:
    """A structlog logger for a line written on every request.

    A module-level `structlog.get_logger()` is a lazy proxy that assembles a new bound logger on each
    call (about 8 us). This one assembles it once and again only when `structlog.configure()` has
    changed the processors, level or output: after a reload, or inside `structlog.testing.capture_logs()`.
    """

    __slots__ = ("_bound", "_key", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._key: tuple[int, Any, Any] | None = None
        self._bound: Any = None

    def get(self) -> Any:
        cfg = structlog.get_config()
        key = (id(cfg["processors"]), cfg["wrapper_class"], cfg["logger_factory"])
        if key != self._key:
            # The bound logger holds the processors list, so its id cannot be reused while cached.
            self._bound = structlog.get_logger(self._name).bind()
            self._key = key
        return self._bound
