"""The access line: one JSON line per request, written without structlog's machinery but as structlog
would write it, and through structlog whenever structlog has been configured otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
import structlog
import yaml

from config import LogConfig
from gateway import logs
from gateway.api.pipeline import access_log
from gateway.logs import AccessLog, setup_logging
from tests.conftest import KEYS, channel
from tests.procs import free_port


@contextlib.contextmanager
def logging_to_buffer(level: str) -> Iterator[io.TextIOWrapper]:
    """The JSON set-up `serve` makes, writing to a buffer; structlog's defaults again afterwards."""
    out = io.TextIOWrapper(io.BytesIO())
    setup_logging(LogConfig(level=level, format="json"), out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        logs._json_lines.clear()


@pytest.fixture
def json_logs():
    with logging_to_buffer("info") as out:
        yield out


def _lines(out: io.TextIOWrapper) -> list[dict]:
    out.flush()
    return [orjson.loads(line) for line in out.buffer.getvalue().splitlines()]


FIELDS = {"request_id": "r1", "method": "POST", "path": "/v1/chat/completions", "key_name": "app1", "status": 200,
          "latency_ms": 1.5, "ttft_ms": None, "stream": False, "tokens": 21, "error": None}


def test_the_fast_line_is_the_line_structlog_writes(json_logs):
    AccessLog("gateway.access").info("request", dict(FIELDS))  # no loop running: written at once
    structlog.get_logger("gateway.access").info("request", **FIELDS)
    fast, slow = _lines(json_logs)
    assert list(fast) == list(slow)  # same keys in the same order
    # The same format, and the same moment: the two lines were written microseconds apart, maybe
    # across the turn of a second (comparing them to the second failed then).
    times = [line.pop("timestamp") for line in (fast, slow)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t) for t in times)
    fast_at, slow_at = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times)
    assert timedelta(0) <= slow_at - fast_at < timedelta(seconds=1)
    assert fast == slow == {**FIELDS, "event": "request", "level": "info", "pid": os.getpid(), "worker": 0}


def test_every_line_names_its_process_and_worker(json_logs, monkeypatch):
    monkeypatch.setattr(logs, "_process", list(logs._process))  # set_worker() here must not outlive the test
    structlog.get_logger("gateway").info("single")
    logs.set_worker(3)
    structlog.get_logger("gateway").warning("forked", pid=1)  # a field named pid cannot pass for the process's
    AccessLog("gateway.access").info("request", dict(FIELDS))
    logs.set_worker(None)
    structlog.get_logger("gateway").info("parent")
    assert [(line["event"], line["pid"], line["worker"]) for line in _lines(json_logs)] == [
        ("single", os.getpid(), 0), ("forked", os.getpid(), 3), ("request", os.getpid(), 3),
        ("parent", os.getpid(), None),
    ]


def test_a_reconfigured_structlog_gets_the_line(json_logs):
    with structlog.testing.capture_logs() as captured:
        AccessLog("gateway.access").info("request", dict(FIELDS))
    assert captured == [{**FIELDS, "event": "request", "log_level": "info"}]
    assert _lines(json_logs) == []


class _Pipe(io.RawIOBase):
    """A raw stream that keeps each write as it came, as a pipe takes it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.writes.append(bytes(data))
        return len(data)


async def test_lines_go_out_whole_in_writes_of_at_most_pipe_buf():
    """Workers share one stderr pipe: a write of at most PIPE_BUF bytes is never interleaved with another."""
    raw = _Pipe()
    out = io.TextIOWrapper(io.BufferedWriter(raw))  # held: collecting it would close the stream
    setup_logging(LogConfig(level="info", format="json"), out)
    errors = [f"{n}:" + "x" * (40 * n) for n in range(40)] + ["long:" + "y" * 5000, "last"]
    try:
        log = AccessLog("gateway.access")
        for error in errors:  # one loop turn: the lines go out together
            log.info("request", {**FIELDS, "error": error})
        log.flush()
    finally:
        structlog.reset_defaults()
        logs._json_lines.clear()
    lines = b"".join(raw.writes).splitlines(keepends=True)
    assert [orjson.loads(line)["error"] for line in lines] == errors
    assert all(w.endswith(b"\n") for w in raw.writes)  # whole lines only
    assert [w for w in raw.writes if len(w) > 4096] == [lines[-2]]  # the line longer than PIPE_BUF goes alone
    for w, following in zip(raw.writes, raw.writes[1:], strict=False):  # each write as full as it can be
        assert len(w) + len(following.splitlines(keepends=True)[0]) > 4096
    assert len(raw.writes) < len(lines) / 2


@contextlib.contextmanager
def _logging_to(kind: str) -> Iterator[tuple[int, io.TextIOWrapper]]:
    """The JSON set-up writing to a small pipe or a socket; yields the reading end's descriptor."""
    if kind == "pipe":
        reader, writer = os.pipe()
        fcntl.fcntl(writer, 1031, 4096)  # F_SETPIPE_SZ: a pipe of one page fills fast
    else:
        a, b = socket.socketpair()
        reader, writer = os.dup(b.fileno()), os.dup(a.fileno())
        a.close(), b.close()
    out = io.TextIOWrapper(io.BufferedWriter(io.FileIO(writer, "w")))
    setup_logging(LogConfig(level="info", format="json"), out)
    try:
        yield reader, out
    finally:
        logs._json_lines[2].close()
        structlog.reset_defaults()
        logs._json_lines.clear()
        out.close()
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(reader)


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_a_reader_that_stops_does_not_stop_the_loop(kind, monkeypatch):
    """Lines wait for a full pipe (up to the backlog), the rest are dropped and counted; the loop runs on."""
    monkeypatch.setattr(logs, "_BACKLOG_BYTES", 64 * 1024)
    unblocked: list[bool] = []
    with _logging_to(kind) as (reader, _):

        def unblock() -> None:  # only if the loop is stuck in a write: drain the pipe so the test ends
            unblocked.append(True)
            with contextlib.suppress(OSError):
                while os.read(reader, 1 << 20):
                    pass

        watchdog = threading.Timer(10, unblock)
        watchdog.start()
        try:
            log = AccessLog("gateway.access")
            for n in range(2000):  # ~450 KB: past the pipe and the backlog
                log.info("request", {**FIELDS, "request_id": f"r{n}"})
                if n % 50 == 49:
                    await asyncio.sleep(0)  # a loop turn: the lines so far go out (or wait)
            await asyncio.sleep(0)
        finally:
            watchdog.cancel()
        assert not unblocked, "a write stopped the event loop"
        os.set_blocking(reader, False)
        got = b""
        for _ in range(500):  # the loop writes what waited as the reader makes room
            with contextlib.suppress(BlockingIOError):
                got += os.read(reader, 1 << 16)
            if b"log_lines_dropped" in got and got.endswith(b"\n"):
                break
            await asyncio.sleep(0.01)
    lines = [orjson.loads(line) for line in got.splitlines()]
    kept = [line["request_id"] for line in lines[:-1]]
    assert kept == [f"r{n}" for n in range(len(kept))]  # whole, in order: the first ones
    line_bytes = len(got.splitlines()[0]) + 1
    assert len(kept) > (64 * 1024 - logs._PIPE_BUF) // line_bytes  # the backlog's worth at least, but for one run
    assert lines[-1]["event"] == "log_lines_dropped"
    assert lines[-1]["lines"] == 2000 - len(kept)


async def test_at_exit_a_slow_reader_still_gets_the_lines_that_wait():
    with _logging_to("pipe") as (reader, _):
        log = AccessLog("gateway.access")
        for n in range(100):  # ~22 KB: more than the one-page pipe holds
            log.info("request", {**FIELDS, "request_id": f"r{n}"})
        log.flush()
        outlet = logs._json_lines[2]
        assert outlet._pending  # some wait for the reader
        got: list[bytes] = []

        def read_slowly() -> None:
            time.sleep(0.2)
            while sum(chunk.count(b"\n") for chunk in got) < 100:
                got.append(os.read(reader, 1 << 16))

        slow = threading.Thread(target=read_slowly, daemon=True)
        slow.start()
        logs.finish_logging(within_s=10)  # what `serve` does last
        assert not outlet._pending
        slow.join(10)
    lines = b"".join(got).splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines[:100]] == [f"r{n}" for n in range(100)]


async def test_lines_for_a_reader_gone_for_good_are_counted_not_raised():
    with _logging_to("pipe") as (reader, _):
        os.close(reader)  # EPIPE from here on
        log = AccessLog("gateway.access")
        for n in range(10):
            log.info("request", {**FIELDS, "request_id": f"r{n}"})
        log.flush()
        log.info("request", dict(FIELDS))
        log.flush()
        assert logs._json_lines[2].dropped == 11


def test_above_info_there_is_no_line():
    with logging_to_buffer("warning") as out:
        AccessLog("gateway.access").info("request", dict(FIELDS))
        assert _lines(out) == []


async def test_every_request_has_one_line_and_no_key(json_logs, vendor, gateway_factory):
    gw = await gateway_factory({"keys": KEYS, "channels": [channel("v", vendor)]})
    client = gw.client()
    await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    await client.with_options(max_retries=0).models.list()
    access_log.flush()
    lines = [line for line in _lines(json_logs) if line["event"] == "request"]
    assert [(line["path"], line["status"], line["key_name"]) for line in lines] == [
        ("/v1/chat/completions", 200, "app1"), ("/v1/models", 200, "app1"),
    ]
    chat = lines[0]
    assert chat["model"] == "gpt-4o" and chat["channel"] == "v" and chat["attempts"] == 1 and chat["tokens"] > 0
    raw = json_logs.buffer.getvalue()
    assert b"test-key" not in raw and b"vk-v-secret" not in raw


@pytest.mark.slow  # run by `make test` and CI; `make test-fast` leaves it out
async def test_a_gateway_whose_stderr_nobody_reads_keeps_serving(vendor, tmp_path):
    """`serve` with stderr a pipe nobody reads (a stuck log shipper), then one nobody will read (gone):
    requests go on, lines wait and then drop, and the shutdown still writes every usage row."""
    port = free_port()
    config = {"listen": f"127.0.0.1:{port}", "database": str(tmp_path / "usage.db"), "keys": KEYS,
              "channels": [channel("v", vendor)]}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    reader, writer = os.pipe()
    proc = subprocess.Popen(  # noqa: ASYNC220 (Popen only forks)
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "gateway.yaml")],
        stdout=subprocess.DEVNULL, stderr=writer, cwd=Path(__file__).parents[2],
    )
    os.close(writer)
    try:
        url = f"http://127.0.0.1:{port}"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer test-key"}) as s:
            await eventually_ready(s, url + "/healthz", proc)

            async def send(n: int) -> list[int]:
                statuses = []
                for _ in range(n):
                    async with s.post(url + "/v1/chat/completions", json=body) as r:
                        await r.read()
                        statuses.append(r.status)
                return statuses

            # ~300 bytes of access line each: 1,200 lines are several times what a pipe holds (64 KB).
            done = await asyncio.wait_for(asyncio.gather(*(send(150) for _ in range(8))), 30)
            assert [status for statuses in done for status in statuses] == [200] * 1200
            os.set_blocking(reader, False)
            head = os.read(reader, 1 << 16)  # the lines that fit are there, whole
            assert head.count(b'"event":"request"') > 100
            os.close(reader)  # the reader is gone: every write now fails (EPIPE)
            reader = -1
            assert await asyncio.wait_for(send(100), 30) == [200] * 100
        proc.terminate()
        assert proc.wait(15) == 0  # the shutdown's own log lines fail too, and do not stop it
    finally:
        if reader >= 0:
            os.close(reader)  # a gateway stuck in a write gets EPIPE and can take the signal
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    db = sqlite3.connect(tmp_path / "usage.db")
    assert db.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == 1300  # the rows never depended on the log
    db.close()


async def eventually_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(400):
        assert proc.poll() is None, "the gateway exited"
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not come up")


def test_the_access_line_reads_structlogs_live_processors():
    # The fast read of structlog's internals and the public API name the same list (see logs._processors_reader).
    assert logs._processors() is structlog.get_config()["processors"]
