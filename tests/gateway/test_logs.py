"""The access line: one JSON line per request, written without structlog's machinery but as structlog
would write it, and through structlog whenever structlog has been configured otherwise."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import orjson
import pytest
import structlog

from config import LogConfig
from gateway import logs
from gateway.logs import AccessLog, setup_logging
from gateway.pipeline import access_log
from tests.conftest import KEYS, channel


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
    assert fast == slow == {**FIELDS, "event": "request", "level": "info"}


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
