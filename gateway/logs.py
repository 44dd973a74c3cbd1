"""structlog set-up: JSON lines (or console) on stderr, one access line per request."""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import functools
import io
import itertools
import logging
import os
import select
import socket
import stat
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, BinaryIO, TextIO, cast

import orjson
import structlog

from config import LogConfig
from gateway.errors import mask_credentials


def _processors_reader() -> Callable[[], Any]:
    """How the access line reads structlog's processors list on every request.

    structlog's internal `_config._CONFIG.default_processors` (setup.cfg bounds structlog to the
    versions that keep it), since the public `get_config()` builds a dict of five entries a call (~3k
    instructions a request); the public call where a release has moved it.
    tests/gateway/test_logs.py checks both read the same list.
    """
    try:
        from structlog._config import _CONFIG
    except ImportError:
        return lambda: structlog.get_config()["processors"]
    if not isinstance(getattr(_CONFIG, "default_processors", None), list):
        return lambda: structlog.get_config()["processors"]
    return lambda: _CONFIG.default_processors


_processors = _processors_reader()


def setup_logging(cfg: LogConfig, stream: TextIO | None = None) -> None:
    """Log to `stream` (stderr unless given) as `cfg` says."""
    out = stream or sys.stderr
    level = getattr(logging, cfg.level.upper())
    outlet: _Outlet | None = _json_lines[2] if _json_lines else None
    if outlet is not None and (cfg.format == "console" or outlet.stream is not out.buffer):
        outlet.close()
        outlet = None
    renderer: structlog.types.Processor
    if cfg.format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory: structlog.types.WrappedLogger = structlog.PrintLoggerFactory(out)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        outlet = outlet or _Outlet(out.buffer)  # a reload keeps it, and any lines waiting for a full pipe
        factory = structlog.BytesLoggerFactory(cast(BinaryIO, _LineFile(outlet)))  # every JSON line the same way
    processors: list[structlog.types.Processor] = [
        structlog.processors.add_log_level, timestamp, process_fields, structlog.processors.format_exc_info, renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _json_lines[:] = [renderer, level, outlet] if outlet is not None else []
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskCredentials) for f in handler.filters):
            handler.addFilter(MaskCredentials())


class MaskCredentials(logging.Filter):
    """Masks keys in the lines libraries log through the standard `logging` module (aiohttp's, say, which
    quotes a WebSocket client's subprotocols, one of which may carry its key)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_credentials(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_credentials(record.exc_text)
        return True


def finish_logging(within_s: float = 1.0) -> None:
    """At exit: lines still waiting for a full pipe get up to `within_s` to go (see _Outlet)."""
    if _json_lines:
        _json_lines[2].finish(within_s)


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


# Which process writes: its pid and its worker index (0 with `workers: 1`; None in the parent that
# supervises `workers: N`), on every structured line so that lines of several workers sharing one
# stderr can be told apart. A fork refreshes the pid; `set_worker` the index.
_process: list[Any] = [os.getpid(), 0]
os.register_at_fork(after_in_child=lambda: _process.__setitem__(0, os.getpid()))


def set_worker(index: int | None) -> None:
    """This process is worker `index` (None: the supervising parent) from now on, in every line."""
    _process[:] = [os.getpid(), index]


def worker_index() -> int:
    """This worker's index: 0 with `workers: 1` (and in the supervising parent)."""
    return _process[1] or 0


def process_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`pid` and `worker` of the process writing; a line that names another process (the parent's
    `worker_died`) says so in fields of its own."""
    event_dict["pid"], event_dict["worker"] = _process
    return event_dict


# While the JSON set-up above is in force: its renderer, level, and where lines go (see AccessLog).
_json_lines: list[Any] = []


def _json_line(event: str, level: str, fields: dict[str, Any]) -> bytes:
    """`fields` (taken over) as the JSON set-up renders a structlog line: same keys, same order."""
    fields["event"] = event
    fields["level"] = level
    timestamp(None, "", fields)
    fields["pid"], fields["worker"] = _process
    return orjson.dumps(fields) + b"\n"


class AccessLog:
    """The one line per request, at info.

    Under the JSON set-up it writes exactly what structlog would (same keys, same order) without
    structlog's per-call machinery: a bound logger, four processors and a lock cost about 10 us a
    request. Lines finished in the same event-loop turn go out together, on the next turn, through
    the outlet (a write and flush per line cost about 25 us under load), so nothing waits on a timer. Under any other configuration (console format, a test's `capture_logs()`) it goes
    through structlog.
    """

    __slots__ = ("_fallback", "_lines", "_outlet", "_scheduled")

    def __init__(self, name: str) -> None:
        self._fallback = CachedLogger(name)
        self._lines: list[bytes] = []
        self._outlet: _Outlet | None = None
        self._scheduled = False

    def info(self, event: str, fields: dict[str, Any]) -> None:
        """Log `fields` (taken over, not copied) as structlog's `log.info(event, **fields)` would."""
        fast = _json_lines
        processors: Any = _processors()  # a list, typed as any iterable
        # structlog.testing.capture_logs() refills the same processors list, so its last entry (the
        # renderer) is what tells that the set-up still holds.
        if fast and processors and processors[-1] is fast[0]:
            if fast[1] > logging.INFO:
                return
            self._outlet = fast[2]
            self._lines.append(_json_line(event, "info", fields))
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
        if lines and self._outlet is not None:
            self._outlet.write(lines)


_PIPE_BUF = 4096  # a pipe takes a write of at most this many bytes whole, never interleaved with another
_BACKLOG_BYTES = 8 << 20  # lines held for a pipe or socket whose reader has stopped; beyond, dropped and counted


class _Outlet:
    """Where the JSON lines go (the access lines and structlog's): the stream's raw file. A regular
    file takes them in one write; anything else in runs of whole lines of at most PIPE_BUF bytes, so
    workers sharing one pipe never split a line.

    A pipe or a socket (docker's and systemd's stderr) is written through a handle of its own that
    never waits. When the reader stops reading and the pipe fills, the lines wait here, up to
    _BACKLOG_BYTES, for the loop to say it is writable again; past that they are dropped and counted,
    and a line says how many once the pipe drains. A plain write would stop the event loop, and every
    request in the process, until the reader came back. A regular file or a terminal is written at once.
    A line that cannot be written (the reader gone, a full disk) is counted, never raised: a log line
    must not abort a request or the shutdown that writes the last usage rows.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        # Python's stderr is a bare FileIO when it is not a terminal; other files have a buffer over one.
        # None: not a file at all (a test's capture).
        self.raw: Any = stream if isinstance(stream, io.FileIO) else getattr(stream, "raw", None)
        self._handle: Any = None  # the pipe's own descriptor or the socket, while open
        self._send: Callable[[memoryview], int] | None = None
        self._pending: collections.deque[memoryview] = collections.deque()
        self._backlog = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # watching for writability on it
        self._gone = False  # the reader has gone for good (EPIPE)
        self._file = False  # a regular file: one write holds any number of lines whole
        self.dropped = 0
        if self.raw is not None:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                self._open_nonblocking(self.raw.fileno())

    def _open_nonblocking(self, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        self._file = stat.S_ISREG(mode)
        if stat.S_ISFIFO(mode):
            # Opened anew, not dup()ed: non-blocking must not spill onto the descriptor others share.
            self._handle = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._send = functools.partial(os.write, self._handle)
        elif stat.S_ISSOCK(mode):
            self._handle = sock = socket.socket(fileno=os.dup(fd))
            self._send = lambda data: sock.send(data, socket.MSG_DONTWAIT)

    def write(self, lines: list[bytes]) -> None:
        if self._gone:
            self.dropped += len(lines)
            return
        data = b"".join(lines)
        if self.raw is None:
            self.stream.write(data)
            self.stream.flush()
            return
        if self._file:
            try:
                _write_all(self.raw, memoryview(data))
            except OSError:  # a full disk: counted, as the lines that went are not known
                self.dropped += len(lines)
            return
        # A Python step per write, not per line: where each run of lines ends is found by bisection.
        view = memoryview(data)
        ends = list(itertools.accumulate(map(len, lines)))
        start = i = 0
        while i < len(ends):
            i = max(bisect.bisect_right(ends, start + _PIPE_BUF, i), i + 1)  # a longer line goes alone
            run = view[start : ends[i - 1]]
            if self._send is None:  # a terminal, or a pipe that could not be opened anew
                try:
                    _write_all(self.raw, run)
                except OSError as exc:
                    self.dropped += len(lines) - bisect.bisect_right(ends, start)  # this run and the rest
                    self._gone = isinstance(exc, BrokenPipeError)
                    return
            # Once a line is dropped, the rest are too until the backlog has drained: the lines kept are
            # the first ones, with no gap among them, and the notice follows them.
            elif not self.dropped and self._backlog + len(run) <= _BACKLOG_BYTES:
                self._pending.append(run)
                self._backlog += len(run)
            else:
                self.dropped += i - bisect.bisect_right(ends, start)
            start = ends[i - 1]
        if self._pending and (self._loop is None or self._loop.is_closed()):  # else the loop calls _drain
            self._loop = None
            self._drain()

    def _drain(self) -> None:
        pending = self._pending
        assert self._send is not None
        try:
            while pending:
                run = pending[0]
                sent = self._send(run)
                self._backlog -= sent
                if sent < len(run):  # in part: a line longer than PIPE_BUF, or a socket
                    pending[0] = run[sent:]
                else:
                    pending.popleft()
        except BlockingIOError:
            self._watch()
            return
        except OSError:  # the reader has gone for good (EPIPE): no line can go anywhere now
            self.dropped += sum(bytes(run).count(b"\n") for run in pending)
            pending.clear()
            self._backlog = 0
            self._gone = True
        self._unwatch()
        if self.dropped and not self._gone and self._handle is not None:
            line = memoryview(_json_line("log_lines_dropped", "warning", {"lines": self.dropped}))
            self.dropped = 0
            pending.append(line)
            self._backlog += len(line)
            self._drain()

    def _watch(self) -> None:
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the lines wait for the next write
                return
            self._loop.add_writer(self._handle, self._drain)

    def _unwatch(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.remove_writer(self._handle)
            self._loop = None

    def finish(self, within_s: float) -> None:
        """At exit: give a full pipe up to `within_s` to take the lines still waiting, so a reader that
        is only slow gets them all; what is left then goes with the process."""
        deadline = time.monotonic() + within_s
        while self._pending and self._send is not None:
            self._unwatch()  # waited for here, not by the loop
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [self._handle], [], left)[1]:
                return
            self._drain()
        self._unwatch()

    def close(self) -> None:
        self._unwatch()
        handle, self._handle, self._send = self._handle, None, None
        if isinstance(handle, int):
            os.close(handle)
        elif handle is not None:
            handle.close()


def _write_all(raw: Any, view: memoryview) -> None:
    while view:
        view = view[raw.write(view) :]


class _LineFile:
    """The file structlog's JSON logger writes to: each line goes to the outlet at once."""

    __slots__ = ("__weakref__", "_outlet")  # structlog keeps a lock per file, in a weak mapping

    def __init__(self, outlet: _Outlet) -> None:
        self._outlet = outlet

    def write(self, data: bytes) -> None:
        self._outlet.write([data])

    def flush(self) -> None:
        pass


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
